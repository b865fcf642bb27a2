import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import releases  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _nothing_left_behind(tmp_path_factory):
    """Every temporary file and lock of the run goes under pytest's base folder, which pytest removes after a
    passing run (``tmp_path_retention_policy = "failed"``): the system temporary folder and the user's lock folder
    (``~/.cache/mhsa-patch/locks``) are left as they were. TMPDIR reaches every child; ``tempfile.tempdir`` is this
    process's cached copy. test_leftovers.py checks it."""
    base = tmp_path_factory.getbasetemp()
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "MHSA_PATCH_LOCK_DIR")}
    saved_tempdir = tempfile.tempdir
    (base / "tmp").mkdir(exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(base / "tmp")
    os.environ["MHSA_PATCH_LOCK_DIR"] = str(base / "locks")
    yield
    tempfile.tempdir = saved_tempdir
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True, scope="session")
def _offline_ultralytics(tmp_path_factory):
    """Ultralytics writes a settings file on first import and tries the network otherwise. YOLO_OFFLINE is for this
    process's own ultralytics (test_bot3_layer imports it): runs of the tool get none (releases.release_env with
    offline=False), so that the network guard (tests/netguard.py) sees the tool set it for its children."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(tmp_path_factory.mktemp("yolo-config"))
    yield


@pytest.fixture
def latest_pkg(tmp_path) -> Path:
    """A fresh copy of the latest release's ultralytics/ package under tmp_path/site."""
    return releases.copy_release(releases.LATEST, tmp_path / "site")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty folder under tmp_path, made the current one (where gen-yaml writes by default)."""
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.fixture(scope="session")
def _fork_tree_cache(tmp_path_factory):
    """The session's fork trees (tests/forks.py ``ForkTrees``), filled by ``fork_trees`` module by module."""
    import fork_shapes

    return fork_shapes.session_trees(tmp_path_factory.mktemp("forks"))


@pytest.fixture(scope="module")
def fork_trees(request, _fork_tree_cache):
    """The fork shapes (tests/fork_shapes.py) that this module's collected tests name in their ``shape`` parameter,
    each built, patched and its models built once for the session (test_forks.py and test_fork_anchors.py share
    them), all of one module's together. Module by module, so that a worker of ``pytest -n 2`` builds only the
    shapes of the files it runs. A tree is only read by tests; one that writes works on a copy."""
    import forks

    items = [i for i in request.session.items if getattr(i, "module", None) is request.module]
    _fork_tree_cache.prepare([n for n in forks.asked_for(items) if n in _fork_tree_cache.shapes])
    return _fork_tree_cache


# The files whose tests take longest, longest first (the ``--durations`` of a run, summed by file). Under
# ``pytest -n 2 --dist loadfile`` (the README's command) a file's tests run on one worker, in order, so that a module's
# fixtures are built once; a long file that started last would leave the other worker idle until it ended.
LONGEST_FIRST = ("test_ablate.py", "test_check.py", "test_yamlgen_builds.py", "test_user_layers_e2e.py",
                 "test_port_weights.py", "test_forks.py", "test_ablate_stats.py", "test_engine.py",
                 "test_examples.py", "test_torchvision_ops.py", "test_release_matrix.py")


def pytest_collection_modifyitems(config, items):
    """The fast tier is ``-m "not slow"``: a test marked ``releases`` or ``training`` is slow as well, so no test
    needs both marks and the two ways of saying it cannot drift apart. The longest files come first
    (``LONGEST_FIRST``); the order within a file, and of every other file, stays."""
    for item in items:
        if item.get_closest_marker("releases") or item.get_closest_marker("training"):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
