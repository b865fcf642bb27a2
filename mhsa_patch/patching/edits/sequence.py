"""A bracketed sequence of names in a module-level statement: ``__all__`` lists and tuples, ``from x import (...)``.

Insertion keeps the host's layout: one-name-per-line sequences get the new name on its own line (at its sorted
position if the sequence is sorted), wrapped sequences get it appended to the last line (wrapped past 120 columns);
trailing commas stay as they were; the marker goes at the end of the physical line holding the new name. Removal is
the exact inverse. Several of the tool's layers may share a line (``(..., "MHSA", "BoT3")  # mhsa-patch``): the
marker stays while any of them is left there.

Whatever the last name carries stays with it: a comment on its line (``"v10Detect", #add``, ``"CBAM"  # 添加``, or
after the closing bracket of a wrapped sequence) stays on that name's line, and the new name gets a line of its own;
comment lines before the closing bracket stay before it.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from mhsa_patch.errors import PatchError
from mhsa_patch.patching.edits.base import MAX_LINE, is_mark, marker_line, unmarked_line


def _newline_ws(ws) -> bool:
    return isinstance(ws, cst.ParenthesizedWhitespace)


def _with_first_line(comma: cst.Comma, first_line: cst.TrailingWhitespace) -> cst.Comma:
    """The comma with the end of its line replaced (a comma whose line does not end keeps its whitespace)."""
    ws = comma.whitespace_after
    return comma.with_changes(whitespace_after=ws.with_changes(first_line=first_line)) if _newline_ws(ws) else comma


def _longest_line(module: cst.Module, node: cst.CSTNode) -> int:
    return max((len(s) for s in module.code_for_node(node).splitlines()), default=0)


class NameSequence:
    """A view of the names in one statement line. Subclasses say where the elements and brackets live."""

    def __init__(self, line: cst.SimpleStatementLine, container: cst.CSTNode, ours: frozenset[str]):
        self.line, self.container, self.ours = line, container, ours

    # -- what subclasses provide ---------------------------------------------------------------------------------------
    @property
    def elements(self) -> list:
        raise NotImplementedError

    @property
    def closing(self):
        raise NotImplementedError

    def opening_ws(self):
        raise NotImplementedError

    def _container_with(self, elements, closing) -> cst.CSTNode:
        raise NotImplementedError

    def new_element(self, name: str):
        raise NotImplementedError

    @staticmethod
    def name_of(el) -> Optional[str]:
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------------------------------------
    def names(self) -> list[Optional[str]]:
        return [self.name_of(e) for e in self.elements]

    def closing_ws(self):
        return self.closing.whitespace_before if self.closing is not None else None

    def _line_end(self, i: int) -> tuple[str, int]:
        """Where the physical line of element ``i`` ends: ("comma", j), ("closing", -1) or ("statement", -1)."""
        els = self.elements
        for j in range(i, len(els)):
            comma = els[j].comma
            if isinstance(comma, cst.Comma) and _newline_ws(comma.whitespace_after):
                return "comma", j
        return ("closing", -1) if _newline_ws(self.closing_ws()) else ("statement", -1)

    def _comment_at(self, end: tuple[str, int]) -> Optional[cst.Comment]:
        kind, j = end
        if kind == "comma":
            return self.elements[j].comma.whitespace_after.first_line.comment
        if kind == "closing":
            return self.closing_ws().first_line.comment
        return self.line.trailing_whitespace.comment

    def is_marked(self, i: int) -> bool:
        return is_mark(self._comment_at(self._line_end(i)))

    def _others_of_ours_on_line(self, i: int) -> bool:
        end = self._line_end(i)
        return any(k != i and n in self.ours and self._line_end(k) == end for k, n in enumerate(self.names()))

    # -- writing -------------------------------------------------------------------------------------------------------
    def _rebuild(self, elements, closing_ws=None, line_comment=...) -> cst.SimpleStatementLine:
        closing = self.closing
        if closing is not None and closing_ws is not None:
            closing = closing.with_changes(whitespace_before=closing_ws)
        line = self.line.deep_replace(self.container, self._container_with(elements, closing))
        if line_comment is not ...:  # True: the marker; False: no comment; a TrailingWhitespace: its comment
            tw = line.trailing_whitespace
            if isinstance(line_comment, cst.TrailingWhitespace):
                tw = tw.with_changes(whitespace=line_comment.whitespace, comment=line_comment.comment)
            else:
                tw = marker_line().with_changes(newline=tw.newline) if line_comment else unmarked_line(tw)
            line = line.with_changes(trailing_whitespace=tw)
        return line

    def _separator(self) -> cst.Comma:
        """The comma that sits between two names in this sequence (its own line's comment dropped)."""
        for el in self.elements[:-1]:
            if isinstance(el.comma, cst.Comma):
                ws = el.comma.whitespace_after
                if _newline_ws(ws):  # neither its line's comment nor the comment lines after it
                    ws = ws.with_changes(first_line=unmarked_line(ws.first_line), empty_lines=())
                return el.comma.with_changes(whitespace_after=ws)
        opening = self.opening_ws()
        if _newline_ws(opening):  # a single name on its own line: the opening bracket's line break is the template
            return cst.Comma(whitespace_after=opening.with_changes(first_line=cst.TrailingWhitespace(), empty_lines=()))
        return cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))

    def _wrapping_separator(self) -> Optional[cst.Comma]:
        for el in self.elements[:-1]:
            if isinstance(el.comma, cst.Comma) and _newline_ws(el.comma.whitespace_after):
                ws = el.comma.whitespace_after
                first_line = unmarked_line(ws.first_line)
                return el.comma.with_changes(whitespace_after=ws.with_changes(first_line=first_line, empty_lines=()))
        return None

    def _comment_wrap(self) -> cst.Comma:
        """The comma that ends the old last name's line with the comment the statement ended with (the user's):
        the host's wrapping layout where it has one, else a four-space continuation."""
        tw = self.line.trailing_whitespace
        first = cst.TrailingWhitespace(whitespace=tw.whitespace, comment=tw.comment)
        wrap = self._wrapping_separator()
        if wrap is not None:
            return _with_first_line(wrap, first)
        ws = cst.ParenthesizedWhitespace(first_line=first, indent=True, last_line=cst.SimpleWhitespace("    "))
        return cst.Comma(whitespace_after=ws)

    def one_per_line(self) -> bool:
        between = [e.comma for e in self.elements[:-1]]
        if between:
            return all(isinstance(c, cst.Comma) and _newline_ws(c.whitespace_after) for c in between)
        return _newline_ws(self.closing_ws())

    def insert(self, name: str, module: cst.Module) -> cst.SimpleStatementLine:
        if not self.elements:
            raise PatchError("an empty sequence of names", node=self.line)
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
                raise PatchError("internal: middle insertion into a wrapped sequence", node=self.line)
            new = new.with_changes(comma=_with_first_line(sep, marker_line()))
            els.insert(pos, new)
            return self._rebuild(els)
        last = els[-1]
        if isinstance(last.comma, cst.Comma) and _newline_ws(last.comma.whitespace_after):
            # trailing comma at the end of a line: the new name gets a line of its own and the closing layout
            ws = last.comma.whitespace_after
            new = new.with_changes(comma=_with_first_line(last.comma, marker_line()))
            els[-1] = last.with_changes(comma=_with_first_line(self._separator(), ws.first_line))
            els.append(new)
            return self._rebuild(els)
        # no trailing comma (or one on the same line): the new name takes over the old last name's comma
        new = new.with_changes(comma=last.comma)
        closing_ws = self.closing_ws()
        if _newline_ws(closing_ws):
            # the old last name's line keeps what the closing line had: nothing, the user's comment, or our marker
            els[-1] = last.with_changes(comma=_with_first_line(self._separator(), closing_ws.first_line))
            els.append(new)
            return self._rebuild(els, closing_ws=closing_ws.with_changes(first_line=marker_line()))
        comment = self.line.trailing_whitespace.comment
        els.append(new)
        if comment is not None and not (is_mark(comment) and names[-1] in self.ours):
            # the user's comment ends the statement: it stays on the old last name's line, the new name goes below
            if self.closing is None:
                raise PatchError(
                    "a comment after the last name of an import without brackets; put the names in brackets",
                    node=self.line,
                )
            els[-2] = last.with_changes(comma=self._comment_wrap())
            return self._rebuild(els, line_comment=True)
        els[-2] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        line = self._rebuild(els, line_comment=True)
        wrap = self._wrapping_separator()
        if wrap is not None and _longest_line(module, line) > max(MAX_LINE, _longest_line(module, self.line)):
            if comment is not None:  # the old last line holds names of ours: it keeps its marker (remove gives it back)
                wrap = _with_first_line(wrap, marker_line())
            els[-2] = last.with_changes(comma=wrap)
            line = self._rebuild(els, line_comment=True)
        return line

    def remove(self, i: int) -> cst.SimpleStatementLine:
        """Inverse of ``insert`` for element ``i`` (and the plain way to drop a hand-pasted name)."""
        keep_mark = self._others_of_ours_on_line(i)
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
                if _newline_ws(ws):
                    if isinstance(prev.comma, cst.Comma) and _newline_ws(prev.comma.whitespace_after):
                        closing_ws = ws.with_changes(first_line=prev.comma.whitespace_after.first_line)
                    elif is_mark(ws.first_line.comment) and not keep_mark:
                        closing_ws = ws.with_changes(first_line=unmarked_line(ws.first_line))
                elif is_mark(self.line.trailing_whitespace.comment) and not keep_mark:
                    own = prev.comma.whitespace_after.first_line if _newline_ws(prev.comma.whitespace_after) else None
                    # the user's comment that insert moved up to the old last name goes back to the statement's end
                    line_comment = own if own is not None and own.comment is not None else False
        elif not els:
            raise PatchError("cannot remove the only name of a sequence", node=self.line)
        return self._rebuild(els, closing_ws=closing_ws, line_comment=line_comment)


