"""What ``apply --layer`` asks for, read and checked before anything is locked or written.

``--layer FILE.py[:Class[,Class]]`` reads the user's file (:mod:`.usersource`: libcst, never run), picks its
classes, decides each one's reading from its ``__init__`` (:mod:`.signature`, or ``--reads``) and checks that the
target's Python finds every module the installed text imports (:mod:`.importcheck`). ``--layer NAME`` (no file)
registers ultralytics' own class ``NAME`` (``CBAM``), read the same way from the package's source. The result is one
:class:`~.userlayers.UserLayer` per class plus the line that says how it is read; name collisions are the engine's to
check, under the lock (:mod:`.collisions`).
"""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mhsa_patch.errors import PatchError, UsageError
from mhsa_patch.patching.signature import READS, Ambiguous, Inferred, decide
from mhsa_patch.patching.target import Target
from mhsa_patch.patching.userlayers import UserLayer, file_text
from mhsa_patch.patching.usersource import Signature, UserFile, is_identifier


@dataclass(frozen=True)
class Asked:
    """One layer ``apply --layer`` registers: the record, and how it is read (said back to the user)."""

    layer: UserLayer
    inferred: Inferred
    where: str  # FILE:LINE of the class, for messages


def split_spec(spec: str) -> tuple[str, Optional[tuple[str, ...]]]:
    """``eca.py:ECA,SE`` -> (``eca.py``, (``ECA``, ``SE``)); ``eca.py`` -> (``eca.py``, None); ``CBAM`` -> (``CBAM``,
    None). A colon belongs to the path unless what precedes it ends in ``.py`` (``C:\\layers\\eca.py:ECA``)."""
    spec = spec.strip()
    head, sep, tail = spec.rpartition(":")
    if sep and head.lower().endswith(".py"):
        names = tuple(n.strip() for n in tail.split(","))
        if not tail.strip() or not all(names):
            raise UsageError(f"--layer {spec}: name the classes after the colon, comma-separated (FILE.py:A,B)")
        bad = [n for n in names if not is_identifier(n)]
        if bad:
            raise UsageError(f"--layer {spec}: {bad[0]!r} is not a class name")
        return head, names
    return spec, None


def is_file_spec(spec: str) -> bool:
    """A path (``eca.py``, ``layers/eca.py``, anything that exists) rather than the name of ultralytics' class."""
    path, _ = split_spec(spec)
    return path.lower().endswith(".py") or os.sep in path or "/" in path or Path(path).exists()


def _reading(sig: Signature, name: str, reads: Optional[str], where: str) -> Inferred:
    if reads is not None and reads not in READS:
        raise UsageError(f"unknown --reads '{reads}': choose one of {', '.join(READS)}")
    try:
        return decide(sig, name, reads)
    except Ambiguous as e:
        choices = " or ".join(f"--reads {c}" for c in e.choices)
        raise PatchError(
            f"{where}: {sig.shown(name)}: cannot tell how parse_model should read its rows: {e.why}; pass {choices}"
        ) from None


def ask(target: Target, spec: str, *, as_name: Optional[str] = None, reads: Optional[str] = None) -> list[Asked]:
    """The layers ``apply --layer spec [--as NAME] [--reads R]`` registers, each read and its imports checked."""
    if as_name is not None and not is_identifier(as_name):
        raise UsageError(f"--as {as_name!r}: not a Python class name")
    if is_file_spec(spec):
        return _from_file(target, spec, as_name, reads)
    name = spec.strip()
    if not is_identifier(name):
        raise UsageError(f"--layer {spec}: neither a Python file (FILE.py[:Class]) nor a class name")
    if as_name is not None and as_name != name:
        raise UsageError(f"--as {as_name}: ultralytics' own {name} keeps its name (--as renames a class of your file)")
    return [_stock(target, name, reads)]


