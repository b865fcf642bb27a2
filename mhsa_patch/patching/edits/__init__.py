"""The structural edits, one module per kind of edit, each with its inverse beside it, declared per file as data.

Every edit finds its anchor by the code's structure (:mod:`.anchors`), never by line numbers or text search. Every
inserted piece carries the marker comment ``# mhsa-patch``, so that ``find`` can tell the tool's own pieces from a
hand-pasted copy of the tutorial, and ``remove`` takes out exactly what ``add`` put in. Nothing here reads or
writes files or prints: modules in, modules out.
"""

from __future__ import annotations

from mhsa_patch.patching.edits.anchors import END, Anchor
from mhsa_patch.patching.edits.base import MARK, Edit, Found
from mhsa_patch.patching.edits.branch import ParseModelBranch
from mhsa_patch.patching.edits.classdef import ClassDefEdit
from mhsa_patch.patching.edits.names import AllEntry, ImportEntry
from mhsa_patch.patching.edits.rebind import StarRebind
from mhsa_patch.patching.edits.userimport import UserImport

# The edits per file, in order, keyed by the file's path inside the ultralytics package. A user layer (kind "file")
# lives in a module of its own: conv.py only gives up a same-named hand-written piece to it (--force), and
# nn/modules/__init__.py imports it from its module; ultralytics' own class registered (kind "stock") is no piece of
# conv.py or nn/modules/__init__.py, only of nn/tasks.py (see Edit.modes). A user layer needs no rebinding in
# nn/modules/__init__.py: its import goes right before __all__, after any star import of a fork.
EDITS: dict[str, tuple[Edit, ...]] = {
    "nn/modules/conv.py": (
        AllEntry().with_modes(file="find", stock="skip"),
        ClassDefEdit().with_modes(file="find", stock="skip"),
    ),
    "nn/modules/__init__.py": (
        ImportEntry(".conv").with_modes(file="find", stock="skip"),
        AllEntry().with_modes(stock="skip"),
        StarRebind("nn/modules/__init__.py", ".conv").with_modes(file="skip", stock="skip"),
        UserImport().with_modes(builtin="skip", stock="skip"),
    ),
    "nn/tasks.py": (
        ImportEntry("ultralytics.nn.modules"),
        ParseModelBranch(),
        StarRebind("nn/tasks.py", "ultralytics.nn.modules").with_modes(stock="skip"),
    ),
}

__all__ = [
    "EDITS", "END", "MARK", "AllEntry", "Anchor", "ClassDefEdit", "Edit", "Found", "ImportEntry", "ParseModelBranch",
    "StarRebind", "UserImport",
]  # fmt: skip
