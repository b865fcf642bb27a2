"""Issue 22 C: a torchvision built for another torch is said in one line, with the command that fixes it, when a
child of the tool imports torchvision, and at the start of a child that trains, instead of a bare
``RuntimeError: operator torchvision::nms does not exist`` after a training epoch.

The failures are real: a copy of the installed torchvision whose compiled operator library is gone, or replaced by
bytes the dynamic loader refuses (what a library built for another torch meets), put first on the ``PYTHONPATH`` of
the tool's run. torch then fails at ``import torchvision`` exactly as it did for the user who installed torch from the
CPU index and torchvision from PyPI. The installed torchvision is never touched.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import trainkit
from helpers import checkout_env, cli, run_tool
from mhsa_patch.child.torchvision_ops import fix_command

@functools.cache
def torch_version() -> str:
    """torch's own version, local label included (2.14.1+cpu): the wheel's metadata may leave the label out. Asked
    of torch in a child when a test needs it, not at collection (every worker and every mutant run collects this
    file)."""
    return subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


TORCHVISION = importlib.metadata.version("torchvision")


@pytest.fixture(scope="module", params=["absent", pytest.param("unloadable", marks=pytest.mark.slow)])
def broken_torchvision(request, tmp_path_factory) -> Path:
    """A folder holding a copy of the installed torchvision whose compiled operators do not load."""
    spec = importlib.util.find_spec("torchvision")  # found, not imported
    source = Path(spec.submodule_search_locations[0])
    root = tmp_path_factory.mktemp(f"torchvision-{request.param}")
    copy = root / "torchvision"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    libs = [p for p in copy.iterdir() if p.name.startswith("_C")
            and any(p.name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)]
    assert len(libs) == 1, f"torchvision's operator library not found in {copy}: {sorted(os.listdir(copy))}"
    if request.param == "absent":
        libs[0].unlink()
    else:
        libs[0].write_bytes(b"\x7fELF but not a library built for this torch\n" * 64)
    return root


def env_with(folder: Path, site: Path) -> dict[str, str]:
    env = checkout_env(site, offline=False)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env["PYTHONPATH"]])
    return env


def assert_mismatch_line(proc) -> str:
    """Exit 1 and one ``ERROR ❌`` line (a warning of the release may come before it) with the fix; no traceback."""
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
    torch = torch_version()
    assert f"torchvision {TORCHVISION} was built for another torch than {torch}: its compiled operators do not load" \
        in line, line
    assert line.endswith(f"from the same index: {fix_command(torch)}"), line
    return line


@pytest.mark.slow  # starts the tool and its child: about 15 s
def test_check_train_stops_at_start_up_with_the_fix(broken_torchvision, latest_pkg, tmp_path):
    """``check --train``: one line naming both versions and the pip command, before any step (no model built, no
    dataset drawn, no training)."""
    assert cli("apply", "-t", str(latest_pkg)).exit_code == 0
    work = tmp_path / "work"
    work.mkdir()
    assert run_tool("gen-yaml", "-s", "n", "-t", str(latest_pkg), cwd=work, site=latest_pkg.parent).returncode == 0
    proc = run_tool("check", "yolov8n-MHSA.yaml", "--train", "--imgsz", "64", "--runs", "1", "--images", "4",
                    "--batch", "2", "--train-imgsz", "64", "-t", str(latest_pkg), cwd=work,
                    env=env_with(broken_torchvision, latest_pkg.parent), timeout=600)
    assert_mismatch_line(proc)
    assert "✔" not in proc.stdout and "Building" not in proc.stdout, proc.stdout  # stopped at start-up


@pytest.mark.slow  # two fresh interpreters import torch and torchvision: about 20 s
def test_the_first_import_of_torchvision_in_a_child_says_it(broken_torchvision, tmp_path):
    """Wherever a child imports torchvision (ultralytics 8.0.x does it at its own import), the import itself raises
    the one-line error; a child that never imports torchvision is not slowed down by a check."""
    code = (
        "import sys, mhsa_patch.child.torchvision_ops as t\n"
        "from mhsa_patch.child.protocol import ChildError\n"
        "t.install()\n"
        "import torch\n"
        "assert 'torchvision' not in sys.modules\n"
        "try:\n    import torchvision\nexcept ChildError as e:\n    print(e)\nelse:\n    print('imported')\n"
    )
    env = env_with(broken_torchvision, tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.splitlines()
    assert f"was built for another torch than {torch_version()}" in line and fix_command(torch_version()) in line, line
    # the same import with the installed torchvision: no error (its operators run)
    env["PYTHONPATH"] = env["PYTHONPATH"].split(os.pathsep, 1)[1]
    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ok.stdout == "imported\n", ok.stdout + ok.stderr[-3000:]


@pytest.mark.releases
def test_check_on_8_0_98_says_it_at_ultralytics_import(broken_torchvision):
    """ultralytics 8.0.98 imports torchvision when it is imported: plain ``check`` (no training) says it too."""
    rel = trainkit.patched_release("8.0.98")  # patched once, shared with test_check
    proc = run_tool("check", str(rel["yaml"]), "--imgsz", "64", "--runs", "1", "-t", str(rel["site"]),
                    env=env_with(broken_torchvision, rel["site"]), timeout=600)
    assert_mismatch_line(proc)


@pytest.mark.parametrize("torch_version,command", [
    ("2.14.1+cpu", "pip uninstall -y torchvision && pip install torchvision torch==2.14.1 "
                   "--index-url https://download.pytorch.org/whl/cpu"),
    ("2.14.1+cu130", "pip uninstall -y torchvision && pip install torchvision torch==2.14.1 "
                     "--index-url https://download.pytorch.org/whl/cu130"),
    ("2.14.1", "pip uninstall -y torchvision && pip install torchvision torch==2.14.1"),  # PyPI's own build
    ("2.15.0a0+git1234abc", "pip uninstall -y torchvision && pip install torchvision torch==2.15.0a0"),  # a source build
])
def test_the_fix_installs_from_the_index_torch_came_from(torch_version, command):
    assert fix_command(torch_version) == command
