"""Old releases on today's torch: whether a release's own ``torch.load`` calls pass ``weights_only``, read as files.

Torch 2.6 made ``weights_only=True`` the default of ``torch.load``. Ultralytics releases up to the 8.2 series call
``torch.load(file, map_location="cpu")`` without the argument (``nn/tasks.py``'s ``torch_safe_load``,
``utils/torch_utils.py``'s ``strip_optimizer``), so torch >= 2.6 refuses their checkpoints: ``yolo train`` stops
when it strips ``last.pt`` and the validator cannot reload ``best.pt``. Later releases (8.2.103 among them) define
``torch_load`` in ``utils/patches.py``, which passes ``weights_only=False`` itself, and load through it (8.2/8.3 by
rebinding ``torch.load`` to it on import, 8.4 by calling it). That function is what tells the two apart.

Read here without importing anything (``status`` never imports torch): the rule is the file's structure, the torch
version the target interpreter's installed metadata. The tool's own children route such a release's loading
through the restricted loader (:func:`mhsa_patch.child.compat.route_checkpoint_loading`), so the tool works; the
note says the user's own ``yolo train`` outside the tool will not.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
from pathlib import Path

from mhsa_patch.patching.atomic import read_confined
from mhsa_patch.patching.target import Target, version_tuple

WEIGHTS_ONLY_DEFAULT = (2, 6)  # the first torch whose torch.load defaults to weights_only=True
FIXED_IN = "8.2.103"  # a release known to pass weights_only itself (the matrix's 8.2 release)
_LIMIT = 2 * 1024 * 1024


def loads_without_weights_only(package: Path) -> bool:
    """Whether the release at ``package`` calls ``torch.load`` without ``weights_only`` (no ``torch_load`` in
    ``utils/patches.py``). An unreadable file counts as the old behaviour: the routing it leads to is the safe one."""
    path = Path(package) / "utils" / "patches.py"
    try:
        tree = ast.parse(read_confined(Path(package), path, _LIMIT), filename=str(path))
    except FileNotFoundError:
        return True  # releases before utils/patches.py existed
    except Exception:  # noqa: BLE001 - unreadable, unparsable, or a link out of the package (refused)
        return True
    return not any(isinstance(node, ast.FunctionDef) and node.name == "torch_load" for node in tree.body)


_PROBE = "import importlib.metadata as m\ntry:\n    print(m.version('torch'))\nexcept Exception:\n    print('')\n"


def torch_version(target: Target) -> str | None:
    """The version of the torch the target's children (and the user's ``yolo``) import, from installed metadata:
    a torch beside ``ultralytics/`` in the target's folder first (it goes first on their path), else the target
    interpreter's (``--python``: asked in a subprocess that imports nothing), else this one's. ``None`` if none."""
    for dist in importlib.metadata.distributions(name="torch", path=[str(target.site)]):
        return dist.version
    if target.python:
        try:
            proc = subprocess.run([target.python, "-B", "-c", _PROBE], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() or None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def weights_only_note(target: Target, torch: str | None = None) -> str | None:
    """One line when the user's own ``yolo train`` on this release hits torch's weights-only wall; else ``None``.

    ``torch``: the torch version, if already known (default: :func:`torch_version`).
    """
    if not loads_without_weights_only(target.package):
        return None
    torch = torch if torch is not None else torch_version(target)
    if torch is None or version_tuple(torch)[:2] < WEIGHTS_ONLY_DEFAULT:
        return None
    return (
        f"ultralytics {target.version} calls torch.load without weights_only and torch {torch} refuses its "
        f"checkpoints: your own 'yolo train' outside mhsa-patch fails reloading last.pt (mhsa-patch's runs load "
        f"them safely); fix: torch<2.6 with this release, or ultralytics>={FIXED_IN}"
    )
