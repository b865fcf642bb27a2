"""What ``gen-yaml`` is asked for, validated once, when the request is made."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from mhsa_patch.errors import UsageError
from mhsa_patch.patches import LAYERS, LayerSpec

SCALES = ("n", "s", "m", "l", "x")
BASES = ("yolov8", "yolo11", "yolo26")
TASKS = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb"}
LATERALS = ("attention", "pre-attention")
DEFAULT_LAYER = LAYERS[0].name


def layer_spec(name: str | None, extra: tuple = ()) -> LayerSpec:
    """The layer called ``name`` (any case; None: the default), or a one-line refusal listing the choices.
    ``extra``: the target's user layers (``apply --layer``), as ``LayerSpec``s, after the tool's own."""
    wanted = DEFAULT_LAYER if name is None else str(name).strip()
    for spec in (*LAYERS, *extra):
        if spec.name == wanted:
            return spec
    for spec in (*LAYERS, *extra):
        if spec.name.lower() == wanted.lower():
            return spec
    hint = "" if extra else "; a layer of your own is registered with 'mhsa-patch apply --layer FILE.py' first"
    raise UsageError(f"unknown layer '{name}': choose one of {', '.join(s.name for s in (*LAYERS, *extra))}{hint}")


def _positive(value, what: str) -> int:
    if isinstance(value, bool):
        raise UsageError(f"{what} must be a positive integer, got {value}")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise UsageError(f"{what} must be a positive integer, got {value}")
    return value


@dataclass(frozen=True)
class Request:
    """What ``gen-yaml`` was asked for. ``at=None`` means ``P5``; ``imgsz`` matters only with ``pos_emb``.

    Spelling is normalised and unknown choices are refused on construction, so every ``Request`` is valid.

    * ``at``: one insertion point or several, comma-separated (``"P3,P4,P5"``); one MHSA row goes after each.
    * ``from_yaml``: the user's own model YAML as the base, in place of the release's ``base``/``task`` config (so
      ``base`` and ``task`` must not be given with it; they stay ``None``). ``scale`` may then be ``None``: it is
      settled from the file (see :func:`mhsa_patch.modelyaml.emit.generate`).
    * ``channels``: the channels MHSA gets, one value per insertion point or one for all; needed where they come
      from a module gen-yaml does not know.
    * ``layer``: the layer to add, by name (None: the first of ``patches.LAYERS``); options its ``LayerSpec`` does
      not list in ``options`` are refused.
    """

    scale: str | None
    base: str | None = None
    task: str | None = None
    heads: int = 4
    pos_emb: bool = False
    imgsz: int = 640
    at: str | None = None
    lateral: str = "attention"
    from_yaml: str | None = None
    channels: tuple[int, ...] | None = None
    layer: str | None = None
    extra: tuple = ()  # the target's user layers as LayerSpecs (``engine.user_layers(target)``), for ``layer``

    def __post_init__(self) -> None:
        spec = layer_spec(self.layer, self.extra)
        from_yaml = None if self.from_yaml is None or str(self.from_yaml) == "" else str(self.from_yaml)
        if from_yaml is not None and (self.base is not None or self.task is not None):
            given = " and ".join(f"--{k}" for k in ("base", "task") if getattr(self, k) is not None)
            raise UsageError(f"--from {from_yaml}: the model comes from that file, {given} cannot apply: drop {given}")
        scale = None if self.scale is None else str(self.scale).strip().lower()
        base = None if from_yaml else str(self.base or "yolov8").strip().lower()
        task = None if from_yaml else str(self.task or "detect").strip().lower()
        lateral = str(self.lateral).strip().lower()
        if scale is None and from_yaml is None:
            raise UsageError("--scale is required (n, s, m, l or x)")
        if scale is not None and scale not in SCALES:
            raise UsageError(f"unknown scale '{self.scale}': choose one of {', '.join(SCALES)}")
        if base is not None and base not in BASES:
            raise UsageError(f"unknown base '{self.base}': choose one of {', '.join(BASES)}")
        if task is not None and task not in TASKS:
            raise UsageError(f"unknown task '{self.task}': choose one of {', '.join(TASKS)}")
        if lateral not in LATERALS:
            raise UsageError(f"unknown lateral '{self.lateral}': choose one of {', '.join(LATERALS)}")
        if not isinstance(self.heads, int) or isinstance(self.heads, bool) or self.heads <= 0:
            raise UsageError(f"--heads must be a positive integer, got {self.heads}")
        if not isinstance(self.imgsz, int) or isinstance(self.imgsz, bool) or self.imgsz <= 0:
            raise UsageError(f"--imgsz must be a positive integer, got {self.imgsz}")
        at = None if self.at is None or str(self.at).strip() == "" else str(self.at).strip()
        if at is not None:
            points = [p.strip() for p in at.split(",")]
            if "" in points:
                raise UsageError(f"--at {at}: an empty insertion point (write --at P3,P4,P5)")
            points = [p.upper() if re.fullmatch(r"[pP]\d+", p) else p for p in points]
            seen = [p for k, p in enumerate(points) if p.lower() in (q.lower() for q in points[:k])]
            if seen:
                raise UsageError(f"--at {at}: {seen[0]} is given twice")
            at = ",".join(points)
        channels = self.channels
        if channels is not None:
            raw = channels
            if isinstance(channels, str):
                channels = [c for c in channels.split(",")] if channels.strip() else []
            elif isinstance(channels, int):
                channels = [channels]
            text = raw if isinstance(raw, str) else ",".join(map(str, channels))
            channels = tuple(_positive(c, f"--channels {text}:") for c in channels)
            n_points = len(at.split(",")) if at else 1
            if len(channels) not in (1, n_points):
                raise UsageError(
                    f"--channels {text}: give one value, or one per --at point ({n_points}: {at or 'P5'}), in order"
                )
        given = {
            "at": at is not None, "lateral": lateral != "attention", "channels": channels is not None,
            "heads": self.heads != 4, "pos_emb": bool(self.pos_emb),
        }  # fmt: skip
        for option, is_given in given.items():
            if is_given and option not in spec.options:
                flag = "--" + option.replace("_", "-")
                raise UsageError(f"{flag} does not apply to --layer {spec.name}: {spec.note or 'it takes no options'}")
        values = {"scale": scale, "base": base, "task": task, "lateral": lateral, "at": at}
        values.update(from_yaml=from_yaml, channels=channels, layer=spec.name)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "pos_emb", bool(self.pos_emb))

    @property
    def spec(self) -> LayerSpec:
        """The layer's description (``patches.LAYERS``, or a user layer's)."""
        return layer_spec(self.layer, self.extra)

    @property
    def points(self) -> tuple[str, ...]:
        """The insertion points as given, in order (``("P5",)`` by default)."""
        return tuple(self.at.split(",")) if self.at else ("P5",)


def command_line(req: Request) -> str:
    """The canonical command that produces this file's content (options that change nothing are left out)."""
    parts = ["mhsa-patch gen-yaml"]
    if req.scale is not None:
        parts.append(f"--scale {req.scale}")
    if req.from_yaml is not None:
        parts.append(f"--from {shlex.quote(req.from_yaml)}")
    if req.base not in (None, "yolov8"):
        parts.append(f"--base {req.base}")
    if req.task not in (None, "detect"):
        parts.append(f"--task {req.task}")
    if req.layer not in (None, DEFAULT_LAYER):
        parts.append(f"--layer {req.layer}")
    if req.at is not None and str(req.at) != "P5":
        parts.append(f"--at {req.at}")
    if req.channels is not None:
        parts.append(f"--channels {','.join(map(str, req.channels))}")
    if req.heads != 4:
        parts.append(f"--heads {req.heads}")
    if req.pos_emb:
        parts.append("--pos-emb")
        if req.imgsz != 640:
            parts.append(f"--imgsz {req.imgsz}")
    if req.lateral != "attention":
        parts.append(f"--lateral {req.lateral}")
    return " ".join(parts)
