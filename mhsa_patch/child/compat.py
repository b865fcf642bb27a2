"""Ultralytics' API as every supported release has it, for the child processes (build, load, loss, layers).

Ultralytics moved things between releases (``ultralytics.yolo.cfg`` became ``ultralytics.cfg`` in 8.0.1xx, the
loss moved from the trainer into the model, ``attempt_load_one_weight`` became ``load_checkpoint``); the helpers
below paper over that for every release the tool supports (8.0.98 and later).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from mhsa_patch.child.protocol import ChildError, one_line
from mhsa_patch.patches import layer_names

# ----------------------------------------------------------------------------------------------- ultralytics API


def ultralytics_info() -> tuple[str, Path]:
    import ultralytics

    return ultralytics.__version__, Path(ultralytics.__file__).parent


def require_patched() -> None:
    """Refuse with one line when the imported ultralytics lacks a layer of the patch (not patched, or half of it)."""
    version, where = ultralytics_info()
    import ultralytics.nn.tasks as tasks

    missing = [name for name in layer_names() if getattr(tasks, name, None) is None]
    if missing:
        raise ChildError(
            f"ultralytics {version} at {where} is not patched (nn/tasks.py does not know {', '.join(missing)}); "
            f"run 'mhsa-patch apply --target {where}' first"
        )


def user_layers() -> tuple:
    """The imported ultralytics' user layers (``apply --layer``), from its journal, validated as the tool reads it
    (``patching.journal``); none where there is no journal or it cannot be read. Their rows are added layers too."""
    from mhsa_patch.errors import PatchError
    from mhsa_patch.patching.journal import Journal

    _, where = ultralytics_info()
    try:
        record = Journal(where).read()
    except PatchError:
        return ()
    return tuple(record.user_layers) if record is not None else ()


def user_specs() -> tuple:
    """:func:`user_layers` as ``patches.LayerSpec``s (what the model-YAML code reads them by)."""
    return tuple(u.spec() for u in user_layers())


def _layer_classes() -> tuple[dict[str, str], frozenset[str]]:
    """The patch's classes at the module the patch puts them in, and those whose pickled state is checked."""
    from mhsa_patch.patches import LAYERS

    classes = {name: "ultralytics.nn.modules.conv" for spec in LAYERS for name in (*spec.helpers, spec.name)}
    return classes, frozenset(spec.name for spec in LAYERS if spec.tutorial_state)


def load_checkpoint(path: str):
    """``(model, ckpt)`` from a ``.pt`` file: FP32, eval mode, as ultralytics itself loads it, but unpickled through
    :mod:`mhsa_patch.child.safe_load`'s allow-list (checkpoints are code). A layer pickled under a fork's module path
    (``ultralytics.nn.modules.MHSA.MHSA``, ...) is mapped to the patched class after its state is checked."""
    from mhsa_patch.child.safe_load import CheckpointRefused
    from mhsa_patch.child.safe_load import load_checkpoint as safe_load

    classes, checked = _layer_classes()
    try:
        model, ckpt, _ = safe_load(path, classes, checked=checked)
    except CheckpointRefused as e:
        raise ChildError(str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"{path} is not an ultralytics checkpoint: {one_line(e)}") from None
    return model, ckpt


def route_checkpoint_loading() -> bool:
    """Make the target's own checkpoint loading safe on today's torch; every child calls this at its start.

    Releases up to the 8.2 series call ``torch.load(file, map_location=...)`` without ``weights_only``
    (:mod:`mhsa_patch.patching.torchload` tells them apart by their files). Torch >= 2.6 then loads weights only and
    refuses every ultralytics checkpoint (trainer's ``strip_optimizer``, validator's and ``YOLO(...)``'s
    ``torch_safe_load``); before 2.6 it ran plain pickle on them. On such a release, ``torch.load`` calls made by
    ultralytics' own modules without ``weights_only`` or ``pickle_module`` go through the restricted unpickler of
    :mod:`mhsa_patch.child.safe_load` instead (our layers mapped, their state checked, nothing else run), on every
    torch. Any other caller, and any call that chose its own loading, gets torch's ``load`` unchanged. Returns whether
    the loading was routed. The unsafe ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is never needed.
    """
    import torch

    from mhsa_patch.patching.torchload import loads_without_weights_only

    if getattr(torch.load, "_mhsa_patch_routed", False):
        return True
    if not loads_without_weights_only(ultralytics_info()[1]):
        return False
    from mhsa_patch.child.safe_load import unpickle

    original = torch.load
    classes, checked = _layer_classes()

    def load(f, *args, **kwargs):
        caller = str(sys._getframe(1).f_globals.get("__name__") or "")
        ours = caller == "ultralytics" or caller.startswith("ultralytics.")
        if not ours or args[1:] or {"pickle_module", "weights_only"} & set(kwargs) or not isinstance(f, (str, os.PathLike)):
            return original(f, *args, **kwargs)
        map_location = args[0] if args else kwargs.get("map_location")
        return unpickle(f, classes, checked, map_location=map_location)[0]

    load._mhsa_patch_routed = True
    torch.load = load
    return True


