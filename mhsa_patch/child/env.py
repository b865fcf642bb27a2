"""Running code against the target's ultralytics in a fresh interpreter.

The tool itself never imports torch or ultralytics. Work that needs them (building a model, training,
porting weights) runs in a child ``python`` whose ``sys.path`` starts with the folder holding the target's
``ultralytics/``, so it imports exactly the copy that was patched, as ultralytics' own DDP workers would.

The child is the interpreter that imports the target: the one given with ``--python`` (``Target.python``), else
this one. Either way it gets a copy of this tool's own ``mhsa_patch`` package, alone in a temporary folder put first
on its path: another interpreter (a conda env) may not have the tool at all, or an older one, and the folder the
tool is installed in (a site-packages) cannot go on that path, as its torch and numpy would shadow the child's own.
The child starts with ``python -c`` rather than ``python -m``: ``-m`` puts the current folder before
``PYTHONPATH``, so a clone of ultralytics there would win over ``--target``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from mhsa_patch.patching.target import Target

TOOL_PACKAGE = Path(__file__).resolve().parents[1]  # this tool's mhsa_patch/ folder

# sys.argv of the child is ['-c', ENTRIES, MODULE, *args]: prepend ENTRIES to sys.path, take the process off the
# network (mhsa_patch.child.offline), have a torchvision built for another torch say so in one line at its import
# (mhsa_patch.child.torchvision_ops), run MODULE as __main__.
BOOT = (
    "import os, runpy, sys; sys.path[0:0] = sys.argv.pop(1).split(os.pathsep); "
    "import mhsa_patch.child.offline as _o; _o.install(); del _o; "
    "import mhsa_patch.child.torchvision_ops as _t; _t.install(); del _t; "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


def interpreter(target: Target) -> str:
    return target.python or sys.executable


def target_env(target: Target, extra: dict[str, str] | None = None, first: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    parts = [*first, str(target.site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("YOLO_VERBOSE", "True")
    env.update(extra or {})
    # Every child is offline, whatever the caller passed: no DNS probes, PyPI checks, font downloads or events
    # (mhsa_patch.child.offline does the rest in the child). torch's forced weights-only loading breaks the
    # custom unpickler of ported checkpoints.
    env["YOLO_OFFLINE"] = "1"
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    return env


@contextlib.contextmanager
def child_command(
    target: Target, module: str, args: Sequence[str], extra_env: dict[str, str] | None = None
) -> Iterator[tuple[list[str], dict[str, str]]]:
    """``(argv, env)`` that run ``python -m module args...`` against ``target``; valid inside the ``with`` only."""
    with tempfile.TemporaryDirectory(prefix="mhsa-patch-tool-") as tool:
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(TOOL_PACKAGE, Path(tool) / "mhsa_patch", ignore=ignore)
        layers = Path(tool) / "mhsa_patch" / "patches"
        if not layers.is_dir():  # a source checkout maps the top-level patches/ folder (see mhsa_patch/__init__.py)
            import importlib

            source = Path(importlib.import_module("mhsa_patch.patches").__file__).parent
            shutil.copytree(source, layers, ignore=ignore)
        entries = [tool, str(target.site)]
        env = target_env(target, extra_env, first=[tool])
        yield [interpreter(target), "-c", BOOT, os.pathsep.join(entries), module, *args], env


def run_module(
    target: Target,
    module: str,
    args: Sequence[str],
    *,
    capture: bool = True,
    timeout: float | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``python -m module args...`` against the target's ultralytics. Text output, no check on the exit code."""
    with child_command(target, module, args, extra_env) as (cmd, env):
        return subprocess.run(cmd, env=env, capture_output=capture, text=True, timeout=timeout)
