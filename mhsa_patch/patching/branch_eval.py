"""What a ``parse_model`` branch computes from a row, found by evaluating its statements on sample values.

A fork's branch reads a layer's rows however it is spelled: ``args = [ch[f], *args]``, ``c1 = ch[f]; args = [c1,
*args[0:]]``, ``args = [ch[f]] + list(args)`` all make the tutorial's call. :func:`outcome` walks the branch's ``ast``
on sample values of parse_model's locals (``ch``, ``f``, ``args``, ``n``, ``width``, ``max_channels``, ``nc``) and
returns what it leaves behind: the constructor's ``args``, the channels ``c2`` recorded for the next layers, and the
repeats ``n``. The readings of ``patches/readings.py`` are then compared by what they compute on the same samples.

Nothing is executed: the target's source is untrusted input. This is a small evaluator over ``ast`` that knows
assignments, ``if``, list/tuple/set displays with ``*``, indexing and slicing, arithmetic and comparisons, a handful
of builtins (``min``, ``max``, ``len``, ``int``, ``round``, ``list``, ``tuple``...), ultralytics'
``make_divisible``, and the list methods a branch uses (``insert``, ``append``, ``extend``, ``pop``). Anything else
(a call it does not know, a loop, an attribute, a name it has no value for used as a number) gives up: the branch is
then not recognised, never guessed. Names of classes (``MHSA``, ``ECA``) are symbols, so that ``m is ECA`` and
``m in {MHSA, ECA}`` inside a shared branch take the layer's way.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Optional

MAX_STEPS = 2000  # nodes evaluated per branch: a branch is a few statements; anything past this is not one


class GiveUp(Exception):
    """The branch does something this evaluator does not follow."""


@dataclass(frozen=True)
class Symbol:
    """A name without a value here: a class (``MHSA``) or a variable parse_model set before (``act``)."""

    name: str


class _Stale:
    """The value a local had before the branch (parse_model's ``c2`` of the previous layer)."""

    def __repr__(self) -> str:
        return "<stale>"


STALE = _Stale()


@dataclass(frozen=True)
class Sample:
    """parse_model's locals for one row ``[f, n, Layer, args]`` (values chosen so that no two readings agree)."""

    ch: tuple
    f: int
    args: tuple
    n: int
    width: float
    max_channels: int
    nc: int = 80

    @property
    def c1(self) -> int:
        return self.ch[self.f]

    @property
    def scaled(self) -> int:
        """``args[0]`` as parse_model scales it: ``make_divisible(min(c2, max_channels) * width, 8)``."""
        return make_divisible(min(self.args[0], self.max_channels) * self.width, 8)


# Two rows: the previous layer's output (f=-1) and an earlier one, max_channels above and below args[0], a width whose
# product is no multiple of 8; every value distinct from the others and from nc.
SAMPLES = (
    Sample(ch=(11, 13, 17, 19, 23), f=-1, args=(1031, 37, 41, 43), n=3, width=0.3, max_channels=2048),
    Sample(ch=(11, 13, 17, 19, 23), f=1, args=(1031, 37, 41, 43), n=5, width=0.7, max_channels=640),
)


@dataclass(frozen=True)
class Outcome:
    """What a branch leaves: the constructor's positional ``args``, the recorded ``c2`` (``STALE``: not assigned),
    and ``n``."""

    args: tuple
    c2: object
    n: object


def make_divisible(x, divisor) -> int:
    """ultralytics.utils.ops.make_divisible."""
    return math.ceil(x / divisor) * divisor


_BUILTINS = {
    "min": min,
    "max": max,
    "len": len,
    "int": int,
    "float": float,
    "round": round,
    "abs": abs,
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "make_divisible": make_divisible,
}
_LIST_METHODS = {"insert", "append", "extend", "pop"}
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Is: lambda a, b: a == b if isinstance(a, Symbol) or isinstance(b, Symbol) else a is b,
    ast.IsNot: lambda a, b: a != b if isinstance(a, Symbol) or isinstance(b, Symbol) else a is not b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Evaluator:
    def __init__(self, env: dict):
        self.env = env
        self.steps = 0

    # -- statements ----------------------------------------------------------------------------------------------------
    def run(self, body: list) -> None:
        for stmt in body:
            self.stmt(stmt)

    def stmt(self, node) -> None:
        self._tick()
        if isinstance(node, ast.Assign):
            value = self.expr(node.value)
            for target in node.targets:
                self.assign(target, value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise GiveUp("operator")
            self.env[node.target.id] = self._arith(op, self.name(node.target.id), self.expr(node.value))
        elif isinstance(node, ast.If):
            self.run(node.body if self.truth(self.expr(node.test)) else node.orelse)
        elif isinstance(node, ast.Expr):
            self.expr(node.value)
        elif not isinstance(node, ast.Pass):
            raise GiveUp(type(node).__name__)

    def assign(self, target, value) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in target.elts):
            if not isinstance(value, (list, tuple)) or len(value) != len(target.elts):
                raise GiveUp("unpacking")
            for t, v in zip(target.elts, value):
                self.assign(t, v)
        elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            seq = self.name(target.value.id)
            index = self.expr(target.slice)
            if not isinstance(seq, list) or not isinstance(index, int) or isinstance(index, bool):
                raise GiveUp("item assignment")
            try:
                seq[index] = value
            except IndexError:
                raise GiveUp("index") from None
        else:
            raise GiveUp("assignment target")

    # -- expressions ---------------------------------------------------------------------------------------------------
    def expr(self, node):
        self._tick()
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = []
            for e in node.elts:
                if isinstance(e, ast.Starred):
                    v = self.expr(e.value)
                    if not isinstance(v, (list, tuple)):
                        raise GiveUp("starred")
                    items.extend(v)
                else:
                    items.append(self.expr(e))
            if isinstance(node, ast.Set):
                try:
                    return set(items)
                except TypeError:
                    raise GiveUp("unhashable") from None
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Subscript):
            return self.subscript(self.expr(node.value), node.slice)
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise GiveUp("operator")
            return self._arith(op, self.expr(node.left), self.expr(node.right))
        if isinstance(node, ast.UnaryOp):
            v = self.expr(node.operand)
            if isinstance(node.op, ast.Not):
                return not self.truth(v)
            if isinstance(node.op, ast.USub) and _number(v):
                return -v
            raise GiveUp("unary")
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            v = None
            for e in node.values:
                v = self.expr(e)
                if self.truth(v) != is_and:
                    return v
            return v
        if isinstance(node, ast.Compare):
            left = self.expr(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = self.expr(comp)
                if isinstance(op, (ast.In, ast.NotIn)) and not isinstance(right, (list, tuple, set, frozenset)):
                    raise GiveUp("membership")
                if not isinstance(op, (ast.Eq, ast.NotEq, ast.Is, ast.IsNot, ast.In, ast.NotIn)) and not (
                    _number(left) and _number(right)
                ):
                    raise GiveUp("ordering")
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.expr(node.body if self.truth(self.expr(node.test)) else node.orelse)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise GiveUp(type(node).__name__)

    def name(self, name: str):
        if name in self.env:
            return self.env[name]
        if name in _BUILTINS:
            return _BUILTINS[name]
        return Symbol(name)

    def subscript(self, value, index_node):
        if isinstance(index_node, ast.Slice):
            parts = (index_node.lower, index_node.upper, index_node.step)
            bounds = [None if b is None else self.expr(b) for b in parts]
            if not all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds):
                raise GiveUp("slice")
            if not isinstance(value, (list, tuple)):
                raise GiveUp("slicing")
            return value[slice(*bounds)]
        index = self.expr(index_node)
        if not isinstance(value, (list, tuple)) or not isinstance(index, int) or isinstance(index, bool):
            raise GiveUp("indexing")
        try:
            return value[index]
        except IndexError:
            raise GiveUp("index") from None

    def call(self, node: ast.Call):
        if node.keywords:
            raise GiveUp("keywords")
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                v = self.expr(a.value)
                if not isinstance(v, (list, tuple)):
                    raise GiveUp("starred")
                args.extend(v)
            else:
                args.append(self.expr(a))
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _LIST_METHODS:
            target = self.expr(func.value)
            if not isinstance(target, list):
                raise GiveUp("method")
            try:
                return getattr(target, func.attr)(*args)
            except (TypeError, IndexError):
                raise GiveUp("method") from None
        if not isinstance(func, ast.Name) or func.id in self.env or func.id not in _BUILTINS:
            raise GiveUp("call")
        if any(isinstance(a, (Symbol, _Stale)) for a in args):
            raise GiveUp("argument")
        try:
            return _BUILTINS[func.id](*args)
        except (TypeError, ValueError, ZeroDivisionError):
            raise GiveUp("call") from None

    # -- helpers -------------------------------------------------------------------------------------------------------
    @staticmethod
    def truth(value) -> bool:
        if isinstance(value, (Symbol, _Stale)):
            raise GiveUp("truth of an unknown value")
        return bool(value)

    @staticmethod
    def _arith(op, a, b):
        if _number(a) and _number(b):
            try:
                return op(a, b)
            except ZeroDivisionError:
                raise GiveUp("division") from None
        if op is _BINOPS[ast.Add] and isinstance(a, (list, tuple)) and type(a) is type(b):
            return a + b
        raise GiveUp("arithmetic")

    def _tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise GiveUp("too long")


