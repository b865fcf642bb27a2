"""Name collisions of a user layer, never silent: a name ultralytics, the tool, another user layer or a fork took.

A user layer's name is imported into ``ultralytics.nn.modules`` and into ``nn/tasks.py``, whose ``parse_model``
looks rows up by name. So the name must be free in both namespaces, and among the package's module files:

* ultralytics' own names (``patches/ultralytics_names.py``, and what the target's files bind): refused, naming the
  existing definition's ``FILE:LINE``, with ``--as NAME`` (and, for a class, ``apply --layer NAME``, which registers
  ultralytics' own class instead); ``--force`` does not change that;
* the tool's layers (``MHSA``, ``BoT3``, ``BottleneckTransformer``): refused, ``--as``;
* another user layer registered from another file: refused (``revert --layer NAME`` first, or ``--as``), or
  replaced with ``--force``; the same file again is an update, no collision;
* a fork's class of that name (defined or imported by hand, not ultralytics'): refused with ``--force`` (which takes
  it over, as ``apply --force`` takes over a hand-pasted MHSA: the engine then finds its pieces) or ``--as``.

Python's builtins and keywords are refused as names too. Read with ``ast`` and confined reads; nothing imported.
"""

from __future__ import annotations

import ast
import keyword
import os
import re
from typing import Callable, Optional

from mhsa_patch.patching.origins import ParsedPackage
from mhsa_patch.patching.target import Target
from mhsa_patch.patching.userlayers import FOLDER, PREFIX, UserLayer, module_rel, verified

MAX_BYTES = 4 * 2**20


def _bound(tree: ast.Module) -> dict[str, int]:
    """Module-level names a file binds, with the line of the first binding (classes, defs, imports, assignments)."""
    out: dict[str, int] = {}

    def put(name: str, line: int) -> None:
        out.setdefault(name, line)

    def visit(body) -> None:
        for node in body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                put(node.name, node.lineno)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    if a.name != "*":
                        put(a.asname or a.name.split(".")[0], node.lineno)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            put(n.id, node.lineno)
            elif isinstance(node, (ast.If, ast.Try)):
                for part in ("body", "orelse", "finalbody"):
                    visit(getattr(node, part, []) or [])
                for h in getattr(node, "handlers", []) or []:
                    visit(h.body)

    visit(tree.body)
    return out


class Names(ParsedPackage):
    """Where the target binds each name a layer may collide with, read once per apply."""

    def __init__(self, target: Target, read: Callable[[str], Optional[bytes]]):
        super().__init__(target, read)
        from mhsa_patch.patching.userlayers import listing

        self.module_files = [f for f in listing(target) if f.endswith(".py")]
        self._fork_files: Optional[list[str]] = None

    def _mentions(self, rel: str, name: str) -> bool:
        data = self.read(rel)
        return data is not None and re.search(rb"\b" + re.escape(name.encode()) + rb"\b", data) is not None

    def where(self, name: str, skip: frozenset = frozenset()) -> Optional[tuple[str, int, str]]:
        """``(rel, line, what)`` of the first place the target binds ``name``: a submodule of nn/modules, a class or
        name of an nn/modules file, a name nn/modules/__init__.py or nn/tasks.py binds, a class of another file under
        nn/ (a fork's). ``skip``: files not to look at (the layer's own module file)."""
        defining = [f"{FOLDER}/{f}" for f in self.module_files if f != "__init__.py"]
        for rel in defining:  # a class or function where it is defined, first
            tree = self.tree(rel) if rel not in skip and self._mentions(rel, name) else None
            for node in tree.body if tree is not None else ():
                if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
                    return rel, node.lineno, "a class" if isinstance(node, ast.ClassDef) else "a function"
        for f in self.module_files:
            rel = f"{FOLDER}/{f}"
            if f[:-3] == name and rel not in skip:
                return rel, 1, f"the module ultralytics.nn.modules.{name}"
        for rel in ["nn/tasks.py", f"{FOLDER}/__init__.py", *defining]:
            line = self.bound_in(rel, name) if rel not in skip else None
            if line is not None:
                return rel, line, "a name"
        for rel in self.fork_files():
            if rel in skip or not self._mentions(rel, name):
                continue
            tree = self.tree(rel)
            for node in tree.body if tree is not None else ():
                if isinstance(node, ast.ClassDef) and node.name == name:
                    return rel, node.lineno, "a class"
        return None

    def bound_in(self, rel: str, name: str) -> Optional[int]:
        """The line where module ``rel`` binds ``name`` at its top level (None: it does not)."""
        if not self._mentions(rel, name):
            return None
        tree = self.tree(rel)
        return (_bound(tree) if tree is not None else {}).get(name)

    def fork_files(self) -> list[str]:
        """The .py files under nn/ other than nn/modules/*.py and nn/tasks.py (a fork's Addmodules, extra_modules ...)."""
        if self._fork_files is None:
            from mhsa_patch.errors import PatchError
            from mhsa_patch.patching.atomic import confine

            out = []
            root = self.target.file("nn")
            try:
                confine(self.target.package, root / "tasks.py")
            except PatchError:
                self._fork_files = []
                return []
            for folder, dirs, files in os.walk(root):  # os.walk does not follow linked folders
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                rel_folder = os.path.relpath(folder, self.target.package).replace(os.sep, "/")
                for f in sorted(files):
                    rel = f"{rel_folder}/{f}"
                    if f.endswith(".py") and rel != "nn/tasks.py" and rel_folder != FOLDER:
                        out.append(rel)
            self._fork_files = out
        return self._fork_files


