"""``ablate --ray``'s parts, each without Ray or the runner (issue 20 A): a run's resources, the node check, the
snapshot archives and their atomic placement, the driver's side of the tasks, ``--storage``, ``--workers``.

The whole of it on a two-node cluster is in test_ablate.py (marked training); the cluster itself in
test_raycluster.py.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

import releases
from helpers import assert_refused, cli
from mhsa_patch.ablate import data as datasets
from mhsa_patch.ablate.cluster import fingerprint, resources, snapshot, store
from mhsa_patch.ablate.cluster.task import sees_experiment
from mhsa_patch.errors import PatchError
from mhsa_patch.patching import engine
from mhsa_patch.patching.target import find_target

# ------------------------------------------------------------------------------------------------- resources


def test_a_run_asks_for_its_own_gpu_and_its_dataloader_workers_cpus():
    assert resources.run_resources("0", {"workers": 4}).options() == {"num_cpus": 5, "num_gpus": 1}
    assert resources.run_resources("0,1,2,3", {}).options() == {"num_cpus": 9, "num_gpus": 1}  # one GPU per run
    assert resources.run_resources("cpu", {"workers": 0}).options() == {"num_cpus": 1, "num_gpus": 0}
    assert resources.run_resources("mps", {"workers": 2}).options() == {"num_cpus": 3, "num_gpus": 0}
    assert resources.run_resources("cpu", {}).describe() == "9 CPUs"  # ultralytics' default: 8 workers
    assert resources.run_resources("0", {"workers": 0}).describe() == "1 GPU and 1 CPU"
    for bad in (-1, 1.5, True, "4"):
        with pytest.raises(PatchError, match="workers="):
            resources.run_resources("cpu", {"workers": bad})


HEAD = {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"memory": 1e9}}  # ray start --num-cpus=0
GPU_WORKER = {"Alive": True, "NodeManagerAddress": "10.0.0.7", "Resources": {"CPU": 8.0, "GPU": 1.0}}
CPU_WORKER = {"Alive": True, "NodeManagerAddress": "10.0.0.8", "Resources": {"CPU": 16.0}}
DEAD = {"Alive": False, "NodeManagerAddress": "10.0.0.9", "Resources": {"CPU": 64.0, "GPU": 8.0}}


def test_a_run_no_live_node_can_hold_is_refused_naming_what_each_node_has():
    gpu_run = resources.run_resources("0", {"workers": 7})
    assert resources.unplaceable(gpu_run, [HEAD, GPU_WORKER]) is None  # the driver's node needs nothing
    assert resources.unplaceable(resources.run_resources("cpu", {"workers": 15}), [HEAD, CPU_WORKER]) is None
    msg = resources.unplaceable(resources.run_resources("0", {}), [HEAD, GPU_WORKER, DEAD])
    assert msg == ("no node of the Ray cluster can run one run, which needs 1 GPU and 9 CPUs (10.0.0.1: 0 CPUs, "
                   "0 GPUs; 10.0.0.7: 8 CPUs, 1 GPU); lower --workers")  # fmt: skip
    msg = resources.unplaceable(gpu_run, [HEAD, CPU_WORKER])
    assert msg.endswith("start a worker node with a GPU (ray start --address ... --num-gpus 1), or pass --device cpu")
    assert "no live node" in resources.unplaceable(gpu_run, [DEAD])


def test_workers_and_storage_options_are_checked_before_anything_runs(tmp_path):
    r = cli("ablate", "--data", "synthetic:4", "--workers", "2", "--project", str(tmp_path), "--", "workers=3")
    assert_refused(r, "usage: --workers 2 and -- workers=...: give the dataloader workers once", code=2)
    r = cli("ablate", "--data", "synthetic:4", "--storage", str(tmp_path), "--project", str(tmp_path))
    assert_refused(r, "usage: --storage keeps the snapshots of Ray tasks: it needs --ray", code=2)
    r = cli("ablate", "--data", "synthetic:4", "--ray", "local", "--storage", "s3://bucket/runs", "--project", str(tmp_path))
    # s3fs is not installed here: refused before anything is measured (test_ablate_storage.py has the rest)
    assert_refused(r, "--storage s3://bucket/runs: s3:// needs a package not installed here (")
    r = cli("ablate", "--data", "synthetic:4", "--workers", "-1", "--project", str(tmp_path))
    assert r.exit_code == 2
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------- fingerprint


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A patched copy of the latest release and a synthetic set: a node as the driver records it."""
    root = tmp_path_factory.mktemp("node")
    pkg = releases.copy_release(releases.LATEST, root / "site")
    target = find_target(pkg)
    engine.apply(target)
    ds, splits = synthetic(root / "exp")
    recipe = {"ultralytics": releases.LATEST, "torch": fingerprint.torch_release(target), "data": ds.label,
              **fingerprint.recorded(target, splits)}  # fmt: skip
    return {"root": root, "target": target, "ds": ds, "splits": splits, "recipe": recipe}


