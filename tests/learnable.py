"""A detection set a YOLO learns within seconds from scratch, so that tests can compare numbers that move.

The synthetic shapes set of ``check --train`` leaves mAP at 0 after a few epochs: a test comparing its metrics
compares zeros. Here every image (64 x 64, grey) holds one red square of one class, half the image wide, at a
random place; with the training arguments of :data:`ARGS` (no augmentation, no warm-up, an optimizer step per
batch, AdamW at 0.01) yolov8n from scratch reaches mAP50 near 1 in about five epochs of four steps on the CPU, and
its mAP50-95 then wanders: it rises, peaks, and falls back, so ``patience=2`` stops it early and ``best_epoch`` is
not the last epoch. Deterministic for a seed (ultralytics' ``deterministic=True`` on the CPU).
"""

from __future__ import annotations

from pathlib import Path

IMGSZ = 64
# yolo train arguments that make it learn fast: nbs=batch makes every batch an optimizer step (ultralytics otherwise
# accumulates to 64 images), no warm-up epochs, no augmentation that moves or recolours the square
ARGS = ["nbs=4", "optimizer=AdamW", "lr0=0.01", "warmup_epochs=0", "mosaic=0", "fliplr=0", "translate=0", "scale=0",
        "hsv_h=0", "hsv_s=0", "hsv_v=0", "workers=0", "plots=False"]  # fmt: skip
BATCH = 4


def write_dataset(root: Path, *, n_train: int = 16, n_val: int = 4, seed: int = 0, path: str | None = None,
                  yaml_path: Path | None = None) -> Path:
    """Draw the set into ``root`` (images/, labels/) and write its YAML (``yaml_path``, default ``root/data.yaml``);
    returns the YAML. ``path``: the YAML's ``path:`` as written (default: ``root``, absolute), e.g. a relative one."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    side = IMGSZ // 2
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            img = Image.new("RGB", (IMGSZ, IMGSZ), (128, 128, 128))
            x0, y0 = (int(v) for v in rng.integers(0, IMGSZ - side, size=2))
            ImageDraw.Draw(img).rectangle([x0, y0, x0 + side - 1, y0 + side - 1], fill=(230, 25, 75))
            img.save(root / "images" / split / f"{k}.png")
            c = side / 2 / IMGSZ
            (root / "labels" / split / f"{k}.txt").write_text(
                f"0 {x0 / IMGSZ + c:.6f} {y0 / IMGSZ + c:.6f} {side / IMGSZ:.6f} {side / IMGSZ:.6f}\n"
            )
    yaml_path = yaml_path or root / "data.yaml"
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    where = path if path is not None else str(root)
    yaml_path.write_text(f"path: {where}\ntrain: images/train\nval: images/val\nnames:\n  0: square\n")
    return yaml_path
