"""The layer's branch in ``parse_model``'s if/elif chain, which turns YAML arguments into constructor arguments."""

from __future__ import annotations

import ast

import libcst as cst

from mhsa_patch.errors import PatchError
from mhsa_patch.patching.edits.anchors import Anchor
from mhsa_patch.patching.edits.base import Edit, Found, is_mark, marker_line, replace_body_stmt
from mhsa_patch.patching.layers import Layer

def _is_name(node, value: str) -> bool:
    return isinstance(node, cst.Name) and node.value == value


# Branch bodies that read a row's args as the tutorial's and the tool's do: the input channels, then the YAML args.
TUTORIAL_BODIES = frozenset(
    ast.dump(ast.parse(code))
    for code in (
        "args = [ch[f], *args]",
        "args = [ch[f], *args[0:]]",
        "args = [ch[f]] + args",
        "c2 = ch[f]\nargs = [c2, *args]",
        "args = [ch[f], *args]\nc2 = ch[f]",
    )
)


def _over_m(test) -> bool:
    """A test of the module chain: ``m is X``, ``m in {...}``, ``m in base_modules``, or such tests joined by or/and."""
    if isinstance(test, cst.Comparison):
        return _is_name(test.left, "m")
    if isinstance(test, cst.BooleanOperation):
        return _over_m(test.left) or _over_m(test.right)
    return False