class _BracketedLiteral(NameSequence):
    """``__all__ = [...]`` or ``__all__ = (...)``: string elements."""

    @property
    def elements(self) -> list:
        return list(self.container.elements)

    def new_element(self, name: str):
        quote = '"'
        for el in self.elements:
            if isinstance(el.value, cst.SimpleString):
                quote = el.value.quote
                break
        return cst.Element(value=cst.SimpleString(f"{quote}{name}{quote}"))

    @staticmethod
    def name_of(el) -> Optional[str]:
        if isinstance(el, cst.Element) and isinstance(el.value, cst.SimpleString):
            value = el.value.evaluated_value
            return value if isinstance(value, str) else None
        return None


class ListSequence(_BracketedLiteral):
    @property
    def closing(self):
        return self.container.rbracket

    def opening_ws(self):
        return self.container.lbracket.whitespace_after

    def _container_with(self, elements, closing):
        return self.container.with_changes(elements=elements, rbracket=closing)


class TupleSequence(_BracketedLiteral):
    @property
    def closing(self):
        return self.container.rpar[-1]

    def opening_ws(self):
        return self.container.lpar[0].whitespace_after

    def _container_with(self, elements, closing):
        return self.container.with_changes(elements=elements, rpar=[*self.container.rpar[:-1], closing])


