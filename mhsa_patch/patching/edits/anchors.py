"""Where each edit hangs, declared once as data and found by structure, never by line number or text search.

An anchor names one module-level statement: ``Anchor("assign", "__all__")``, ``Anchor("from", ".conv")``,
``Anchor("def", "parse_model")``, or the end of the module. The same declaration is matched two ways:

* on a libcst tree (:meth:`Anchor.find`), when a file is parsed whole;
* on an ``ast`` tree (:meth:`Anchor.find_ast`), by apply's fast path, which parses only the anchor statements with
  libcst (on ``tasks.py`` that is ``parse_model`` and one import instead of 2,400 lines).

Both reduce a statement to the same key, ``(kind, name)``, and compare it with the anchor's. Not libcst.matchers:
importing that module costs about 0.2 s of CPU, 40 % of libcst's own parse + regenerate of the three files, for three
attribute checks (measured with ``python -X importtime``; ``examples/bench_engine.py`` holds the budget).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional, Union

import libcst as cst
from libcst.helpers import get_full_name_for_node

from mhsa_patch.errors import PatchError

END = "end of module"


def import_module_name(node: Union[cst.ImportFrom, ast.ImportFrom]) -> str:
    """``.conv``, ``ultralytics.nn.modules``: the module of a ``from ... import``, relative dots included."""
    if isinstance(node, ast.ImportFrom):
        return "." * node.level + (node.module or "")
    return "." * len(node.relative) + (get_full_name_for_node(node.module) if node.module is not None else "")


@dataclass(frozen=True)
class Anchor:
    kind: str  # "assign", "from", "def" or "end"
    name: str = ""

    def __str__(self) -> str:
        return {
            "assign": self.name,
            "from": f"'from {self.name} import (...)'",
            "def": self.name,
            "end": "module body",
        }[self.kind]

    def matches(self, stmt: cst.CSTNode) -> bool:
        return self.kind != "end" and (self.kind, self.name) in cst_keys(stmt)

    def find(self, module: cst.Module) -> Optional[cst.CSTNode]:
        """The first module-level statement this anchor names (None for the end of the module)."""
        if self.kind == "end":
            return None
        for stmt in module.body:
            if self.matches(stmt):
                return stmt
        raise PatchError(f"{self} not found")

    def find_ast(self, tree: ast.Module):
        """The same statement in an ``ast`` tree, or ``END``."""
        if self.kind == "end":
            return END
        for node in tree.body:
            if (self.kind, self.name) in ast_keys(node):
                return node
        raise PatchError(f"{self} not found")


def cst_keys(stmt: cst.CSTNode) -> set[tuple[str, str]]:
    """The anchor keys a libcst module-level statement answers to."""
    if isinstance(stmt, cst.FunctionDef):
        return {("def", stmt.name.value)}
    if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
        return set()
    small = stmt.body[0]
    if isinstance(small, cst.Assign):
        return {("assign", t.target.value) for t in small.targets if isinstance(t.target, cst.Name)}
    if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
        return {("from", import_module_name(small))}
    return set()


def ast_keys(node: ast.stmt) -> set[tuple[str, str]]:
    """The same keys for an ``ast`` statement."""
    if isinstance(node, ast.FunctionDef):
        return {("def", node.name)}
    if isinstance(node, ast.Assign):
        return {("assign", t.id) for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.ImportFrom) and not any(a.name == "*" for a in node.names):
        return {("from", import_module_name(node))}
    return set()
