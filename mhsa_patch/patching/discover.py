"""Which ultralytics a ``python`` started in the current folder imports, and which other copies it can see.

The tool's own process is no guide: its console script has the venv's ``bin/`` as ``sys.path[0]``, while
``python train.py`` run from a clone of ultralytics puts that clone first. So the interpreter (this one by default,
or the one given with ``--python``) is run as a child in the folder, with ``python -c``: like ``python train.py``
started there, it has the folder first on ``sys.path``, then ``PYTHONPATH``, then site-packages and whatever the
``.pth`` files add (editable installs, their meta-path finders). The child asks the import system where
``ultralytics`` is, never importing it, and prints JSON. Pure logic: nothing here prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mhsa_patch.errors import PatchError
from mhsa_patch.patching.target import Target, find_target, read_version

TIMEOUT = 60

# Runs in the interpreter being asked (any Python 3 the user points at: no f-strings, no walrus). It lists every
# regular ``ultralytics`` package in import order: the meta-path finders in their order, the path-based one
# expanded into one lookup per sys.path entry. Namespace portions (a clone's repo root seen from its parent folder
# has no __init__.py) are skipped: a regular package anywhere on the path beats them.
PROBE = r"""
import importlib.machinery, importlib.util, json, os, sys
def folder(spec):
    if spec is None or spec.origin in (None, "namespace") or not spec.submodule_search_locations:
        return None
    return os.path.abspath(os.path.dirname(spec.origin))
out = {"executable": sys.executable, "python": "%d.%d.%d" % sys.version_info[:3], "cwd": os.getcwd(),
       "winner": None, "copies": []}
try:
    out["winner"] = folder(importlib.util.find_spec("ultralytics"))
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
for finder in sys.meta_path:
    if finder is importlib.machinery.PathFinder:
        lookups = [(entry or ".", finder, [entry]) for entry in sys.path]
    elif finder in (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter):
        continue
    else:
        lookups = [("finder:" + (getattr(finder, "__name__", None) or type(finder).__name__), finder, None)]
    for where, f, path in lookups:
        try:
            pkg = folder(f.find_spec("ultralytics", path))
        except Exception:
            continue
        if pkg is not None:
            out["copies"].append({"package": pkg, "where": where})