class ImportSequence(NameSequence):
    """``from x import (A, B)``: import aliases."""

    @property
    def elements(self) -> list:
        return list(self.container.names)

    @property
    def closing(self):
        return self.container.rpar

    def opening_ws(self):
        return self.container.lpar.whitespace_after if self.container.lpar is not None else None

    def _container_with(self, elements, closing):
        return self.container.with_changes(names=elements, rpar=closing)

    def new_element(self, name: str):
        return cst.ImportAlias(name=cst.Name(name))

    @staticmethod
    def name_of(el) -> Optional[str]:
        node = el.asname.name if el.asname else el.name
        return node.value if isinstance(node, cst.Name) else None


def all_sequence(line: cst.SimpleStatementLine, ours: frozenset[str]) -> Optional[NameSequence]:
    """The names of an ``__all__ = [...]`` or ``__all__ = (...)`` line, else None."""
    if len(line.body) != 1 or not isinstance(line.body[0], cst.Assign):
        return None
    assign = line.body[0]
    if not any(isinstance(t.target, cst.Name) and t.target.value == "__all__" for t in assign.targets):
        return None
    if isinstance(assign.value, cst.List):
        return ListSequence(line, assign.value, ours)
    if isinstance(assign.value, cst.Tuple) and assign.value.rpar:
        return TupleSequence(line, assign.value, ours)
    raise PatchError("__all__ is neither a list nor a parenthesized tuple", node=line)


def import_sequence(line: cst.SimpleStatementLine, ours: frozenset[str]) -> Optional[NameSequence]:
    """The names of a ``from x import (...)`` line (not a star import), else None."""
    if len(line.body) != 1 or not isinstance(line.body[0], cst.ImportFrom):
        return None
    if isinstance(line.body[0].names, cst.ImportStar):
        return None
    return ImportSequence(line, line.body[0], ours)