def problems(target: Target, asked: list[UserLayer], registered: tuple[UserLayer, ...], *, force: bool,
             read: Callable[[str], Optional[bytes]]) -> tuple[list[str], list[str]]:
    """``(refusals, notes)`` for registering ``asked`` on ``target`` whose user layers are ``registered``."""
    from mhsa_patch.patches import LAYERS
    from mhsa_patch.patches.ultralytics_names import STOCK_NAMES
    from mhsa_patch.patching.register import builtin_names

    tool = {n: s.name for s in LAYERS for n in (*s.helpers, s.name)}
    mine = {u.name: u for u in registered}
    names = Names(target, read)
    refusals: list[str] = []
    notes: list[str] = []
    taken = {u.name.lower(): u.name for u in registered}
    for u in asked:
        name, tag = u.name, _tag(u)
        hint = "register yours under another name with --as NAME" if u.kind == "file" else ""
        if keyword.iskeyword(name) or name in builtin_names():
            refusals.append(f"{tag}: {name} is a Python builtin name; register it under another one with --as NAME")
            continue
        if name in tool:
            what = "layer" if tool[name] == name else f"{tool[name]}'s helper class"
            refusals.append(f"{tag}: {name} is mhsa-patch's own {what}; {hint or 'it cannot be registered again'}")
            continue
        old = mine.get(name)
        if old is not None and _same(old, u):
            continue  # the same file (edited) or the same stock class: an update, no collision
        if u.kind == "stock" and old is None:
            line = names.bound_in("nn/tasks.py", name)
            if line is not None:  # imported there already: parse_model reads it, or tasks.py uses it otherwise
                reads = " and parse_model reads its rows" if _read_by_parse_model(names.tree("nn/tasks.py"), name) else ""
                refusals.append(
                    f"{target.file('nn/tasks.py')}:{line}: nn/tasks.py already imports {name}{reads}; ultralytics' own "
                    f"classes are registered only where nn/tasks.py does not know them yet"
                )
            continue
        found = names.where(name, frozenset({module_rel(name)})) if u.kind == "file" else None
        if found is not None and name in STOCK_NAMES:
            rel, line, what = found  # ultralytics' own: no flag takes it over
            at = f"{target.file(rel)}:{line}"
            if what.startswith("the module"):
                refusals.append(f"{at}: {name} is {what}; {hint}")
            elif what == "a class":
                refusals.append(
                    f"{at}: ultralytics {target.version} has its own class {name}; {hint} (or register "
                    f"ultralytics' own with 'mhsa-patch apply --layer {name}')"
                )
            else:
                refusals.append(f"{at}: ultralytics {target.version} already binds the name {name}; {hint}")
            continue
        if old is not None:  # another file's layer of that name (its own pieces are what `found` saw)
            if force:
                notes.append(f"{name}: the user layer registered from {_from(old)} is replaced by {_from(u)} (--force)")
            else:
                refusals.append(
                    f"{tag}: {name} is already registered from {_from(old)}; 'mhsa-patch revert --layer {name}' "
                    f"removes it, --force replaces it, or {hint or 'choose another layer'}"
                )
            continue
        if name.lower() in taken and taken[name.lower()] != name:
            refusals.append(f"{tag}: {name} differs only in case from the user layer {taken[name.lower()]} (their "
                            f"module files would be one on a case-insensitive file system); {hint}")
            continue
        if found is not None and not force:
            rel, line, what = found
            refusals.append(
                f"{target.file(rel)}:{line}: {name} is already there without mhsa-patch's marker (a fork's "
                f"layer?); --force takes it over, or {hint}"
            )
        module = read(module_rel(name))
        if module is not None and verified(module.decode("utf-8", "replace")) != name:
            at = target.file(module_rel(name))
            if not force:
                refusals.append(f"{at}: exists and is not mhsa-patch's (or was edited); --force moves it aside, or "
                                f"{hint}")
        taken[name.lower()] = name
    return list(dict.fromkeys(refusals)), notes


def _read_by_parse_model(tree: Optional[ast.Module], name: str) -> bool:
    func = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model"), None) if tree else None
    return func is not None and any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(func))


def _same(old: UserLayer, new: UserLayer) -> bool:
    if old.kind != new.kind:
        return False
    if old.kind == "stock":
        return True
    return not old.source or old.source == new.source


def _from(u: UserLayer) -> str:
    if u.kind == "stock":
        return f"ultralytics' own {u.defined_in}"
    return u.source or f"a file mhsa-patch wrote ({module_rel(u.name)})"


def _tag(u: UserLayer) -> str:
    return f"--layer {u.source}:{u.class_name}" if u.kind == "file" and u.source else f"--layer {u.name}"
