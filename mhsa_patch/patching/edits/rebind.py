"""A fork's star import that rebinds a layer's name, and the tool's import placed after it so the tool's class wins.

Forks keep their MHSA in a file of their own and star-import it after ultralytics' imports, e.g. in ``nn/tasks.py``::

    from ultralytics.nn.modules import (..., MHSA)  # mhsa-patch
    from ultralytics.nn.modules.MHSA import *      # the fork's: rebinds MHSA to its own class

The star import also brings the fork's other classes, so it stays; ``apply --force`` puts the tool's import right
after the last such star import::

    from ultralytics.nn.modules.MHSA import *
    from ultralytics.nn.modules.conv import MHSA  # mhsa-patch

The source is the defining module (``conv``), never the package: importing ``ultralytics.nn.modules.MHSA`` sets
the package's attribute ``MHSA`` to that submodule. Whether a star import binds the name is read from the star-
imported module's source (``origins.Resolver``), inside the package only; one whose name comes from a target file
(``conv.py``, ``nn/modules/__init__.py``) is the tool's class after apply and is left alone.
"""

from __future__ import annotations

import copy

import libcst as cst

from mhsa_patch.patching.edits.anchors import Anchor, import_module_name
from mhsa_patch.patching.edits.base import Edit, Found, is_mark, marker_line, replace_body_stmt
from mhsa_patch.patching.edits.sequence import import_sequence
from mhsa_patch.patching.layers import Layer, layer_names

# The module the tool's rebinding imports from, per file (the class is in conv.py).
REBIND_SOURCE = {"nn/tasks.py": "ultralytics.nn.modules.conv", "nn/modules/__init__.py": ".conv"}


def rebind_source(rel: str, layer: Layer) -> str:
    """Where the tool's rebinding of ``layer`` imports it from in file ``rel``: the module that defines the class
    (conv for the tool's layers, ``user_ECA`` for a user layer)."""
    return REBIND_SOURCE[rel][: -len("conv")] + layer.module


def _is_source(module: str) -> bool:
    from mhsa_patch.patching.userlayers import PREFIX

    for source in REBIND_SOURCE.values():
        prefix = source[: -len("conv")]
        if module == source or (module.startswith(prefix + PREFIX) and module[len(prefix) :].isidentifier()):
            return True
    return False


def _star_module(stmt) -> str | None:
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        node = stmt.body[0]
        if isinstance(node, cst.ImportFrom) and isinstance(node.names, cst.ImportStar):
            return import_module_name(node)
    return None


def is_rebind(stmt, name: str) -> bool:
    """``from <REBIND_SOURCE> import NAME  # mhsa-patch``: the tool's own, never a hand-written import."""
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and is_mark(stmt.trailing_whitespace.comment)):
        return False
    node = stmt.body[0]
    return (
        isinstance(node, cst.ImportFrom)
        and _is_source(import_module_name(node))
        and not isinstance(node.names, cst.ImportStar)
        and len(node.names) == 1
        and node.names[0].asname is None
        and isinstance(node.names[0].name, cst.Name)
        and node.names[0].name.value == name
    )


class StarRebind(Edit):
    key = "star-import"
    inserts = False

    def __init__(self, rel: str, anchor_module: str):
        self.rel, self.source = rel, REBIND_SOURCE[rel]
        self.anchor = Anchor("from", anchor_module)  # the statement that carries the tool's import of the name
        self.context = None

    def bound(self, context) -> "StarRebind":
        new = copy.copy(self)
        new.context = context
        return new

    def count(self, layer: Layer) -> int:
        return 0  # none needed unless a star import rebinds the name

    def check_anchor(self, module) -> None:
        pass

    def _scan(self, module, layer):
        stars, rebinds, tool = [], [], []
        for i, stmt in enumerate(module.body):
            star = _star_module(stmt)
            if star is not None:
                origin = self.context.star_origin(star, layer.name) if self.context is not None else None
                if origin is not None and not origin.in_target:
                    stars.append((i, stmt, origin))
            elif is_rebind(stmt, layer.name):
                rebinds.append((i, stmt))
            elif self.anchor.matches(stmt):
                seq = import_sequence(stmt, self.context.names if self.context is not None else layer_names())
                if seq is not None and any(n == layer.name and seq.is_marked(k) for k, n in enumerate(seq.names())):
                    tool.append(i)
        return stars, rebinds, tool

    def find(self, module, layer):
        stars, rebinds, tool = self._scan(module, layer)
        later = [j for j, _ in rebinds] + tool
        found = [
            Found(self.key, False, stmt, origin=origin, removable=False)
            for i, stmt, origin in stars
            if not any(j > i for j in later)
        ]
        want = module.code_for_node(self.new_statement(layer))
        for j, stmt in rebinds:
            current = any(i < j for i, _, _ in stars) and module.code_for_node(stmt) == want
            found.append(Found(self.key, True, stmt, current))
        return found

    def complete(self, module, layer, mine) -> bool:
        return all(f.current for f in mine) and not any(not f.marked for f in self.find(module, layer))

    def new_statement(self, layer: Layer) -> cst.SimpleStatementLine:
        source = rebind_source(self.rel, layer)
        dots = len(source) - len(source.lstrip("."))
        name = source[dots:]
        node = cst.ImportFrom(
            module=cst.parse_expression(name) if name else None,
            names=[cst.ImportAlias(name=cst.Name(layer.name))],
            relative=[cst.Dot()] * dots,
        )
        return cst.SimpleStatementLine(body=[node], trailing_whitespace=marker_line())

    def add(self, module, layer):
        stars = [f for f in self.find(module, layer) if not f.marked]
        if not stars:
            return module
        last = stars[-1].node
        body = []
        for stmt in module.body:
            body.append(stmt)
            if stmt is last:
                body.append(self.new_statement(layer))
        return module.with_changes(body=body)

    def remove(self, module, layer, found):
        if not found.marked:
            raise ValueError("a fork's star import is never removed")
        return replace_body_stmt(module, found.node, None)