def synthetic(exp_dir: Path):
    """The synthetic set as a node draws it into its experiment folder, and its splits."""
    ds = datasets.locate("synthetic:6", exp_dir, 64)
    datasets.write_synthetic(ds, 64)
    return ds, datasets.synthetic_splits(ds)


def test_the_recipe_records_the_journals_hash_of_every_patched_file(node):
    from mhsa_patch.patching.atomic import sha256

    target = node["target"]
    patch = node["recipe"]["patch"]
    assert sorted(patch) == ["nn/modules/__init__.py", "nn/modules/conv.py", "nn/tasks.py"]
    for rel, h in patch.items():
        pristine = releases.pristine(releases.LATEST) / rel
        assert h == sha256(target.file(rel).read_bytes()) != sha256(pristine.read_bytes())


def test_torch_release_is_read_from_the_childs_torch_without_importing_it(node):
    import importlib.util

    version_py = Path(importlib.util.find_spec("torch").origin).parent / "version.py"
    text = version_py.read_text()
    assert f"__version__ = '{node['recipe']['torch']}'" in text or f'__version__ = "{node["recipe"]["torch"]}"' in text


def test_a_node_like_the_drivers_passes_the_check(node):
    expected = fingerprint.Expected.of(node["recipe"])
    assert fingerprint.difference(expected, node["target"], node["splits"]) is None
    # the synthetic set drawn again on another node (another folder), identical by seed
    again, splits = synthetic(node["root"] / "elsewhere")
    assert again.yaml != node["ds"].yaml
    assert fingerprint.difference(expected, node["target"], splits) is None


def test_a_node_with_another_release_is_refused_naming_both(node, tmp_path):
    other = find_target(releases.copy_release("8.3.150", tmp_path / "site"))
    expected = fingerprint.Expected.of(node["recipe"])
    assert fingerprint.difference(expected, other, node["splits"]) == "ultralytics 8.3.150, the recipe has 8.4.190"


def test_a_node_whose_ultralytics_is_unpatched_or_edited_is_refused_with_the_command_that_fixes_it(node, tmp_path):
    expected = fingerprint.Expected.of(node["recipe"])
    stock = find_target(releases.copy_release(releases.LATEST, tmp_path / "a"))
    assert fingerprint.difference(expected, stock, node["splits"]) == (
        f"ultralytics 8.4.190 at {stock.package} is not patched (status: not-applied); "
        f"run 'mhsa-patch apply --target {stock.package}' there"
    )
    edited = find_target(releases.copy_release(releases.LATEST, tmp_path / "b"))
    engine.apply(edited)
    tasks = edited.file("nn/tasks.py")
    tasks.write_text(tasks.read_text() + "\n# a local edit\n")
    assert fingerprint.difference(expected, edited, node["splits"]) == (
        f"ultralytics 8.4.190 at {edited.package} is patched, but nn/tasks.py edited since apply; "
        f"run 'mhsa-patch apply --target {edited.package}' there"
    )


