"""Issue 15 D and 22 A.13: a test run leaves nothing behind but the wheel cache.

Two small pieces of the suite (the lock tests, which start processes, take locks and copy a release; a Ray test,
which starts a head node, a worker node and a driver) run in a fresh pytest with an empty TMPDIR and an empty
HOME: afterwards the temporary folder holds nothing but pytest's own emptied ``pytest-of-<user>`` root, the user's
lock folder (``~/.cache/mhsa-patch/locks`` of that HOME) was never made, nor Ray's ``~/.ray`` (where Ray 2.60 writes
a new cluster's token), nor anything in Ray's default temporary folder (``RAY_TMPDIR``, else ``/tmp/ray``, pointed
at a folder of this test's own).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import releases

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.releases  # a second pytest on copies of a release and a Ray cluster: about 30 s, out of the fast part
def test_a_run_leaves_the_temporary_folder_and_the_lock_folder_as_they_were(tmp_path):
    tmp, home, ray_default = tmp_path / "tmp", tmp_path / "home", tmp_path / "ray-default"
    tmp.mkdir()
    home.mkdir()
    ray_default.mkdir()
    releases.pristine(releases.LATEST)  # the wheel cache, the one thing a run may add, is filled beforehand
    drop = ("TMPDIR", "MHSA_PATCH_LOCK_DIR", "XDG_CACHE_HOME", "YOLO_CONFIG_DIR", "PYTEST_ADDOPTS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(TMPDIR=str(tmp), HOME=str(home), MHSA_PATCH_TEST_CACHE=str(releases.CACHE), RAY_TMPDIR=str(ray_default))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:randomly", "tests/test_untrusted.py",
         "tests/test_raycluster.py", "-k", "lock or without_the_token"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "test_raycluster.py::test_a_worker_node_without_the_token_is_refused PASSED" in proc.stdout, proc.stdout
    left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
    assert all(p.startswith("pytest-of-") and "/" not in p for p in left), left  # pytest's own root, emptied
    user_locks = home / ".cache" / "mhsa-patch" / "locks"
    assert not user_locks.exists(), sorted(os.listdir(user_locks))
    assert not (home / ".ray").exists(), sorted(os.listdir(home / ".ray"))  # the cluster's token stayed in its own HOME
    assert not any(ray_default.iterdir()), sorted(os.listdir(ray_default))  # Ray's sessions in the test's --temp-dir


@pytest.mark.releases
def test_the_oldest_releases_leave_no_config_folder_in_the_users_home(tmp_path, monkeypatch):
    """8.0.97 and 8.0.98 make ``~/.config/Ultralytics`` on import even with YOLO_CONFIG_DIR set (seen in the real
    HOME after a suite run): the children the tests start on them get a HOME of their own (releases.release_env)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    site = tmp_path / "site"
    releases.copy_release("8.0.98", site)
    assert releases.makes_a_config_dir_at_home(site)
    r = releases.run_python("from ultralytics.yolo.utils import USER_CONFIG_DIR; print(USER_CONFIG_DIR)", site)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "yolo-cfg-" in r.stdout, r.stdout  # its settings in the YOLO_CONFIG_DIR the test gave
    assert not (home / ".config").exists(), sorted(p.name for p in (home / ".config").iterdir())
