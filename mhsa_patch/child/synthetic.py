"""A tiny YOLO-format detection dataset, drawn on the spot: nothing is downloaded.

Ultralytics' own smoke-test set (coco8) is fetched from the internet on first use. ``check --train``, the tests and
the examples need a dataset that works offline, so this module draws one: images with coloured rectangles, ellipses
and triangles on a noisy background, their YOLO label files (``class cx cy w h``, normalised) and a dataset YAML with
absolute paths, split into ``train`` and ``val``. It needs numpy and Pillow (both ultralytics dependencies), not torch.

Layout, as ultralytics expects it::

    root/
      data.yaml            path: <root>, train: images/train, val: images/val, names: {0: rectangle, ...}
      images/train/*.jpg   labels/train/*.txt
      images/val/*.jpg     labels/val/*.txt

The folder is built next to ``root`` under a temporary name and renamed into place, so an interrupted run never
leaves a half-written dataset behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

NAMES = ("rectangle", "ellipse", "triangle")

# Saturated colours, far from the grey background, so the shapes are learnable in a few steps.
_COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


def _draw_image(rng, imgsz: int, max_objects: int):
    """One image (a PIL RGB image) and its labels as ``[(cls, cx, cy, w, h), ...]`` normalised to 0..1."""
    import numpy as np
    from PIL import Image, ImageDraw

    noise = rng.integers(90, 150, size=(imgsz, imgsz, 1), dtype=np.uint8)
    img = Image.fromarray(np.repeat(noise, 3, axis=2), "RGB")
    draw = ImageDraw.Draw(img)
    labels = []
    lo, hi = max(6, imgsz // 8), max(8, imgsz // 3)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(0, len(NAMES)))
        w, h = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        x0, y0 = int(rng.integers(0, imgsz - w)), int(rng.integers(0, imgsz - h))
        x1, y1 = x0 + w, y0 + h
        colour = _COLOURS[int(rng.integers(0, len(_COLOURS)))]
        if cls == 0:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
        elif cls == 1:
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
        else:
            draw.polygon([(x0, y1 - 1), ((x0 + x1) // 2, y0), (x1 - 1, y1 - 1)], fill=colour)
        labels.append((cls, (x0 + x1) / 2 / imgsz, (y0 + y1) / 2 / imgsz, w / imgsz, h / imgsz))
    return img, labels


def _yaml_text(root: Path) -> str:
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(NAMES))
    return (
        "# Synthetic shapes dataset written by mhsa-patch (mhsa_patch/synthetic.py); nothing to download.\n"
        f"path: {root}\n"
        "train: images/train\n"
        "val: images/val\n"
        f"names:\n{names}\n"
    )


def write_dataset(
    root: str | os.PathLike,
    *,
    n_train: int = 16,
    n_val: int = 4,
    imgsz: int = 128,
    max_objects: int = 3,
    seed: int = 0,
) -> Path:
    """Draw the dataset into ``root`` (which must not exist, or be an empty folder); return the dataset YAML's path.

    Deterministic for a given ``seed``. ``imgsz`` is the side of the square images in pixels.
    """
    import numpy as np

    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be >= 1, got {n_train} and {n_val}")
    if imgsz < 32:
        raise ValueError(f"imgsz must be >= 32, got {imgsz}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    root = Path(root).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not an empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp"))
    try:
        for split, count in (("train", n_train), ("val", n_val)):
            images, labels = tmp / "images" / split, tmp / "labels" / split
            images.mkdir(parents=True)
            labels.mkdir(parents=True)
            for k in range(count):
                img, objects = _draw_image(rng, imgsz, max_objects)
                stem = f"{split}_{k:04d}"
                img.save(images / f"{stem}.jpg", quality=95)
                (labels / f"{stem}.txt").write_text(
                    "".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in objects)
                )
        (tmp / "data.yaml").write_text(_yaml_text(root))
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root / "data.yaml"


def main(argv: list[str] | None = None) -> int:
    """``python -m mhsa_patch.child.synthetic ROOT [n_train n_val imgsz]``: write the dataset, print the YAML's path."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m mhsa_patch.child.synthetic ROOT [N_TRAIN N_VAL IMGSZ]", file=sys.stderr)
        return 2
    nums = [int(a) for a in args[1:4]]
    kwargs = dict(zip(("n_train", "n_val", "imgsz"), nums))
    print(write_dataset(args[0], **kwargs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