def yaml_task(path: str | dict) -> str:
    """The task of a model YAML (a dict, a file, or a stock name such as ``yolov8n.yaml``), as ultralytics guesses it."""
    import ultralytics.nn.tasks as tasks

    try:
        if isinstance(path, dict):
            cfg = path
        elif os.path.exists(path):  # the file itself, never a scale-less sibling that yaml_model_load may prefer
            import yaml

            with open(path, encoding="utf-8") as fh:
                cfg = yaml.safe_load(fh)
        else:
            cfg = tasks.yaml_model_load(path)
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"{path}: not a model YAML: {one_line(e)}") from None
    if not isinstance(cfg, dict) or not cfg.get("backbone") or not cfg.get("head"):
        raise ChildError(f"{path}: not a model YAML (no backbone and head)")
    return tasks.guess_model_task(cfg)


@contextlib.contextmanager
def build_errors():
    """Turn what parse_model raises into one line (a layer of the patch that ultralytics does not know says to apply)."""
    try:
        yield
    except ChildError:
        raise
    except KeyError as e:
        unknown = [name for name in layer_names() if repr(name) in str(e) or str(e) == name]
        if unknown:
            raise ChildError(
                f"the model uses {unknown[0]} but this ultralytics does not know it; run 'mhsa-patch apply'"
            ) from None
        raise ChildError(f"the model does not build: {one_line(e)}") from None
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"the model does not build: {one_line(e)}") from None


def model_class(task: str):
    """ultralytics' model class for a task (``detect`` and what a release lacks: ``DetectionModel``)."""
    import ultralytics.nn.tasks as tasks

    name = {"segment": "SegmentationModel", "pose": "PoseModel", "obb": "OBBModel", "classify": "ClassificationModel"}
    return getattr(tasks, name.get(task, "DetectionModel"), None) or tasks.DetectionModel


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.extend(str(record.getMessage()).splitlines())


@contextlib.contextmanager
def captured_table():
    """Collect what ultralytics logs while building (parse_model's table) without printing it; skip model.info()."""
    from ultralytics.nn import tasks

    logger = logging.getLogger("ultralytics")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    cap = _Capture()
    logger.handlers[:] = [cap]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    info = tasks.BaseModel.info
    tasks.BaseModel.info = lambda self, *a, **k: None  # its thop pass costs time; summarize() reports the numbers
    try:
        yield cap.lines
    finally:
        tasks.BaseModel.info = info
        logger.handlers[:], logger.level, logger.propagate = saved


def build(cfg: str | dict, nc: int | None = None, *, table: bool = False):
    """``(model, lines)``: the model a YAML (a dict, a file or a stock name) describes, built as ``YOLO(cfg)`` would,
    by ultralytics' own ``parse_model``. With ``table``, ``lines`` is parse_model's layer table as ultralytics logs
    it (captured, not printed); else empty. The one way every child builds a model."""
    cls = model_class(yaml_task(cfg))
    with build_errors():
        if not table:
            return cls(cfg, ch=3, nc=nc, verbose=False), []
        with captured_table() as lines:
            model = cls(cfg, ch=3, nc=nc, verbose=True)
        return model, list(lines)


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


def is_layer(module) -> bool:
    """Whether ``module`` is one of the patch's layers or a user layer of the target (built here or unpickled)."""
    name = type(module).__name__
    return name in layer_names() or name in _user_names()


def _user_names() -> frozenset:
    global _USER_NAMES
    if _USER_NAMES is None:
        _USER_NAMES = frozenset(u.name for u in user_layers())
    return _USER_NAMES


_USER_NAMES = None


def layer_type(module) -> str:
    """A layer's class name (``C2f``, ``MHSA``, ``Upsample``), the same for a layer built or unpickled."""
    t = getattr(module, "type", None) or type(module).__name__
    return str(t).rsplit(".", 1)[-1]


def log(msg: str) -> None:
    """One line on stdout, in the child, for the rare message the parent does not print itself."""
    print(msg, file=sys.stdout, flush=True)
