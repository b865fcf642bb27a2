"""The variants of an ablation, from their command-line names to the model YAMLs each run trains.

``stock`` (the release's config at ``--scale``), ``stock:s`` (another scale: the capacity control), a layer of the
patch or a user layer applied to the target (``apply --layer``) with gen-yaml's default placement (``MHSA``, ``BoT3``,
``ECA``), or at named points (``MHSA@P3``, ``ECA@P3+P4+P5``),
and ``yaml:PATH`` (the user's own file, linted first: a lint error refuses it). Every YAML comes from gen-yaml's own
code (:func:`mhsa_patch.modelyaml.emit.generate`), named so that ultralytics reads the right scale from the name.
Pure: no file is written here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mhsa_patch.errors import PatchError, UsageError
from mhsa_patch.modelyaml.request import SCALES, TASKS, Request
from mhsa_patch.patches import LAYERS

DEFAULT = ("stock", "MHSA", "BoT3")
BASELINE = "stock"


@dataclass(frozen=True)
class Variant:
    """One variant: ``name`` as given on the command line, ``slug`` for folder names, the YAML's file name and text."""

    name: str
    slug: str
    file_name: str
    text: str
    scale: str | None


def _slug(name: str) -> str:
    if name.startswith("yaml:"):
        return "yaml-" + re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name[5:]).stem)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("@", "-").replace("+", "-").replace(":", "-")).strip("-")


def _layer(name: str, extra: tuple = ()):
    for spec in (*LAYERS, *extra):
        if spec.name == name:
            return spec
    for spec in (*LAYERS, *extra):
        if spec.name.lower() == name.lower():
            return spec
    return None


def known_names(extra: tuple = ()) -> str:
    layers = ", ".join(s.name for s in (*LAYERS, *extra))
    return f"stock, stock:SCALE, {layers}, LAYER@P3 (or @P3+P4+P5), yaml:PATH"


def _user_specs(target) -> tuple:
    """The target's user layers (``apply --layer``), as gen-yaml reads them."""
    from mhsa_patch.patching.engine import user_specs

    return user_specs(target)


def build_variant(target, name: str, *, scale: str, base: str | None, task: str | None, imgsz: int) -> Variant:
    """The YAML for one variant name; a one-line :class:`PatchError` for an unknown name or a YAML that would not
    build (a ``yaml:PATH`` lint error, a placement gen-yaml refuses)."""
    from mhsa_patch.modelyaml.emit import generate

    stripped = name.strip()
    base_ = (base or "yolov8").lower()
    task_ = (task or "detect").lower()
    if stripped.startswith("yaml:"):
        return _user_yaml(target, stripped, imgsz)
    head, _, rest = stripped.partition(":")
    if head.lower() == "stock":
        sc = (rest or scale).strip().lower()
        if sc not in SCALES:
            raise UsageError(f"--variant {name}: unknown scale '{rest}': choose one of {', '.join(SCALES)}")
        res = generate(target, Request(scale=sc, base=base, task=task))
        file_name = f"{base_}{sc}{TASKS.get(task_, '')}-stock.yaml"
        return Variant(stripped, _slug(stripped), file_name, res.stock_text, sc)
    layer_name, _, at = stripped.partition("@")
    extra = _user_specs(target)
    spec = _layer(layer_name, extra)
    if spec is None or rest:
        hint = "" if extra else "; a layer of your own is applied first with 'mhsa-patch apply --layer FILE.py'"
        raise UsageError(f"--variant {name}: unknown variant: choose from {known_names(extra)}{hint}")
    at_value = ",".join(p.strip() for p in at.split("+")) if at else None
    if at and not all(at_value.split(",")):
        raise UsageError(f"--variant {name}: an empty insertion point (write {spec.name}@P3+P4+P5)")
    req = Request(scale=scale, base=base, task=task, at=at_value, layer=spec.name, extra=extra)
    res = generate(target, req)
    where = "-" + "-".join(at_value.split(",")) if at_value else ""
    file_name = f"{base_}{scale}{TASKS.get(task_, '')}{spec.suffix}{where}.yaml"
    return Variant(f"{spec.name}@{at}" if at else spec.name, _slug(stripped), file_name, res.text, scale)


def _user_yaml(target, name: str, imgsz: int) -> Variant:
    from mhsa_patch.modelyaml.lint import lint_file
    from mhsa_patch.modelyaml.naming import guess_scale

    path = Path(name[5:]).expanduser()
    if not path.is_file():
        raise PatchError(f"--variant {name}: {path}: no such model YAML")
    result = lint_file(path, target, imgsz=imgsz)
    if result.error is not None:
        raise PatchError(f"--variant {name}: {path.name} does not build: {result.error.message}")
    text = path.read_bytes().decode("utf-8")
    return Variant(name, _slug(name), path.name, text, guess_scale(path.name) or result.scale or None)


def plan_variants(target, names: list[str] | None, *, scale: str, base, task, imgsz: int) -> list[Variant]:
    """Every variant asked for, ``stock`` first (the baseline, added if missing), each name once, distinct files."""
    asked = list(names or DEFAULT)
    out: list[Variant] = []
    for name in asked:
        v = build_variant(target, name, scale=scale, base=base, task=task, imgsz=imgsz)
        if any(o.name == v.name for o in out):
            raise PatchError(f"--variant {v.name} is given twice")
        out.append(v)
    if not any(v.name == BASELINE for v in out):
        out.insert(0, build_variant(target, BASELINE, scale=scale, base=base, task=task, imgsz=imgsz))
    for k, v in enumerate(out):
        for w in out[:k]:
            if v.slug == w.slug or v.file_name == w.file_name:
                raise PatchError(f"--variant {v.name} and {w.name} would share the file {v.file_name}: rename one")
    return out
