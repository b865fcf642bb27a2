"""File names of model configs: the scale ultralytics reads from a name, and output names that build what was asked.

Ultralytics takes the scale from the file *name* only (``yolov8n-...yaml`` -> 'n'). Up to 8.4.100 it tries the
scale-less sibling (``yolov8-MHSA.yaml``) first (``check_yaml(unified_path, hard=False) or check_yaml(path)``); by
8.4.190 it tries the name itself first and the sibling only when the name does not exist. The rules here mirror
both, read from the target's own ``nn/tasks.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mhsa_patch.errors import PatchError
from mhsa_patch.modelyaml.request import TASKS, Request
from mhsa_patch.patching.target import Target, version_tuple

# ultralytics' own regexes (tasks.py): the scale guess and the "unified" scale-less path tried first up to 8.4.x.
SCALE_RES = (re.compile(r"yolo(e-)?[v]?\d+([nslmx])"), re.compile(r"yolov\d+([nslmx])"))
UNIFY_RE = re.compile(r"(\d+)([nslmx])(.+)?$")
MODEL_NAME_RE = re.compile(r"yolo(e-)?v?\d+")


def guess_scale(name: str) -> str:
    """The scale ultralytics reads from a file name ('' when none), by the newest and the oldest regex."""
    stem = Path(name).stem
    for pattern in SCALE_RES:
        m = pattern.search(stem)
        if m:
            return m.group(m.lastindex)
    return ""


def unified_path(path: str | Path) -> str:
    """The scale-less path ultralytics derives (``.../yolov8n-MHSA.yaml`` -> ``.../yolov8-MHSA.yaml``)."""
    return UNIFY_RE.sub(r"\1\3", str(path))


def output_name(req: Request) -> str:
    """``yolov8n-MHSA.yaml``, ``yolo11s-seg-BoT3.yaml``, ``yolov8n-MHSA-P3P4P5-h8.yaml``: the scale right after the
    model number (ultralytics' rule), the layer's ``suffix``, then one tag per option that changes the file
    (:func:`variant_tags`), so that two different requests never default to the same file.

    With ``--from my-model.yaml``: ``my-model-MHSA.yaml``, the scale letter set to ``req.scale`` where the name
    carries one (``yolov8n-p2.yaml --scale s`` -> ``yolov8s-p2-MHSA.yaml``) or names a model family without one
    (``yolov8-bifpn.yaml`` -> ``yolov8n-bifpn-MHSA.yaml``), so that ultralytics reads the scale the file builds.
    """
    suffix = req.spec.suffix + "".join(f"-{tag}" for tag in variant_tags(req))
    if req.from_yaml is not None:
        return f"{_scaled_stem(Path(req.from_yaml).stem, req.scale)}{suffix}.yaml"
    return f"{req.base}{req.scale}{TASKS[req.task]}{suffix}.yaml"


def variant_tags(req: Request) -> list[str]:
    """What sets the file apart from the default request: ``P3P4P5`` (``--at``; an index is ``L12``, a module
    upper-cased), ``C256`` (``--channels``), ``h8`` (``--heads``), ``pos640`` (``--pos-emb`` at ``--imgsz``),
    ``pre`` (``--lateral pre-attention``). Each tag's digits are followed by ``-`` or the end, never by a scale letter, so a tag cannot
    change the scale ultralytics reads from the name."""
    tags = []
    if req.at is not None and req.points != ("P5",):
        tags.append("".join(f"L{p}" if p.isdigit() else p.upper() for p in req.points))
    if req.channels is not None:
        tags.append("C" + "-".join(map(str, req.channels)))
    if req.heads != 4:
        tags.append(f"h{req.heads}")
    if req.pos_emb:
        tags.append(f"pos{req.imgsz}")
    if req.lateral != "attention":
        tags.append("pre")
    return tags


def stock_name(req: Request) -> str:
    """The unmodified model of the same scale: ``yolov8n.yaml``; with ``--from``, the source's name, scale set."""
    if req.from_yaml is not None:
        return f"{_scaled_stem(Path(req.from_yaml).stem, req.scale)}.yaml"
    return f"{req.base}{req.scale}{TASKS[req.task]}.yaml"


def _scaled_stem(stem: str, scale: str | None) -> str:
    if scale is None:  # a file without 'scales': the name's scale is not read
        return stem
    for pattern in SCALE_RES:
        m = pattern.search(stem)
        if m:
            k = m.lastindex
            return stem[: m.start(k)] + scale + stem[m.end(k) :]
    m = MODEL_NAME_RE.search(stem)
    if m:
        return stem[: m.end()] + scale + stem[m.end() :]
    return stem


def check_output(
    path: Path, req: Request, target: Target, force: bool = False, *, chosen: bool = True
) -> list[str]:
    """Refuse output names that would not build the requested scale; return warnings for risky surroundings.

    Refused: an existing file (without ``force``; the caller passes ``force`` for a file that already holds what it
    would write), a directory, a missing parent folder, a suffix other than
    .yaml/.yml, a name whose scale differs from ``req.scale``; and, on releases that try the scale-less name first
    (up to 8.4.100), a scale-less name of a model family (``yolov8-MHSA.yaml``), which they would load in place of
    the scaled files, and a name that resolves to the release's own config (``yolov8n.yaml``). On a release that
    tries the name itself first (8.4.190) a scale-less name is harmless: it builds its one 'scales' row, with a
    warning. ``req.scale`` None (a ``--from`` file without ``scales``, whose size the name does not change) skips
    the scale rules.
    ``chosen=False`` (the default name, not the user's) leaves out the warning about a name without a scale.
    """
    warnings: list[str] = []
    name = path.name
    if path.is_dir():
        raise PatchError(f"{path} is a directory")
    if not path.parent.is_dir():
        raise PatchError(f"{path.parent}: no such directory")
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise PatchError(f"{name}: a model config must end in .yaml (ultralytics loads other names as weights)")
    if path.exists() and not force:
        raise exists_error(path)
    guessed = guess_scale(name)
    stem = Path(name).stem
    unified_first = _release_tries_unified_first(target)
    if req.scale is None:
        pass
    elif guessed and guessed != req.scale:
        raise PatchError(
            f"{name}: ultralytics reads scale '{guessed}' from this name but the file is scale '{req.scale}': "
            f"name it {output_name(req)}"
        )
    elif not guessed and MODEL_NAME_RE.search(stem):
        if unified_first:
            raise PatchError(
                f"{name}: ultralytics {target.version} tries the scale-less name first, so it would load this file "
                f"in place of the scaled files next to it ({output_name(req)} ...): name it {output_name(req)}"
            )
        # The target tries the scaled name first: this file loads only when asked for by its own name, and then
        # builds its one 'scales' row. Harmless here; say what older releases would do with it.
        if chosen:
            warnings.append(
                f"{name} carries no scale: it still builds scale {req.scale} (its only 'scales' row); ultralytics up "
                f"to 8.4.100 would load it in place of the scaled files next to it, such as {output_name(req)}"
            )
        return warnings
    unified = unified_path(path)
    if unified != str(path):
        sibling = Path(unified)
        if unified_first and sibling.exists():
            warnings.append(
                f"{sibling} exists: ultralytics {target.version} loads it instead of {name} "
                f"(it tries the scale-less name first); delete or rename it"
            )
        if unified_first and _in_release(target, sibling.name):
            raise PatchError(
                f"{name}: ultralytics {target.version} would load its own {sibling.name} instead "
                f"(it tries the scale-less name first): name it {output_name(req)}"
            )
    elif not guessed and req.scale is not None and chosen:
        warnings.append(f"{name} carries no scale: it still builds scale {req.scale} (its only 'scales' row)")
    return warnings


def exists_error(path: Path) -> PatchError:
    """The refusal for an output file that holds something else, naming both ways out."""
    return PatchError(
        f"{path} exists and differs from what gen-yaml would write: pass --force to overwrite it, "
        f"or -o NAME to write another file"
    )


def _release_tries_unified_first(target: Target) -> bool:
    try:
        tasks = (target.package / "nn" / "tasks.py").read_text(encoding="utf-8")
    except OSError:
        return version_tuple(target.version) <= (8, 4, 100)
    return "check_yaml(unified_path, hard=False)" in tasks


def _in_release(target: Target, name: str) -> bool:
    for rel in ("cfg", "models"):
        root = target.package / rel
        if root.is_dir() and any(root.rglob(name)):
            return True
    return False
