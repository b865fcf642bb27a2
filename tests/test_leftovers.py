"""Issue 15 D: a test run leaves nothing behind but the wheel cache.

One small module (the lock tests, which start processes, take locks and copy a release) runs in a fresh pytest
with an empty TMPDIR and an empty HOME: afterwards the temporary folder holds nothing but pytest's own emptied
``pytest-of-<user>`` root, and the user's lock folder (``~/.cache/mhsa-patch/locks`` of that HOME) was never made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import releases

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.releases  # a second pytest on copies of a release: about 15 s, kept out of the fast part
def test_a_run_leaves_the_temporary_folder_and_the_lock_folder_as_they_were(tmp_path):
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    releases.pristine(releases.LATEST)  # the wheel cache, the one thing a run may add, is filled beforehand
    drop = ("TMPDIR", "MHSA_PATCH_LOCK_DIR", "XDG_CACHE_HOME", "YOLO_CONFIG_DIR", "PYTEST_ADDOPTS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(TMPDIR=str(tmp), HOME=str(home), MHSA_PATCH_TEST_CACHE=str(releases.CACHE))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_untrusted.py", "-k", "lock"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "passed" in proc.stdout
    left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
    assert all(p.startswith("pytest-of-") and "/" not in p for p in left), left  # pytest's own root, emptied
    user_locks = home / ".cache" / "mhsa-patch" / "locks"
    assert not user_locks.exists(), sorted(os.listdir(user_locks))