def test_a_node_patched_by_another_mhsa_patch_or_with_another_torch_is_refused(node):
    target, yaml_path = node["target"], node["splits"]
    other_patch = dict(node["recipe"], patch=dict(node["recipe"]["patch"], **{"nn/tasks.py": "ab" * 32}))
    got = fingerprint.difference(fingerprint.Expected.of(other_patch), target, yaml_path)
    mine = node["recipe"]["patch"]["nn/tasks.py"][:12]
    assert got == (f"the patched nn/tasks.py differs from the recipe's (sha256 {mine}, the recipe has abababababab); "
                   "apply the same mhsa-patch release there")  # fmt: skip
    old_torch = dict(node["recipe"], torch="1.13.1+cu117")
    got = fingerprint.difference(fingerprint.Expected.of(old_torch), target, yaml_path)
    assert got == f"torch {node['recipe']['torch']}, the recipe has 1.13.1+cu117"


def test_a_node_whose_dataset_differs_is_refused(node, tmp_path):
    expected = fingerprint.Expected.of(node["recipe"])
    for change in ("label", "image", "renamed"):
        copy, splits = synthetic(tmp_path / change)
        root = copy.yaml.parent
        if change == "label":
            label = root / "labels" / "train" / "train_0001.txt"
            text = label.read_text()
            label.write_text(("1" if text[0] != "1" else "2") + text[1:])  # another class, the same size
        elif change == "image":
            (root / "images" / "val" / "val_0000.jpg").unlink()
        else:  # the same images and labels under other names
            for kind, ext in (("images", "jpg"), ("labels", "txt")):
                (root / kind / "val" / f"val_0000.{ext}").rename(root / kind / "val" / f"val_0000b.{ext}")
        got = fingerprint.difference(expected, node["target"], splits)
        assert got is not None and got.startswith("the dataset synthetic:6 differs: its label files or image"), got
    # the image bytes are not read: a re-encoded image is the same dataset
    copy, splits = synthetic(tmp_path / "bytes")
    img = copy.yaml.parent / "images" / "train" / "train_0000.jpg"
    img.write_bytes(img.read_bytes() + b"\0")
    assert fingerprint.difference(expected, node["target"], splits) is None
    # a dataset YAML's images that are not on the node: said as the difference they make
    gone = dict(splits, train=[str(tmp_path / "nowhere")])
    assert fingerprint.difference(expected, node["target"], gone).startswith("the dataset synthetic:6 differs")


