"""``check``'s baseline: the release's own stock config that a model YAML was made from, or the YAML without our layers.

The model's rows are compared with every model config the release ships (``cfg/models/**.yaml``, ``models/**``
before 8.0.1xx), two ways, both with the rows of our layers dealt with as ``patches/`` describes them:

* our layers taken back to what they replace (BoT3 back into the C2f/C3k2 it took the place of, MHSA rows dropped):
  a match is "BoT3 in place of C2f" (gen-yaml's ``--layer BoT3``), "MHSA added";
* every row of our layers dropped, their readers reading their input: a match is "BoT3 added" (a fork's BoT3
  added after SPPF), "MHSA added".

The first stock config whose rows (and scales) equal one of them is the baseline, built at the model's scale and
``nc``: ``yolov8n.yaml (nc=3)``. When none does (a user's BiFPN head), the baseline is the YAML itself with our
layers taken out, and the report says so. Pure Python on parsed YAML: runs in ``check``'s child (which has the
model's ``yaml`` dict for a YAML and a checkpoint alike) and in tests without torch.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mhsa_patch.modelyaml.align import drop_rows, module_name, replacing, restore_replaced
from mhsa_patch.patches import layer_names

CONFIG_DIRS = ("cfg/models", "models")  # where releases keep their model configs (8.0.98: ultralytics/models/v8)
_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Baseline:
    """What ``check`` compares the model with."""

    cfg: dict  # the config to build, at the model's scale (nc is passed to the build)
    name: str  # "yolov8n.yaml", or "my-model.yaml without BoT3"
    changes: str  # what our layers do to it, in words: "BoT3 added", "BoT3 in place of C2f", "MHSA added"
    config: str | None = None  # the stock file, relative to the package; None when the YAML itself is the baseline
    note: str | None = None  # why the YAML itself is the baseline
    rows: dict = field(default_factory=dict)  # {"added": [...], "replaced": {index: module}}: for the report

    def to_dict(self) -> dict:
        return {"name": self.name, "changes": self.changes, "config": self.config, "note": self.note}


def stock_configs(package: Path) -> list[tuple[str, dict]]:
    """``(path relative to the package, parsed YAML)`` of every model config the release ships, sorted; links and
    files that do not parse as a model (backbone and head) are skipped."""
    import yaml

    package = Path(package)
    found = []
    for rel in CONFIG_DIRS:
        root = package / rel
        if not root.is_dir() or root.is_symlink():
            continue
        for folder, dirs, files in os.walk(root):  # os.walk does not follow linked folders
            for name in sorted(files):
                path = Path(folder) / name
                if path.suffix not in (".yaml", ".yml") or path.is_symlink() or path.stat().st_size > _MAX_BYTES:
                    continue
                try:
                    data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
                except Exception:  # noqa: BLE001 - not ours to judge: just not a candidate
                    continue
                if isinstance(data, dict) and data.get("backbone") and data.get("head"):
                    found.append((path.relative_to(package).as_posix(), data))
    return sorted(found, key=lambda item: (item[0].count("/"), item[0]))


def _rows(cfg: dict) -> list:
    return list(cfg.get("backbone") or []) + list(cfg.get("head") or [])


def _scale(cfg: dict) -> str | None:
    """The scale the model is built at: its ``scale``, else (as parse_model does) the first of its ``scales``."""
    scales = cfg.get("scales") or {}
    scale = cfg.get("scale")
    if scale and scale in scales:
        return str(scale)
    return str(next(iter(scales))) if scales else None


def scaled_name(file_name: str, scale: str | None) -> str:
    """``yolov8.yaml`` at scale ``n`` is ``yolov8n.yaml`` (``yolov8-p2.yaml``: ``yolov8n-p2.yaml``), as ultralytics
    names them; a config without scales keeps its name."""
    if not scale:
        return file_name
    return re.sub(r"^(yolov?\d+)", lambda m: m.group(1) + scale, file_name, count=1)


def _words(counts: dict[str, int], what: str) -> list[str]:
    return [f"{name} {what}" if n == 1 else f"{n} {name} rows {what}" for name, n in counts.items()]


def _changes(cfg: dict, restored: bool, extra=()) -> str:
    """Our layers' rows in words: added, or in place of the stock module they replaced (``restored``)."""
    rows = _rows(cfg)
    restored_rows = _rows(restore_replaced(cfg, extra)) if restored else rows
    REPLACING = replacing(extra)  # noqa: N806
    ours = set(layer_names()) | {s.name for s in extra}
    added: dict[str, int] = {}
    replaced: dict[str, int] = {}
    for row, back in zip(rows, restored_rows):
        name = module_name(row)
        if name not in ours:
            continue
        if restored and name in REPLACING:
            key = f"{name} in place of {module_name(back)}"
            replaced[key] = replaced.get(key, 0) + 1
        else:
            added[name] = added.get(name, 0) + 1
    parts = _words(added, "added") + [k if n == 1 else f"{n}× {k}" for k, n in replaced.items()]
    return ", ".join(parts) or "none of the patch's layers"


def choose(cfg: dict, package: Path, model_name: str, extra=()) -> Baseline:
    """The baseline of the model ``cfg`` (its ``yaml`` dict) on the release at ``package``; see the module doc.
    ``extra``: the target's user layers (``LayerSpec``s), whose rows count as ours too."""
    scale = _scale(cfg)
    ours = set(layer_names()) | {s.name for s in extra}
    REPLACING = replacing(extra)  # noqa: N806
    candidates = [
        (True, drop_rows(restore_replaced(cfg, extra), ours - set(REPLACING))),  # in place of what they replaced
        (False, drop_rows(cfg, ours)),  # every row of ours dropped: added layers
    ]
    configs = stock_configs(package)
    for restored, candidate in candidates:
        rows = _rows(candidate)
        for rel, stock in configs:
            if _rows(stock) != rows:
                continue
            if scale and cfg.get("scales") and (stock.get("scales") or {}).get(scale) != cfg["scales"].get(scale):
                continue  # the same rows at other depth/width multiples (gen-yaml keeps the one scale it writes)
            built = copy.deepcopy(stock)
            if scale and built.get("scales"):
                built["scale"] = scale
            return Baseline(cfg=built, name=scaled_name(Path(rel).name, scale if stock.get("scales") else None),
                            changes=_changes(cfg, restored, extra), config=rel)
    own = drop_rows(cfg, ours)
    own.pop("yaml_file", None)
    present = [name for name in (*layer_names(), *(s.name for s in extra)) if any(module_name(r) == name for r in _rows(cfg))]
    if not present:
        note = None
        name = model_name
    else:
        note = (f"{model_name}'s other rows match no stock config of this ultralytics: compared with {model_name} "
                f"with its {'/'.join(present)} rows taken out")
        name = f"{model_name} without {'/'.join(present)}"
    return Baseline(cfg=own, name=name, changes=_changes(cfg, False, extra), config=None, note=note)
