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

# The edits per file, in order, keyed by the file's path inside the ultralytics package.
EDITS: dict[str, tuple[Edit, ...]] = {
    "nn/modules/conv.py": (AllEntry(), ClassDefEdit()),
    "nn/modules/__init__.py": (ImportEntry(".conv"), AllEntry(), StarRebind("nn/modules/__init__.py", ".conv")),
    "nn/tasks.py": (ImportEntry("ultralytics.nn.modules"), ParseModelBranch(), StarRebind("nn/tasks.py", "ultralytics.nn.modules")),
}

__all__ = ["EDITS", "END", "MARK", "AllEntry", "Anchor", "ClassDefEdit", "Edit", "Found", "ImportEntry", "ParseModelBranch", "StarRebind"]