def test_the_dataset_checksum_follows_ultralytics_image_lists(tmp_path):
    """A text file listing images (``./`` relative to it), folders, background images without labels, a test
    split: each counted as ultralytics reads them."""
    root = tmp_path / "d"
    for split in ("train", "val", "test"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for name in ("a.jpg", "b.PNG", "notes.txt"):
        (root / "images" / "train" / name).write_bytes(b"x")
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # b has no labels: a background
    (root / "images" / "val" / "c.jpg").write_bytes(b"x")
    (root / "labels" / "val" / "c.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    (root / "val.txt").write_text("./images/val/c.jpg\n")
    # the splits as ultralytics' check_det_dataset resolves them (the measuring child's answer)
    splits = {"path": str(root), "train": [str(root / "images" / "train")], "val": [str(root / "val.txt")]}
    s1 = datasets.checksum(splits)
    assert (s1.images, s1.labels) == (3, 2)
    (root / "images" / "test" / "t.jpg").write_bytes(b"x")
    s2 = datasets.checksum(dict(splits, test=[str(root / "images" / "test")]))  # --eval-split test: it counts too
    assert (s2.images, s2.labels) == (4, 2) and s2.sha256 != s1.sha256
    moved = tmp_path / "elsewhere"  # the same set under another root: the same checksum
    root.rename(moved)
    (moved / "val.txt").write_text("./images/val/c.jpg\n")
    same = {"path": str(moved), "train": [str(moved / "images" / "train")], "val": [str(moved / "val.txt")]}
    assert datasets.checksum(same) == s1


# -------------------------------------------------------------------------------------------------- snapshot


def checkpoint(text: str) -> bytes:
    """A file as ``torch.save`` writes it (a zip archive with a ``data.pkl``), what ``runstate.intact`` checks."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", text.encode() * 100)
    return buf.getvalue()


def fake_run(run_dir: Path, epochs: int, best: int) -> dict:
    """A run folder as the child leaves it after ``epochs`` committed epochs, ``best`` the best one."""
    snap = run_dir / "weights" / ".resume"
    snap.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.csv").write_text("epoch,loss\n" + "".join(f"{e},{e / 10}\n" for e in range(1, epochs + 2)))
    (run_dir / "args.yaml").write_text("epochs: 5\n")
    last = snap / f"last-e{epochs}.pt"
    last.write_bytes(checkpoint(f"checkpoint of epoch {epochs}"))
    if best == epochs:
        os.link(last, snap / f"best-e{best}.pt")
    elif not (snap / f"best-e{best}.pt").exists():
        (snap / f"best-e{best}.pt").write_bytes(checkpoint(f"checkpoint of epoch {best}"))
    state = {"epochs_done": epochs, "last": f"last-e{epochs}.pt", "best": f"best-e{best}.pt", "best_epoch": best,
             "train_s": 1.5 * epochs}  # fmt: skip
    (snap / "state.json").write_text(json.dumps(state))
    for f in snap.glob("*.pt"):
        if f.name not in (state["last"], state["best"]):
            f.unlink()
    return state


def test_a_snapshot_goes_to_another_folder_whole_with_best_as_a_hard_link(tmp_path):
    from mhsa_patch.ablate.runstate import read_state

    src, dest = tmp_path / "worker" / "r", tmp_path / "driver" / "r"
    state = fake_run(src, 2, 2)
    found = snapshot.pack_resume(src)
    assert found is not None and found[0] == state
    assert snapshot.put(found[1], dest)[-1] == "weights/.resume/state.json"  # the commit point, placed last
    assert read_state(dest) == state
    snap = dest / "weights" / ".resume"
    assert (snap / "last-e2.pt").stat().st_ino == (snap / "best-e2.pt").stat().st_ino  # one copy, two names
    assert (dest / "results.csv").read_text() == (src / "results.csv").read_text()
    # epoch 3 is not the best: only what the driver lacks goes, the superseded checkpoint goes away
    fake_run(src, 3, 2)
    st, blob = snapshot.pack_resume(src, have={"last-e2.pt", "best-e2.pt"})
    names = tarfile.open(fileobj=io.BytesIO(blob)).getnames()
    assert names == ["weights/.resume/last-e3.pt", "results.csv", "args.yaml", "weights/.resume/state.json"]
    snapshot.put(blob, dest)
    assert read_state(dest)["epochs_done"] == 3
    assert sorted(p.name for p in snap.iterdir()) == ["best-e2.pt", "last-e3.pt", "state.json"]
    assert not list(dest.parent.glob(".r.incoming-*"))  # the temporary folder is gone
    assert snapshot.pack_resume(tmp_path / "nothing") is None


def test_a_kill_while_a_snapshot_is_put_leaves_the_previous_epoch_whole(tmp_path, monkeypatch):
    from mhsa_patch.ablate.runstate import read_state

    src, dest = tmp_path / "w" / "r", tmp_path / "d" / "r"
    fake_run(src, 2, 2)
    snapshot.put(snapshot.pack_resume(src)[1], dest)
    fake_run(src, 3, 3)
    blob = snapshot.pack_resume(src, have={"last-e2.pt", "best-e2.pt"})[1]
    real = os.replace

    def dies_at_the_commit(a, b):
        if str(b).endswith("state.json"):
            raise KeyboardInterrupt  # the driver killed between the checkpoints and the commit
        real(a, b)

    monkeypatch.setattr(snapshot.os, "replace", dies_at_the_commit)
    with pytest.raises(KeyboardInterrupt):
        snapshot.put(blob, dest)
    monkeypatch.setattr(snapshot.os, "replace", real)
    state = read_state(dest)
    assert state["epochs_done"] == 2 and (dest / "weights" / ".resume" / "last-e2.pt").is_file()
    assert len((dest / "results.csv").read_text().splitlines()) == 5  # ahead of the state: the child cuts it on resume
    assert not list(dest.parent.glob(".r.incoming-*"))


def test_a_checkpoint_replaced_while_it_is_packed_is_read_again(tmp_path, monkeypatch):
    src = tmp_path / "r"
    fake_run(src, 2, 2)
    real, calls = snapshot.pack, []

    def racing(run_dir, files):
        calls.append(list(files))
        if len(calls) == 1:
            fake_run(src, 3, 3)  # the child commits epoch 3 and removes epoch 2's files meanwhile
        return real(run_dir, files)

    monkeypatch.setattr(snapshot, "pack", racing)
    state, blob = snapshot.pack_resume(src)
    assert state["epochs_done"] == 3 and len(calls) == 2
    assert "weights/.resume/last-e3.pt" in tarfile.open(fileobj=io.BytesIO(blob)).getnames()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "member, why",
    [
        ((_info("/etc/evil"), b"x"), "points outside the run folder"),
        ((_info("../evil"), b"x"), "points outside the run folder"),
        ((_info("weights/x", tarfile.SYMTYPE, "/etc/passwd"), None), "is not a plain file"),
        ((_info("weights/x", tarfile.LNKTYPE, "/etc/passwd"), None), "links outside the archive"),
        ((_info("fifo", tarfile.FIFOTYPE), None), "is not a plain file"),
    ],
)
def test_an_archive_from_another_node_is_read_as_untrusted(tmp_path, member, why):
    dest = tmp_path / "runs" / "r"
    with pytest.raises(PatchError, match=why):
        snapshot.put(_tar([(_info("results.csv"), b"ok"), member]), dest)
    assert not dest.exists() and not (tmp_path / "evil").exists()
    assert not list((tmp_path / "runs").iterdir())  # nothing placed, no temporary left


def test_a_run_folder_or_file_that_is_a_link_is_never_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r").symlink_to(outside)
    blob = _tar([(_info("results.csv"), b"ok")])
    with pytest.raises(PatchError, match="symbolic link"):
        snapshot.put(blob, tmp_path / "runs" / "r")
    real = tmp_path / "runs" / "s"
    (real / "weights").parent.mkdir(parents=True, exist_ok=True)
    (real / "weights").symlink_to(outside)
    with pytest.raises(PatchError, match="outside"):
        snapshot.put(_tar([(_info("weights/last.pt"), b"x")]), real)
    assert not any(outside.iterdir())


# ------------------------------------------------------------------------------------------ the driver's side


def test_the_driver_sink_writes_only_for_the_newest_attempt_and_reports_epochs_once_held(tmp_path):
    exp = tmp_path / "exp"
    (exp / "models").mkdir(parents=True)
    (exp / "models" / "yolov8n-stock.yaml").write_text("nc: 3\n")
    sink = store.DriverSink(str(exp), ["stock-s0"], ["yolov8n-stock.yaml"])
    assert sink.fetch("stock-s0") is None  # nothing held yet: a fresh start
    assert sink.model("yolov8n-stock.yaml") == b"nc: 3\n"
    with pytest.raises(PatchError, match="is not a model"):
        sink.model("../recipe.yaml")
    with pytest.raises(PatchError, match="is not a run"):
        sink.started("../escape", "t0", "10.0.0.7")
    assert sink.started("stock-s0", "t1", "10.0.0.7") == 1
    worker = tmp_path / "worker" / "stock-s0"
    fake_run(worker, 1, 1)
    sink.put_snapshot("stock-s0", "t1", snapshot.pack_resume(worker)[1], {"epoch": 1, "epochs": 5})
    assert (exp / "runs" / "stock-s0" / "weights" / ".resume" / "last-e1.pt").is_file()
    assert sink.drain() == [("stock-s0", "start", {"node": "10.0.0.7", "attempt": 1}),
                            ("stock-s0", "event", {"epoch": 1, "epochs": 5})]  # fmt: skip
    # the node is lost; Ray's retry starts: the old attempt may no longer write, even if still alive
    assert sink.started("stock-s0", "t2", "10.0.0.8") == 2
    fake_run(worker, 2, 2)
    with pytest.raises(store.StaleAttempt):
        sink.put_snapshot("stock-s0", "t1", snapshot.pack_resume(worker)[1], {"epoch": 2, "epochs": 5})
    sink.event("stock-s0", "t1", {"validating": True})  # a stale attempt's event is dropped
    assert sink.drain() == [("stock-s0", "start", {"node": "10.0.0.8", "attempt": 2})]
    blob = sink.fetch("stock-s0")  # what the retry resumes from: the epoch the driver holds
    resumed = tmp_path / "retry" / "stock-s0"
    snapshot.put(blob, resumed)
    assert json.loads((resumed / "weights" / ".resume" / "state.json").read_text())["epochs_done"] == 1
    # logs come back, and only the run's own
    logs = tmp_path / "wlogs"
    logs.mkdir()
    (logs / "stock-s0.log").write_text("trainer output\n")
    (logs / "other.log").write_text("x")
    sink.put_logs("stock-s0", "t2", snapshot.pack(logs, ["stock-s0.log"]))
    assert (exp / "logs" / "stock-s0.log").read_text() == "trainer output\n"
    with pytest.raises(PatchError, match="is not a log of stock-s0"):
        sink.put_logs("stock-s0", "t2", snapshot.pack(logs, ["other.log"]))


def test_a_run_folder_the_driver_cannot_read_is_moved_aside_whole_and_the_task_resumes_from_its_intact_snapshot(
    tmp_path,
):
    from mhsa_patch.ablate.runstate import read_state

    exp = tmp_path / "exp"
    run = exp / "runs" / "stock-s0"
    fake_run(run, 2, 2)
    (run / "weights" / ".resume" / "state.json").write_text('{"epochs_do')  # cut short by a crash
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    sink = store.DriverSink(str(exp), ["stock-s0"], [])
    blob = sink.fetch("stock-s0")
    aside = exp / "runs" / "stock-s0.damaged-1"
    assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == before  # kept whole
    back = tmp_path / "node" / "stock-s0"
    snapshot.put(blob, back)
    assert read_state(back)["epochs_done"] == 2  # rebuilt from epoch 2's intact checkpoint
    ((name, kind, data),) = sink.drain()
    assert (name, kind) == ("stock-s0", "event") and data["warning"] == (
        "stock-s0: weights/.resume/state.json is not readable JSON (11 bytes: cut short?); the run folder was moved "
        f"whole to {aside}; resuming from its snapshot of epoch 2"
    )


def test_storage_holds_the_snapshots_in_a_folder_every_node_reaches(tmp_path):
    s = store.PathStore(tmp_path / "s", "exp-1234")
    assert s.fetch("stock-s0") == (None, None) and s.holds("stock-s0") == 0
    worker = tmp_path / "w" / "stock-s0"
    fake_run(worker, 3, 2)
    s.put_snapshot("stock-s0", snapshot.pack_resume(worker)[1])
    assert s.holds("stock-s0") == 3 and (tmp_path / "s" / "exp-1234" / "runs" / "stock-s0" / "results.csv").is_file()
    back = tmp_path / "back" / "stock-s0"
    snapshot.put(s.fetch("stock-s0")[0], back)
    assert json.loads((back / "weights" / ".resume" / "state.json").read_text())["best"] == "best-e2.pt"
    s.forget("stock-s0")
    assert s.holds("stock-s0") == 0
    with pytest.raises(PatchError):
        s.run_dir("../x")


def test_a_node_writes_in_place_only_where_it_sees_the_drivers_own_recipe(tmp_path):
    from mhsa_patch.patching.atomic import sha256

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "recipe.yaml").write_text("epochs: 2\n")
    mine = sha256(b"epochs: 2\n")
    assert sees_experiment(exp, mine)
    assert not sees_experiment(tmp_path / "missing", mine)
    (exp / "recipe.yaml").write_text("epochs: 3\n")  # a node's own experiment at the same path
    assert not sees_experiment(exp, mine)
