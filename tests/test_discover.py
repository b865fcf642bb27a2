"""Which ultralytics gets patched: the copy that 'python' run in the current folder imports, or --python's.

The environment's own ultralytics is only read (never changed), whatever its release: nothing here expects a
particular one. The releases that matter are the pinned wheels of the test cache (``releases.wheel``).

The slow tests build two real virtual environments once per module, each with its own ultralytics release and no
other (their torch, typer & co come from this environment through a folder of links that leaves its ultralytics out):

- ``venv-a``: ultralytics 8.3.52 from its wheel and mhsa-patch from a wheel of this checkout (the console script);
- ``venv-b``: ultralytics 8.0.207 as ``pip install -e`` of a clone-shaped checkout (setuptools' meta-path finder),
  and no mhsa-patch at all, like a conda env or a notebook kernel reached with ``--python``;
- ``proj/ultralytics/``: the tutorial's clone inside a project folder (8.0.200), with its ``train.py``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import releases
from helpers import cli
from mhsa_patch.errors import PatchError
from mhsa_patch.patching import discover
from mhsa_patch.patching.target import TARGET_FILES

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(sysconfig.get_paths()["purelib"])  # this environment's site-packages (its ultralytics: read only)
CLONE, VENV_A, VENV_B, ON_PYTHONPATH = "8.0.200", "8.3.52", "8.0.207", "8.0.147"

TRAIN = """\
import ultralytics
from ultralytics import YOLO

model = YOLO("yolov8n-MHSA.yaml")
kinds = [type(m).__name__ for m in model.model.model]
print("TRAIN", ultralytics.__version__, ultralytics.__file__, kinds.count("MHSA"))
"""

def sources(root: Path) -> dict[str, bytes]:
    """A package tree's files and bytes, without the bytecode that installs and imports add."""
    return {k: v for k, v in releases.tree_bytes(root).items() if "__pycache__" not in k}


def stamps(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots`` with its size and mtime: a write of any kind changes this."""
    seen = {}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            st = p.lstat()
            seen[str(p)] = (st.st_size, st.st_mtime_ns)
    return seen


def purelib(venv: Path) -> Path:
    (site,) = venv.glob("lib/python*/site-packages")
    return site


def make_venv(path: Path, deps: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    (purelib(path) / "deps.pth").write_text(f"{deps}\n")
    return path


def pip_install(venv: Path, *args: str) -> None:
    # no PYTHONPATH: a checkout on it (with the egg-info that building the wheel leaves) reads as "already installed"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
         "--no-index", "--no-build-isolation", *args],
        env=env,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("discover").resolve()
    deps = base / "deps"  # this environment's packages, minus its ultralytics and mhsa-patch
    deps.mkdir()
    for entry in SITE.iterdir():
        name = entry.name
        if name.startswith(("ultralytics", "mhsa_patch", "__editable__", "__pycache__")) or name.endswith(".pth"):
            continue
        (deps / name).symlink_to(entry)
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (tool_wheel,) = wheels.glob("mhsa_patch-*.whl")

    venv_a = make_venv(base / "venv-a", deps)
    pip_install(venv_a, str(releases.wheel(VENV_A)), str(tool_wheel))

    checkout = base / "ult-checkout"  # `git clone ultralytics && pip install -e .`, flat layout as upstream's
    releases.copy_release(VENV_B, checkout)
    (checkout / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "ultralytics"\nversion = "{VENV_B}"\n'
        '[tool.setuptools.packages.find]\ninclude = ["ultralytics", "ultralytics.*"]\n'
    )
    venv_b = make_venv(base / "venv-b", deps)
    pip_install(venv_b, "-e", str(checkout))

    clone = base / "proj" / "ultralytics"  # the tutorial: git clone inside the project folder
    releases.copy_release(CLONE, clone)
    (clone / "train.py").write_text(TRAIN)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PYTHONPATH=str(releases.side_packages()),  # what old releases import; no ultralytics in there
        YOLO_OFFLINE="1",
        YOLO_CONFIG_DIR=str(base / "yolo-config"),
        OMP_NUM_THREADS="1",
    )
    return {
        "base": base,
        "venv_a": venv_a,
        "venv_b": venv_b,
        "pkg_a": purelib(venv_a) / "ultralytics",
        "pkg_b": checkout / "ultralytics",
        "clone": clone,
        "env": env,
    }


def run(world, *args: str, cwd: Path, python: str = "mhsa-patch") -> subprocess.CompletedProcess:
    """One of venv-a's own executables (its mhsa-patch console script by default), as a user would type it."""
    exe = world["venv_a"] / "bin" / python
    return subprocess.run([str(exe), *args], cwd=cwd, env=world["env"], capture_output=True, text=True, timeout=600)


@pytest.mark.releases
def test_console_script_patches_the_clone_that_train_py_imports(world):
    clone, pkg_a = world["clone"], world["pkg_a"]
    installed_a = sources(pkg_a)
    assert installed_a == sources(releases.pristine(VENV_A))
    this_env = sources(SITE / "ultralytics")

    r = run(world, "apply", cwd=clone)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(f"ultralytics {CLONE} at {clone / 'ultralytics'}")
    assert r.stderr.splitlines() == [
        f"WARNING ⚠️ 2 copies of ultralytics are visible from {clone}: acting on {CLONE} at {clone / 'ultralytics'} "
        f"(imported first, by 'python' run here); it shadows {VENV_A} at {pkg_a}"
    ]
    assert "MHSA, BoT3 applied ✅" in r.stdout
    assert sources(pkg_a) == installed_a  # the shadowed install: not one byte changed
    assert sources(SITE / "ultralytics") == this_env

    r = run(world, "gen-yaml", "--scale", "n", cwd=clone)  # from the clone's own 8.0.200 config
    assert r.returncode == 0, r.stderr
    r = run(world, "train.py", cwd=clone, python="python")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-4:] == ["TRAIN", CLONE, str(clone / "ultralytics" / "__init__.py"), "1"]

    r = run(world, "revert", cwd=clone)
    assert r.returncode == 0, r.stderr
    assert "acting on 8.0.200" in r.stderr and "MHSA, BoT3 reverted ✅" in r.stdout
    assert sources(clone / "ultralytics") == sources(releases.pristine(CLONE))
    assert sources(pkg_a) == installed_a