class ParseModelBranch(Edit):
    """In ``parse_model``'s module chain, the if/elif over ``m`` in the layer loop, adds before its final ``else``
    (or after its last ``elif`` where it has none)::

        elif m is MHSA:  # mhsa-patch
            c2 = ch[f]
            args = [c2, *args]

    The chain is found by its structure, not by position or by what its ``else`` does: from 8.4.100 an
    ``if restricted ...: raise`` precedes it, and forks rewrite the fallback (``else: c2 = args[0] if args else
    ch[f]``, then a ``raise``). Of the ``if`` chains directly in the loop, the one with the most branches over ``m``
    (at least two: a fork's own one-branch chain is not it).
    """

    key = "branch"
    anchor = Anchor("def", "parse_model")

    def _locate(self, module) -> tuple[cst.FunctionDef, cst.For, list[cst.If]]:
        func = self.anchor.find(module)
        best: tuple[int, cst.For, list[cst.If]] | None = None
        for stmt in func.body.body:
            if not isinstance(stmt, cst.For):
                continue
            for inner in stmt.body.body:
                if not isinstance(inner, cst.If) or not _over_m(inner.test):
                    continue
                chain = [inner]
                while isinstance(chain[-1].orelse, cst.If):
                    chain.append(chain[-1].orelse)
                over = sum(_over_m(b.test) for b in chain)
                if over >= 2 and (best is None or over > best[0]):
                    best = (over, stmt, chain)
        if best is None:
            raise PatchError("the if/elif chain over m ('if m in ...: ... elif m is ...:') not found in parse_model's "
                             "layer loop", node=func)
        return func, best[1], best[2]

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
        return replace_body_stmt(module, func, new_func)

    @staticmethod
    def _relink(chain: list[cst.If], index: int, replacement) -> cst.If:
        """The chain's head after ``chain[index]`` is replaced by ``replacement`` (an If, or the orelse to splice)."""
        node = replacement
        for branch in reversed(chain[:index]):
            node = branch.with_changes(orelse=node)
        return node

    def check_anchor(self, module):
        self._chain(module)

    def new_branch(self, module: cst.Module, layer: Layer, orelse) -> cst.If:
        body = cst.IndentedBlock(body=layer.rule_body(module), header=marker_line())
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

    @staticmethod
    def selects_only(test, name: str) -> bool:
        """``m is NAME``, ``m == NAME``, ``m in {NAME}`` / ``(NAME,)`` / ``[NAME]``: a test true for the layer alone."""
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and _is_name(test.left, "m")):
            return False
        op, right = test.comparisons[0].operator, test.comparisons[0].comparator
        if isinstance(op, (cst.Is, cst.Equal)):
            return _is_name(right, name)
        if isinstance(op, cst.In) and isinstance(right, (cst.Set, cst.Tuple, cst.List)):
            return len(right.elements) == 1 and _is_name(right.elements[0].value, name)
        return False

    def owning_branch(self, module, name: cst.Name):
        """The ``if``/``elif`` whose test selects ``name``: directly (``m in {MHSA, X}``), or through a variable
        that holds it (``base_modules = frozenset({..., MHSA})`` ... ``if m in base_modules:``). None if neither."""
        func = self.anchor.find(module)
        ifs: list[cst.If] = []
        holders: set[str] = set()

        class V(cst.CSTVisitor):
            def visit_If(self, node: cst.If) -> None:
                ifs.append(node)

            def visit_Assign(self, node: cst.Assign) -> None:
                if any(n is name for n in ParseModelBranch._names_in(node.value, name.value)):
                    holders.update(t.target.value for t in node.targets if isinstance(t.target, cst.Name))

        func.visit(V())
        for stmt in module.body:  # a module-level set (older releases keep none, forks sometimes do)
            if isinstance(stmt, cst.SimpleStatementLine):
                stmt.visit(V())
        for branch in ifs:
            names = self._names_in(branch.test, name.value)
            if any(n is name for n in names) or any(self._names_in(branch.test, h) for h in holders):
                return branch
        return None

    @staticmethod
    def reads_args_like_the_tutorial(module, branch: cst.If) -> bool:
        """Whether a hand-written branch turns a row's args into ``[input channels, *args]``, as the tool's does."""
        if not isinstance(branch.body, cst.IndentedBlock):
            return False
        code = "\n".join(module.code_for_node(stmt).strip() for stmt in branch.body.body)
        try:
            return ast.dump(ast.parse(code)) in TUTORIAL_BODIES
        except SyntaxError:
            return False

    def find(self, module, layer):
        func = self.anchor.find(module)
        try:
            chain = self._chain(module)[1]
        except PatchError:  # no chain to insert into (apply refuses): the hand-written pieces are still listed
            chain = []
        found, seen = [], set()
        in_chain = {id(b) for b in chain[1:]}
        ifs, names = _walk(func)
        for branch in ifs:  # the main chain's branches and any other `if` in parse_model (a fork's second chain)
            if not self.selects_only(branch.test, layer.name):
                continue
            # the tool's own: marked, in the module chain (or marked anywhere, where the chain can no longer be found)
            in_place = id(branch) in in_chain or not chain
            ours = in_place and isinstance(branch.body, cst.IndentedBlock) and is_mark(branch.body.header.comment)
            current = True
            if ours:
                mine = self.new_branch(module, layer, branch.orelse)
                current = module.code_for_node(mine.body) == module.code_for_node(branch.body) and (
                    module.code_for_node(mine.test) == module.code_for_node(branch.test)
                )
            found.append(Found(self.key, ours, branch, current))
            seen.update(id(n) for n in self._names_in(branch.test, layer.name))
        for n in names.get(layer.name, ()):  # e.g. MHSA in a shared `m in {MHSA, ShuffleAttention}` or a set
            if id(n) not in seen:
                found.append(Found(self.key, False, n))
        return found

    def add(self, module, layer):
        func, chain = self._chain(module)
        last = chain[-1]
        new_last = last.with_changes(orelse=self.new_branch(module, layer, last.orelse))
        return self._with_chain(module, self._relink(chain, len(chain) - 1, new_last))

    def remove(self, module, layer, found):
        func = self.anchor.find(module)
        try:
            chain = self._chain(module)[1]
        except PatchError:  # a chain edited past recognition: the branch is still removed where it is
            chain = []
        if isinstance(found.node, cst.If):
            for i, branch in enumerate(chain[1:], start=1):
                if branch is found.node:
                    return self._with_chain(module, self._relink(chain, i, branch.orelse))
            return replace_body_stmt(module, func, _without_if(func, found.node, layer.name))
        # a bare name elsewhere in parse_model: only an element of a set/tuple/list literal can be dropped safely
        parent = _container_of(func, found.node)
        if parent is None or len(parent[0].elements) < 2:
            raise PatchError(
                f"cannot remove the hand-written use of {layer.name} in parse_model; edit it by hand", node=found.node
            )
        seq, element = parent
        return replace_body_stmt(module, func, func.deep_replace(seq, _without_element(seq, element, layer.name)))


_WALKED: list = []  # (function node, its ifs, its names by value): the last function walked


def _walk(func: cst.FunctionDef) -> tuple[list[cst.If], dict[str, list[cst.Name]]]:
    """Every ``if`` of parse_model and every ``Name`` by value, in one walk per tree: each layer's ``find`` asks for
    them, and a walk of the 600-line function costs more than the rest of the find (nodes are immutable, so the
    walk of the same node object stays true)."""
    if _WALKED and _WALKED[0][0] is func:
        return _WALKED[0][1], _WALKED[0][2]
    ifs: list[cst.If] = []
    names: dict[str, list[cst.Name]] = {}

    class V(cst.CSTVisitor):
        def visit_If(self, node: cst.If) -> None:
            ifs.append(node)

        def visit_Name(self, node: cst.Name) -> None:
            names.setdefault(node.value, []).append(node)

    func.visit(V())
    _WALKED[:] = [(func, ifs, names)]
    return ifs, names


