"""The recipe of an ablation: the one set of training arguments every run shares, its file, and its check.

Every run gets the same ``YOLO.train`` arguments (the options, everything after ``--``, ``deterministic=True``, and
``patience`` equal to the epochs unless ``-- patience=N``: by default no run stops early, so every seed trains the
same schedule); only ``model`` and ``seed`` (and ``name``, the run's folder) differ. The recipe is written once to
``<dir>/recipe.yaml``; a later invocation in the same folder must have the same one, else it is refused naming the
first key that differs (another experiment needs ``--name``). ``device`` and ``device_name`` say where the runs were
placed, not how they train, and are not compared (a resume may use other GPUs).

``patch`` (the journal's hash of every patched file) and ``data_sha256`` (the checksum of the dataset's label files
and image lists) say what the releases and the data path do not: the code that builds the model, and the data under
that path. Every Ray worker node is checked against them (:mod:`mhsa_patch.ablate.cluster.fingerprint`), and a resume
compares them too, as it compares the ultralytics and torch releases: a run resumed on another patch or on relabelled
data would train another model, or on other data, than the runs before it, and the table would mix them without a
word. A recipe written before they were recorded lacks them; it is resumed without that check.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mhsa_patch.errors import PatchError, UsageError
from mhsa_patch.patching.atomic import write_atomic

# The arguments the command sets itself (the options, the run's place): refused after ``--``.
OWNED = {
    "model": "--variant", "seed": "--seeds", "data": "--data", "epochs": "--epochs", "imgsz": "--imgsz",
    "batch": "--batch", "device": "--device", "project": "--project", "name": "--name", "exist_ok": None,
    "resume": None, "deterministic": None, "save_dir": None, "mode": None, "split": "--eval-split",
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
            "project": str(project), "exist_ok": True, "patience": epochs}  # fmt: skip
    args.update(extra)
    return args


# The ``-- key=value`` arguments that reach the final validation too: those ultralytics' validators read, which change
# its numbers (``conf``, ``iou``, ``max_det``, ``rect``, ...) or where and how fast it runs (``workers``, ``half``).
# Training-only ones (``lr0``, ``mosaic``) would be accepted by ``YOLO.val`` and ignored: they stay out of the record.
VAL_KEYS = ("conf", "iou", "max_det", "rect", "single_cls", "classes", "agnostic_nms", "augment", "overlap_mask",
            "half", "quantize", "dnn", "nms", "end2end", "workers", "compile", "channels_last")  # fmt: skip
SPLITS = ("val", "test")


def val_args(*, data: str, imgsz: int, batch: int, extra: Mapping[str, Any], split: str = "val") -> dict:
    """The one final validation's arguments, the same for every run (a run adds ``device``): the data YAML's
    ``split`` (``best.pt`` is chosen on ``val`` whatever it is) and the validator arguments of ``extra``."""
    args = {"data": data, "imgsz": imgsz, "batch": batch, "split": split, "plots": False, "verbose": False}
    for key in VAL_KEYS:
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
    if isinstance(old.get("train"), dict) and "patience" not in old["train"] and "patience" not in (old.get("extra") or {}):
        # begun before the recipe held patience (ultralytics' default of 100 then): the same experiment, whose runs
        # now get the recipe's patience on resume instead of failing at a plateau
        old = dict(old, train={**old["train"], "patience": recipe["train"].get("patience")})
    diff = first_difference(old, recipe)
    if diff is not None:
        key, a, b = diff
        raise PatchError(
            f"{exp_dir} holds an experiment with another recipe: {key} is {a} there, {b} here; "
            f"rerun with its options to resume it, or pass --name for a new experiment"
        )
    problem = _content_difference(old, recipe)
    if problem is not None:
        raise PatchError(f"{exp_dir} was started {problem}; pass --name for a new experiment")
    return True


def _short(h: Any) -> str:
    return str(h)[:12] if h else "none"


def _content_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """How the patch or the data differ from those ``old`` recorded (not compared where it recorded none)."""
    was, now = old.get("patch"), new.get("patch")
    if isinstance(was, Mapping) and was and isinstance(now, Mapping):
        for rel in sorted(set(was) | set(now)):
            if was.get(rel) != now.get(rel):
                return (f"on another patch of ultralytics: the patched {rel} has sha256 {_short(was.get(rel))} there, "
                        f"{_short(now.get(rel))} here (another mhsa-patch release, or a layer applied or reverted "
                        "since); apply it as it was to resume")  # fmt: skip
    was, now = old.get("data_sha256"), new.get("data_sha256")
    if was and now and was != now:
        return (f"on other data: {new.get('data')} has other label files or image lists now (sha256 {_short(was)} "
                f"there, {_short(now)} here); put them back as they were to resume")  # fmt: skip
    return None


def write_recipe(exp_dir: Path, recipe: Mapping[str, Any]) -> Path:
    path = exp_dir / RECIPE
    write_atomic(path, yaml.safe_dump(dict(recipe), sort_keys=False, allow_unicode=True).encode("utf-8"))
    return path
