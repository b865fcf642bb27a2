"""The structural edits, one class per kind of edit, each with its inverse beside it.

Every edit finds its anchor by the code's structure (module-level statements, the ``parse_model`` function, its
if/elif chain), never by line numbers or text search. Every inserted piece carries the marker comment
``# mhsa-patch``, so that ``find`` can tell the tool's own pieces from a hand-pasted copy of the tutorial, and
``remove`` takes out exactly what ``add`` put in:

- ``add`` then ``remove`` on a stock file gives back the stock file, byte for byte;
- ``add`` never runs when ``find`` already sees the piece (the engine makes that a no-op).

Nothing here reads or writes files or prints: modules in, modules out.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import libcst as cst
from libcst.helpers import get_full_name_for_node

from mhsa_patch.errors import PatchError
from mhsa_patch.patching.layers import Layer
from mhsa_patch.patching.target import TARGET_FILES

MARK = "# mhsa-patch"  # on the physical line of every inserted name, and on the inserted branch's header
CLASS_MARK = "# mhsa-patch: {name} ({summary}), added by mhsa-patch; 'mhsa-patch revert' removes it"
MAX_LINE = 120  # ultralytics' line length; wrapped sequences wrap past it


@dataclass
class Found:
    """One occurrence of a layer's name that an edit is responsible for."""

    edit: str  # the edit's key, e.g. "class", "__all__", "import", "branch"
    marked: bool  # carries the tool's marker
    node: cst.CSTNode  # for line numbers in messages (resolved lazily: positions cost a full metadata pass)
    current: bool = True  # for marked pieces: identical to what the tool would insert now


def _is_mark(comment: Optional[cst.Comment]) -> bool:
    return comment is not None and comment.value.startswith(MARK)


def _marker_line() -> cst.TrailingWhitespace:
    return cst.TrailingWhitespace(whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(MARK))


def _unmarked_line(tw: cst.TrailingWhitespace) -> cst.TrailingWhitespace:
    return tw.with_changes(whitespace=cst.SimpleWhitespace(""), comment=None)


def _newline_ws(ws) -> bool:
    return isinstance(ws, cst.ParenthesizedWhitespace)


def _with_first_line(comma: cst.Comma, first_line: cst.TrailingWhitespace) -> cst.Comma:
    """The comma with the end of its line replaced (a comma whose line does not end keeps its whitespace)."""
    ws = comma.whitespace_after
    return comma.with_changes(whitespace_after=ws.with_changes(first_line=first_line)) if _newline_ws(ws) else comma


# --------------------------------------------------------------------------------------------------------------------
# Sequences of names: __all__ lists/tuples and `from x import (...)` lists share one insert/remove algorithm.
# --------------------------------------------------------------------------------------------------------------------


