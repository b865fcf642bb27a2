"""Where a name that a target file imports really comes from, read from the package's source with ``ast``.

Forks register a hand-written MHSA through imports: ``from ultralytics.nn.modules.MHSA import *`` in ``nn/tasks.py``,
``from .MHSA import MHSA`` in ``nn/modules/__init__.py``, a star-imported package of extra modules whose
``__init__`` star-imports its files. :class:`Resolver` follows such imports through the source files, never
importing anything, inside the package only (an absolute module outside ``ultralytics.``, a relative one that climbs
out of it, or a file that is a link are left unresolved), and says which file and line bind the name last.

:func:`incompatible` compares a hand-written class with the tool's class of the same name by structure: the
constructor's parameters and defaults, and the sub-modules and parameters it creates (``self.query = nn.Conv2d(...)``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mhsa_patch.patching.target import TARGET_FILES, Target

MAX_DEPTH = 16  # chains of re-exports deeper than this are not followed


@dataclass(frozen=True)
class Origin:
    """The statement that binds a name last in a module: a class, or something else (an assignment, an import from
    outside the package) that cannot be checked."""

    rel: str  # package-relative file
    line: int
    node: Optional[ast.ClassDef] = None

    @property
    def in_target(self) -> bool:
        """Bound in one of the files the tool patches: after apply, that is the tool's class."""
        return self.rel in TARGET_FILES

    def where(self, package: Path) -> str:
        return f"{package / self.rel}:{self.line}"


class ParsedPackage:
    """The modules of one package, read with ``read(rel) -> bytes or None`` and parsed once each; a file that cannot
    be read or parsed is None (never run: the package is untrusted input)."""

    def __init__(self, target: Target, read: Callable[[str], Optional[bytes]]):
        self.target, self.read = target, read
        self._trees: dict[str, Optional[ast.Module]] = {}

    def tree(self, rel: str) -> Optional[ast.Module]:
        if rel not in self._trees:
            data = self.read(rel)
            try:
                self._trees[rel] = ast.parse(data) if data is not None else None
            except (SyntaxError, ValueError):
                self._trees[rel] = None
        return self._trees[rel]


