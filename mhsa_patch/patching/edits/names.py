"""A layer's name in a sequence of names: ``__all__`` entries and ``from x import (...)`` entries."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Callable, Optional

import libcst as cst

from mhsa_patch.errors import PatchError
from mhsa_patch.patching.edits.anchors import Anchor, import_module_name
from mhsa_patch.patching.edits.base import Edit, Found, drop_body_stmt, replace_body_stmt
from mhsa_patch.patching.edits.sequence import NameSequence, all_sequence, import_sequence
from mhsa_patch.patching.layers import layer_names


class NameEntry(Edit):
    """A name in a bracketed sequence of a module-level statement: ``sequence`` says which statements hold one.

    ``find`` looks at every such statement, so a hand-written ``from x import MHSA`` is seen too; only the anchor
    statement carries the tool's own name.
    """

    sequence: Callable[[cst.SimpleStatementLine, frozenset[str]], Optional[NameSequence]]
    drop_empty = False  # whether a statement left with no name goes (an import) or is refused (an __all__)
    context = None  # filemodel.FileContext, for the origin of a hand-written import

    def bound(self, context) -> "NameEntry":
        new = copy.copy(self)
        new.context = context
        return new

    def _origin(self, stmt: cst.SimpleStatementLine, name: str):
        node = stmt.body[0]
        if self.context is None or not isinstance(node, cst.ImportFrom):
            return None
        return self.context.named_origin(import_module_name(node), name)

    def _ours(self) -> frozenset[str]:
        """Every layer's name in this file's set (the tool's and the target's user layers)."""
        return self.context.names if self.context is not None else layer_names()

    def _lines(self, module) -> Iterator[tuple[cst.SimpleStatementLine, NameSequence]]:
        from mhsa_patch.patching.edits.rebind import is_rebind
        from mhsa_patch.patching.edits.userimport import is_user_import

        ours = self._ours()
        for stmt in module.body:
            if (
                isinstance(stmt, cst.SimpleStatementLine)
                and not any(is_rebind(stmt, n) for n in ours)
                and not is_user_import(stmt)
            ):
                seq = type(self).sequence(stmt, ours)
                if seq is not None:
                    yield stmt, seq

    def find(self, module, layer):
        found = []
        for stmt, seq in self._lines(module):
            for i, name in enumerate(seq.names()):
                if name == layer.name:
                    marked = seq.is_marked(i) and self.anchor.matches(stmt)
                    origin = None if marked else self._origin(stmt, seq.elements[i].name.value if hasattr(seq.elements[i], "name") else name)
                    found.append(Found(self.key, marked, seq.elements[i], origin=origin))
        return found

    def add(self, module, layer):
        stmt = self.anchor.find(module)
        seq = type(self).sequence(stmt, self._ours())
        return replace_body_stmt(module, stmt, seq.insert(layer.name, module))

    def remove(self, module, layer, found):
        for stmt, seq in self._lines(module):
            for i, el in enumerate(seq.elements):
                if el is found.node:
                    if len(seq.elements) == 1 and self.drop_empty:  # a hand-written `from x import MHSA`
                        return drop_body_stmt(module, stmt)
                    return replace_body_stmt(module, stmt, seq.remove(i))
        raise PatchError(f"{self.key}: the piece to remove is not in the module", node=found.node)


class AllEntry(NameEntry):
    """``__all__ = (..., "Conv")`` -> ``__all__ = (..., "Conv", "MHSA")  # mhsa-patch`` (in the host's style)."""

    key = "__all__"
    anchor = Anchor("assign", "__all__")
    sequence = staticmethod(all_sequence)


class ImportEntry(NameEntry):
    """``from .conv import (CBAM, ...)`` -> ``from .conv import (CBAM, ..., MHSA)  # mhsa-patch``."""

    key = "import"
    sequence = staticmethod(import_sequence)
    drop_empty = True

    def __init__(self, module_name: str):
        self.module_name = module_name
        self.anchor = Anchor("from", module_name)
