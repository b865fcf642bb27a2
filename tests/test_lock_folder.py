"""Issue 22 A.9: the default lock folder, as a user gets it (the rest of the suite sets MHSA_PATCH_LOCK_DIR).

With MHSA_PATCH_LOCK_DIR unset, real processes in an environment whose HOME, XDG_CACHE_HOME and TMPDIR are folders of
this test: the lock goes to ``$XDG_CACHE_HOME/mhsa-patch/locks``, else ``~/.cache/mhsa-patch/locks``, and with a HOME
that cannot hold it, to a per-user folder in the temporary folder; two runs use the same file (the second waits), and
each run removes its lock file when done.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from helpers import checkout_env, run_tool, unchanged

HOLD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from mhsa_patch.patching.atomic import lock_file, locked\n"
    "with locked(Path(sys.argv[1])):\n"
    "    print(lock_file(Path(sys.argv[1])), flush=True)\n"
    "    sys.stdin.read()\n"  # until the test closes stdin
)


def user_env(home: Path, tmp: Path, xdg: Path | None) -> dict[str, str]:
    env = checkout_env(offline=False, HOME=str(home), TMPDIR=str(tmp), MHSA_PATCH_LOCK_TIMEOUT="1")
    env.pop("MHSA_PATCH_LOCK_DIR", None)
    env.pop("XDG_CACHE_HOME", None)
    if xdg is not None:
        env["XDG_CACHE_HOME"] = str(xdg)
    return env


def held_lock(pkg: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(pkg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=env, text=True)
    return holder, Path(holder.stdout.readline().strip())


def release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    assert holder.wait(timeout=60) == 0


def test_the_default_lock_folder_in_the_users_cache_or_the_temporary_folder(latest_pkg, tmp_path):
    home, xdg, tmp = tmp_path / "home", tmp_path / "xdg", tmp_path / "tmp"
    for d in (home, xdg, tmp):
        d.mkdir()

    # XDG_CACHE_HOME set: its mhsa-patch/locks, made private; a second run finds the lock there and waits for it
    env = user_env(home, tmp, xdg)
    holder, path = held_lock(latest_pkg, env)
    try:
        assert path.parent == xdg / "mhsa-patch" / "locks" and path.is_file(), path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        r = run_tool("apply", "-t", str(latest_pkg), env=env)
        assert r.returncode == 1 and f"another mhsa-patch is working on {latest_pkg} (lock held" in r.stderr, r.stderr
    finally:
        release(holder)
    assert run_tool("apply", "-t", str(latest_pkg), env=env).returncode == 0
    assert list(path.parent.iterdir()) == []  # each run removed its lock file
    assert list(home.iterdir()) == []

    # no XDG_CACHE_HOME: ~/.cache/mhsa-patch/locks
    env = user_env(home, tmp, None)
    holder, path = held_lock(latest_pkg, env)
    release(holder)
    assert path.parent == home / ".cache" / "mhsa-patch" / "locks", path
    assert run_tool("revert", "-t", str(latest_pkg), env=env).returncode == 0
    assert unchanged(latest_pkg) and list(path.parent.iterdir()) == []

    # a HOME that cannot hold the folder: the per-user folder in the temporary folder, and apply still works.
    # root writes through permission bits, so there ~/.cache is also a file (no folder can be made under it)
    home2 = tmp_path / "home2"
    home2.mkdir()
    if os.geteuid() == 0:
        (home2 / ".cache").write_text("not a folder\n")
    before = sorted(p.name for p in home2.iterdir())
    home2.chmod(0o555)
    try:
        env = user_env(home2, tmp, None)
        holder, path = held_lock(latest_pkg, env)
        release(holder)
        assert path.parent == tmp / f"mhsa-patch-locks-{os.getuid()}", path
        assert run_tool("apply", "-t", str(latest_pkg), env=env).returncode == 0
        assert run_tool("revert", "-t", str(latest_pkg), env=env).returncode == 0
        assert unchanged(latest_pkg) and list(path.parent.iterdir()) == []
        assert sorted(p.name for p in home2.iterdir()) == before
    finally:
        home2.chmod(0o755)