@pytest.mark.releases
def test_status_lists_every_copy_and_writes_nothing(world):
    clone, pkg_a = world["clone"], world["pkg_a"]
    r = run(world, "apply", "--target", str(pkg_a), cwd=clone)  # patch the shadowed copy: the states differ
    assert r.returncode == 0 and r.stderr == "", r.stderr  # --target: no search, no warning
    try:
        before = stamps(clone.parent, pkg_a)
        r = run(world, "status", "--json", cwd=clone)
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["path"] == str(clone / "ultralytics") and st["state"] == "not-applied"
        assert st["python"] == str(world["venv_a"] / "bin" / "python")
        assert st["copies"] == [
            {"path": str(clone / "ultralytics"), "version": CLONE, "state": "not-applied", "imported": True},
            {"path": str(pkg_a), "version": VENV_A, "state": "applied", "imported": False},
        ]
        assert "it shadows 8.3.52" in r.stderr

        r = run(world, "status", cwd=clone)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        i = lines.index(f"copies of ultralytics visible to {world['venv_a'] / 'bin' / 'python'} run in {clone}, "
                        "in import order:")
        assert [ln.split() for ln in lines[i + 1:]] == [
            ["imported", CLONE, "not-applied", str(clone / "ultralytics")],
            ["shadowed", VENV_A, "applied", str(pkg_a)],
        ]
        assert stamps(clone.parent, pkg_a) == before  # status wrote nothing, not even a cache file

        # from the project folder the clone's repo root is only a namespace portion: the install wins, alone
        d = discover.discover(world["venv_a"] / "bin" / "python", cwd=clone.parent, env=world["env"])
        assert [(c.package, c.version, c.imported) for c in d.copies] == [(pkg_a, VENV_A, True)]
        st = json.loads(run(world, "status", "--json", cwd=clone.parent).stdout)
        assert st["path"] == str(pkg_a) and st["state"] == "applied" and len(st["copies"]) == 1
    finally:
        assert run(world, "revert", "--target", str(pkg_a), cwd=clone).returncode == 0
    assert sources(pkg_a) == sources(releases.pristine(VENV_A))