class _Seq:
    """A view of a bracketed sequence of names inside a module-level statement line.

    Style rules, so the host's layout survives: one-name-per-line sequences get the new name on its own line (at its
    sorted position if the sequence is sorted), wrapped sequences get it appended to the last line; trailing commas
    are kept as they were; the marker goes at the end of the physical line holding the new name.
    """

    def __init__(self, line: cst.SimpleStatementLine, container: cst.CSTNode, elements: Sequence, closing, kind: str):
        self.line, self.container, self.elements, self.closing, self.kind = line, container, list(elements), closing, kind

    # -- reading -----------------------------------------------------------------------------------------------------
    @staticmethod
    def name_of(el) -> Optional[str]:
        if isinstance(el, cst.ImportAlias):
            node = el.asname.name if el.asname else el.name
            return node.value if isinstance(node, cst.Name) else None
        if isinstance(el, cst.Element) and isinstance(el.value, cst.SimpleString):
            value = el.value.evaluated_value
            return value if isinstance(value, str) else None
        return None

    def names(self) -> list[Optional[str]]:
        return [self.name_of(e) for e in self.elements]

    def closing_ws(self):
        return self.closing.whitespace_before if self.closing is not None else None

    def is_marked(self, i: int) -> bool:
        el = self.elements[i]
        if isinstance(el.comma, cst.Comma) and _newline_ws(el.comma.whitespace_after):
            return _is_mark(el.comma.whitespace_after.first_line.comment)
        if i != len(self.elements) - 1:
            return False
        ws = self.closing_ws()
        if _newline_ws(ws):
            return _is_mark(ws.first_line.comment)
        return _is_mark(self.line.trailing_whitespace.comment)

    # -- writing -----------------------------------------------------------------------------------------------------
    def _rebuild(self, elements, closing_ws=None, line_comment=...) -> cst.SimpleStatementLine:
        closing = self.closing
        if closing is not None and closing_ws is not None:
            closing = closing.with_changes(whitespace_before=closing_ws)
        if self.kind == "import":
            container = self.container.with_changes(names=elements, rpar=closing)
        elif isinstance(self.container, cst.List):
            container = self.container.with_changes(elements=elements, rbracket=closing)
        else:
            container = self.container.with_changes(elements=elements, rpar=[*self.container.rpar[:-1], closing])
        line = self.line.deep_replace(self.container, container)
        if line_comment is not ...:
            tw = line.trailing_whitespace
            tw = _marker_line().with_changes(newline=tw.newline) if line_comment else _unmarked_line(tw)
            line = line.with_changes(trailing_whitespace=tw)
        return line

    def _separator(self) -> cst.Comma:
        """The comma that sits between two names in this sequence (its own line's comment dropped)."""
        for el in self.elements[:-1]:
            if isinstance(el.comma, cst.Comma):
                ws = el.comma.whitespace_after
                if _newline_ws(ws):
                    ws = ws.with_changes(first_line=_unmarked_line(ws.first_line))
                return el.comma.with_changes(whitespace_after=ws)
        opening = self.opening_ws()
        if _newline_ws(opening):  # a single name on its own line: the opening bracket's line break is the template
            return cst.Comma(whitespace_after=opening.with_changes(first_line=cst.TrailingWhitespace(), empty_lines=()))
        return cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))

    def opening_ws(self):
        if self.kind == "import":
            return self.container.lpar.whitespace_after if self.container.lpar is not None else None
        if isinstance(self.container, cst.List):
            return self.container.lbracket.whitespace_after
        return self.container.lpar[0].whitespace_after

    def _wrapping_separator(self) -> Optional[cst.Comma]:
        for el in self.elements[:-1]:
            if isinstance(el.comma, cst.Comma) and _newline_ws(el.comma.whitespace_after):
                ws = el.comma.whitespace_after
                return el.comma.with_changes(whitespace_after=ws.with_changes(first_line=_unmarked_line(ws.first_line)))
        return None

    def one_per_line(self) -> bool:
        between = [e.comma for e in self.elements[:-1]]
        if between:
            return all(isinstance(c, cst.Comma) and _newline_ws(c.whitespace_after) for c in between)
        return _newline_ws(self.closing_ws())

    def new_element(self, name: str):
        if self.kind == "import":
            return cst.ImportAlias(name=cst.Name(name))
        quote = '"'
        for el in self.elements:
            if isinstance(el.value, cst.SimpleString):
                quote = el.value.quote
                break
        return cst.Element(value=cst.SimpleString(f"{quote}{name}{quote}"))

    def insert(self, name: str, module: cst.Module) -> cst.SimpleStatementLine:
        if not self.elements:
            raise PatchError("empty")
        new = self.new_element(name)
        names = self.names()
        if self.one_per_line():
            sorted_ok = all(n is not None for n in names) and names == sorted(names)
            pos = sum(1 for n in names if n < name) if sorted_ok else len(names)
        else:
            pos = len(names)
        els = list(self.elements)
        if pos < len(els):  # in the middle: a separator comma whose line ends with the marker
            sep = self._separator()
            if not _newline_ws(sep.whitespace_after):
                raise PatchError("internal: middle insertion into a wrapped sequence")
            new = new.with_changes(comma=sep.with_changes(whitespace_after=sep.whitespace_after.with_changes(first_line=_marker_line())))
            els.insert(pos, new)
            return self._rebuild(els)
        last = els[-1]
        if isinstance(last.comma, cst.Comma) and _newline_ws(last.comma.whitespace_after):
            # trailing comma at the end of a line: the new name gets a line of its own and the closing layout
            ws = last.comma.whitespace_after
            new = new.with_changes(comma=last.comma.with_changes(whitespace_after=ws.with_changes(first_line=_marker_line())))
            els[-1] = last.with_changes(comma=_with_first_line(self._separator(), ws.first_line))
            els.append(new)
            return self._rebuild(els)
        # no trailing comma (or one on the same line): the new name takes over the old last name's comma
        new = new.with_changes(comma=last.comma)
        closing_ws = self.closing_ws()
        if _newline_ws(closing_ws):
            if _is_mark(closing_ws.first_line.comment) or closing_ws.first_line.comment is not None:
                raise PatchError("a comment after the last name")
            els[-1] = last.with_changes(comma=self._separator())
            els.append(new)
            return self._rebuild(els, closing_ws=closing_ws.with_changes(first_line=_marker_line()))
        if self.line.trailing_whitespace.comment is not None:
            raise PatchError("a comment at the end of the statement")
        els[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        els.append(new)
        line = self._rebuild(els, line_comment=True)
        wrap = self._wrapping_separator()
        if wrap is not None and _longest_line(module, line) > max(MAX_LINE, _longest_line(module, self.line)):
            els[-2] = last.with_changes(comma=wrap)
            line = self._rebuild(els, line_comment=True)
        return line

    def remove(self, i: int) -> cst.SimpleStatementLine:
        """Inverse of ``insert`` for element ``i`` (and the plain way to drop a hand-pasted name)."""
        els = list(self.elements)
        el = els.pop(i)
        closing_ws = None
        line_comment = ...
        if i == len(els) and els:  # it was the last name
            prev = els[-1]
            trailing_newline = isinstance(el.comma, cst.Comma) and _newline_ws(el.comma.whitespace_after)
            if trailing_newline:  # the old last name gets the closing layout back, keeping its own line's comment
                own = prev.comma.whitespace_after.first_line if _newline_ws(prev.comma.whitespace_after) else None
                els[-1] = prev.with_changes(comma=_with_first_line(el.comma, own or cst.TrailingWhitespace()))
            else:
                els[-1] = prev.with_changes(comma=el.comma)  # the old last name gets its comma style back
                ws = self.closing_ws()
                if _newline_ws(ws) and _is_mark(ws.first_line.comment):
                    closing_ws = ws.with_changes(first_line=_unmarked_line(ws.first_line))
                elif _is_mark(self.line.trailing_whitespace.comment):
                    line_comment = False
        elif not els:
            raise PatchError("cannot remove the only name of a sequence")
        return self._rebuild(els, closing_ws=closing_ws, line_comment=line_comment)


def _longest_line(module: cst.Module, node: cst.CSTNode) -> int:
    return max((len(s) for s in module.code_for_node(node).splitlines()), default=0)


def _all_seq(line: cst.SimpleStatementLine) -> Optional[_Seq]:
    if len(line.body) != 1 or not isinstance(line.body[0], cst.Assign):
        return None
    assign = line.body[0]
    if not any(isinstance(t.target, cst.Name) and t.target.value == "__all__" for t in assign.targets):
        return None
    value = assign.value
    if isinstance(value, cst.List):
        return _Seq(line, value, value.elements, value.rbracket, "list")
    if isinstance(value, cst.Tuple) and value.rpar:
        return _Seq(line, value, value.elements, value.rpar[-1], "tuple")
    raise PatchError("__all__ is neither a list nor a parenthesized tuple")


def _import_seq(line: cst.SimpleStatementLine) -> Optional[_Seq]:
    if len(line.body) != 1 or not isinstance(line.body[0], cst.ImportFrom):
        return None
    imp = line.body[0]
    if isinstance(imp.names, cst.ImportStar):
        return None
    return _Seq(line, imp, imp.names, imp.rpar, "import")


def _import_module_name(line: cst.SimpleStatementLine) -> str:
    imp = line.body[0]
    return "." * len(imp.relative) + (get_full_name_for_node(imp.module) if imp.module is not None else "")


# --------------------------------------------------------------------------------------------------------------------
# The edits
# --------------------------------------------------------------------------------------------------------------------


class Edit:
    """One structural edit. ``anchor`` names what it hangs on, for messages."""

    key: str
    anchor: str

    def find(self, module: cst.Module, layer: Layer) -> list[Found]:
        raise NotImplementedError

    def add(self, module: cst.Module, layer: Layer) -> cst.Module:
        raise NotImplementedError

    def remove(self, module: cst.Module, layer: Layer, found: Found) -> cst.Module:
        raise NotImplementedError

    def check_anchor(self, module: cst.Module, layer: Layer) -> None:
        """Raise ``PatchError`` naming the anchor when it is missing (used before anything is written)."""

    def ast_anchor(self, tree: ast.Module):
        """The top-level statement this edit changes, found with the (fast, C) ``ast`` parser, or ``END`` for an
        insertion at the end of the module. The engine then parses just that statement with libcst."""
        raise NotImplementedError


END = "end of module"


def _first(tree: ast.Module, predicate, anchor: str):
    for node in tree.body:
        if predicate(node):
            return node
    raise PatchError(f"{anchor} not found")


def _replace_body_stmt(module: cst.Module, old: cst.CSTNode, new: Optional[cst.CSTNode]) -> cst.Module:
    body = []
    for stmt in module.body:
        if stmt is old:
            if new is not None:
                body.append(new)
        else:
            body.append(stmt)
    return module.with_changes(body=body)


class _NameEntry(Edit):
    """A name in a bracketed sequence of a module-level statement: ``_seq_of`` says which statements hold one."""

    @staticmethod
    def _seq_of(stmt: cst.SimpleStatementLine) -> Optional[_Seq]:
        raise NotImplementedError

    drop_empty = False  # whether a statement left with no name goes (an import) or is refused (an __all__)

    def _is_anchor(self, stmt: cst.SimpleStatementLine) -> bool:
        return True

    def _lines(self, module):
        for stmt in module.body:
            if isinstance(stmt, cst.SimpleStatementLine):
                seq = self._seq_of(stmt)
                if seq is not None:
                    yield stmt, seq

    def _anchor(self, module):
        for stmt, seq in self._lines(module):
            if self._is_anchor(stmt):
                return stmt, seq
        raise PatchError(f"{self.anchor} not found")

    def check_anchor(self, module, layer):
        self._anchor(module)

    def find(self, module, layer):
        found = []
        for stmt, seq in self._lines(module):
            for i, name in enumerate(seq.names()):
                if name == layer.name:
                    marked = seq.is_marked(i) and self._is_anchor(stmt)
                    found.append(Found(self.key, marked, seq.elements[i]))
        return found

    def add(self, module, layer):
        stmt, seq = self._anchor(module)
        return _replace_body_stmt(module, stmt, seq.insert(layer.name, module))

    def remove(self, module, layer, found):
        for stmt, seq in self._lines(module):
            for i, el in enumerate(seq.elements):
                if el is found.node:
                    if len(seq.elements) == 1 and self.drop_empty:  # a hand-written `from x import MHSA`
                        return _replace_body_stmt(module, stmt, None)
                    return _replace_body_stmt(module, stmt, seq.remove(i))
        return module


class AllEntry(_NameEntry):
    """``__all__ = (..., "Conv")`` -> ``__all__ = (..., "Conv", "MHSA")  # mhsa-patch`` (in the host's style)."""

    key = "__all__"
    anchor = "__all__"
    _seq_of = staticmethod(_all_seq)

    def ast_anchor(self, tree):
        return _first(
            tree,
            lambda n: isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets),
            self.anchor,
        )


