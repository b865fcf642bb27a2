"""A user's layer file (``apply --layer FILE.py[:Class[,Class]]``), read with libcst and never imported or run.

What the engine gets from it, per class it registers: the text of the module the tool installs for the class (the
class, the definitions of the file it uses, directly or through each other, and the imports they need, in the
file's order; ``if __name__ == "__main__":`` blocks and other top-level statements that define nothing stay
behind), the imports that text makes (checked against the target's Python before anything is written), and the
class's ``__init__`` signature (how ``parse_model`` reads its rows: :mod:`.signature`).

Without ``:Class``, the classes registered are the file's top-level ``nn.Module`` subclasses that no other class of
the file uses (CBAM's file registers ``CBAM``; its ``ChannelAttention`` and ``SpatialAttention`` go with it as
helpers). Every refusal is one line naming ``FILE:LINE``.
"""

from __future__ import annotations

import hashlib
import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import libcst as cst
from libcst.helpers import get_full_name_for_node

from mhsa_patch.errors import PatchError, UsageError

MAX_SOURCE_BYTES = 2**20  # a layer file; tutorials' are a few KB
IDENTIFIER_MAX = 64


@dataclass(frozen=True)
class Param:
    name: str
    default: Optional[str]  # the default's code as written; None: no default


@dataclass(frozen=True)
class Signature:
    """The positional parameters of a class's ``__init__`` (``self`` excluded), as written."""

    params: tuple[Param, ...]
    varargs: bool  # *args (or **kwargs) takes what is left
    line: int  # of the ``def __init__`` (or of the class, when it has none)
    owner: str  # the class whose ``__init__`` it is (a base of the file, where the class has none of its own)
    own: bool = True  # False: the class has no ``__init__``; ``params`` are its base's (or empty when not known)
    known: bool = True  # False: no ``__init__`` in the class or a base the file defines

    def shown(self, name: str) -> str:
        """``ECA(channel, k_size=3)``, as the tool says it back."""
        parts = [p.name if p.default is None else f"{p.name}={p.default}" for p in self.params]
        if self.varargs:
            parts.append("*args")
        return f"{name}({', '.join(parts)})"


@dataclass(frozen=True)
class Import:
    """One module the installed text imports: ``einops.layers.torch`` at ``line``; ``guarded``: inside a ``try``
    that catches ``ImportError`` (the file copes without it)."""

    module: str
    line: int
    guarded: bool = False
    relative: bool = False


@dataclass(frozen=True)
class Extracted:
    """One class of the file, ready to install: ``text`` is the module body (no header), ``name`` its registered name."""

    name: str
    class_name: str
    line: int
    text: str
    imports: tuple[Import, ...]
    signature: Signature
    helpers: tuple[str, ...]  # the other definitions that go with it, in order


def _is_main_guard(stmt) -> bool:
    """``if __name__ == "__main__":`` (either order, either quotes)."""
    if not isinstance(stmt, cst.If) or not isinstance(stmt.test, cst.Comparison) or len(stmt.test.comparisons) != 1:
        return False
    left, right = stmt.test.left, stmt.test.comparisons[0].comparator
    sides = {type(left), type(right)}
    if not isinstance(stmt.test.comparisons[0].operator, cst.Equal) or sides != {cst.Name, cst.SimpleString}:
        return False
    name, text = (left, right) if isinstance(left, cst.Name) else (right, left)
    return name.value == "__name__" and text.evaluated_value == "__main__"


