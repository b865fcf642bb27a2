"""``gen-yaml`` from request to file: generate, pick and check the output path, optionally build, write atomically.

Plain functions returning results; nothing here prints. The CLI (:mod:`mhsa_patch.cli.gen_yaml`) parses the options,
calls :func:`write_model_yaml` and prints what it returns.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mhsa_patch.errors import PatchError
from mhsa_patch.modelyaml import emit, naming
from mhsa_patch.modelyaml.request import Request
from mhsa_patch.patching.journal import write_atomic
from mhsa_patch.patching.target import Target


@dataclass(frozen=True)
class Written:
    """What :func:`write_model_yaml` did: the file, the generated config, warnings, the target's patch state."""

    path: Path
    result: emit.Result
    warnings: tuple[str, ...]
    state: str  # the engine's status of the target ("applied", "not-applied", ...) or "unknown"
    probe: dict | None = None  # the --check build report (mhsa_patch.child.probe), when asked
    unchanged: bool = False  # the file already held exactly this text: nothing was written


def patch_state(target: Target) -> tuple[str, str]:
    """``(state, why)``: the engine's status ("applied", "not-applied", "partial", "conflict") or "unknown"."""
    from mhsa_patch.patching import engine

    try:
        st = engine.status(target)
    except PatchError as e:
        return "unknown", str(e)
    return st.state, "; ".join(st.notes)


def output_path(output: str | None, file_name: str, cwd: Path | None = None) -> Path:
    """The file to write: ``file_name`` in ``cwd`` by default, ``output`` itself, or ``file_name`` in the folder
    ``output`` names (an existing folder, or any path ending in a separator, which must then exist)."""
    cwd = Path.cwd() if cwd is None else cwd
    if output is None:
        return (cwd / file_name).absolute()
    path = Path(output).expanduser()
    if not path.is_absolute():
        path = cwd / path
    if path.is_dir() or output.endswith(("/", os.sep)):
        if not path.is_dir():
            raise PatchError(f"{output}: no such directory")
        path = path / file_name
    return path.absolute()


def holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a regular file holding exactly ``data`` (read no further than its length)."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def write_text(path: Path, text: str, *, force: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` in one step; without ``force``, refuse if the file exists (even if it
    appeared meanwhile)."""
    try:
        write_atomic(path, text.encode("utf-8"), exclusive=not force)
    except FileExistsError:
        raise naming.exists_error(path) from None
    except OSError as e:
        raise PatchError(f"cannot write {path}: {e.strerror or e}") from None


def build_report(target: Target, result: emit.Result, name: str, imgsz: int) -> dict:
    """Build the generated model (as ``name``) and its stock model with the target's ultralytics in a child."""
    from mhsa_patch.child.launch import run_probe

    with tempfile.TemporaryDirectory(prefix="mhsa-gen-yaml-") as tmp:
        # both by path, each in its own folder: a stock name alone would resolve against the cwd first
        trial = Path(tmp) / "mhsa" / name
        stock = Path(tmp) / "stock" / result.stock_name
        for file, text in ((trial, result.text), (stock, result.stock_text)):
            file.parent.mkdir()
            file.write_bytes(text.encode("utf-8"))
        return run_probe(target, [str(trial), str(stock)], imgsz)


def write_model_yaml(
    target: Target,
    req: Request,
    output: str | None = None,
    *,
    force: bool = False,
    check: bool = False,
    apply: str = "mhsa-patch apply",
) -> Written:
    """Generate the config for ``req``, check the output name, build it first with ``check``, then write it.

    Raises :class:`PatchError` (one line) before anything is written: bad request or base, refused output name,
    existing file that holds something else without ``force``, ``check`` on an unpatched target, a model that does
    not build (``apply``: the command the refusal suggests). A file that already holds exactly the generated text is left as it is (``unchanged``): running the
    same command twice succeeds.
    """
    result = emit.generate(target, req)
    path = output_path(output, result.file_name)
    unchanged = holds(path, result.text.encode("utf-8"))
    notes = list(result.warnings) + naming.check_output(
        path, result.request or req, target, force=force or unchanged, chosen=output is not None
    )
    state, why = patch_state(target)
    if check and state != "applied":
        detail = f" ({why})" if state == "unknown" and why else ""
        raise PatchError(
            f"--check needs the patch: ultralytics {target.version} at {target.package} is not patched "
            f"(status: {state}{detail}); run '{apply}' first"
        )
    probe = build_report(target, result, path.name, req.imgsz) if check else None
    if not unchanged:
        write_text(path, result.text, force=force)
    return Written(path, result, tuple(notes), state, probe, unchanged)