def _from_file(target: Target, spec: str, as_name: Optional[str], reads: Optional[str]) -> list[Asked]:
    path_text, wanted = split_spec(spec)
    path = Path(path_text).expanduser()
    if not path_text.lower().endswith(".py"):
        raise UsageError(f"--layer {spec}: a layer file must be a Python file (FILE.py)")
    user = UserFile(path, shown=path_text)
    chosen = user.select(wanted)
    if as_name is not None and len(chosen) != 1:
        raise UsageError(
            f"--as {as_name}: {path_text} registers {len(chosen)} classes ({', '.join(chosen)}); name one with "
            f"{path_text}:CLASS --as {as_name}"
        )
    source = str(path.resolve())
    out, problems = [], []
    for class_name in chosen:
        name = as_name or class_name
        extracted = user.extract(class_name, name)
        where = f"{path_text}:{extracted.line}"
        try:
            inferred = _reading(extracted.signature, name, reads, where)
        except PatchError as e:
            problems.append(str(e))
            continue
        problems += _import_problems(target, user, extracted)
        text = file_text(name, extracted.text)
        _compiles(text, where)
        layer = UserLayer(name, "file", inferred.reads, source=source, source_sha256=user.sha256,
                          class_name=class_name, text=text)
        out.append(Asked(layer, inferred, where))
    if problems:
        raise PatchError(problems=list(dict.fromkeys(problems)))
    return out


def _compiles(text: str, where: str) -> None:
    try:
        compile(text, where, "exec", dont_inherit=True)
    except SyntaxError as e:  # the file parsed; its extract should too (a name used only at run time is no error)
        raise PatchError(f"{where}: internal error: the layer's module text does not compile ({e.msg})") from None


def _import_problems(target: Target, user: UserFile, extracted) -> list[str]:
    from mhsa_patch.patching.importcheck import missing

    out = []
    for imp in extracted.imports:
        if imp.relative:
            out.append(
                f"{user.shown}:{imp.line}: 'from {imp.module} import ...' is relative to your file's package, which "
                "ultralytics cannot import from: make it absolute, or copy what it imports into the file"
            )
    absolute = [i for i in extracted.imports if not i.relative and not i.guarded]
    gone = set(missing(target, [i.module for i in absolute]))
    python = target.python or "this Python"
    for imp in absolute:
        if imp.module in gone:
            top = imp.module.split(".")[0]
            out.append(
                f"{user.shown}:{imp.line}: module '{imp.module}' cannot be imported by {python} (is {top} installed "
                f"there?); install it, or remove the import"
            )
            gone.discard(imp.module)
    return out


def _stock(target: Target, name: str, reads: Optional[str]) -> Asked:
    """ultralytics' own class ``name``, registered as it is (``apply --layer CBAM``)."""
    import ast

    from mhsa_patch.patching.atomic import read_confined
    from mhsa_patch.patching.userlayers import stock_class

    def read(rel: str):
        try:
            return read_confined(target.package, target.file(rel), 4 * 2**20)
        except (OSError, ValueError):
            return None

    found = stock_class(target, read, name)
    if found is None:
        raise UsageError(
            f"--layer {name}: not a file, and ultralytics {target.version} has no class {name} in nn/modules "
            f"(a layer file is FILE.py[:Class])"
        )
    rel, line, node = found
    where = f"{target.file(rel)}:{line}"
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is None:
        sig = Signature((), False, line, name, own=False, known=False)
    else:
        a = init.args
        positional = [*a.posonlyargs, *a.args][1:]
        defaults = [None] * (len(positional) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
        from mhsa_patch.patching.usersource import Param

        sig = Signature(tuple(Param(p.arg, d) for p, d in zip(positional, defaults)),
                        a.vararg is not None or a.kwarg is not None, init.lineno, name)
    inferred = _reading(sig, name, reads, where)
    return Asked(UserLayer(name, "stock", inferred.reads, defined_in=rel), inferred, where)


def builtin_names() -> frozenset:
    """Python's builtins: a layer of such a name would shadow it in ``nn/tasks.py``."""
    return frozenset(dir(builtins))
