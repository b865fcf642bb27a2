"""Whether the target's Python can import the modules a user layer's text imports, found without importing them.

A layer that imports ``einops`` where einops is not installed would break every ``import ultralytics`` once it is
in the package, so ``apply --layer`` refuses it before anything is written, naming the module and the line.

Each module is looked up the way the import system would, with the finders alone: a built-in module, then
``importlib.machinery.PathFinder`` over the target's path, one dotted component at a time inside the package found
for the previous one (``torch.nn.functional``: torch's folder, then ``torch/nn``), so no ``__init__`` runs.
``ultralytics.*`` modules are the target's own files. The path is the one the target's children get: the target's
site folder, ``PYTHONPATH``, then the interpreter's own path without the current folder (a layer must not depend on
the folder training starts in). For the interpreter running the tool that path is known here; for another one
(``--python``) the same lookup runs there, in one short child that imports nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Optional

from mhsa_patch.patching.target import Target

# Run in another interpreter: argv[1:] = entries to put first, then "--", then the modules; prints the missing ones.
_FINDER = r"""
import importlib.machinery as m, os, sys
args = sys.argv[1:]
k = args.index("--")
first, modules = args[:k], args[k + 1:]
cwd = os.getcwd()
path = first + [p for p in sys.path if p and os.path.abspath(p) != cwd]
def found(name):
    top, *rest = name.split(".")
    if top in sys.builtin_module_names:
        return not rest
    spec = m.PathFinder.find_spec(top, path)
    for k in range(len(rest)):
        if spec is None or not spec.submodule_search_locations:
            return False
        spec = m.PathFinder.find_spec(".".join([top, *rest[: k + 1]]), list(spec.submodule_search_locations))
    return spec is not None
print("\n".join(n for n in modules if not found(n)))
"""


def _path_entries(target: Target) -> list[str]:
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [str(target.site), *extra]


def _found_here(name: str, path: list[str]) -> bool:
    import importlib.machinery as machinery

    top, *rest = name.split(".")
    if top in sys.builtin_module_names:
        return not rest
    spec = machinery.PathFinder.find_spec(top, path)
    for k in range(len(rest)):
        if spec is None or not spec.submodule_search_locations:
            return False
        spec = machinery.PathFinder.find_spec(".".join([top, *rest[: k + 1]]), list(spec.submodule_search_locations))
    return spec is not None


def _in_target(target: Target, name: str) -> bool:
    """``ultralytics.nn.modules.conv`` -> is there ``nn/modules/conv.py`` (or a package) in the target?"""
    parts = name.split(".")[1:]
    if not parts:
        return True
    base = target.package.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def missing(target: Target, modules: Sequence[str]) -> list[str]:
    """The modules of ``modules`` (absolute, dotted) that the target's Python cannot find; the others are there."""
    wanted = list(dict.fromkeys(modules))
    out = [m for m in wanted if m.split(".")[0] == target.package.name and not _in_target(target, m)]
    rest = [m for m in wanted if m.split(".")[0] != target.package.name]
    if not rest:
        return out
    if target.python is None:
        cwd = os.getcwd()
        path = _path_entries(target) + [p for p in sys.path if p and os.path.abspath(p) != cwd and p != _script_dir()]
        return out + [m for m in rest if not _found_here(m, path)]
    try:
        r = subprocess.run(
            [target.python, "-c", _FINDER, *_path_entries(target), "--", *rest],
            capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return out  # cannot ask: the build (check) will tell
    if r.returncode != 0:
        return out
    return out + [line for line in r.stdout.splitlines() if line]


def _script_dir() -> Optional[str]:
    """The folder of the running script (a console script's ``bin/``), which ``sys.path`` starts with."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return os.path.dirname(os.path.abspath(main)) if main else None