print("\nMHSA-PATCH-DISCOVER " + json.dumps(out))
"""
MARK = "MHSA-PATCH-DISCOVER "


@dataclass(frozen=True)
class Copy:
    """One ``ultralytics/`` package the interpreter can see."""

    package: Path
    version: str | None  # read as text; None when unreadable
    where: str  # the sys.path entry that holds it, or "finder:<name>" for a meta-path finder (editable installs)
    imported: bool  # the one ``import ultralytics`` picks


@dataclass(frozen=True)
class Discovery:
    """What ``python`` run in ``cwd`` sees: every copy of ultralytics in import order, the imported one first."""

    python: str  # the interpreter as given (or sys.executable)
    executable: str  # its own sys.executable
    python_version: str
    cwd: Path
    given: bool  # True when the interpreter came from --python
    copies: tuple[Copy, ...]

    @property
    def winner(self) -> Copy | None:
        return next((c for c in self.copies if c.imported), None)

    @property
    def shadowed(self) -> tuple[Copy, ...]:
        return tuple(c for c in self.copies if not c.imported)


def _interpreter(python: str | os.PathLike | None) -> str:
    """The interpreter to ask: ``sys.executable``, or ``--python`` checked to be an executable file."""
    if python is None:
        return sys.executable
    given = str(python)
    if not given.strip():
        raise PatchError("--python is empty; pass the path of a Python interpreter")
    if os.sep not in given and (os.altsep is None or os.altsep not in given):
        found = shutil.which(given)  # a bare name, as a shell would find it: --python python3
        if found is None:
            raise PatchError(f"--python {given}: not found on PATH")
        given = found
    path = Path(given).expanduser()
    if not path.exists():
        raise PatchError(f"--python {python}: no such file")
    if path.is_dir():
        raise PatchError(f"--python {python}: a directory, not a Python interpreter (pass e.g. {path / 'bin' / 'python'})")
    if not os.access(path, os.X_OK):
        raise PatchError(f"--python {python}: not executable")
    return str(path.absolute())  # not resolved: a venv's bin/python is a symlink whose name matters


def discover(
    python: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
) -> Discovery:
    """Every ultralytics that ``python`` (default: this interpreter) started in ``cwd`` can import, in import order.

    ``env`` defaults to this process's environment (its ``PYTHONPATH`` counts, as it would for ``python train.py``).
    Raises :class:`PatchError` when the interpreter is missing, not executable, or not a Python that answers.
    """
    exe = _interpreter(python)
    folder = Path(cwd) if cwd is not None else Path.cwd()
    try:
        proc = subprocess.run(
            [exe, "-c", PROBE], cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise PatchError(f"{exe} took more than {TIMEOUT} s to say where ultralytics is") from None
    except OSError as e:
        raise PatchError(f"cannot run {exe}: {e.strerror or e}") from None
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(MARK)), None)
    try:
        data = json.loads(line[len(MARK):]) if line is not None else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        tail = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
        why = tail[-1] if tail else f"exit code {proc.returncode}, no answer"
        raise PatchError(f"{exe} is not a Python interpreter that can look for ultralytics ({why})")
    winner = data.get("winner")
    copies: list[Copy] = []
    seen: set[Path] = set()
    for c in data.get("copies", []):
        package = Path(c["package"]).resolve()
        if package in seen:  # the same folder through two entries ("" and the cwd's own path)
            continue
        seen.add(package)
        try:
            version: str | None = read_version(package)
        except PatchError:
            version = None
        imported = winner is not None and Path(winner).resolve() == package
        copies.append(Copy(package=package, version=version, where=str(c.get("where", "")), imported=imported))
    if winner is not None and not any(c.imported for c in copies):  # a finder the walk missed: trust find_spec
        package = Path(winner).resolve()
        try:
            version = read_version(package)
        except PatchError:
            version = None
        copies.insert(0, Copy(package=package, version=version, where="", imported=True))
    copies.sort(key=lambda c: not c.imported)  # stable: the imported one first, the rest in import order
    return Discovery(
        python=exe,
        executable=str(data.get("executable") or exe),
        python_version=str(data.get("python") or "?"),
        cwd=Path(str(data.get("cwd") or folder)),
        given=python is not None,
        copies=tuple(copies),
    )


def who(d: Discovery) -> str:
    """How the interpreter is named in messages: ``'python' run here`` or the path given with --python."""
    return f"{d.python} run here" if d.given else "'python' run here"


def describe(c: Copy) -> str:
    return f"{c.version or 'unknown version'} at {c.package}"


def shadow_note(d: Discovery, acting_on: Path) -> str | None:
    """One line when several copies are visible: which one the command acts on and what it shadows (or is shadowed by)."""
    if len(d.copies) < 2:
        return None
    acting = next((c for c in d.copies if c.package == acting_on), None)
    others = [c for c in d.copies if c.package != acting_on]
    head = f"{len(d.copies)} copies of ultralytics are visible from {d.cwd}: "
    listed = " and ".join(describe(c) for c in others)
    if acting is not None and acting.imported:
        return head + f"acting on {describe(acting)} (imported first, by {who(d)}); it shadows {listed}"
    winner = d.winner
    if acting is not None and winner is not None:
        return (
            head + f"acting on {describe(acting)}, which is shadowed by {describe(winner)} "
            f"(imported first, by {who(d)})"
        )
    return None


@dataclass(frozen=True)
class Resolved:
    """The target a command acts on, and the discovery that picked it (None with --target)."""

    target: Target
    discovery: Discovery | None

    @property
    def note(self) -> str | None:
        return None if self.discovery is None else shadow_note(self.discovery, self.target.package)


def resolve(
    target: str | os.PathLike | None = None,
    python: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
) -> Resolved:
    """``--target`` as given (no discovery), else the ultralytics that ``python`` run in ``cwd`` imports.

    With ``python`` given, the target remembers it: the children of gen-yaml, check and port-weights run under it.
    """
    if target is not None and python is not None:
        raise PatchError("pass either --target or --python, not both")
    if target is not None:
        return Resolved(find_target(target), None)
    d = discover(python, cwd, env)
    winner = d.winner
    if winner is None:
        hint = "pass --python for another interpreter, or --target PATH" if not d.given else "or pass --target PATH"
        raise PatchError(
            f"ultralytics is not importable by {d.python} run in {d.cwd}; install it there, {hint}"
        )
    tgt = find_target(winner.package)
    if d.given:
        tgt = Target(package=tgt.package, version=tgt.version, python=d.python)
    return Resolved(tgt, d)


@dataclass(frozen=True)
class CopyState:
    copy: Copy
    state: str  # the engine's status ("applied", "not-applied", "partial", "conflict"), or "unsupported", "unknown"
    why: str  # for "unsupported" and "unknown": the one-line reason

    def to_dict(self) -> dict:
        return {
            "path": str(self.copy.package),
            "version": self.copy.version,
            "state": self.state,
            "imported": self.copy.imported,
            **({"why": self.why} if self.why else {}),
        }


def copy_states(d: Discovery, known: dict[Path, str] | None = None) -> list[CopyState]:
    """The patch state of every visible copy, read only (the engine's status writes nothing).

    ``known`` maps package folders whose state the caller already has (the target's) to that state.
    """
    from mhsa_patch.patching import engine

    states = []
    for c in d.copies:
        if known and c.package in known:
            states.append(CopyState(c, known[c.package], ""))
            continue
        try:
            st = engine.status(find_target(c.package))
        except PatchError as e:
            kind = "unsupported" if "is not supported" in str(e) else "unknown"
            states.append(CopyState(c, kind, str(e)))
            continue
        states.append(CopyState(c, st.state, ""))
    return states
