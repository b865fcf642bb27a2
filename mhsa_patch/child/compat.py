"""What the child processes of ``check`` and ``port-weights`` share: talking to the parent, and ultralytics' API.

These children run ``python -m mhsa_patch.<name>_child`` with the target's ``ultralytics/`` first on ``sys.path``
(see :mod:`mhsa_patch.child.env`), so they import exactly the copy that was patched. They report to the parent through
an events file of JSON lines (``{"step": ...}``, ``{"result": ...}`` or ``{"error": "one line"}``) and leave stdout
and stderr to ultralytics, whose own logs and progress bars then reach the user unchanged.

Ultralytics moved things between releases (``ultralytics.yolo.cfg`` became ``ultralytics.cfg`` in 8.0.1xx, the
loss moved from the trainer into the model, ``attempt_load_one_weight`` became ``load_checkpoint``); the helpers
below paper over that for every release the tool supports (8.0.98 and later).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

DEBUG_ENV = "MHSA_PATCH_DEBUG"  # set to 1 to get the child's traceback on stderr as well as the one line


class ChildError(Exception):
    """A failure the parent prints as one line."""


class Events:
    """Append-only JSON-lines channel to the parent (flushed after every event)."""

    def __init__(self, path: str | os.PathLike | None):
        self._f = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (kept open for the run)
        self._t0 = time.monotonic()

    def emit(self, **event) -> None:
        if self._f is None:
            return
        event["t"] = round(time.monotonic() - self._t0, 3)
        self._f.write(json.dumps(event, default=str) + "\n")
        self._f.flush()

    def step(self, name: str, msg: str) -> None:
        self.emit(step=name, msg=msg)

    def done(self, name: str, msg: str) -> None:
        self.emit(done=name, msg=msg)


def run_main(work, events_path: str | None) -> int:
    """Run ``work(events)``; turn any exception into one ``error`` event (and exit code 1), never a bare traceback."""
    events = Events(events_path)
    try:
        result = work(events)
    except ChildError as e:
        events.emit(error=str(e))
        return 1
    except KeyboardInterrupt:
        events.emit(error="interrupted")
        return 130
    except BaseException as e:  # noqa: BLE001 - the parent shows one line; MHSA_PATCH_DEBUG=1 shows the rest
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        events.emit(error=one_line(e))
        return 1
    events.emit(result=result)
    return 0


def one_line(e: BaseException) -> str:
    """``Type: first line of the message``, ANSI colours and ultralytics' emoji prefixes removed."""
    import re

    msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    msg = msg.splitlines()[0] if msg else ""
    msg = re.sub(r"^(ERROR|WARNING)\s*\S*\s*", "", msg)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ----------------------------------------------------------------------------------------------- ultralytics API


def ultralytics_info() -> tuple[str, Path]:
    import ultralytics

    return ultralytics.__version__, Path(ultralytics.__file__).parent


def require_patched() -> None:
    """Refuse with one line when the imported ultralytics has no MHSA (not patched, or only half of it)."""
    version, where = ultralytics_info()
    import ultralytics.nn.tasks as tasks

    if getattr(tasks, "MHSA", None) is None:
        raise ChildError(
            f"ultralytics {version} at {where} is not patched (nn/tasks.py does not know MHSA); "
            f"run 'mhsa-patch apply --target {where}' first"
        )


def load_checkpoint(path: str):
    """``(model, ckpt)`` from a ``.pt`` file: FP32, eval mode, as ultralytics itself loads it, but unpickled through
    :mod:`mhsa_patch.child.safe_load`'s allow-list (checkpoints are code). A layer pickled under a fork's module path
    (``ultralytics.nn.modules.MHSA.MHSA``, ...) is mapped to the patched class after its state is checked."""
    from mhsa_patch.child.safe_load import CheckpointRefused
    from mhsa_patch.child.safe_load import load_checkpoint as safe_load
    from mhsa_patch.patches import LAYERS

    classes = {name: "ultralytics.nn.modules.conv" for spec in LAYERS for name in (*spec.helpers, spec.name)}
    try:
        model, ckpt, _ = safe_load(path, classes)
    except CheckpointRefused as e:
        raise ChildError(str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"{path} is not an ultralytics checkpoint: {one_line(e)}") from None
    return model, ckpt


