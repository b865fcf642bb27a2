"""The recipe of an ablation: the one set of training arguments every run shares, its file, and its check.

Every run gets the same ``YOLO.train`` arguments (the options, everything after ``--``, ``deterministic=True``);
only ``model`` and ``seed`` (and ``name``, the run's folder) differ. The recipe is written once to
``<dir>/recipe.yaml``; a later invocation in the same folder must have the same one, else it is refused naming the
first key that differs (another experiment needs ``--name``). ``device`` and ``device_name`` say where the runs were
placed, not how they train, and are not compared (a resume may use other GPUs). ``patch`` (the journal's hash of
every patched file) and ``data_sha256`` (the dataset's checksum) are recorded for the Ray worker nodes' check
(:mod:`mhsa_patch.ablate.cluster.fingerprint`), not compared: a recipe written by an earlier release lacks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mhsa_patch.errors import PatchError, UsageError

# The arguments the command sets itself (the options, the run's place): refused after ``--``.
OWNED = {
    "model": "--variant", "seed": "--seeds", "data": "--data", "epochs": "--epochs", "imgsz": "--imgsz",
    "batch": "--batch", "device": "--device", "project": "--project", "name": "--name", "exist_ok": None,
    "resume": None, "deterministic": None, "save_dir": None, "mode": None,
}  # fmt: skip
COMPARED = ("data", "epochs", "imgsz", "batch", "weights", "scale", "base", "task", "ultralytics", "torch", "extra",
            "train", "val")  # fmt: skip
RECIPE = "recipe.yaml"


def parse_extra(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs after ``--`` as ultralytics' CLI reads them (``0.5`` a float, ``False`` a bool)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not key.replace("_", "").isalnum():
            raise UsageError(f"-- {item}: expected key=value (as in 'yolo train lr0=0.005')")
        if key in OWNED:
            flag = OWNED[key]
            how = f"use {flag}" if flag else "the command sets it for every run"
            raise UsageError(f"-- {item}: {key} is not a free training argument here: {how}")
        if key in out:
            raise UsageError(f"-- {item}: {key} is given twice")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        out[key] = value if isinstance(parsed, (dict, list)) else parsed
        if isinstance(out[key], str) and out[key].lower() in ("none", "null"):
            out[key] = None
    return out


def train_args(*, data: str, epochs: int, imgsz: int, batch: int, project: Path, extra: Mapping[str, Any]) -> dict:
    """The ``YOLO.train`` arguments every run shares (a run adds ``model``, ``seed``, ``name`` and ``device``)."""
    args = {"data": data, "epochs": epochs, "imgsz": imgsz, "batch": batch, "deterministic": True,
            "project": str(project), "exist_ok": True}  # fmt: skip
    args.update(extra)
    return args


def val_args(*, data: str, imgsz: int, batch: int, extra: Mapping[str, Any]) -> dict:
    """The one final validation's arguments, the same for every run (a run adds ``device``)."""
    args = {"data": data, "imgsz": imgsz, "batch": batch, "split": "val", "plots": False, "verbose": False}
    for key in ("workers", "single_cls", "classes", "half"):  # what would change the numbers or the place
        if key in extra:
            args[key] = extra[key]
    return args


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out if out else {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """``(key, old value, new value)`` of the first compared key that differs (``extra.lr0``), or None."""
    for key in COMPARED:
        a, b = _flat(old.get(key), key + "."), _flat(new.get(key), key + ".")
        for k in list(dict.fromkeys([*a, *b])):
            if a.get(k, "<unset>") != b.get(k, "<unset>"):
                return k, a.get(k, "<unset>"), b.get(k, "<unset>")
    return None


def read_recipe(exp_dir: Path) -> dict | None:
    path = exp_dir / RECIPE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PatchError(f"{path}: not a readable recipe ({e.__class__.__name__}); start a new one with --name") from None
    if not isinstance(data, dict):
        raise PatchError(f"{path}: not a recipe; start a new experiment with --name")
    return data


def check_recipe(exp_dir: Path, recipe: Mapping[str, Any]) -> bool:
    """Refuse a recipe other than the one ``exp_dir`` was started with; True when it already had one (a resume)."""
    old = read_recipe(exp_dir)
    if old is None:
        return False
    diff = first_difference(old, recipe)
    if diff is not None:
        key, a, b = diff
        raise PatchError(
            f"{exp_dir} holds an experiment with another recipe: {key} is {a} there, {b} here; "
            f"rerun with its options to resume it, or pass --name for a new experiment"
        )
    return True


def write_recipe(exp_dir: Path, recipe: Mapping[str, Any]) -> Path:
    path = exp_dir / RECIPE
    tmp = path.with_name(f".{RECIPE}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(dict(recipe), sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)
    return path
