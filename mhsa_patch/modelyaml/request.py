"""What ``gen-yaml`` is asked for, validated once, when the request is made."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mhsa_patch.errors import PatchError

SCALES = ("n", "s", "m", "l", "x")
BASES = ("yolov8", "yolo11", "yolo26")
TASKS = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb"}
LATERALS = ("attention", "pre-attention")


@dataclass(frozen=True)
class Request:
    """What ``gen-yaml`` was asked for. ``at=None`` means ``P5``; ``imgsz`` matters only with ``pos_emb``.

    Spelling is normalised and unknown choices are refused on construction, so every ``Request`` is valid.
    """

    scale: str
    base: str = "yolov8"
    task: str = "detect"
    heads: int = 4
    pos_emb: bool = False
    imgsz: int = 640
    at: str | None = None
    lateral: str = "attention"

    def __post_init__(self) -> None:
        scale = str(self.scale).strip().lower()
        base = str(self.base).strip().lower()
        task = str(self.task).strip().lower()
        lateral = str(self.lateral).strip().lower()
        if scale not in SCALES:
            raise PatchError(f"unknown scale '{self.scale}': choose one of {', '.join(SCALES)}")
        if base not in BASES:
            raise PatchError(f"unknown base '{self.base}': choose one of {', '.join(BASES)}")
        if task not in TASKS:
            raise PatchError(f"unknown task '{self.task}': choose one of {', '.join(TASKS)}")
        if lateral not in LATERALS:
            raise PatchError(f"unknown lateral '{self.lateral}': choose one of {', '.join(LATERALS)}")
        if not isinstance(self.heads, int) or isinstance(self.heads, bool) or self.heads <= 0:
            raise PatchError(f"--heads must be a positive integer, got {self.heads}")
        if not isinstance(self.imgsz, int) or isinstance(self.imgsz, bool) or self.imgsz <= 0:
            raise PatchError(f"--imgsz must be a positive integer, got {self.imgsz}")
        at = None if self.at is None or str(self.at).strip() == "" else str(self.at).strip()
        if at is not None and re.fullmatch(r"[pP]\d+", at):
            at = at.upper()
        for name, value in (("scale", scale), ("base", base), ("task", task), ("lateral", lateral), ("at", at)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "pos_emb", bool(self.pos_emb))


def command_line(req: Request) -> str:
    """The canonical command that produces this file's content (options that change nothing are left out)."""
    parts = ["mhsa-patch gen-yaml", f"--scale {req.scale}"]
    if req.base != "yolov8":
        parts.append(f"--base {req.base}")
    if req.task != "detect":
        parts.append(f"--task {req.task}")
    if req.at is not None and str(req.at) != "P5":
        parts.append(f"--at {req.at}")
    if req.heads != 4:
        parts.append(f"--heads {req.heads}")
    if req.pos_emb:
        parts.append("--pos-emb")
        if req.imgsz != 640:
            parts.append(f"--imgsz {req.imgsz}")
    if req.lateral != "attention":
        parts.append(f"--lateral {req.lateral}")
    return " ".join(parts)