class _Uses(cst.CSTVisitor):
    """The names a piece of code reads: every ``Name`` but attribute names (``self.x``'s ``x``), keyword names
    (``f(k=1)``'s ``k``) and parameter names. Approximate in the safe direction: a definition of the file that is
    named where it is not needed goes along (an unused helper), never the other way."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False

    def visit_Param(self, node: cst.Param) -> bool:
        for part in (node.annotation, node.default):
            if part is not None:
                part.visit(self)
        return False


def _uses(node: cst.CSTNode) -> set[str]:
    v = _Uses()
    node.visit(v)
    return v.names


def _targets(node) -> set[str]:
    """Names an assignment target binds (``a``, ``a, b``, ``[a, *b]``)."""
    if isinstance(node, cst.Name):
        return {node.value}
    if isinstance(node, (cst.Tuple, cst.List)):
        return set().union(*(_targets(e.value) for e in node.elements)) if node.elements else set()
    if isinstance(node, cst.StarredElement):
        return _targets(node.value)
    return set()


def _import_binds(node) -> set[str]:
    if isinstance(node, cst.Import):
        return {
            get_full_name_for_node(a.asname.name) if a.asname else get_full_name_for_node(a.name).split(".")[0]
            for a in node.names
        }
    if isinstance(node, cst.ImportFrom) and not isinstance(node.names, cst.ImportStar):
        return {get_full_name_for_node(a.asname.name) if a.asname else get_full_name_for_node(a.name) for a in node.names}
    return set()


def _binds(stmt) -> set[str]:
    """The module-level names a top-level statement binds (looking into ``if``/``try``/``with`` blocks)."""
    out: set[str] = set()
    if isinstance(stmt, cst.SimpleStatementLine):
        for small in stmt.body:
            if isinstance(small, (cst.Import, cst.ImportFrom)):
                out |= _import_binds(small)
            elif isinstance(small, cst.Assign):
                for t in small.targets:
                    out |= _targets(t.target)
            elif isinstance(small, (cst.AnnAssign, cst.AugAssign)):
                out |= _targets(small.target)
        return out
    if isinstance(stmt, (cst.ClassDef, cst.FunctionDef)):
        return {stmt.name.value}
    for block in _blocks(stmt):
        for inner in block:
            out |= _binds(inner)
    return out


def _blocks(stmt) -> list:
    """The statement lists inside a compound statement (if/elif/else, try/except/else/finally, with, for, while)."""
    out = []
    if isinstance(stmt, cst.If):
        out.append(stmt.body.body)
        if stmt.orelse is not None:
            out += [stmt.orelse.body.body] if isinstance(stmt.orelse, cst.Else) else _blocks(stmt.orelse)
    elif isinstance(stmt, (cst.Try, cst.TryStar)):
        out.append(stmt.body.body)
        out += [h.body.body for h in stmt.handlers]
        out += [part.body.body for part in (stmt.orelse, stmt.finalbody) if part is not None]
    elif isinstance(stmt, (cst.With, cst.For, cst.While)):
        out.append(stmt.body.body)
    return [b for b in out if isinstance(b, (list, tuple))]


def _catches_import_error(handler: cst.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = []
    if isinstance(handler.type, cst.Tuple):
        names = [get_full_name_for_node(e.value) for e in handler.type.elements]
    else:
        names = [get_full_name_for_node(handler.type)]
    return any(n in ("ImportError", "ModuleNotFoundError", "Exception", "BaseException") for n in names)


def _has_future(stmt) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and any(
        isinstance(s, cst.ImportFrom) and s.module is not None and get_full_name_for_node(s.module) == "__future__"
        for s in stmt.body
    )


def _has_star(stmt) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and any(
        isinstance(s, cst.ImportFrom) and isinstance(s.names, cst.ImportStar) for s in stmt.body
    )


class _Rename(cst.CSTTransformer):
    """Every reading and binding of ``old`` as a plain name becomes ``new`` (attribute and keyword names stay)."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new
        self.skip: set[int] = set()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.skip.add(id(node.attr))

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self.skip.add(id(node.keyword))

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        if original.value == self.old and id(original) not in self.skip:
            return updated.with_changes(value=self.new)
        return updated


def is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and len(name) <= IDENTIFIER_MAX and name.isascii()