def constants(statements: list) -> dict:
    """Names bound to literal collections of names before parse_model's loop (``base_modules = frozenset({...})``),
    evaluated the same way: what a branch's inner ``if m in base_modules:`` reads. Others are left out."""
    out: dict = {}
    for node in statements:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = _Evaluator(dict(out)).expr(node.value)
            except GiveUp:
                continue
            if isinstance(value, (set, frozenset, tuple, list)):
                out[node.targets[0].id] = value
    return out


def outcome(body: list, layer: str, sample: Sample, known: Optional[dict] = None) -> Optional[Outcome]:
    """What the branch ``body`` (a list of ``ast`` statements) computes for a row of ``layer`` in ``sample``; None
    where it does something this evaluator does not follow. ``known``: names with values (see :func:`constants`)."""
    env = {
        **(known or {}),
        "m": Symbol(layer),
        "ch": list(sample.ch),
        "f": sample.f,
        "args": list(sample.args),
        "n": sample.n,
        "n_": sample.n,
        "width": sample.width,
        "gw": sample.width,
        "max_channels": sample.max_channels,
        "nc": sample.nc,
        "c1": STALE,
        "c2": STALE,
    }
    try:
        _Evaluator(env).run(body)
    except (GiveUp, RecursionError):
        return None
    args = env.get("args")
    if not isinstance(args, (list, tuple)):
        return None
    return Outcome(tuple(args), env.get("c2"), env.get("n"))


def computes(body: list, layer: str, reading, known: Optional[dict] = None) -> bool:
    """Whether the branch makes ``reading``'s call (``patches.readings.Reading``) on every sample, records the
    channels the reading records, and leaves ``n`` as the reading does (1 where the class takes the repeats).

    A reading whose ``out`` is ``c1`` may also leave ``c2`` unassigned, as the tutorial's ``args = [ch[f], *args]``
    does: parse_model then records the previous layer's channels, which are the input's for the usual ``f`` of -1."""
    for s in SAMPLES:
        got = outcome(body, layer, s, known)
        if got is None:
            return False
        call, _ = reading.call(s.c1, s.scaled, s.n, list(s.args))
        if list(got.args) != call:
            return False
        if reading.out == "c2" and got.c2 != s.scaled:
            return False
        if reading.out == "c1" and got.c2 is not STALE and got.c2 != s.c1:
            return False
        if got.n != (1 if reading.repeats_inside else s.n):
            return False
    return True
