"""Which reading (``patches/readings.py``) a target's ``parse_model`` applies to each layer's rows, and where.

Read from ``nn/tasks.py``'s text with ``ast`` (the C parser; comments matter only for the tool's marker, which is
read from the branch's own line). parse_model's branches are visited in source order and the first whose test
selects the layer decides, as parse_model's ``if``/``elif`` does: a branch of the layer's own, a shared branch
(``m in {MHSA, ShuffleAttention}``, ``m in [..., MHSA]``), or the shared branch of scaled modules through a set that
holds the layer (``base_modules = frozenset({..., BoT3})`` ... ``if m in base_modules:``). A branch's reading is the
one whose call its body computes (:mod:`.branch_eval`, on sample values; never by running it), however it is spelled.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from mhsa_patch.patches import LAYERS
from mhsa_patch.patching.branch_eval import computes, constants
from mhsa_patch.patches.readings import (
    BASE_MODULES,
    BASE_REPEAT,
    BASE_STATEMENTS,
    FALLBACK,
    OURS,
    READINGS,
    REPEAT_STATEMENT,
    UNRECOGNISED,
    Reading,
    reading,
)

MARK = "# mhsa-patch"


@dataclass(frozen=True)
class InForce:
    """The reading parse_model applies to one layer's rows."""

    layer: str
    name: str  # a reading's name, OURS (the tool's branch) or UNRECOGNISED (a hand-written body of another shape)
    line: Optional[int] = None  # of the branch that decides (None: parse_model's final else)
    rule: Optional[Reading] = None  # the call it makes (the tool's branch: its rule's reading; None: not known)
    tool: str = ""  # the reading of the tool's rule for the layer ("": its LayerSpec's; a user layer's is given)

    @property
    def hand_written(self) -> bool:
        return self.name not in (OURS, FALLBACK.name)

    @property
    def differs(self) -> bool:
        """A hand-written branch whose calls are not the tool's rule's: apply --force keeps it."""
        return self.hand_written and (self.rule is None or self.rule.name != (self.tool or spec_of(self.layer).reading))

    def describe(self) -> str:
        at = f" (line {self.line})" if self.line else ""
        if self.name == OURS:
            return f"{OURS} (reads as {self.rule.name})"
        return f"{self.name}{at}"

    def to_dict(self) -> dict:
        return {"reading": self.name, "line": self.line, "reads_as": None if self.rule is None else self.rule.name}


def spec_of(name: str):
    return next(s for s in LAYERS if s.name == name)


@lru_cache(maxsize=None)
def _statement_dumps(code: str) -> frozenset:
    return frozenset(ast.dump(s) for s in ast.parse(code).body)


