"""A user layer's import in ``nn/modules/__init__.py``: one statement of its own, right before ``__all__``.

::

    from .transformer import (...)
    from .user_ECA import ECA  # mhsa-patch

    __all__ = (

The statement takes over the blank and comment lines above ``__all__`` (they stay above the imports' end), and its
inverse gives them back to the statement that follows it, so any number of user imports come and go in any order
and the file ends as it was. The class lives in ``nn/modules/user_ECA.py`` (``patching.userlayers``); the tool's
own layers are imported from ``.conv`` (:class:`~.names.ImportEntry`) instead.
"""

from __future__ import annotations

import libcst as cst

from mhsa_patch.patching.edits.anchors import Anchor, import_module_name
from mhsa_patch.patching.edits.base import Edit, Found, is_mark, marker_line
from mhsa_patch.patching.layers import Layer


def user_import_of(stmt) -> str | None:
    """The name ``from .user_<Name> import <Name>`` imports (marked or not), else None."""
    from mhsa_patch.patching.userlayers import PREFIX

    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1):
        return None
    node = stmt.body[0]
    if not isinstance(node, cst.ImportFrom) or isinstance(node.names, cst.ImportStar) or len(node.names) != 1:
        return None
    alias = node.names[0]
    if alias.asname is not None or not isinstance(alias.name, cst.Name):
        return None
    name = alias.name.value
    return name if import_module_name(node) == f".{PREFIX}{name}" else None


def is_user_import(stmt) -> bool:
    """The tool's own import of a user layer (marked)."""
    return user_import_of(stmt) is not None and is_mark(stmt.trailing_whitespace.comment)


class UserImport(Edit):
    key = "import"
    anchor = Anchor("assign", "__all__")  # inserted right before it

    def new_statement(self, layer: Layer) -> cst.SimpleStatementLine:
        node = cst.ImportFrom(
            module=cst.Name(layer.module),
            names=[cst.ImportAlias(name=cst.Name(layer.name))],
            relative=[cst.Dot()],
        )
        return cst.SimpleStatementLine(body=[node], trailing_whitespace=marker_line())

    def find(self, module, layer):
        found = []
        want = module.code_for_node(self.new_statement(layer))
        for stmt in module.body:
            if user_import_of(stmt) == layer.name:
                marked = is_mark(stmt.trailing_whitespace.comment)
                current = module.code_for_node(stmt.with_changes(leading_lines=())) == want
                found.append(Found(self.key, marked, stmt, current))
        return found

    def add(self, module, layer):
        anchor = self.anchor.find(module)
        body = []
        for stmt in module.body:
            if stmt is anchor:
                body.append(self.new_statement(layer).with_changes(leading_lines=stmt.leading_lines))
                body.append(stmt.with_changes(leading_lines=()))
            else:
                body.append(stmt)
        return module.with_changes(body=body)

    def remove(self, module, layer, found):
        body = list(module.body)
        i = next(k for k, s in enumerate(body) if s is found.node)
        lines = found.node.leading_lines
        del body[i]
        if i < len(body):
            body[i] = body[i].with_changes(leading_lines=[*lines, *body[i].leading_lines])
            return module.with_changes(body=body)
        return module.with_changes(body=body, footer=[*lines, *module.footer])