class UserFile:
    """A layer file the user wrote, read once: its bytes, their hash and its libcst tree (nothing is executed)."""

    def __init__(self, path: Path, shown: Optional[str] = None):
        self.path = Path(path)
        self.shown = shown or str(path)  # the path as the user gave it, for messages
        self.data = self._read()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        try:
            self.text = self.data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = self.data[: e.start].count(b"\n") + 1
            raise PatchError(f"{self.shown}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None
        try:
            self.module = cst.parse_module(self.text)
        except cst.ParserSyntaxError as e:
            line, why = e.raw_line, e.message.splitlines()[0]
            import ast

            try:  # Python's own parser names the line of the mistake (libcst's, where it noticed it)
                ast.parse(self.text)
            except SyntaxError as s:
                line, why = s.lineno or line, s.msg
            raise PatchError(f"{self.shown}:{line}: does not parse ({why})") from None
        except RecursionError:
            raise PatchError(f"{self.shown}: does not parse (nested too deeply)") from None
        self._lines: Optional[dict] = None

    def _read(self) -> bytes:
        import os
        import stat

        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise PatchError(f"{self.shown}: no such file") from None
        except OSError as e:
            raise PatchError(f"{self.shown}: {e.strerror or e}") from None
        if stat.S_ISDIR(st.st_mode):
            raise PatchError(f"{self.shown}: a directory, not a Python file")
        if not stat.S_ISREG(st.st_mode):
            raise PatchError(f"{self.shown}: not a regular file")
        if st.st_size > MAX_SOURCE_BYTES:
            raise PatchError(f"{self.shown}: {st.st_size} bytes, over the {MAX_SOURCE_BYTES // 2**20} MiB a layer file may have")
        try:
            return self.path.read_bytes()
        except OSError as e:
            raise PatchError(f"{self.shown}: {e.strerror or e}") from None

    # -- positions --------------------------------------------------------------------------------------------------

    def line_of(self, node: cst.CSTNode) -> int:
        if self._lines is None:
            from libcst.metadata import MetadataWrapper, PositionProvider

            self._lines = MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
        pos = self._lines.get(node)
        return pos.start.line if pos is not None else 0

    def where(self, node: cst.CSTNode) -> str:
        return f"{self.shown}:{self.line_of(node)}"

    # -- classes ----------------------------------------------------------------------------------------------------

    def classes(self) -> dict[str, cst.ClassDef]:
        return {s.name.value: s for s in self.module.body if isinstance(s, cst.ClassDef)}

    def _imported_from(self) -> dict[str, str]:
        """Module-level names bound by ``from X import name``: name -> X."""
        out = {}
        for stmt in self.module.body:
            if isinstance(stmt, cst.SimpleStatementLine):
                for s in stmt.body:
                    if isinstance(s, cst.ImportFrom) and s.module is not None and not isinstance(s.names, cst.ImportStar):
                        for a in s.names:
                            name = get_full_name_for_node(a.asname.name) if a.asname else get_full_name_for_node(a.name)
                            out[name] = "." * len(s.relative) + get_full_name_for_node(s.module)
        return out

    def module_classes(self) -> list[str]:
        """The top-level classes that are ``nn.Module`` subclasses, as far as the text tells: a base ``nn.Module``
        (any spelling), ``nn.Something``, a class of ``torch.nn`` or ultralytics imported by name, or such a class of
        the file."""
        classes = self.classes()
        imported = self._imported_from()
        found: dict[str, bool] = {}

        def is_module(name: str, seen: frozenset = frozenset()) -> bool:
            if name in found:
                return found[name]
            if name in seen or name not in classes:
                return False
            for base in classes[name].bases:
                dotted = get_full_name_for_node(base.value) or ""
                head = dotted.split(".")[0]
                if (
                    dotted in ("Module", "nn.Module", "torch.nn.Module")
                    or dotted.startswith(("nn.", "torch.nn."))
                    or imported.get(head, "").startswith(("torch.nn", "torch", "ultralytics"))
                    or is_module(dotted, seen | {name})
                ):
                    found[name] = True
                    return True
            found[name] = False
            return False

        return [n for n in classes if is_module(n)]

    def select(self, wanted: Optional[tuple[str, ...]]) -> list[str]:
        """The classes to register: ``wanted`` (each must be a top-level class), or the file's module classes that no
        other class of the file uses."""
        classes = self.classes()
        modules = self.module_classes()
        if wanted:
            missing = [w for w in wanted if w not in classes]
            if missing:
                have = ", ".join(modules or classes) or "none"
                raise UsageError(
                    f"{self.shown}: no top-level class {', '.join(missing)} (its nn.Module classes: {have})"
                )
            return list(dict.fromkeys(wanted))
        if not modules:
            raise PatchError(f"{self.shown}: defines no nn.Module class at its top level, nothing to register")
        used = set()
        for name in modules:
            cls = classes[name]
            used |= _uses(cls) - {name}
        chosen = [n for n in modules if n not in used]
        if not chosen:
            raise PatchError(
                f"{self.shown}: each of its nn.Module classes ({', '.join(modules)}) is used by another: name the one "
                f"to register, as {self.shown}:{modules[-1]}"
            )
        return chosen

    # -- signature --------------------------------------------------------------------------------------------------

    def signature(self, class_name: str, _seen: frozenset = frozenset()) -> Signature:
        cls = self.classes()[class_name]
        for stmt in cls.body.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value == "__init__":
                p = stmt.params
                positional = [*p.posonly_params, *p.params]
                params = tuple(
                    Param(x.name.value, None if x.default is None else self.module.code_for_node(x.default).strip())
                    for x in positional[1:]
                )
                varargs = isinstance(p.star_arg, cst.Param) or p.star_kwarg is not None
                return Signature(params, varargs, self.line_of(stmt), class_name)
        classes = self.classes()
        for base in cls.bases:
            dotted = get_full_name_for_node(base.value) or ""
            if dotted in classes and dotted not in _seen:
                inherited = self.signature(dotted, _seen | {class_name})
                return Signature(inherited.params, inherited.varargs, inherited.line, inherited.owner, own=False,
                                 known=inherited.known)
        plain = all((get_full_name_for_node(b.value) or "") in ("Module", "nn.Module", "torch.nn.Module") for b in cls.bases)
        # nn.Module's own __init__ takes nothing: the class takes no argument at all
        return Signature((), False, self.line_of(cls), class_name, own=False, known=plain and bool(cls.bases))

    # -- the installed text -----------------------------------------------------------------------------------------

    def extract(self, class_name: str, name: Optional[str] = None) -> Extracted:
        """The module text for ``class_name``, registered as ``name`` (``--as``: every use of the class's name in
        the file is renamed, so ``super(CBAM, self)`` keeps working)."""
        name = name or class_name
        module = self.module
        if name != class_name:
            clash = [s for s in module.body if name in _binds(s)]
            if clash:
                raise UsageError(f"{self.where(clash[0])}: --as {name}: the file already defines {name}")
        body = list(module.body)
        binders: dict[str, list[int]] = {}
        for k, stmt in enumerate(body):
            for n in _binds(stmt):
                binders.setdefault(n, []).append(k)
        keep: set[int] = {k for k, s in enumerate(body) if _has_future(s) or _has_star(s)}
        start = [k for k, s in enumerate(body) if isinstance(s, cst.ClassDef) and s.name.value == class_name]
        todo = list(start)
        while todo:
            k = todo.pop()
            if k in keep and k not in start:
                continue
            keep.add(k)
            for n in _uses(body[k]):
                for j in binders.get(n, ()):
                    if j not in keep and not _is_main_guard(body[j]):
                        todo.append(j)
        kept = [body[k] for k in sorted(keep) if not _is_main_guard(body[k])]
        text = "".join(module.code_for_node(s) for s in kept).replace("\r\n", "\n")
        if name != class_name:
            renamed = cst.parse_module(text).visit(_Rename(class_name, name))
            text = renamed.code
        text = text.lstrip("\n")
        imports = tuple(i for s in kept for i in self._imports(s))
        helpers = tuple(
            n for s in kept if not isinstance(s, cst.SimpleStatementLine) or not any(
                isinstance(x, (cst.Import, cst.ImportFrom)) for x in s.body)
            for n in sorted(_binds(s)) if n != class_name
        )
        cls = body[start[0]]
        return Extracted(name, class_name, self.line_of(cls), text, imports, self.signature(class_name), helpers)

    def _imports(self, stmt, guarded: bool = False) -> list[Import]:
        out: list[Import] = []
        if isinstance(stmt, cst.SimpleStatementLine):
            for s in stmt.body:
                line = self.line_of(stmt)
                if isinstance(s, cst.Import):
                    out += [Import(get_full_name_for_node(a.name), line, guarded) for a in s.names]
                elif isinstance(s, cst.ImportFrom):
                    mod = get_full_name_for_node(s.module) if s.module is not None else ""
                    if mod == "__future__":
                        continue
                    out.append(Import("." * len(s.relative) + mod, line, guarded, bool(s.relative)))
            return out
        if isinstance(stmt, (cst.Try, cst.TryStar)):
            covered = guarded or any(_catches_import_error(h) for h in stmt.handlers)
            for inner in stmt.body.body:
                out += self._imports(inner, covered)
            for block in _blocks(stmt)[1:]:
                for inner in block:
                    out += self._imports(inner, guarded)
            return out
        for block in _blocks(stmt):
            for inner in block:
                out += self._imports(inner, guarded)
        return out
