"""Finding the ultralytics package to patch, without importing ultralytics or torch."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from mhsa_patch.errors import PatchError

FIRST_SUPPORTED = (8, 0, 98)  # first release with the nn/modules/ package

# The files the patch edits, relative to the package folder (what each gets is declared in edits.EDITS).
TARGET_FILES = ("nn/modules/conv.py", "nn/modules/__init__.py", "nn/tasks.py")


@dataclass(frozen=True)
class Target:
    """An ultralytics package folder (the one holding ``nn/tasks.py``) and its release."""

    package: Path
    version: str
    python: str | None = None  # the interpreter that imports it, when given with --python (else this one)

    @property
    def site(self) -> Path:
        """The folder that holds ``ultralytics/``: put it first on PYTHONPATH to import this copy."""
        return self.package.parent

    def file(self, rel: str) -> Path:
        return self.package / rel


def read_version(package: Path) -> str:
    """``__version__`` from ``ultralytics/__init__.py``, read as text (importing would pull in torch)."""
    init = package / "__init__.py"
    try:
        tree = ast.parse(init.read_bytes(), filename=str(init))
    except (OSError, SyntaxError, ValueError) as e:
        raise PatchError(f"cannot read the ultralytics version from {init}: {e}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    raise PatchError(f"__version__ not found in {init}")


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split("."):
        digits = "".join(ch for ch in p if ch.isdigit()) if p else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def find_target(path: str | Path) -> Target:
    """Resolve ``--target`` to a supported package.

    ``path`` may be the package folder itself (holding ``nn/tasks.py``) or a folder that contains ``ultralytics/``
    (a git checkout, a site-packages). Without a path, :func:`mhsa_patch.patching.discover.resolve` (one level up:
    it imports this module) picks the copy that ``python`` imports.
    """
    if str(path).strip() == "":
        raise PatchError("--target is empty; pass the ultralytics package folder or a folder containing it")
    given = Path(path).expanduser()
    if not given.exists():
        raise PatchError(f"{given}: no such file or directory")
    if not given.is_dir():
        raise PatchError(f"{given}: not a directory")
    if (given / "nn").is_dir() or (given / "nn" / "modules.py").is_file() or given.name == "ultralytics":
        package = given
    elif (given / "ultralytics").is_dir():
        package = given / "ultralytics"
    else:
        raise PatchError(f"{given}: not an ultralytics package (no nn/tasks.py, no ultralytics/ folder inside)")
    package = package.resolve()
    if not (package / "__init__.py").is_file():
        raise PatchError(f"{package}: not an ultralytics package (no __init__.py)")
    version = read_version(package)
    if (package / "nn" / "modules.py").is_file() or version_tuple(version) < FIRST_SUPPORTED:
        raise PatchError(
            f"ultralytics {version} at {package} is not supported: nn/modules/ first appeared in 8.0.98; "
            "upgrade with 'pip install -U ultralytics'"
        )
    if not (package / "nn" / "tasks.py").is_file():
        raise PatchError(f"{package}: not an ultralytics package (nn/tasks.py not found)")
    return Target(package=package, version=version)
