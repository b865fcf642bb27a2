"""``ablate --ray --storage PATH|URI``: where the tasks keep each run's epoch snapshots (issue 20 A).

The same contract for both stores, on real storage: a folder (:class:`PathStore`), and a URI through fsspec
(:class:`UriStore`) on a real FTP server over a socket (tests/ftpserver.py; fsspec's ftp:// uses the standard
library's ftplib). The newest epoch is what a task fetches, an older one goes once a newer one is whole there, a
damaged archive is moved aside (never deleted) and said in one warning, and nothing half-written is ever read. The
end-to-end run on a two-node cluster with ``--storage ftp://`` is in test_ablate.py.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import pytest

import ftpserver
from mhsa_patch.ablate.cluster import snapshot, store
from mhsa_patch.ablate.runstate import read_state
from mhsa_patch.errors import PatchError
from test_ablate_cluster import fake_run

EXP = "exp-1234"


@pytest.fixture
def ftp(tmp_path):
    """``(port, the folder the server serves, the server's log of commands)``."""
    root = tmp_path / "served"
    server = ftpserver.serve(root)
    with server as port:
        yield port, root, server.commands


def blob_of(tmp_path: Path, epochs: int, best: int) -> bytes:
    import tempfile

    run = Path(tempfile.mkdtemp(dir=tmp_path, prefix=f"worker-e{epochs}-")) / "stock-s0"
    fake_run(run, epochs, best)
    return snapshot.pack_resume(run)[1]


def unpacked(tmp_path: Path, blob: bytes, name: str) -> dict:
    dest = tmp_path / "back" / name / "stock-s0"
    snapshot.put(blob, dest)
    return read_state(dest)


def test_a_uri_store_keeps_the_newest_whole_epoch_and_gives_it_back(tmp_path, ftp):
    port, served, commands = ftp
    s = store.open_store(store.parse_storage(ftpserver.uri(port, "bucket/ablate")), EXP)
    assert isinstance(s, store.UriStore) and not s.merges
    s.check()  # writes a probe, reads it back, removes it
    assert [p.name for p in (served / "bucket" / "ablate" / EXP / "runs").iterdir()] == []
    assert s.fetch("stock-s0") == (None, None) and s.holds("stock-s0") == 0
    one, two = blob_of(tmp_path, 1, 1), blob_of(tmp_path, 2, 1)
    s.put_snapshot("stock-s0", one)
    del commands[:]
    s.put_snapshot("stock-s0", two)
    folder = served / "bucket" / "ablate" / EXP / "runs" / "stock-s0"
    assert sorted(p.name for p in folder.iterdir()) == ["000002.tar"]
    # uploaded under a temporary name, renamed whole, and only then epoch 1's archive removed
    writes = ftpserver.writes(commands, 4)
    assert len(writes) == 4 and writes[0].startswith("STOR .incoming-") and writes[1] == writes[0].replace("STOR", "RNFR")
    assert writes[2:] == ["RNTO 000002.tar", "DELE 000001.tar"], commands
    assert (folder / "000002.tar").read_bytes() == two and s.holds("stock-s0") == 2
    blob, warning = s.fetch("stock-s0")
    assert warning is None and blob == two
    state = unpacked(tmp_path, blob, "a")
    assert (state["epochs_done"], state["best"], state["last"]) == (2, "best-e1.pt", "last-e2.pt")
    # carried to a task: pickled without its connection, opened again where it arrives
    moved = pickle.loads(pickle.dumps(s))
    assert moved.holds("stock-s0") == 2 and moved.fetch("stock-s0")[0] == two
    s.forget("stock-s0")
    assert s.holds("stock-s0") == 0 and not folder.exists()
    with pytest.raises(PatchError, match="is not a run name"):
        s.put_snapshot("../x", one)


def test_only_a_whole_snapshot_is_stored(tmp_path, ftp):
    """A URI store keeps one archive per epoch: an archive that leaves out the checkpoints the receiver already held
    (what a task sends to a folder, which merges) could never be resumed from, so it is refused before upload."""
    port, served, commands = ftp
    s = store.open_store(ftpserver.uri(port), EXP)
    run = tmp_path / "w" / "stock-s0"
    fake_run(run, 2, 1)
    part = snapshot.pack_resume(run, have={"best-e1.pt"})[1]
    with pytest.raises(PatchError, match=r"stock-s0: the snapshot of epoch 2 does not hold a whole snapshot \(weights"
                                         r"/.resume/best-e1.pt, which state.json names, is missing\): not stored"):
        s.put_snapshot("stock-s0", part)
    assert s.holds("stock-s0") == 0 and not [c for c in commands if c.startswith("STOR")]


def test_a_half_written_upload_is_never_read(tmp_path, ftp):
    """A task killed while uploading leaves its temporary object: the store reads past it, and the next put works."""
    port, served, commands = ftp
    s = store.open_store(ftpserver.uri(port), EXP)
    one = blob_of(tmp_path, 1, 1)
    s.put_snapshot("stock-s0", one)
    folder = served / EXP / "runs" / "stock-s0"
    (folder / ".incoming-0123").write_bytes(blob_of(tmp_path, 2, 2)[:700])  # cut mid-upload
    (folder / "000009.tar.part").write_bytes(b"x")  # nor any other name than the store's own
    assert s.holds("stock-s0") == 1 and s.fetch("stock-s0") == (one, None)
    s.put_snapshot("stock-s0", blob_of(tmp_path, 2, 2))
    assert s.holds("stock-s0") == 2 and not (folder / "000001.tar").exists()


def test_a_damaged_archive_is_moved_aside_and_the_newest_whole_one_is_used(tmp_path, ftp):
    """The newest archive cut short (a disk full on the server, a copy by hand): renamed ``damaged-...`` with its
    bytes, one warning naming both names (the password never shown), and the older whole one is fetched; with no
    whole one left, the run starts over and nothing is deleted."""
    port, served, commands = ftp
    s = store.open_store(ftpserver.uri(port, "st"), EXP)
    one, two = blob_of(tmp_path, 1, 1), blob_of(tmp_path, 2, 2)
    folder = served / "st" / EXP / "runs" / "stock-s0"
    s.put_snapshot("stock-s0", one)
    (folder / "000002.tar").write_bytes(two[: len(two) // 2])  # as a crash between two puts could leave it
    blob, warning = s.fetch("stock-s0")
    assert blob == one
    (aside,) = [p for p in folder.iterdir() if p.name.startswith("damaged-")]
    assert aside.name.endswith("-000002.tar") and aside.read_bytes() == two[: len(two) // 2]
    shown = f"ftp://{ftpserver.USER}:***@127.0.0.1:{port}/st/{EXP}/runs/stock-s0"
    assert warning == (f"stock-s0: {shown}/000002.tar is not a whole archive (cut short?); it was moved to "
                       f"{shown}/{aside.name}")  # fmt: skip
    assert ftpserver.PASSWORD not in warning
    # an archive whose snapshot names a checkpoint it does not hold
    bad = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(two)) as src, tarfile.open(fileobj=bad, mode="w") as dst:
        for m in src.getmembers():
            if not m.name.endswith(".pt"):
                dst.addfile(m, src.extractfile(m))
    (folder / "000003.tar").write_bytes(bad.getvalue())
    (folder / "000001.tar").write_bytes(one[:100])
    blob, warning = s.fetch("stock-s0")
    assert blob is None and warning.count("it was moved to") == 2
    assert "000003.tar does not hold a whole snapshot (weights/.resume/last-e2.pt, which state.json names, is " \
           "missing)" in warning
    assert len([p for p in folder.iterdir() if p.name.startswith("damaged-")]) == 3 and s.holds("stock-s0") == 0
    s.forget("stock-s0")
    assert len(list(folder.iterdir())) == 3  # what it could not read stays


@pytest.mark.parametrize("kind", ["path", "uri"])
def test_both_stores_keep_the_same_contract(tmp_path, ftp, kind):
    port, served, commands = ftp
    where = str(tmp_path / "nfs") if kind == "path" else ftpserver.uri(port)
    s = store.open_store(store.parse_storage(where), EXP)
    s.check()
    for epochs, best in ((1, 1), (2, 1), (3, 3)):
        s.put_snapshot("MHSA-s1", blob_of(tmp_path, epochs, best))
        assert s.holds("MHSA-s1") == epochs
        blob, warning = s.fetch("MHSA-s1")
        assert warning is None
        state = unpacked(tmp_path, blob, f"{kind}{epochs}")
        assert (state["epochs_done"], state["best_epoch"]) == (epochs, best)
    assert s.holds("stock-s0") == 0
    s.forget("MHSA-s1")
    assert s.holds("MHSA-s1") == 0 and s.fetch("MHSA-s1") == (None, None)


def test_storage_values_are_checked_in_one_line(tmp_path):
    assert store.parse_storage(f"file://{tmp_path}/s") == str(tmp_path / "s")
    assert store.parse_storage(str(tmp_path / "s" / ".." / "s")) == str(tmp_path / "s")
    assert store.parse_storage("ftp://u:p@127.0.0.1:2121/x") == "ftp://u:p@127.0.0.1:2121/x"
    cases = {
        # s3fs is not installed here: fsspec knows the protocol, the package is missing
        "s3://bucket/x": "--storage s3://bucket/x: s3:// needs a package not installed here (",
        "memory://x": "--storage memory://x: memory:// is not reached from other nodes",
        "bogus://x": "--storage bogus://x: no filesystem for bogus://",
        "bogus://me:hunter2@host/x": "--storage bogus://me:***@host/x: no filesystem for bogus://",
        "": "--storage is empty",
    }
    for text, start in cases.items():
        with pytest.raises(PatchError) as e:
            store.parse_storage(text)
        msg = str(e.value)
        assert msg.startswith(start) and "\n" not in msg and "hunter2" not in msg, msg


def test_an_unreachable_uri_is_refused_in_one_line_before_anything_trains(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = store.open_store(f"ftp://me:hunter2@127.0.0.1:{port}/x", EXP)
    with pytest.raises(PatchError) as e:
        s.check()
    msg = str(e.value)
    assert msg.startswith(f"--storage ftp://me:***@127.0.0.1:{port}/x/{EXP}: cannot write there (")
    assert "\n" not in msg and "hunter2" not in msg and "refused" in msg.lower(), msg



def test_a_driver_snapshot_that_is_not_whole_is_not_seeded_and_stops_nothing(tmp_path, ftp):
    """An experiment begun without --storage, resumed with it: the driver gives the store its newer snapshot before
    the run's task starts. One whose checkpoint is cut short is not stored (the task's fetch from the driver moves
    that folder aside and says why), and the grid goes on."""
    from types import SimpleNamespace

    from mhsa_patch.ablate.ray_backend import RayBackend

    port, served, commands = ftp
    exp = tmp_path / "exp"
    run = exp / "runs" / "stock-s0"
    fake_run(run, 2, 2)
    backend = SimpleNamespace(exp=SimpleNamespace(dir=exp), store=store.open_store(ftpserver.uri(port), EXP))
    r = SimpleNamespace(name="stock-s0", run_dir=Path("runs") / "stock-s0")
    RayBackend._seed_storage(backend, r)
    assert backend.store.holds("stock-s0") == 2  # a whole one is seeded
    backend.store.forget("stock-s0")
    snap = run / "weights" / ".resume" / "last-e2.pt"
    snap.write_bytes(snap.read_bytes()[:-40])  # cut short: best-e2.pt is the same file (a hard link)
    RayBackend._seed_storage(backend, r)
    assert backend.store.holds("stock-s0") == 0
