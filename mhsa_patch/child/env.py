"""Running code against the target's ultralytics in a fresh interpreter.

The tool itself never imports torch or ultralytics. Work that needs them (building a model, training,
porting weights) runs in a child ``python`` whose ``sys.path`` starts with the folder holding the target's
``ultralytics/``, so it imports exactly the copy that was patched, as ultralytics' own DDP workers would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from mhsa_patch.patching.target import Target


def target_env(target: Target, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(target.site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("YOLO_VERBOSE", "True")
    env.update(extra or {})
    return env


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
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=target_env(target, extra_env),
        capture_output=capture,
        text=True,
        timeout=timeout,
    )
