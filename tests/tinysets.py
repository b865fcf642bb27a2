"""Tiny datasets on which a model trained from scratch for two epochs on the CPU scores above 0: one bright shape
per image on a dark background, one class, with ``train``, ``val`` and ``test`` splits drawn apart.

``synthetic:N`` (check --train's shapes on noise) leaves mAP at 0 after runs that short, so a test comparing its
metrics compares zeros. Here every image holds one large, saturated rectangle or ellipse (35-75% of the side),
which YOLOv8n finds after about 30 optimizer steps. Steps, not epochs, are what count: ultralytics accumulates
gradients up to ``nbs`` images and its BatchNorm layers move their running statistics by 3% a step, so the
recipe below takes one step per batch of 2 (``nbs=2``) and needs no warm-up (:data:`FAST`).

Detection labels are boxes; segmentation labels the shape's polygon (the rectangle's 4 corners, 24 points on the
ellipse), in ultralytics' normalised YOLO format. Drawn with numpy and Pillow, nothing downloaded; deterministic.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# ablate's `-- key=value` arguments that make 2 epochs of 32 images at imgsz 64 learn (one step per batch of 2)
FAST = ["workers=0", "plots=False", "nbs=2", "warmup_epochs=0", "mosaic=0", "optimizer=AdamW", "lr0=0.005"]
# and its options
TRAIN = ["--epochs", "2", "--imgsz", "64", "--batch", "2"]


def _shape(rng, imgsz: int) -> list[tuple[float, float]]:
    w, h = (int(rng.integers(int(imgsz * 0.35), int(imgsz * 0.75))) for _ in range(2))
    x0, y0 = int(rng.integers(0, imgsz - w)), int(rng.integers(0, imgsz - h))
    if rng.integers(0, 2):
        return [(x0 + w / 2 + w / 2 * math.cos(t), y0 + h / 2 + h / 2 * math.sin(t))
                for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]  # fmt: skip
    return [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]


def write(root: Path, *, task: str = "detect", n_train: int = 32, n_val: int = 4, n_test: int | None = 4,
          imgsz: int = 64, seed: int = 0) -> Path:  # fmt: skip
    """Draw the dataset into ``root`` (``task``: detect or segment); its YAML's path. ``n_test=None``: no test
    split in the YAML at all."""
    rng = np.random.default_rng(seed)
    splits = {"train": n_train, "val": n_val} | ({} if n_test is None else {"test": n_test})
    for split, count in splits.items():
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for k in range(count):
            noise = rng.integers(20, 60, size=(imgsz, imgsz, 1), dtype=np.uint8)
            img = Image.fromarray(np.repeat(noise, 3, axis=2), "RGB")
            pts = _shape(rng, imgsz)
            ImageDraw.Draw(img).polygon(pts, fill=(240, 200, 40))
            img.save(images / f"{split}_{k:03d}.png")
            if task == "segment":
                label = " ".join(f"{x / imgsz:.5f} {y / imgsz:.5f}" for x, y in pts)
            else:
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                cx, cy = (min(xs) + max(xs)) / 2 / imgsz, (min(ys) + max(ys)) / 2 / imgsz
                label = f"{cx:.5f} {cy:.5f} {(max(xs) - min(xs)) / imgsz:.5f} {(max(ys) - min(ys)) / imgsz:.5f}"
            (labels / f"{split}_{k:03d}.txt").write_text(f"0 {label}\n")
    lines = [f"path: {root}"] + [f"{s}: images/{s}" for s in splits] + ["names:", "  0: shape"]
    (root / "data.yaml").write_text("\n".join(lines) + "\n")
    return root / "data.yaml"
