"""The layer's class, appended at the end of the module under a marker comment line."""

from __future__ import annotations

import libcst as cst

from mhsa_patch.patching.edits.anchors import Anchor
from mhsa_patch.patching.edits.base import CLASS_MARK, Edit, Found, is_mark, replace_body_stmt
from mhsa_patch.patching.layers import Layer


class ClassDefEdit(Edit):
    """Appends the layer's classes (from patches/) at the end of the module::

        # mhsa-patch: MHSA (BoTNet multi-head self-attention), added by mhsa-patch; 'mhsa-patch revert' removes it
        class MHSA(nn.Module):
            ...
    """

    key = "class"
    anchor = Anchor("end")

    @staticmethod
    def _is_ours(node: cst.ClassDef) -> bool:
        return any(is_mark(line.comment) for line in node.leading_lines)

    def count(self, layer: Layer) -> int:
        return len(layer.class_names)

    def new_classes(self, module: cst.Module, layer: Layer) -> list[cst.ClassDef]:
        nodes = layer.class_nodes(module)
        mark = cst.EmptyLine(comment=cst.Comment(CLASS_MARK.format(name=layer.name, summary=layer.summary)))
        return [node.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine(), mark]) for node in nodes]

    def find(self, module, layer):
        found = []
        wanted = layer.class_names
        mine = {n.name.value: n for n in self.new_classes(module, layer)} if wanted else {}
        for stmt in module.body:
            if isinstance(stmt, cst.ClassDef) and stmt.name.value in wanted:
                ours = self._is_ours(stmt)
                current = not ours or module.code_for_node(stmt) == module.code_for_node(mine[stmt.name.value])
                found.append(Found(self.key, ours, stmt, current))
        return found

    def add(self, module, layer):
        return module.with_changes(body=[*module.body, *self.new_classes(module, layer)])

    def remove(self, module, layer, found):
        node = found.node
        comments = [i for i, line in enumerate(node.leading_lines) if line.comment is not None]
        if found.marked or not comments:
            return replace_body_stmt(module, node, None)
        # a hand-written class: comment lines above it (a commented-out copy, a note) stay, on the next statement
        kept = list(node.leading_lines[comments[0] :])
        body = list(module.body)
        i = body.index(node)
        del body[i]
        if i < len(body):
            body[i] = body[i].with_changes(leading_lines=[*kept, *body[i].leading_lines])
            return module.with_changes(body=body)
        return module.with_changes(body=body, footer=[*kept, *module.footer])