class Resolver(ParsedPackage):
    """Reads modules of one package (``read(rel) -> bytes or None``) and resolves imports through them."""

    # -- modules ------------------------------------------------------------------------------------------------------

    def module_rel(self, importer: str, module: str) -> Optional[str]:
        """``ultralytics.nn.modules.MHSA`` or ``.MHSA`` (from ``importer``) -> ``nn/modules/MHSA.py`` (or a package's
        ``__init__.py``), if that file is in the package."""
        dots = len(module) - len(module.lstrip("."))
        name = module[dots:]
        if dots:
            base = importer.split("/")[:-1]  # the importer's package (a module's folder; __init__'s own folder)
            if dots - 1 > len(base):
                return None
            base = base[: len(base) - (dots - 1)]
            parts = base + (name.split(".") if name else [])
        else:
            top = self.target.package.name
            parts = name.split(".")
            if parts[0] != top:
                return None
            parts = parts[1:]
        if any(p in ("", ".", "..") for p in parts):
            return None
        for rel in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
            if rel != ".py" and self.tree(rel.lstrip("/")) is not None:
                return rel.lstrip("/")
        return None

    # -- names --------------------------------------------------------------------------------------------------------
    def binding(self, rel: str, name: str, _seen: frozenset = frozenset()) -> Optional[Origin]:
        """Where the last top-level statement of module ``rel`` that binds ``name`` gets it from (None: unbound)."""
        tree = self.tree(rel)
        if tree is None or (rel, name) in _seen or len(_seen) > MAX_DEPTH:
            return None
        seen = _seen | {(rel, name)}
        last: Optional[Origin] = None
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                last = Origin(rel, node.lineno, node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                last = Origin(rel, node.lineno)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    last = Origin(rel, node.lineno)
            elif isinstance(node, ast.Import):
                if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                    last = Origin(rel, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                found = self.import_binding(rel, node, name, seen)
                if found is not None:
                    last = found
        return last

    def import_binding(self, rel: str, node: ast.ImportFrom, name: str, _seen: frozenset = frozenset()) -> Optional[Origin]:
        """What ``from ... import ...`` statement ``node`` of module ``rel`` binds ``name`` to (None: not bound)."""
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            if alias.name == "*":
                found = self.star(rel, module, name, node.lineno, _seen)
            elif (alias.asname or alias.name) == name:
                found = self.named(rel, module, alias.name, node.lineno, _seen)
            else:
                continue
            if found is not None:
                return found
        return None

    def star(self, rel: str, module: str, name: str, line: int = 0, _seen: frozenset = frozenset()) -> Optional[Origin]:
        """What ``from module import *`` in ``rel`` binds ``name`` to; None where it does not bind it (or the module
        cannot be read: outside the package, a link, no such file)."""
        src = self.module_rel(rel, module)
        if src is None or not self.exports(src, name):
            return None
        return self.binding(src, name, _seen) or Origin(rel, line)

    def named(self, rel: str, module: str, name: str, line: int = 0, _seen: frozenset = frozenset()) -> Origin:
        """What ``from module import name`` in ``rel`` binds: the defining statement, or the import itself."""
        src = self.module_rel(rel, module)
        found = self.binding(src, name, _seen) if src is not None else None
        return found or Origin(rel, line)

    def exports(self, rel: str, name: str) -> bool:
        """Whether ``from <rel> import *`` binds ``name``: listed in a literal ``__all__``, else bound and public."""
        tree = self.tree(rel)
        if tree is None:
            return False
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                if isinstance(node.value, (ast.List, ast.Tuple)):
                    return any(isinstance(e, ast.Constant) and e.value == name for e in node.value.elts)
        return not name.startswith("_") and self.binding(rel, name) is not None


# ----------------------------------------------------------------------------------------------------------------------
# Is a hand-written class the one the tool replaces?
# ----------------------------------------------------------------------------------------------------------------------


def _signature(cls: ast.ClassDef) -> Optional[list[tuple[str, Optional[str]]]]:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            a = node.args
            positional = [*a.posonlyargs, *a.args]
            defaults = [None] * (len(positional) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
            sig = [(p.arg, d) for p, d in zip(positional, defaults)]
            sig += [(p.arg, ast.unparse(d) if d is not None else None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
            if a.vararg or a.kwarg:
                sig.append(("*", None))
            return sig
    return None


def _created(cls: ast.ClassDef) -> dict[str, str]:
    """``{attribute: constructor}`` for every ``self.x = Name(...)`` / ``self.x = nn.Name(...)`` in ``__init__`` whose
    callee is capitalised (a module or a parameter): ``{"query": "Conv2d", "rel_h_weight": "Parameter", ...}``."""
    out: dict[str, str] = {}
    for fn in cls.body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name == "__init__"):
            continue
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
                continue
            func = node.value.func
            callee = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if not callee[:1].isupper():
                continue
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    out[t.attr] = callee
    return out


def incompatible(cls: ast.ClassDef, reference: ast.ClassDef) -> Optional[str]:
    """Why ``cls`` is not the class that ``reference`` (the tool's, state-compatible with the tutorial's) replaces,
    or None when its constructor takes the same parameters and creates the same sub-modules and parameters."""
    mine, theirs = _signature(reference), _signature(cls)
    if theirs != mine:
        shown = "(" + ", ".join(n if d is None else f"{n}={d}" for n, d in (theirs or [])) + ")"
        return f"its constructor takes {shown if theirs is not None else 'no __init__'}, not the tutorial's parameters"
    want, got = _created(reference), _created(cls)
    if want != got:
        missing = sorted(set(want.items()) - set(got.items()))
        extra = sorted(set(got.items()) - set(want.items()))
        parts = []
        if missing:
            parts.append("lacks " + ", ".join(f"{a} ({c})" for a, c in missing))
        if extra:
            parts.append("creates " + ", ".join(f"{a} ({c})" for a, c in extra))
        return f"its parameters differ from the tutorial's: it {' and '.join(parts)}"
    return None


def reference_class(source: str, name: str) -> Optional[ast.ClassDef]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    return None