def yaml_task(path: str | dict) -> str:
    """The task of a model YAML (detect, segment, ...), from its head, as ultralytics guesses it."""
    import ultralytics.nn.tasks as tasks

    try:
        cfg = path if isinstance(path, dict) else tasks.yaml_model_load(path)
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"{path}: not a model YAML: {one_line(e)}") from None
    if not isinstance(cfg, dict) or not cfg.get("backbone") or not cfg.get("head"):
        raise ChildError(f"{path}: not a model YAML (no backbone and head)")
    return tasks.guess_model_task(cfg)


@contextlib.contextmanager
def build_errors():
    """Turn what parse_model raises into one line (an unknown MHSA says to run apply)."""
    try:
        yield
    except ChildError:
        raise
    except KeyError as e:
        if "MHSA" in str(e):
            raise ChildError("the model uses MHSA but this ultralytics does not know it; run 'mhsa-patch apply'") from None
        raise ChildError(f"the model does not build: {one_line(e)}") from None
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"the model does not build: {one_line(e)}") from None


def model_class(task: str):
    """ultralytics' model class for a task (``detect`` and what a release lacks: ``DetectionModel``)."""
    import ultralytics.nn.tasks as tasks

    name = {"segment": "SegmentationModel", "pose": "PoseModel", "obb": "OBBModel", "classify": "ClassificationModel"}
    return getattr(tasks, name.get(task, "DetectionModel"), None) or tasks.DetectionModel


def build_from_yaml(path: str | dict, nc: int | None = None):
    """The model a YAML (a path or a dict) describes, built by ultralytics' own ``parse_model``."""
    cls = model_class(yaml_task(path))
    with build_errors():
        return cls(path, nc=nc, verbose=False)


def model_task(model) -> str:
    """detect, segment, pose, obb or classify, from the model's class (what it is, whatever its args say)."""
    by_class = {
        "SegmentationModel": "segment",
        "PoseModel": "pose",
        "OBBModel": "obb",
        "ClassificationModel": "classify",
        "DetectionModel": "detect",
    }
    for cls in type(model).__mro__:
        if cls.__name__ in by_class:
            return by_class[cls.__name__]
    task = getattr(model, "task", None)
    return str(task) if task else "detect"


def default_args():
    """ultralytics' default hyper-parameters as the namespace the loss expects (``args.box`` ...)."""
    try:
        from ultralytics.cfg import get_cfg
    except ImportError:  # releases before 8.0.1xx
        from ultralytics.yolo.cfg import get_cfg
    return get_cfg()


def loss_fn(model):
    """``batch -> (loss, loss_items)`` with ultralytics' own detection loss, on any supported release."""
    model.args = default_args()
    if hasattr(model, "loss"):
        return model.loss
    from ultralytics.yolo.v8.detect.train import Loss  # 8.0.98: the loss still lives in the trainer

    criterion = Loss(model)
    return lambda batch: criterion(model(batch["img"]), batch)


def loss_floats(items) -> list[float]:
    """Loss components as floats, whether ultralytics returns a tensor (older) or a dict (8.4)."""
    if isinstance(items, dict):
        return [float(v) for v in items.values()]
    if hasattr(items, "detach"):
        return [float(v) for v in items.detach().flatten().tolist()]
    return [float(v) for v in items]


def synthetic_batch(imgsz_hw: tuple[int, int], batch_size: int, nc: int, seed: int = 0):
    """A detection batch in ultralytics' training format: images 0..1 and a few normalised ``xywh`` boxes each."""
    import torch

    g = torch.Generator().manual_seed(seed)
    h, w = imgsz_hw
    img = torch.rand(batch_size, 3, h, w, generator=g)
    n = 3
    cls = torch.randint(0, max(nc, 1), (batch_size * n, 1), generator=g).float()
    xy = torch.rand(batch_size * n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(batch_size * n, 2, generator=g) * 0.2 + 0.1
    batch_idx = torch.arange(batch_size).repeat_interleave(n).float()
    return {"img": img, "cls": cls, "bboxes": torch.cat([xy, wh], 1), "batch_idx": batch_idx}


def is_mhsa(module) -> bool:
    return type(module).__name__ == "MHSA"


def layer_type(module) -> str:
    """A layer's class name (``C2f``, ``MHSA``, ``Upsample``), the same for a layer built or unpickled."""
    t = getattr(module, "type", None) or type(module).__name__
    return str(t).rsplit(".", 1)[-1]


def log(msg: str) -> None:
    """One line on stdout, in the child, for the rare message the parent does not print itself."""
    print(msg, file=sys.stdout, flush=True)
