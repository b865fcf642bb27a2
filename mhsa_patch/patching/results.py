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
    UNSUPPORTED = "unsupported"  # its anchor is not found here, or the insertion is refused: apply would refuse

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
    old: Optional[bytes]  # None: the file is new (a user layer's module)
    new: Optional[bytes]  # None: the file goes (revert of a user layer's module)

    @property
    def what(self) -> str:
        """``new``, ``removed`` or ``changed``, for the line apply and revert print."""
        return "new" if self.old is None else "removed" if self.new is None else "changed"

    def diff(self) -> str:
        """The unified diff, as ``git diff`` shows it: only the lines that changed.

        Not ``difflib.unified_diff``: its matcher treats lines frequent in a long file (``)``, blank lines) as junk
        and then shows an unchanged ``)`` as removed and added again; lines are split on line breaks only (not on
        the form feeds or other separators ``str.splitlines`` also splits on)."""
        old, new = _lines(self.old or b""), _lines(self.new or b"")
        out = [
            "--- /dev/null\n" if self.old is None else f"--- a/ultralytics/{self.rel}\n",
            "+++ /dev/null\n" if self.new is None else f"+++ b/ultralytics/{self.rel}\n",
        ]
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for group in matcher.get_grouped_opcodes(3):
            (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
            out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@\n")
            for tag, a1, a2, b1, b2 in group:
                if tag == "equal":
                    out += [_diff_line(" ", line) for line in old[a1:a2]]
                    continue
                out += [_diff_line("-", line) for line in old[a1:a2]]
                out += [_diff_line("+", line) for line in new[b1:b2]]
        return "".join(out)


def _lines(data: bytes) -> list[str]:
    text = data.decode("utf-8")
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _diff_line(tag: str, line: str) -> str:
    return tag + line if line.endswith("\n") else f"{tag}{line}\n\\ No newline at end of file\n"


def _range(start: int, stop: int) -> str:
    """A hunk's line range as unified diffs write it (1-based start, then the length; an empty range names the line
    before it)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


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
    anchor: Optional[str] = None  # for an unsupported piece: the anchor it hangs on ("__all__", "parse_model")
    why: Optional[str] = None  # for an unsupported piece: apply's refusal, naming FILE:LINE where there is one

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
class UserState:
    """One user layer of a target (``apply --layer``), as status reports it."""

    layer: Any  # userlayers.UserLayer
    source_state: str  # "unchanged", "changed" (the file's hash differs), "missing", "unknown" (no journal), "ultralytics"
    module_state: str  # "ok", "edited" or "missing": its module file (always "ok" for ultralytics' own class)

    def to_dict(self) -> dict[str, Any]:
        u = self.layer
        return {
            "name": u.name,
            "kind": u.kind,
            "class": u.class_name or u.name,
            "source": u.source or None,
            "sha256": u.source_sha256 or None,
            "source_state": self.source_state,
            "module": u.rel or u.defined_in,
            "module_state": self.module_state,
            "reads": u.reads,
            "class_path": f"ultralytics.nn.modules.{u.module}.{u.name}",
        }


@dataclass(frozen=True)
class Status:
    target: Target
    state: State
    files: tuple[FileStatus, ...]
    notes: tuple[str, ...] = ()
    journal: Optional[Any] = field(default=None, compare=False)  # journal.Record, validated
    layers: tuple[str, ...] = ()
    readings: tuple = ()  # readings.InForce per layer: how the target's parse_model reads each layer's rows
    user_layers: tuple = ()  # UserState per user layer, in the order applied

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
                        | ({"anchor": p.anchor, "why": p.why} if p.state is PieceState.UNSUPPORTED else {})
                        for p in f.pieces
                    ],
                }
                for f in self.files
            },
            "readings": {r.layer: r.to_dict() for r in self.readings},
            "user_layers": [u.to_dict() for u in self.user_layers],
            "notes": list(self.notes),
            "unsupported": [  # what apply would refuse here for want of an anchor: empty where it can patch
                {"file": p.file, "edit": p.edit, "layer": p.layer, "line": p.line, "anchor": p.anchor, "why": p.why}
                for f in self.files
                for p in f.pieces
                if p.state is PieceState.UNSUPPORTED
            ],
        }
