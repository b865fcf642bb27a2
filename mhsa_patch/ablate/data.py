"""The dataset of an ablation: the user's YAML as it is, accepted exactly when the target's ultralytics accepts it,
or the offline synthetic set.

The YAML is read by the target's own ``check_det_dataset`` in a child (:mod:`mhsa_patch.child.dataset`, in the
measuring child), with
downloads off and in the runs' working folder, so a relative ``path:`` resolves as ``yolo train`` resolves it (the
working folder, then ultralytics' datasets folder); anything it refuses is refused before any run starts, in one
line with ultralytics' own reason. That child also builds the label caches once. The runs never download:
ultralytics would otherwise run a dataset's download script in every run; ``--download`` lets ultralytics fetch it
once, before the check (:func:`download`, the only step of the tool allowed on the network). ``synthetic`` (or
``synthetic:N``, N training images) draws ``check --train``'s dataset into ``<dir>/data``.

:func:`checksum` is the dataset's identity across machines (its image lists and label files, as that child resolved
them): the recipe records it, a resume compares it, and every Ray worker node checks its own copy against it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mhsa_patch.errors import PatchError, UsageError

SYNTHETIC_TRAIN = 64


@dataclass(frozen=True)
class Dataset:
    label: str  # what the recipe records: the YAML's absolute path, or ``synthetic:N``
    yaml: Path  # the file ultralytics reads
    nc: int  # the class count (0 until the measuring child read the dataset)
    synthetic: int | None = None  # the training images of the synthetic set, drawn by :func:`write_synthetic`


def synthetic_count(spec: str) -> int | None:
    """N of ``synthetic:N`` (64 for ``synthetic``), None for a YAML; a :class:`UsageError` for a bad N."""
    if spec != "synthetic" and not spec.startswith("synthetic:"):
        return None
    _, _, n = spec.partition(":")
    try:
        n_train = int(n) if n else SYNTHETIC_TRAIN
    except ValueError:
        raise UsageError(f"--data {spec}: expected synthetic or synthetic:N (N training images)") from None
    if n_train < 2:
        raise UsageError(f"--data {spec}: at least 2 training images")
    return n_train


def locate(spec: str, exp_dir: Path, imgsz: int, *, download: bool = False, target=None, split: str = "val") -> Dataset:
    """The dataset YAML named by ``--data`` (nothing is read or written yet). With ``download``, a name such as
    ``coco8.yaml`` is also looked up among the target release's own dataset YAMLs. ``split``: the one the table
    reports; the synthetic set has no ``test`` (a YAML's is checked by the measuring child)."""
    n_train = synthetic_count(spec)
    if n_train is not None and split != "val":
        raise PatchError(
            f"--eval-split {split}: {spec} has no {split} split; use your own data YAML and add "
            f"'{split}: images/{split}' (images best.pt was not chosen on) to it, or use --eval-split val"
        )
    if n_train is not None:
        root = exp_dir / "data" / f"synthetic-{n_train}-{imgsz}"
        return Dataset(f"synthetic:{n_train}", root / "data.yaml", 3, n_train)
    path = Path(spec).expanduser()
    if not path.is_file() and download and target is not None and "/" not in spec:
        shipped = target.package / "cfg" / "datasets" / spec
        if shipped.is_file():
            return Dataset(spec, shipped, 0)
    if not path.is_file():
        how = " (or pass --download to let ultralytics fetch it once)" if not download else ""
        raise PatchError(f"{spec}: no such dataset YAML{how}")
    path = path.resolve()
    return Dataset(str(path), path, 0)


def write_synthetic(ds: Dataset, imgsz: int) -> None:
    from mhsa_patch.child.synthetic import write_dataset

    if ds.synthetic is not None and not ds.yaml.is_file():
        write_dataset(ds.yaml.parent, n_train=ds.synthetic, n_val=max(2, ds.synthetic // 4), imgsz=max(32, imgsz))


def refusal(target, ds: Dataset, reason: str) -> str:
    """The one line that refuses ``ds`` with ultralytics' own ``reason`` (from :mod:`mhsa_patch.child.dataset`)."""
    missing = ds.synthetic is None and "not found" in reason.lower()
    fix = "; the runs never download: fetch it first, or pass --download" if missing else ""
    return f"{ds.yaml.name}: ultralytics {target.version} refuses this dataset: {reason}{fix}"


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


# -------------------------------------------------------------------------------------------------------- checksum

# ultralytics' IMG_FORMATS (data/utils.py) over the supported releases: what its loaders take as an image
IMG_FORMATS = frozenset(
    {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "pfm", "tif", "tiff", "webp"}
)
CHECKED_SPLITS = ("train", "val", "test")


def image_files(entry: Path) -> list[str]:
    """The images of one ``train``/``val``/``test`` entry as ultralytics lists them: every image file under a
    folder, or the lines of a text file (``./`` meaning the text file's folder)."""
    if entry.is_dir():
        found = [str(p) for p in entry.rglob("*.*") if p.is_file()]
    elif entry.is_file():
        lines = entry.read_text(encoding="utf-8-sig").strip().splitlines()
        parent = str(entry.parent) + os.sep
        found = [x.strip().replace("./", parent, 1) if x.strip().startswith("./") else x.strip() for x in lines]
    else:
        return []
    return sorted(x for x in found if x.rpartition(".")[-1].lower() in IMG_FORMATS)


def label_file(image: str) -> str:
    """ultralytics' ``img2label_paths``: the last ``/images/`` becomes ``/labels/``, the extension ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


@dataclass(frozen=True)
class Checksum:
    """A dataset's identity across machines: SHA-256 of its image lists and of every label file, without reading
    the images themselves."""

    sha256: str
    images: int
    labels: int


def checksum(splits: Mapping) -> Checksum:
    """The checksum of a dataset as the measuring child resolved it (``{"path": root, "train": [...], "val": [...],
    "test": [...]}``, absolute entries): each split's image list (paths relative to ``root``) and each image's label
    file (its bytes' SHA-256, or none: a background image), in ultralytics' order. The YAML's text is not part of
    it, nor the images' bytes (a synthetic set drawn in another folder is the same set)."""
    import hashlib

    base = Path(str(splits.get("path") or "/"))
    digest = hashlib.sha256()
    images = labels = 0
    for split in CHECKED_SPLITS:
        for entry in splits.get(split) or ():
            for image in image_files(Path(str(entry))):
                try:
                    label_sha = hashlib.sha256(Path(label_file(image)).read_bytes()).hexdigest()
                    labels += 1
                except OSError:
                    label_sha = "-"
                try:
                    shown = str(Path(image).relative_to(base))
                except ValueError:
                    shown = image
                digest.update(f"{split}\t{shown}\t{label_sha}\n".encode("utf-8", "surrogateescape"))
                images += 1
    return Checksum(digest.hexdigest(), images, labels)


def synthetic_splits(ds: Dataset) -> dict:
    """The synthetic set's splits as the measuring child resolves them (it is drawn with ``path:`` its own folder)."""
    root = ds.yaml.parent
    return {"path": str(root), "train": [str(root / "images" / "train")], "val": [str(root / "images" / "val")]}
