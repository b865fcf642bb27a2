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


# The chain's last branch in every release: ``else: c2 = ch[f]``, compared as an ``ast`` dump (one small statement:
# structural, and cheaper than importing libcst.matchers, see anchors.py).
FINAL_ELSE = ast.dump(ast.parse("c2 = ch[f]").body[0])

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


class ParseModelBranch(Edit):
    """In ``parse_model``'s if/elif chain that ends with ``else: c2 = ch[f]``, adds before that ``else``::

        elif m is MHSA:  # mhsa-patch
            c2 = ch[f]
            args = [c2, *args]

    The chain is found by its shape, not by position: from 8.4.100 an ``if restricted ...: raise`` precedes it.
    """

    key = "branch"
    anchor = Anchor("def", "parse_model")

    @staticmethod
    def _is_final_else(orelse) -> bool:
        if not isinstance(orelse, cst.Else) or not isinstance(orelse.body, cst.IndentedBlock):
            return False
        body = orelse.body.body
        if len(body) != 1 or not isinstance(body[0], cst.SimpleStatementLine) or len(body[0].body) != 1:
            return False
        code = cst.Module(body=[]).code_for_node(body[0].body[0])
        try:
            return ast.dump(ast.parse(code).body[0]) == FINAL_ELSE
        except SyntaxError:
            return False

    def _locate(self, module) -> tuple[cst.FunctionDef, cst.For, list[cst.If]]:
        func = self.anchor.find(module)
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
        func, chain = self._chain(module)
        found, seen = [], set()
        in_chain = {id(b) for b in chain[1:]}
        ifs: list[cst.If] = []

        class V(cst.CSTVisitor):
            def visit_If(self, node: cst.If) -> None:
                ifs.append(node)

        func.visit(V())
        for branch in ifs:  # the main chain's branches and any other `if` in parse_model (a fork's second chain)
            if not self.selects_only(branch.test, layer.name):
                continue
            ours = id(branch) in in_chain and isinstance(branch.body, cst.IndentedBlock) and is_mark(branch.body.header.comment)
            current = True
            if ours:
                mine = self.new_branch(module, layer, branch.orelse)
                current = module.code_for_node(mine.body) == module.code_for_node(branch.body) and (
                    module.code_for_node(mine.test) == module.code_for_node(branch.test)
                )
            found.append(Found(self.key, ours, branch, current))
            seen.update(id(n) for n in self._names_in(branch.test, layer.name))
        for n in self._names_in(func, layer.name):  # e.g. MHSA in a shared `m in {MHSA, ShuffleAttention}` or a set
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
            return replace_body_stmt(module, func, _without_if(func, found.node, layer.name))
        # a bare name elsewhere in parse_model: only an element of a set/tuple/list literal can be dropped safely
        parent = _container_of(func, found.node)
        if parent is None or len(parent[0].elements) < 2:
            raise PatchError(f"cannot remove the hand-written use of {layer.name} in parse_model; edit it by hand")
        seq, element = parent
        elements = [e for e in seq.elements if e is not element]
        if not isinstance(element.comma, cst.Comma):
            elements[-1] = elements[-1].with_changes(comma=element.comma)
        if isinstance(seq, cst.Tuple) and len(elements) == 1 and not isinstance(elements[0].comma, cst.Comma):
            elements[0] = elements[0].with_changes(comma=cst.Comma())  # (X,) stays a tuple
        return replace_body_stmt(module, func, func.deep_replace(seq, seq.with_changes(elements=elements)))


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
    raise PatchError(f"cannot remove the hand-written branch for {name} in parse_model; edit it by hand")


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
