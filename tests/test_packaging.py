"""A non-editable install carries everything the tool reads at run time (patches/ included), from any clone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import releases

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(src: Path, dest: Path) -> Path:
    """``pip wheel`` of the project at ``src``; checks the layers are in it as mhsa_patch/patches/ only."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(src)],
        check=True,
    )
    (wheel,) = dest.glob("mhsa_patch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "mhsa_patch/patches/__init__.py" in names and "mhsa_patch/patches/mhsa.py" in names
    assert not [n for n in names if n.startswith("patches/")], "a top-level patches package in the wheel"
    return wheel


def install_apply_revert(wheel: Path, tmp_path: Path) -> None:
    """Install the wheel with --target, then apply and revert a release copy with it (nothing else on the path)."""
    site = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True)
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mhsa_patch").rglob("*.py")}
    source |= {"mhsa_patch/patches/" + p.name for p in (ROOT / "patches").glob("*.py")}
    installed = {p.relative_to(site).as_posix() for p in (site / "mhsa_patch").rglob("*.py")}
    assert source == installed, (source ^ installed)  # every subpackage listed in pyproject.toml, nothing stale

    pkg = releases.copy_release(releases.LATEST, tmp_path / "target")
    # nothing else on the path; a HOME of its own, where the tool's default lock folder goes (~/.cache/mhsa-patch)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    for command in ("apply", "revert"):
        r = subprocess.run(
            [sys.executable, "-m", "mhsa_patch", command, "-t", str(pkg)], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        assert str(site) in subprocess.run(
            [sys.executable, "-c", "import mhsa_patch.patches as p; print(p.__file__)"],
            cwd=tmp_path, env=env, capture_output=True, text=True,
        ).stdout
    assert releases.tree_bytes(pkg) == releases.tree_bytes(releases.pristine(releases.LATEST))
    assert (tmp_path / "home" / ".cache" / "mhsa-patch" / "locks").is_dir()  # the lock folder was there, not the user's


def test_wheel_install_applies_and_reverts(tmp_path):
    install_apply_revert(build_wheel(ROOT, tmp_path / "wheels"), tmp_path)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a git checkout")
def test_clone_without_symlinks_builds_a_wheel_that_applies(tmp_path):
    """A clone made as on Windows (core.symlinks=false, git's default there) builds the same working wheel.

    It clones the committed HEAD: the repository tracks no symbolic link, so nothing depends on one.
    """
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s"], capture_output=True, text=True, check=True)
    assert not [line for line in tracked.stdout.splitlines() if line.startswith("120000")], "a tracked symlink"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-c", "core.symlinks=false", str(ROOT), str(clone)], check=True)
    cloned = subprocess.run(["git", "-C", str(clone), "ls-files", "-s"], capture_output=True, text=True, check=True)
    assert not [line for line in cloned.stdout.splitlines() if line.startswith("120000")]
    install_apply_revert(build_wheel(clone, tmp_path / "wheels"), tmp_path)
