"""A non-editable install carries everything the tool reads at run time (patches/ included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import releases

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_applies_and_reverts(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("mhsa_patch-*.whl")
    site = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True)
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mhsa_patch").rglob("*.py")}
    source |= {"mhsa_patch/patches/" + p.name for p in (ROOT / "patches").glob("*.py")}
    installed = {p.relative_to(site).as_posix() for p in (site / "mhsa_patch").rglob("*.py")}
    assert source == installed, (source ^ installed)  # every subpackage listed in pyproject.toml, nothing stale

    pkg = releases.copy_release(releases.LATEST, tmp_path / "target")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
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