def _without_if(func: cst.FunctionDef, node: cst.If, name: str) -> cst.FunctionDef:
    """``func`` without the branch ``node`` of an if/elif chain outside the main one (a fork's second chain)."""
    parents: dict[int, cst.CSTNode] = {}

    class P(cst.CSTVisitor):
        def on_visit(self, n: cst.CSTNode) -> bool:
            if isinstance(n, cst.If) and isinstance(n.orelse, cst.If):
                parents[id(n.orelse)] = n
            if isinstance(n, cst.IndentedBlock):
                for stmt in n.body:
                    parents[id(stmt)] = n
            return True

    func.visit(P())
    parent = parents.get(id(node))
    if isinstance(parent, cst.If):  # an elif: the previous branch takes over what followed it
        return func.deep_replace(parent, parent.with_changes(orelse=node.orelse))
    if isinstance(parent, cst.IndentedBlock) and not isinstance(node.orelse, cst.Else):
        body = []
        for stmt in parent.body:
            if stmt is not node:
                body.append(stmt)
            elif node.orelse is not None:  # `if m is MHSA: ... elif X: ...` -> `if X: ...`
                body.append(node.orelse.with_changes(leading_lines=node.leading_lines))
        if body:
            return func.deep_replace(parent, parent.with_changes(body=body))
    raise PatchError(f"cannot remove the hand-written branch for {name} in parse_model; edit it by hand", node=node)


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


def _closing(seq):
    """(attribute, node) of the bracket that closes a set, list or parenthesized tuple (None: a bare tuple)."""
    if isinstance(seq, cst.Set):
        return "rbrace", seq.rbrace
    if isinstance(seq, cst.List):
        return "rbracket", seq.rbracket
    return ("rpar", seq.rpar[-1]) if seq.rpar else (None, None)


def _opening_ws(seq):
    node = seq.lbrace if isinstance(seq, cst.Set) else seq.lbracket if isinstance(seq, cst.List) else (
        seq.lpar[0] if seq.lpar else None)
    return None if node is None else node.whitespace_after


def _without_name_comments(ws, name: str):
    """``ws`` without the comment lines at its end that name ``name`` (``#---MHSA---`` above a pasted ``MHSA,``): they
    belonged to the element that goes."""
    if not isinstance(ws, cst.ParenthesizedWhitespace):
        return ws
    lines = list(ws.empty_lines)
    while lines and lines[-1].comment is not None and name in lines[-1].comment.value:
        lines.pop()
    return ws.with_changes(empty_lines=lines)


def _without_element(seq, element, name: str):
    """The set/list/tuple literal without ``element``, as if it had never been written: no line left holding only
    spaces, the comments of the other elements kept on their lines, the comment lines above it that name it gone."""
    i = next(k for k, e in enumerate(seq.elements) if e is element)
    elements = list(seq.elements)
    del elements[i]
    changes: dict = {}
    if i > 0:
        prev = elements[i - 1]
        ws = prev.comma.whitespace_after if isinstance(prev.comma, cst.Comma) else None
        if i == len(elements):  # it was the last: the previous one takes its comma (trailing comma or none)
            elements[i - 1] = prev.with_changes(comma=element.comma)
            attr, closing = _closing(seq)
            if isinstance(ws, cst.ParenthesizedWhitespace) and closing is not None:
                # the line break before the closing bracket; the previous element's line keeps its own comment
                before = closing.whitespace_before
                kept = list(_without_name_comments(ws, name).empty_lines)
                while kept and kept[-1].comment is None:  # no blank line left before the closing bracket
                    kept.pop()
                if isinstance(before, cst.ParenthesizedWhitespace):
                    before = before.with_changes(first_line=ws.first_line, empty_lines=[*kept, *before.empty_lines])
                else:
                    before = ws.with_changes(empty_lines=kept)
                closing = closing.with_changes(whitespace_before=before)
                changes[attr] = closing if attr != "rpar" else [*seq.rpar[:-1], closing]
        elif ws is not None:  # in the middle: the comment lines above it that name it go with it
            elements[i - 1] = prev.with_changes(comma=prev.comma.with_changes(
                whitespace_after=_without_name_comments(ws, name)))
    else:
        opening = _opening_ws(seq)
        if isinstance(opening, cst.ParenthesizedWhitespace):
            new_ws = _without_name_comments(opening, name)
            if isinstance(seq, cst.Set):
                changes["lbrace"] = seq.lbrace.with_changes(whitespace_after=new_ws)
            elif isinstance(seq, cst.List):
                changes["lbracket"] = seq.lbracket.with_changes(whitespace_after=new_ws)
            else:
                changes["lpar"] = [seq.lpar[0].with_changes(whitespace_after=new_ws), *seq.lpar[1:]]
    if isinstance(seq, cst.Tuple) and len(elements) == 1 and not isinstance(elements[0].comma, cst.Comma):
        elements[0] = elements[0].with_changes(comma=cst.Comma())  # (X,) stays a tuple
    return seq.with_changes(elements=elements, **changes)
