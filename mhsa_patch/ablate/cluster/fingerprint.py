"""What a worker node must match before it trains a run: the recipe's ultralytics, patch, torch and dataset.

The driver records its own in the recipe (:func:`recorded`: the journal's hash of every patched file and the
dataset's checksum, beside the ``ultralytics`` and ``torch`` releases the measurement child read). Each task
compares its node against that (:func:`difference`) before anything trains, and a mismatch fails that run in one
line naming the node and the difference, as ``node 10.0.0.7: ultralytics 8.3.40, the recipe has 8.4.190``: a
worker whose ultralytics is another release, or unpatched, or patched by another mhsa-patch, would train another
model than the one the table names.

Nothing here imports torch or ultralytics: the releases are read from their files (``ultralytics/__init__.py``,
``torch/version.py``, found by the interpreter that runs the children), the patch from the journal and the
files' hashes, the dataset from its label files and image lists (:func:`mhsa_patch.ablate.data.checksum`) at the
paths the driver's ultralytics resolved (the synthetic set: drawn on the node, identical by seed).
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhsa_patch.errors import PatchError

# Where the interpreter that runs the children finds torch (the target's folder first, as for a child): the one
# line that runs in that interpreter, which may be another than this one (--python).
_FIND_TORCH = "import importlib.util as u; s = u.find_spec('torch'); print(s.origin if s and s.origin else '')"


@dataclass(frozen=True)
class Expected:
    """What every node must have: from the recipe."""

    ultralytics: str
    torch: str
    patch: Mapping[str, str]  # patched file (relative to the package) -> SHA-256 of its patched bytes
    data: str  # the recipe's dataset: a YAML's absolute path, or synthetic:N
    data_sha256: str

    @classmethod
    def of(cls, recipe: Mapping[str, Any]) -> "Expected":
        return cls(
            ultralytics=str(recipe.get("ultralytics")),
            torch=str(recipe.get("torch")),
            patch=dict(recipe.get("patch") or {}),
            data=str(recipe.get("data")),
            data_sha256=str(recipe.get("data_sha256") or ""),
        )


def patch_hashes(target) -> dict[str, str]:
    """The journal's SHA-256 of every patched file, once each file is checked to still have it; a one-line
    :class:`PatchError` (the status and the command that fixes it) where the target is not patched as its journal
    says."""
    from mhsa_patch.patching.atomic import read_confined, sha256
    from mhsa_patch.patching.journal import Journal, MAX_JOURNAL_BYTES

    record = Journal(target.package).read()
    if record is not None and record.state == "applied" and record.files:
        hashes = {rel: entry.patched_sha256 for rel, entry in sorted(record.files.items())}
        now = {rel: sha256(read_confined(target.package, target.file(rel), MAX_JOURNAL_BYTES)) for rel in hashes}
        if now == hashes:
            return hashes
    from mhsa_patch.patching.engine import status  # the slow, full reading: only to name what is wrong

    st = status(target)
    if st.state.value == "applied":
        edited = [f.rel for f in st.files if f.modified_since_apply]
        what = f"{', '.join(edited)} edited since apply" if edited else "its files differ from its journal"
        raise PatchError(f"ultralytics {target.version} at {target.package} is patched, but {what}; "
                         f"run 'mhsa-patch apply --target {target.package}' there")  # fmt: skip
    raise PatchError(f"ultralytics {target.version} at {target.package} is not patched (status: {st.state.value}); "
                     f"run 'mhsa-patch apply --target {target.package}' there")  # fmt: skip


def _version_py(path: Path) -> str | None:
    """``__version__`` of a ``version.py``, read as text."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        value = node.value
        if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    return None


def torch_release(target) -> str:
    """``torch.__version__`` (``2.14.1+cu130``: the build counts) of the torch the children would import, read
    from its ``version.py`` without importing it."""
    from mhsa_patch.child.env import interpreter, target_env

    python = interpreter(target)
    try:
        proc = subprocess.run([python, "-c", _FIND_TORCH], env=target_env(target), capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PatchError(f"{python} could not be asked for its torch: {e}") from None
    origin = proc.stdout.strip()
    if proc.returncode != 0 or not origin:
        raise PatchError(f"{python} has no torch")
    version = _version_py(Path(origin).parent / "version.py")
    if version is None:
        raise PatchError(f"{Path(origin).parent}: no readable version.py (is this torch complete?)")
    return version


def recorded(target, splits: Mapping) -> dict[str, Any]:
    """The recipe's fields that say what was trained beyond the releases: ``patch`` (the journal's hash of every
    patched file) and ``data_sha256`` (the checksum of the dataset's ``splits``, as the measuring child resolved
    them)."""
    from mhsa_patch.ablate.data import checksum

    return {"patch": patch_hashes(target), "data_sha256": checksum(splits).sha256}


def _short(h: str) -> str:
    return h[:12] if h else "none"


def difference(expected: Expected, target, splits: Mapping | None) -> str | None:
    """The first way this node differs from ``expected``, in words (the caller names the node), or None.

    ``target``: this node's copy at the driver's path (:func:`mhsa_patch.patching.target.find_target`);
    ``splits``: the dataset as this node sees it (the driver's resolved paths, or the synthetic set drawn here);
    None: not checked (the latency task trains nothing).
    """
    from mhsa_patch.ablate.data import checksum

    if target.version != expected.ultralytics:
        return f"ultralytics {target.version}, the recipe has {expected.ultralytics}"
    try:
        hashes = patch_hashes(target)
    except PatchError as e:
        return str(e)
    for rel in sorted(set(hashes) | set(expected.patch)):
        got, want = hashes.get(rel, ""), expected.patch.get(rel, "")
        if got != want:
            return (f"the patched {rel} differs from the recipe's (sha256 {_short(got)}, the recipe has "
                    f"{_short(want)}); apply the same mhsa-patch release there")  # fmt: skip
    try:
        torch = torch_release(target)
    except PatchError as e:
        return str(e)
    if torch != expected.torch:
        return f"torch {torch}, the recipe has {expected.torch}"
    if splits is None:
        return None
    try:
        got_data = checksum(splits)
    except (OSError, UnicodeDecodeError) as e:
        return f"the dataset {expected.data} cannot be read there: {e}"
    if expected.data_sha256 and got_data.sha256 != expected.data_sha256:
        return (f"the dataset {expected.data} differs: its label files or image list have sha256 "
                f"{_short(got_data.sha256)} there, the recipe has {_short(expected.data_sha256)} "
                f"({got_data.images} images, {got_data.labels} label files there)")  # fmt: skip
    return None