@pytest.mark.releases
def test_python_option_acts_on_another_interpreters_copy(world):
    base, pkg_a, pkg_b = world["base"], world["pkg_a"], world["pkg_b"]
    python_b = str(world["venv_b"] / "bin" / "python")
    installed_a = sources(pkg_a)
    # venv-b has no mhsa-patch: its children get the tool's own package from the tool
    alone = subprocess.run([python_b, "-c", "import mhsa_patch"], cwd=base, env=world["env"], capture_output=True)
    assert alone.returncode != 0

    r = run(world, "status", "--json", "--python", python_b, cwd=base)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["path"] == str(pkg_b) and st["python"] == python_b and st["state"] == "not-applied"
    assert st["copies"] == [{"path": str(pkg_b), "version": VENV_B, "state": "not-applied", "imported": True}]

    r = run(world, "apply", "--python", python_b, cwd=base)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(f"ultralytics {VENV_B} at {pkg_b} (imported by {python_b})")
    assert r.stderr == ""  # one copy visible to venv-b: nothing to warn about
    assert json.loads(run(world, "status", "--json", "--python", python_b, cwd=base).stdout)["state"] == "applied"
    assert sources(pkg_a) == installed_a

    # gen-yaml --check builds the model in a child of venv-b's own python, against venv-b's copy
    r = run(world, "gen-yaml", "--scale", "n", "--check", "--python", python_b, "-o", str(base) + "/", cwd=base)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"built with ultralytics {VENV_B}" in r.stdout

    r = run(world, "revert", "--python", python_b, cwd=base)
    assert r.returncode == 0, r.stderr
    assert sources(pkg_b) == sources(releases.pristine(VENV_B))
    assert sources(pkg_a) == installed_a


def test_pythonpath_copy_shadows_the_installed_one(tmp_path, monkeypatch):
    """PYTHONPATH comes before site-packages: apply patches the copy there, says so, and leaves this env's alone."""
    pkg = releases.copy_release(ON_PYTHONPATH, tmp_path / "pp")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "pp"), os.environ.get("PYTHONPATH", "")]))
    installed = {rel: (SITE / "ultralytics" / rel).read_bytes() for rel in TARGET_FILES}

    d = discover.discover()
    assert [(c.package, c.imported) for c in d.copies[:2]] == [(pkg, True), (SITE / "ultralytics", False)]
    # the installed release, whatever it is (ultralytics is not pinned), as pip's metadata names it
    assert d.copies[0].version == ON_PYTHONPATH and d.copies[1].version == importlib.metadata.version("ultralytics")

    r = cli("apply")
    assert r.exit_code == 0, r.output
    assert f"acting on {ON_PYTHONPATH} at {pkg} (imported first, by 'python' run here); it shadows" in r.stderr
    st = json.loads(cli("status", "--json").stdout)
    assert st["copies"][0] == {"path": str(pkg), "version": ON_PYTHONPATH, "state": "applied", "imported": True}
    assert cli("revert").exit_code == 0
    assert sources(pkg) == sources(releases.pristine(ON_PYTHONPATH))
    assert {rel: (SITE / "ultralytics" / rel).read_bytes() for rel in TARGET_FILES} == installed


def test_no_copy_visible(tmp_path):
    """An interpreter that sees no ultralytics: one line naming it and the way out."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    env = dict(os.environ, PYTHONPATH="")
    assert discover.discover(python, cwd=tmp_path, env=env).copies == ()
    with pytest.raises(PatchError, match=f"^ultralytics is not importable by {python} run in {tmp_path}; install it"):
        discover.resolve(python=python, cwd=tmp_path, env=env)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--python", "/nonexistent/python"], 1, "--python /nonexistent/python: no such file"),
        (["--python", "/bin/true"], 1, "/bin/true is not a Python interpreter that can look for ultralytics"),
        (["--python", "/bin/echo"], 1, "/bin/echo is not a Python interpreter that can look for ultralytics"),
        (["--python", "NOTEXECUTABLE"], 1, "not executable"),
        (["--python", "/tmp"], 1, "a directory, not a Python interpreter"),
        (["--python", "no-such-python-3.99"], 1, "--python no-such-python-3.99: not found on PATH"),
        (["--python", sys.executable, "--target", "/tmp"], 2, "--python and --target cannot be combined"),
    ],
)
@pytest.mark.parametrize("command", ["status", "apply", "revert"])
def test_python_refusals(tmp_path, command, args, code, message):
    plain = tmp_path / "not-a-python"
    plain.write_text("just text\n")
    args = [str(plain) if a == "NOTEXECUTABLE" else a for a in args]
    r = cli(command, *args)
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("ERROR ❌") and r.stderr.count("\n") == 1 and message in r.stderr
    assert r.stdout == "" and "Traceback" not in r.output


def test_other_commands_take_python():
    for command in ("gen-yaml", "check", "port-weights"):
        r = cli(command, "--help")
        assert "--python" in r.stdout, command
    r = cli("gen-yaml", "-s", "n", "--python", "/bin/true")
    assert r.exit_code == 1 and "not a Python interpreter" in r.stderr
    r = cli("check", "m.yaml", "--python", sys.executable, "--target", "/tmp")
    assert r.exit_code == 2 and "cannot be combined" in r.stderr
