"""The dataset of an ablation: the user's YAML as it is, checked to be on this machine, or the offline synthetic set.

The runs never download: ultralytics would otherwise run a dataset's download script in every run. A YAML whose
images are missing is refused in one line naming the missing path, before any run starts; ``--download`` lets
ultralytics fetch it once, before the runs (:func:`download`, the only step of the tool allowed on the network).
``synthetic`` (or ``synthetic:N``, N training images) draws ``check --train``'s dataset into ``<dir>/data``.
"""

from __future__ import annotations

import os
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


def _base(path: Path, data: dict) -> Path:
    """The folder a dataset YAML's relative entries start from, as ultralytics resolves it."""
    root = data.get("path")
    base = Path(str(root)).expanduser() if root else path.parent
    if not base.is_absolute():
        base = (path.parent / base) if (path.parent / base).exists() else base.resolve()
    return base


def split_paths(path: Path, data: dict, keys: tuple[str, ...] = ("train", "val")) -> list[tuple[str, Path]]:
    """``(split, path)`` of every entry of ``keys`` the YAML has, resolved as ultralytics resolves them."""
    base = _base(path, data)
    out = []
    for key in keys:
        if data.get(key) is None:
            continue
        for e in data[key] if isinstance(data[key], list) else [data[key]]:
            p = Path(str(e)).expanduser()
            out.append((key, p if p.is_absolute() else base / p))
    return out


def missing_paths(path: Path, data: dict) -> list[Path]:
    """The ``train``/``val`` entries that do not exist locally, resolved as ultralytics resolves them."""
    return [p for _, p in split_paths(path, data) if not p.exists()]


# ultralytics' IMG_FORMATS (data/utils.py) over the supported releases: what its loaders take as an image
IMG_FORMATS = frozenset(
    {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "pfm", "tif", "tiff", "webp"}
)


def image_files(entry: Path) -> list[str]:
    """The images of one ``train``/``val``/``test`` entry as ultralytics lists them: every image file under a
    folder, or the lines of a text file (``./`` meaning the text file's folder)."""
    if entry.is_dir():
        found = [str(p) for p in entry.rglob("*.*") if p.is_file()]
    elif entry.is_file():
        lines = entry.read_text(encoding="utf-8-sig").strip().splitlines()
        parent = str(entry.parent) + os.sep
        found = [x.replace("./", parent, 1) if x.startswith("./") else x for x in lines]
    else:
        return []
    return sorted(x for x in found if x.rpartition(".")[-1].lower() in IMG_FORMATS)


def label_file(image: str) -> str:
    """ultralytics' ``img2label_paths``: the last ``/images/`` becomes ``/labels/``, the extension ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


@dataclass(frozen=True)
class Checksum:
    """A dataset's identity across machines: SHA-256 of its image list and of every label file, without reading
    the images themselves (what a worker node checks before it trains)."""

    sha256: str
    images: int
    labels: int


def checksum(path: Path) -> Checksum:
    """The checksum of the dataset YAML ``path``: each split's image list (paths relative to the dataset's folder)
    and each image's label file (its bytes' SHA-256, or none), in ultralytics' order. The YAML's own text is not
    part of it (a synthetic set drawn in another folder has another ``path:``)."""
    import hashlib

    data = _read(path)
    base = _base(path, data)
    digest = hashlib.sha256()
    images = labels = 0
    for split, entry in split_paths(path, data, ("train", "val", "test")):
        for image in image_files(entry):
            label = Path(label_file(image))
            try:
                label_sha = hashlib.sha256(label.read_bytes()).hexdigest()
                labels += 1
            except OSError:
                label_sha = "-"  # an image without labels: a background image for ultralytics
            try:
                shown = str(Path(image).relative_to(base))
            except ValueError:
                shown = image
            digest.update(f"{split}\t{shown}\t{label_sha}\n".encode("utf-8", "surrogateescape"))
            images += 1
    return Checksum(digest.hexdigest(), images, labels)


def resolve(spec: str, exp_dir: Path, imgsz: int, *, download: bool = False, target=None) -> Dataset:
    """The dataset named by ``--data``; a one-line refusal when it is not on this machine. With ``download``, a
    name such as ``coco8.yaml`` is also looked up among the target release's own dataset YAMLs."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _synthetic(spec, exp_dir, imgsz)
    path = Path(spec).expanduser()
    if not path.is_file() and download and target is not None and "/" not in spec:
        shipped = target.package / "cfg" / "datasets" / spec
        if shipped.is_file():
            return Dataset(spec, shipped, _nc(_read(shipped), shipped))
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
    return Dataset(str(path), path, nc)


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
