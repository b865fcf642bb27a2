"""What every edit shares: the marker, what ``find`` reports, and the interface (add, its inverse, find)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import libcst as cst

from mhsa_patch.patching.edits.anchors import Anchor
from mhsa_patch.patching.layers import Layer

MARK = "# mhsa-patch"  # on the physical line of every inserted name, and on the inserted branch's header
CLASS_MARK = "# mhsa-patch: {name} ({summary}), added by mhsa-patch; 'mhsa-patch revert' removes it"
MAX_LINE = 120  # ultralytics' line length; wrapped sequences wrap past it


@dataclass(frozen=True)
class Found:
    """One occurrence of a layer's name that an edit is responsible for."""

    edit: str  # the edit's key, e.g. "class", "__all__", "import", "branch"
    marked: bool  # carries the tool's marker
    node: cst.CSTNode  # for line numbers in messages (resolved lazily: positions cost a full metadata pass)
    current: bool = True  # for marked pieces: identical to what the tool would insert now
    origin: Any = None  # for hand-written imports: the origins.Origin of the class they bind (file, line, class)
    removable: bool = True  # False for a fork's star import: it stays, the tool's import is placed after it


def is_mark(comment: Optional[cst.Comment]) -> bool:
    return comment is not None and comment.value.startswith(MARK)


def marker_line() -> cst.TrailingWhitespace:
    return cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(MARK))


def unmarked_line(tw: cst.TrailingWhitespace) -> cst.TrailingWhitespace:
    return tw.with_changes(whitespace=cst.SimpleWhitespace(""), comment=None)


def replace_body_stmt(module: cst.Module, old: cst.CSTNode, new: Optional[cst.CSTNode]) -> cst.Module:
    """The module with one top-level statement replaced (or dropped): no whole-tree traversal."""
    body = [new if stmt is old else stmt for stmt in module.body]
    return module.with_changes(body=[stmt for stmt in body if stmt is not None])


def drop_body_stmt(module: cst.Module, old: cst.CSTNode) -> cst.Module:
    """The module without one top-level statement, and only its own lines: the blank lines and comments above it
    (libcst's ``leading_lines``) stay, above the next statement (a commented-out copy of it included)."""
    lines = list(getattr(old, "leading_lines", ()))
    body = list(module.body)
    i = next(k for k, stmt in enumerate(body) if stmt is old)
    del body[i]
    if not lines:
        return module.with_changes(body=body)
    if i < len(body):
        body[i] = body[i].with_changes(leading_lines=[*lines, *body[i].leading_lines])
        return module.with_changes(body=body)
    return module.with_changes(body=body, footer=[*lines, *module.footer])


class Edit:
    """One structural edit of one file: ``add`` and its inverse ``remove``, and ``find`` for what is there.

    ``add`` then ``remove`` on a stock file gives back the stock file, byte for byte; ``add`` never runs when
    ``find`` already sees the piece (the engine makes that a no-op). Modules in, modules out: no I/O, no printing.
    """

    key: str
    anchor: Anchor

    def find(self, module: cst.Module, layer: Layer) -> list[Found]:
        raise NotImplementedError

    def add(self, module: cst.Module, layer: Layer) -> cst.Module:
        raise NotImplementedError

    def remove(self, module: cst.Module, layer: Layer, found: Found) -> cst.Module:
        raise NotImplementedError

    inserts: bool = True  # whether ``add`` always inserts a piece (False: only where the file needs one)
    # What the edit does for each kind of layer (``Layer.kind``): "insert" (the default), "find" (only finds and, with
    # --force, removes a hand-written piece: a fork's ``class ECA`` in conv.py when a user layer ECA lives in a file
    # of its own) or "skip" (nothing: ultralytics' own CBAM is no piece of conv.py)
    modes: dict = {}

    def with_modes(self, **modes: str) -> "Edit":
        """This edit with ``modes`` for the kinds named (``file="find"``); declared once, in ``edits.EDITS``."""
        import copy

        new = copy.copy(self)
        new.modes = {**self.modes, **modes}
        return new

    def mode(self, layer: Layer) -> str:
        return self.modes.get(layer.kind, "insert")

    def wanted(self, layer: Layer) -> int:
        """How many pieces of ``layer`` this edit inserts (0 where it only finds or skips)."""
        return self.count(layer) if self.mode(layer) == "insert" else 0

    def bound(self, context) -> "Edit":
        """This edit for one file (``filemodel.FileContext``: the package's other modules, read on demand)."""
        return self

    def count(self, layer: Layer) -> int:
        """How many pieces a complete insertion of ``layer`` has in the file."""
        return 1

    def complete(self, module: cst.Module, layer: Layer, mine: list[Found]) -> bool:
        """Whether the marked pieces ``mine`` are all this file needs of ``layer`` (else apply re-inserts them)."""
        return len(mine) == self.wanted(layer) and all(f.current for f in mine)

    def check_anchor(self, module: cst.Module) -> None:
        """Raise ``PatchError`` naming the anchor when it is missing (used before anything is written)."""
        self.anchor.find(module)
