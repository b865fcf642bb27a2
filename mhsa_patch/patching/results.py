"""What apply, revert and status return: frozen results, with the states as enums."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from mhsa_patch import __version__
from mhsa_patch.patching.target import Target


class State(str, Enum):
    """The state of a file, or of the whole install."""

    APPLIED = "applied"
    NOT_APPLIED = "not-applied"
    PARTIAL = "partial"
    CONFLICT = "conflict"

    def __str__(self) -> str:
        return self.value


class PieceState(str, Enum):
    """One layer's piece in one file."""

    MARKED = "marked"  # carries the tool's marker and is what this version inserts
    OUTDATED = "outdated"  # marked, but not what this version inserts
    UNMARKED = "unmarked"  # the layer's name without the marker: pasted by hand
    KEPT = "kept"  # a fork's parse_model branch that apply --force kept in force (its reading differs from ours)
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value


def combine(states) -> State:
    """The state of several parts (pieces of a file, files of an install)."""
    states = set(states)
    if State.CONFLICT in states:
        return State.CONFLICT
    if states and states <= {State.APPLIED}:
        return State.APPLIED
    if states and states <= {State.NOT_APPLIED}:
        return State.NOT_APPLIED
    return State.PARTIAL


@dataclass(frozen=True)
class Change:
    rel: str
    path: Path
    old: bytes
    new: bytes

    def diff(self) -> str:
        old = self.old.decode("utf-8").splitlines(keepends=True)
        new = self.new.decode("utf-8").splitlines(keepends=True)
        lines = difflib.unified_diff(old, new, f"a/ultralytics/{self.rel}", f"b/ultralytics/{self.rel}")
        return "".join(line if line.endswith(("\n", "\r")) else line + "\n" for line in lines)


@dataclass(frozen=True)
class Result:
    """What apply or revert did (or, with dry_run, would do)."""

    action: str
    target: Target
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    dry_run: bool = False

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)


@dataclass(frozen=True)
class Piece:
    file: str
    edit: str
    layer: str
    state: PieceState
    line: Optional[int] = None
    origin: Optional[str] = None  # a hand-written import's class, outside the target files: "nn/modules/MHSA.py:5"
    name: Optional[str] = None  # a class piece's class (BoT3's layer has two: BottleneckTransformer, BoT3)

    @property
    def label(self) -> str:
        """``MHSA import``, ``BottleneckTransformer class``: what a person reads in ``status``."""
        return f"{self.name or self.layer} {self.edit}"


@dataclass(frozen=True)
class FileStatus:
    rel: str
    state: State
    pieces: tuple[Piece, ...]
    modified_since_apply: Optional[bool] = None  # None: no journal entry to compare with


@dataclass(frozen=True)
class Status:
    target: Target
    state: State
    files: tuple[FileStatus, ...]
    notes: tuple[str, ...] = ()
    journal: Optional[Any] = field(default=None, compare=False)  # journal.Record, validated
    layers: tuple[str, ...] = ()
    readings: tuple = ()  # readings.InForce per layer: how the target's parse_model reads each layer's rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "ultralytics_version": self.target.version,
            "path": str(self.target.package),
            "tool_version": __version__,
            "layers": list(self.layers),
            "journal": None
            if self.journal is None
            else {
                "state": self.journal.state,
                "ultralytics_version": self.journal.ultralytics_version,
                "tool_version": self.journal.tool_version,
            },
            "files": {
                f.rel: {
                    "state": f.state.value,
                    "modified_since_apply": f.modified_since_apply,
                    "pieces": [
                        {"edit": p.edit, "layer": p.layer, "name": p.name, "state": p.state.value, "line": p.line, "origin": p.origin}
                        for p in f.pieces
                    ],
                }
                for f in self.files
            },
            "readings": {r.layer: r.to_dict() for r in self.readings},
            "notes": list(self.notes),
        }
