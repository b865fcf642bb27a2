"""The target release's own model configs: where each base lives, and a one-line refusal for what a release lacks."""

from __future__ import annotations

from pathlib import Path

from mhsa_patch.errors import PatchError
from mhsa_patch.modelyaml.request import TASKS
from mhsa_patch.patching.target import Target

# Where each base lives inside the package, newest layout first, and the release that first shipped it.
BASE_DIRS = {"yolov8": ("cfg/models/v8", "models/v8"), "yolo11": ("cfg/models/11",), "yolo26": ("cfg/models/26",)}
BASE_SINCE = {"yolov8": "8.0.0", "yolo11": "8.3.0", "yolo26": "8.4.0"}


def base_config(target: Target, base: str, task: str) -> Path:
    """The target's own ``<base><suffix>.yaml``, or a one-line refusal naming what this release lacks."""
    name = f"{base}{TASKS[task]}.yaml"
    dirs = BASE_DIRS[base]
    for rel in dirs:
        path = target.package / rel / name
        if path.is_file():
            return path
    if not any((target.package / rel / f"{base}.yaml").is_file() for rel in dirs):
        raise PatchError(
            f"ultralytics {target.version} ships no {base} configs ({dirs[0]}/{base}.yaml not found; "
            f"{base} arrived in {BASE_SINCE[base]}): upgrade ultralytics or choose another --base"
        )
    raise PatchError(
        f"ultralytics {target.version} ships no {name} (--task {task} with --base {base}): "
        f"choose another --task or --base, or upgrade ultralytics"
    )
