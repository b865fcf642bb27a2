"""The dataset of an ablation: the user's YAML as it is, checked to be on this machine, or the offline synthetic set.

The runs never download: ultralytics would otherwise run a dataset's download script in every run. A YAML whose
images are missing is refused in one line naming the missing path, before any run starts; ``--download`` lets
ultralytics fetch it once, before the runs (:func:`download`, the only step of the tool allowed on the network).
``synthetic`` (or ``synthetic:N``, N training images) draws ``check --train``'s dataset into ``<dir>/data``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from mhsa_patch.errors import PatchError, UsageError

SYNTHETIC_TRAIN = 64


@dataclass(frozen=True)
class Dataset:
    label: str  # what the recipe records: the YAML's absolute path, or ``synthetic:N``
    yaml: Path  # the file ultralytics reads
    nc: int


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PatchError(f"{path}: not a readable dataset YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or "train" not in data or "val" not in data:
        raise PatchError(f"{path}: not a dataset YAML (no 'train' and 'val')")
    return data


def _nc(data: dict, path: Path) -> int:
    names = data.get("names")
    if isinstance(names, (list, dict)) and names:
        return len(names)
    if isinstance(data.get("nc"), int):
        return int(data["nc"])
    raise PatchError(f"{path}: no 'names' (or 'nc') in the dataset YAML")


def missing_paths(path: Path, data: dict, keys: tuple[str, ...] = ("train", "val")) -> list[Path]:
    """The ``keys`` entries (``train``/``val``) that do not exist locally, resolved as ultralytics resolves them."""
    root = data.get("path")
    base = Path(str(root)).expanduser() if root else path.parent
    if not base.is_absolute():
        base = (path.parent / base) if (path.parent / base).exists() else base.resolve()
    missing = []
    for key in keys:
        entries = data[key] if isinstance(data[key], list) else [data[key]]
        for e in entries:
            p = Path(str(e)).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.exists():
                missing.append(p)
    return missing


def resolve(
    spec: str, exp_dir: Path, imgsz: int, *, download: bool = False, target=None, split: str = "val"
) -> Dataset:
    """The dataset named by ``--data``; a one-line refusal when it is not on this machine, or has no ``split`` (the
    one the table reports: ``val`` or ``test``). With ``download``, a name such as ``coco8.yaml`` is also looked up
    among the target release's own dataset YAMLs."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        _require_split(spec, None, None, split, download)  # before it is drawn
        return _synthetic(spec, exp_dir, imgsz)
    path = Path(spec).expanduser()
    if not path.is_file() and download and target is not None and "/" not in spec:
        shipped = target.package / "cfg" / "datasets" / spec
        if shipped.is_file():
            data = _read(shipped)
            _require_split(spec, shipped, data, split, download)
            return Dataset(spec, shipped, _nc(data, shipped))
    if not path.is_file():
        how = " (or pass --download to let ultralytics fetch it once)" if not download else ""
        raise PatchError(f"{spec}: no such dataset YAML{how}")
    path = path.resolve()
    data = _read(path)
    nc = _nc(data, path)
    missing = missing_paths(path, data)
    if missing and not download:
        raise PatchError(
            f"{path.name}: the images are not on this machine ({missing[0]} is missing) and the runs never download; "
            f"fetch them first, or pass --download"
        )
    _require_split(spec, path, data, split, download)
    return Dataset(str(path), path, nc)


def _require_split(spec: str, path: Path | None, data: dict | None, split: str, download: bool) -> None:
    """Refuse, in one line and before anything is written or trained, an evaluation ``split`` other than ``val``
    that the dataset does not have (no entry, an empty one as in ultralytics' own ``coco.yaml``, or images not on
    this machine)."""
    if split == "val":
        return
    how = f"add '{split}: images/{split}' (images best.pt was not chosen on) to it, or use --eval-split val"
    if path is None or data is None:
        raise PatchError(f"--eval-split {split}: {spec} has no {split} split; use your own data YAML and {how}")
    if not data.get(split):
        raise PatchError(f"--eval-split {split}: {path.name} has no '{split}' split; {how}")
    missing = missing_paths(path, data, (split,))
    if missing and not download:
        raise PatchError(
            f"--eval-split {split}: {path.name}'s {split} images are not on this machine ({missing[0]} is "
            "missing) and the runs never download; fetch them first, or pass --download"
        )


def _synthetic(spec: str, exp_dir: Path, imgsz: int) -> Dataset:
    from mhsa_patch.child.synthetic import write_dataset

    _, _, n = spec.partition(":")
    try:
        n_train = int(n) if n else SYNTHETIC_TRAIN
    except ValueError:
        raise UsageError(f"--data {spec}: expected synthetic or synthetic:N (N training images)") from None
    if n_train < 2:
        raise UsageError(f"--data {spec}: at least 2 training images")
    root = exp_dir / "data" / f"synthetic-{n_train}-{imgsz}"
    yaml_path = root / "data.yaml"
    if not yaml_path.is_file():
        write_dataset(root, n_train=n_train, n_val=max(2, n_train // 4), imgsz=max(32, imgsz))
    return Dataset(f"synthetic:{n_train}", yaml_path, 3)


def download(target, ds: Dataset) -> None:
    """Let the target's ultralytics fetch ``ds`` once (its own ``check_det_dataset``), outside the offline guard."""
    from mhsa_patch.child.env import interpreter, target_env

    env = target_env(target)
    env.pop("YOLO_OFFLINE", None)
    code = (
        "import sys\n"
        "try:\n from ultralytics.data.utils import check_det_dataset\n"
        "except ImportError:\n from ultralytics.yolo.data.utils import check_det_dataset\n"
        "check_det_dataset(sys.argv[1], autodownload=True)\n"
    )
    proc = subprocess.run([interpreter(target), "-c", code, str(ds.yaml)], env=env, text=True, capture_output=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PatchError(f"--download: ultralytics could not fetch {ds.yaml.name}: {last}")