class ImportEntry(_NameEntry):
    """``from .conv import (CBAM, ...)`` -> ``from .conv import (CBAM, ..., MHSA)  # mhsa-patch``.

    ``find`` looks at every module-level ``from ... import`` so a hand-written ``from x import MHSA`` is seen too;
    only the anchor import carries the tool's own name.
    """

    key = "import"
    _seq_of = staticmethod(_import_seq)
    drop_empty = True

    def __init__(self, module_name: str):
        self.module_name = module_name
        self.anchor = f"'from {module_name} import (...)'"

    def _is_anchor(self, stmt):
        return _import_module_name(stmt) == self.module_name

    def ast_anchor(self, tree):
        return _first(
            tree,
            lambda n: isinstance(n, ast.ImportFrom) and "." * n.level + (n.module or "") == self.module_name,
            self.anchor,
        )


class ClassDefEdit(Edit):
    """Appends the layer's class (from patches/) at the end of the module, under a marker comment line."""

    key = "class"
    anchor = "module body"

    def _classes(self, module, layer):
        for stmt in module.body:
            if isinstance(stmt, cst.ClassDef) and stmt.name.value == layer.name:
                yield stmt

    @staticmethod
    def _is_ours(node: cst.ClassDef) -> bool:
        return any(_is_mark(line.comment) for line in node.leading_lines)

    def new_class(self, module: cst.Module, layer: Layer) -> cst.ClassDef:
        node = layer.class_node(module)
        mark = cst.EmptyLine(comment=cst.Comment(CLASS_MARK.format(name=layer.name, summary=layer.summary)))
        return node.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine(), mark])

    def ast_anchor(self, tree):
        return END

    def find(self, module, layer):
        found = []
        for node in self._classes(module, layer):
            ours = self._is_ours(node)
            current = True
            if ours:
                current = module.code_for_node(node) == module.code_for_node(self.new_class(module, layer))
            found.append(Found(self.key, ours, node, current))
        return found

    def add(self, module, layer):
        return module.with_changes(body=[*module.body, self.new_class(module, layer)])

    def remove(self, module, layer, found):
        return _replace_body_stmt(module, found.node, None)


