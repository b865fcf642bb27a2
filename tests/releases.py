"""Real ultralytics releases for the tests: wheels downloaded once with pip, unpacked into a cache, copied per test.

Nothing here touches the ultralytics installed in the environment. Each test gets its own copy of a release's
``ultralytics/`` package in a temporary folder and reaches it through ``--target`` or ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# The engine issue's matrix: the first release with nn/modules/, one per later layout, and the latest.
MATRIX = ("8.0.98", "8.0.239", "8.2.103", "8.3.150", "8.4.190")
LATEST = MATRIX[-1]

CACHE = Path(os.environ.get("MHSA_PATCH_TEST_CACHE", Path.home() / ".cache" / "mhsa-patch-tests"))

# Old releases import packages that current ultralytics no longer pulls in (see shared/guides). They go into a
# side folder put on PYTHONPATH, never into the environment. --no-deps keeps numpy & co from being shadowed.
# 8.1.x's trainer imports cpuinfo (py-cpuinfo) when it starts. Pinned to the versions the suite passes with, so that
# a test run does not take whatever PyPI has that day (setuptools < 81: old releases import pkg_resources).
SIDE_PACKAGES = ("tqdm==4.70.1", "setuptools==80.10.2", "pandas==3.1.1", "python-dateutil==4.0.0", "tzdata==2026.6",
                 "hub-sdk==0.0.25", "py-cpuinfo==9.0.0")


def _locked_once(dest: Path, build) -> Path:
    """Build ``dest`` once, atomically: build into a sibling temp folder, then rename."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        build(tmp)
        try:
            tmp.rename(dest)
        except OSError:  # another process won the race
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def wheel(version: str) -> Path:
    """Path of the cached ``ultralytics==version`` wheel, downloaded with pip on first use."""

    def download(tmp: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), f"ultralytics=={version}"],
            check=True,
        )

    folder = _locked_once(CACHE / "wheels" / version, download)
    return next(folder.glob("ultralytics-*.whl"))


def newest() -> str | None:
    """The newest ultralytics release on PyPI today, its wheel downloaded into the cache; None when pip cannot reach
    the index. Only the test named for it uses this: everything else tests the pinned releases."""
    tmp = Path(tempfile.mkdtemp(prefix="newest-ultralytics-"))
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), "ultralytics"],
                           capture_output=True, text=True)
        wheels = list(tmp.glob("ultralytics-*.whl"))
        if r.returncode != 0 or len(wheels) != 1:
            return None
        version = wheels[0].name.split("-")[1]
        _locked_once(CACHE / "wheels" / version, lambda dest: shutil.copy2(wheels[0], dest))
        return version
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pristine(version: str) -> Path:
    """A read-only-by-convention unpacked ``ultralytics/`` package of a release. Copy it before changing anything."""

    def unpack(tmp: Path) -> None:
        with zipfile.ZipFile(wheel(version)) as zf:
            zf.extractall(tmp, [n for n in zf.namelist() if n.startswith("ultralytics/")])

    return _locked_once(CACHE / "unpacked" / version, unpack) / "ultralytics"


def copy_release(version: str, dest_root: Path) -> Path:
    """Copy a release's package to ``dest_root/ultralytics`` and return the package folder."""
    dest = Path(dest_root) / "ultralytics"
    shutil.copytree(pristine(version), dest)
    return dest


def side_packages() -> Path:
    """Folder with the extra packages old releases need to import offline (installed with pip --target)."""

    def install(tmp: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp), *SIDE_PACKAGES],
            check=True,
        )

    # the folder is named after the list, so a package added to it is installed into a new folder
    key = hashlib.sha256(" ".join(SIDE_PACKAGES).encode()).hexdigest()[:8]
    return _locked_once(CACHE / f"side-packages-{key}", install)


def release_env(site: Path, config_dir: Path | None = None, *, offline: bool = True) -> dict[str, str]:
    """Environment for a subprocess that must import the ultralytics under ``site`` (a folder holding ultralytics/).

    ``offline``: the test's own code importing ultralytics gets ``YOLO_OFFLINE=1``. A run of the tool passes False
    and gets no ``YOLO_OFFLINE`` at all: the tool must set it for its children itself (tests/netguard.py checks it).
    """
    env = dict(os.environ)
    if offline:
        env["YOLO_OFFLINE"] = "1"
    else:
        env.pop("YOLO_OFFLINE", None)
    paths = [str(site), str(side_packages())]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["YOLO_CONFIG_DIR"] = str(config_dir or Path(tempfile.mkdtemp(prefix="yolo-cfg-")))
    if makes_a_config_dir_at_home(site):
        env["HOME"] = tempfile.mkdtemp(prefix="home-")
    # One thread: a 2-core machine running the suite (and other work) slows down 4-6x when children spin-wait
    # on two OpenMP threads each.
    env["OMP_NUM_THREADS"] = "1"
    return env


def makes_a_config_dir_at_home(site: Path) -> bool:
    """Whether the ultralytics under ``site`` makes ``~/.config/Ultralytics`` on import even with YOLO_CONFIG_DIR
    set: 8.0.97 and 8.0.98 compute ``os.getenv('YOLO_CONFIG_DIR', get_user_config_dir())``, whose default makes the
    folder before the variable is read. Their children get a HOME of their own (``release_env``), so that the
    user's stays as it was (test_leftovers.py)."""
    try:
        text = (Path(site) / "ultralytics" / "yolo" / "utils" / "__init__.py").read_text(encoding="utf-8")
    except OSError:
        return False
    return re.search(r"""getenv\(['"]YOLO_CONFIG_DIR['"], get_user_config_dir\(\)\)""", text) is not None


def run_python(code: str, site: Path, *args: str, timeout: float = 600, cwd: Path | None = None):
    """Run ``python -c code`` against the ultralytics under ``site``; return the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=release_env(site),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, for byte-for-byte comparisons of a package tree."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (itself included, links not followed): kind, bytes or link target, mtime in ns.

    Equal before and after a command means it wrote nothing there: no file changed, none appeared or went (a folder's
    mtime changes when an entry is created or removed in it, a temporary file included).
    """
    import stat

    root = Path(root)
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            p = Path(folder) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                content: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                content = p.read_bytes() if st.st_size < 2**24 else st.st_size  # a planted huge file: its size
            else:
                content = None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), content, st.st_mtime_ns)
    return out
