"""Export YOLOv8n-MHSA to ONNX with ultralytics' own exporter and predict with onnxruntime.

Usage::

    python examples/onnx_predict.py --target DIR                      # a fresh yolov8n-MHSA (gen-yaml), 160 px
    python examples/onnx_predict.py --target DIR --model best.pt --imgsz 640

``DIR`` holds a patched ultralytics/ (``mhsa-patch apply``). The script re-runs itself with that ultralytics first on
``sys.path`` and then uses plain ultralytics and onnxruntime calls:

1. ``YOLO(model).export(format="onnx", imgsz=...)``: the MHSA layer exports like any other (its attention is a
   standard ``scaled_dot_product_attention``);
2. ``onnxruntime.InferenceSession(...).run(...)`` on an image of the synthetic dataset, compared with the PyTorch
   model's raw output on the same tensor;
3. ``YOLO("model.onnx").predict(...)``: ultralytics' own ONNX backend, with its pre- and post-processing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = "MHSA_EXAMPLE_CHILD"


def relaunch(a, argv: list[str]) -> int:
    """Run this script again with the target's ultralytics first on PYTHONPATH (and offline)."""
    from mhsa_patch.child.env import target_env
    from mhsa_patch.patching.discover import resolve

    target = resolve(a.target).target
    env = target_env(target, {CHILD: "1", "YOLO_OFFLINE": "1"})
    return subprocess.run([sys.executable, __file__, *argv], env=env).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", help="folder holding a patched ultralytics/ (default: the one this Python imports)")
    ap.add_argument("--model", help="a model YAML or .pt (default: yolov8n-MHSA.yaml from gen-yaml)")
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--workdir", help="where to write the model and the .onnx (default: a temporary folder)")
    a = ap.parse_args(argv)
    if a.target and not os.environ.get(CHILD):
        return relaunch(a, sys.argv[1:] if argv is None else argv)

    import numpy as np
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO

    from mhsa_patch.child.synthetic import write_dataset

    work = Path(a.workdir or tempfile.mkdtemp(prefix="mhsa-onnx-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if a.model:
        model_path = work / Path(a.model).name
        if Path(a.model).resolve() != model_path:
            shutil.copy(a.model, model_path)  # the exporter writes next to the model
    else:
        model_path = work / "yolov8n-MHSA.yaml"
        target = ["--target", a.target] if a.target else []
        subprocess.run([sys.executable, "-m", "mhsa_patch", "gen-yaml", "--scale", "n", "-o", str(model_path),
                        "--force", *target], check=True)

    model = YOLO(str(model_path))
    if not any(type(m).__name__ == "MHSA" for m in model.model.modules()):
        sys.exit(f"onnx_predict: {model_path.name} has no MHSA layer")
    os.chdir(work)  # a model built from a YAML exports into the working directory
    onnx_file = Path(model.export(format="onnx", imgsz=a.imgsz)).resolve()
    print(f"onnx_predict: exported {onnx_file}")

    # One image of the synthetic dataset, letterboxed by hand: a square image of exactly imgsz needs no resizing.
    data = work / "shapes" / "data.yaml"
    if not data.is_file():
        write_dataset(data.parent, n_train=1, n_val=1, imgsz=a.imgsz)
    image = sorted((data.parent / "images" / "val").glob("*.jpg"))[0]
    from PIL import Image

    rgb = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255.0
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])  # (1, 3, H, W), RGB, 0..1: what ultralytics feeds

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    y_onnx = session.run(None, {inp.name: x})[0]
    net = model.model.float().eval()
    with torch.no_grad():
        y_torch = net(torch.from_numpy(x))
    y_torch = (y_torch[0] if isinstance(y_torch, (list, tuple)) else y_torch).numpy()
    diff = float(np.abs(y_onnx - y_torch).max())
    scale = float(np.abs(y_torch).max())
    print(f"onnx_predict: onnxruntime output {tuple(y_onnx.shape)} vs PyTorch {tuple(y_torch.shape)}: "
          f"max |diff| {diff:.2e} (outputs up to {scale:.1f})")
    if y_onnx.shape != y_torch.shape or diff > 1e-3 * max(scale, 1.0):
        sys.exit("onnx_predict: onnxruntime and PyTorch disagree")

    results = YOLO(str(onnx_file), task="detect").predict(str(image), imgsz=a.imgsz, device="cpu", verbose=False)
    print(f"onnx_predict: ultralytics' ONNX backend predicted {len(results[0].boxes)} boxes on {image.name} ✅")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
