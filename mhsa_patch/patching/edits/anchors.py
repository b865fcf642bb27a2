"""Where each edit hangs, declared once as data and found by structure, never by line number or text search.

An anchor names one module-level statement: ``Anchor("assign", "__all__")``, ``Anchor("from", ".conv")``,
``Anchor("def", "parse_model")``, or the end of the module. The same declaration is matched two ways:

* on a libcst tree, with libcst matchers (:meth:`Anchor.find`), when a file is parsed whole;
* on an ``ast`` tree (:meth:`Anchor.find_ast`), by apply's fast path, which parses only the anchor statements with
  libcst (on ``tasks.py`` that is ``parse_model`` and one import instead of 2,400 lines).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional, Union

import libcst as cst
import libcst.matchers as m
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

    def matcher(self) -> m.BaseMatcherNode:
        if self.kind == "assign":
            return m.SimpleStatementLine(body=[m.Assign(targets=[m.ZeroOrMore(), m.AssignTarget(m.Name(self.name)), m.ZeroOrMore()])])
        if self.kind == "from":
            return m.SimpleStatementLine(
                body=[m.ImportFrom(names=~m.ImportStar()) & m.MatchIfTrue(lambda n: import_module_name(n) == self.name)]
            )
        if self.kind == "def":
            return m.FunctionDef(name=m.Name(self.name))
        raise ValueError(self.kind)

    def matches(self, stmt: cst.CSTNode) -> bool:
        return self.kind != "end" and m.matches(stmt, self.matcher())

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
            if self.kind == "assign" and isinstance(node, ast.Assign):
                if any(isinstance(t, ast.Name) and t.id == self.name for t in node.targets):
                    return node
            elif self.kind == "from" and isinstance(node, ast.ImportFrom):
                if import_module_name(node) == self.name and not any(a.name == "*" for a in node.names):
                    return node
            elif self.kind == "def" and isinstance(node, ast.FunctionDef) and node.name == self.name:
                return node
        raise PatchError(f"{self} not found")