def _names(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _holders(tree: ast.Module, func: ast.FunctionDef, name: str) -> set[str]:
    """Variables assigned a value that names the layer (``base_modules = frozenset({..., BoT3})``)."""
    out = set()
    for scope in (tree.body, list(ast.walk(func))):
        for node in scope:
            if isinstance(node, ast.Assign) and name in _names(node.value):
                out.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return out


def _selects(test, name: str, holders: set[str]) -> bool:
    """A test over ``m`` that holds the layer's name, directly or through a variable that holds it."""
    if not isinstance(test, ast.Compare) or not (isinstance(test.left, ast.Name) and test.left.id == "m"):
        return False
    used = set().union(*(_names(c) for c in test.comparators))
    return name in used or bool(used & holders)


def _body_reading(branch: ast.If, name: str, holders: set[str], known: dict) -> Optional[Reading]:
    """The reading whose call the branch's body computes (a branch of its own, however it is spelled), else the
    shared branch of scaled modules by its statements; None where neither."""
    for r in READINGS:
        if r.bodies and computes(branch.body, name, r, known):
            return r
    have = {ast.dump(s) for s in branch.body}
    if all(_statement_dumps(s) <= have for s in BASE_STATEMENTS):
        repeat = _statement_dumps(REPEAT_STATEMENT)
        for inner in ast.walk(ast.Module(body=branch.body, type_ignores=[])):
            if isinstance(inner, ast.If) and _selects(inner.test, name, holders):
                if repeat <= {ast.dump(s) for s in inner.body}:
                    return BASE_REPEAT
        return BASE_MODULES
    return None


def _parse_model(tree: ast.Module) -> Optional[ast.FunctionDef]:
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model"), None)


def in_force(text: str, layer: str, tool: str = "") -> InForce:
    """The reading ``nn/tasks.py``'s text applies to ``layer``'s rows (FALLBACK when no branch selects it).
    ``tool``: the reading of the tool's rule for the layer, for a user layer (default: the LayerSpec's)."""
    found = _in_force(text, layer, tool)
    return found if not tool else InForce(found.layer, found.name, found.line, found.rule, tool)


@lru_cache(maxsize=2)
def _tree(text: str) -> Optional[ast.Module]:
    """``nn/tasks.py`` parsed once for every layer's reading (None: it does not parse)."""
    try:
        return ast.parse(text)
    except SyntaxError:
        return None


def _in_force(text: str, layer: str, tool: str = "") -> InForce:
    tree = _tree(text)
    if tree is None:
        return InForce(layer, UNRECOGNISED)
    func = _parse_model(tree)
    if func is None:
        return InForce(layer, UNRECOGNISED)
    lines = text.splitlines()
    holders = _holders(tree, func, layer)
    known = constants([*tree.body, *func.body])
    ifs = sorted((n for n in ast.walk(func) if isinstance(n, ast.If)), key=lambda n: (n.lineno, n.col_offset))
    for branch in ifs:
        if not _selects(branch.test, layer, holders):
            continue
        if MARK in lines[branch.lineno - 1]:
            return InForce(layer, OURS, branch.lineno, reading(tool or spec_of(layer).reading))
        rule = _body_reading(branch, layer, holders, known)
        return InForce(layer, rule.name if rule else UNRECOGNISED, branch.lineno, rule)
    return InForce(layer, FALLBACK.name, None, FALLBACK)


def all_in_force(text: str, extra: tuple = ()) -> tuple[InForce, ...]:
    """Every layer's reading: the tool's, then ``extra`` ((name, reading of the tool's rule) of each user layer)."""
    return tuple(in_force(text, spec.name) for spec in LAYERS) + tuple(in_force(text, n, r) for n, r in extra)


@lru_cache(maxsize=None)
def _init(layer: str) -> ast.arguments:
    """The layer's ``__init__`` arguments, read from its source in patches/."""
    from importlib import resources

    src = resources.files("mhsa_patch.patches").joinpath(spec_of(layer).source).read_text(encoding="utf-8")
    cls = next(n for n in ast.parse(src).body if isinstance(n, ast.ClassDef) and n.name == layer)
    return next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__").args


def param_names(layer: str) -> tuple[str, ...]:
    """The layer's positional parameter names (self excluded): how the lint names the values of a call."""
    a = _init(layer)
    return tuple(p.arg for p in (a.posonlyargs + a.args)[1:])


def param_defaults(layer: str) -> dict:
    """The layer's positional parameters that have a literal default, with it (what a short call leaves them at)."""
    a = _init(layer)
    params = (a.posonlyargs + a.args)[1:]
    out = {}
    for p, d in zip(params[len(params) - len(a.defaults) :], a.defaults):
        try:
            out[p.arg] = ast.literal_eval(d)
        except ValueError:
            pass
    return out


def cannot_build(found: InForce) -> Optional[str]:
    """Why a kept reading cannot build the tool's class (None: it can): it passes more values before the row's args
    than the class takes positionally."""
    if found.rule is None or _init(found.layer).vararg is not None:
        return None
    total = len(param_names(found.layer))
    if len(found.rule.lead) > total:
        return (
            f"it passes {', '.join(found.rule.lead)} before the row's args, and the tool's {found.layer}() takes "
            f"{total} positional argument{'s' if total != 1 else ''}"
        )
    return None