class ParseModelBranch(Edit):
    """In ``parse_model``'s if/elif chain that ends with ``else: c2 = ch[f]``, adds before that ``else``::

        elif m is MHSA:  # mhsa-patch
            c2 = ch[f]
            args = [c2, *args]

    The chain is found by its shape, not by position: from 8.4.100 an ``if restricted ...: raise`` precedes it.
    """

    key = "branch"
    anchor = "parse_model"

    @staticmethod
    def _parse_model(module) -> cst.FunctionDef:
        for stmt in module.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "parse_model":
                return stmt
        raise PatchError("parse_model not found")

    @staticmethod
    def _is_final_else(orelse) -> bool:
        if not isinstance(orelse, cst.Else) or not isinstance(orelse.body, cst.IndentedBlock):
            return False
        body = orelse.body.body
        if len(body) != 1 or not isinstance(body[0], cst.SimpleStatementLine) or len(body[0].body) != 1:
            return False
        stmt = body[0].body[0]
        return (
            isinstance(stmt, cst.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0].target, cst.Name)
            and stmt.targets[0].target.value == "c2"
            and isinstance(stmt.value, cst.Subscript)
            and get_full_name_for_node(stmt.value.value) == "ch"
            and len(stmt.value.slice) == 1
            and isinstance(stmt.value.slice[0].slice, cst.Index)
            and get_full_name_for_node(stmt.value.slice[0].slice.value) == "f"
        )

    def _locate(self, module) -> tuple[cst.FunctionDef, cst.For, list[cst.If]]:
        func = self._parse_model(module)
        for stmt in func.body.body:
            if not isinstance(stmt, cst.For):
                continue
            for inner in stmt.body.body:
                if not isinstance(inner, cst.If):
                    continue
                chain = [inner]
                while isinstance(chain[-1].orelse, cst.If):
                    chain.append(chain[-1].orelse)
                if self._is_final_else(chain[-1].orelse):
                    return func, stmt, chain
        raise PatchError("the if/elif chain ending in 'else: c2 = ch[f]' not found in parse_model")

    def _chain(self, module) -> tuple[cst.FunctionDef, list[cst.If]]:
        func, _, chain = self._locate(module)
        return func, chain

    def _with_chain(self, module: cst.Module, new_head: cst.If) -> cst.Module:
        """Put a rebuilt chain back along its path (module > parse_model > for > if): no whole-tree traversal,
        which on a 2,400-line tasks.py costs more than parsing it."""
        func, loop, chain = self._locate(module)

        def swap(block: cst.IndentedBlock, old, new) -> cst.IndentedBlock:
            return block.with_changes(body=[new if s is old else s for s in block.body])

        new_loop = loop.with_changes(body=swap(loop.body, chain[0], new_head))
        new_func = func.with_changes(body=swap(func.body, loop, new_loop))
        return _replace_body_stmt(module, func, new_func)

    @staticmethod
    def _relink(chain: list[cst.If], index: int, replacement) -> cst.If:
        """The chain's head after ``chain[index]`` is replaced by ``replacement`` (an If, or the orelse to splice)."""
        node = replacement
        for branch in reversed(chain[:index]):
            node = branch.with_changes(orelse=node)
        return node

    def check_anchor(self, module, layer):
        self._chain(module)

    def ast_anchor(self, tree):
        return _first(tree, lambda n: isinstance(n, ast.FunctionDef) and n.name == "parse_model", "parse_model")

    def new_branch(self, module: cst.Module, layer: Layer, orelse) -> cst.If:
        body = cst.IndentedBlock(body=layer.rule_body(module), header=_marker_line())
        test = cst.Comparison(
            left=cst.Name("m"), comparisons=[cst.ComparisonTarget(operator=cst.Is(), comparator=cst.Name(layer.name))]
        )
        return cst.If(test=test, body=body, orelse=orelse)

    @staticmethod
    def _names_in(node: cst.CSTNode, name: str) -> list[cst.Name]:
        hits: list[cst.Name] = []

        class V(cst.CSTVisitor):
            def visit_Name(self, n: cst.Name) -> None:
                if n.value == name:
                    hits.append(n)

        node.visit(V())
        return hits

    def find(self, module, layer):
        func, chain = self._chain(module)
        found, seen = [], set()
        for branch in chain[1:]:
            if any(n.value == layer.name for n in self._names_in(branch.test, layer.name)):
                ours = _is_mark(branch.body.header.comment) if isinstance(branch.body, cst.IndentedBlock) else False
                current = True
                if ours:
                    mine = self.new_branch(module, layer, branch.orelse)
                    current = module.code_for_node(mine.body) == module.code_for_node(branch.body) and (
                        module.code_for_node(mine.test) == module.code_for_node(branch.test)
                    )
                found.append(Found(self.key, ours, branch, current))
                seen.update(id(n) for n in self._names_in(branch.test, layer.name))
        for n in self._names_in(func, layer.name):  # e.g. MHSA pasted into a `m in {...}` set
            if id(n) not in seen:
                found.append(Found(self.key, False, n))
        return found

    def add(self, module, layer):
        func, chain = self._chain(module)
        last = chain[-1]
        new_last = last.with_changes(orelse=self.new_branch(module, layer, last.orelse))
        return self._with_chain(module, self._relink(chain, len(chain) - 1, new_last))

    def remove(self, module, layer, found):
        func, chain = self._chain(module)
        if isinstance(found.node, cst.If):
            for i, branch in enumerate(chain[1:], start=1):
                if branch is found.node:
                    return self._with_chain(module, self._relink(chain, i, branch.orelse))
        # a bare name elsewhere in parse_model: only an element of a set/tuple/list literal can be dropped safely
        parent = _container_of(func, found.node)
        if parent is None:
            raise PatchError(f"cannot remove the hand-written use of {layer.name} in parse_model; edit it by hand")
        seq, element = parent
        elements = [e for e in seq.elements if e is not element]
        if elements and not isinstance(element.comma, cst.Comma):
            elements[-1] = elements[-1].with_changes(comma=element.comma)
        return module.deep_replace(seq, seq.with_changes(elements=elements))


def _container_of(root: cst.CSTNode, name: cst.Name):
    """The (set/tuple/list, element) that holds ``name`` directly, if any."""
    holder = []

    class P(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, (cst.Set, cst.Tuple, cst.List)):
                for el in node.elements:
                    if el.value is name:
                        holder.append((node, el))
            return True

    root.visit(P())
    return holder[0] if holder else None


# The edits per file, in order, declared once. Paths are relative to the ultralytics package folder.
EDITS: dict[str, tuple[Edit, ...]] = dict(
    zip(
        TARGET_FILES,  # nn/modules/conv.py, nn/modules/__init__.py, nn/tasks.py
        (
            (AllEntry(), ClassDefEdit()),
            (ImportEntry(".conv"), AllEntry()),
            (ImportEntry("ultralytics.nn.modules"), ParseModelBranch()),
        ),
    )
)
