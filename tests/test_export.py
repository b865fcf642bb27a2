"""ONNX export of a YOLOv8n+MHSA through ultralytics' own exporter, offline, and onnxruntime parity with PyTorch.

The ultralytics under test is a copy of the latest release, patched by the engine's CLI (``mhsa_patch apply``); the
model is built, exported and compared in a subprocess that imports that copy.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import releases

# yolov8.yaml with MHSA after SPPF as layer 10; every later layer moves by one. The P5 concat reads MHSA (the
# tutorial's wiring). The file name carries the scale (n), which ultralytics reads from the name.
YAML = """\
nc: 80
scales:
  n: [0.33, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]] # 1-P2/4
  - [-1, 3, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]] # 3-P3/8
  - [-1, 6, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]] # 5-P4/16
  - [-1, 6, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]] # 7-P5/32
  - [-1, 3, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]] # 9
  - [-1, 1, MHSA, {mhsa_args}] # 10
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 3, C2f, [512]] # 13
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 3, C2f, [256]] # 16 (P3/8-small)
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 13], 1, Concat, [1]]
  - [-1, 3, C2f, [512]] # 19 (P4/16-medium)
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 10], 1, Concat, [1]]
  - [-1, 3, C2f, [1024]] # 22 (P5/32-large)
  - [[16, 19, 22], 1, Detect, [nc]] # Detect(P3, P4, P5)
"""

CHILD = r"""
import json
import numpy as np
import onnxruntime as ort
import torch
from ultralytics import YOLO

torch.manual_seed(0)
model = YOLO("yolov8n-mhsa.yaml")
layer = model.model.model[10]
info = {"type": type(layer).__name__, "module": type(layer).__module__, "pos": bool(layer.pos),
        "fused_kernel": hasattr(layer, "_attend_fused")}
path = model.export(format="onnx", imgsz=640)

x = torch.rand(1, 3, 640, 640, generator=torch.Generator().manual_seed(1))
net = model.model.float().eval()
with torch.no_grad():
    ref = net(x)
ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
diff = np.abs(got.astype(np.float64) - ref)
info.update(
    shape=list(got.shape), ref_shape=list(ref.shape),
    rel=float(diff.max() / np.abs(ref).max()),
    rel_boxes=float(diff[:, :4].max() / np.abs(ref[:, :4]).max()),
    abs_scores=float(diff[:, 4:].max()),
    ops=sorted({n.op_type for n in __import__("onnx").load(path).graph.node}),
)
print("RESULT " + json.dumps(info))
"""


@pytest.fixture(scope="module")
def patched_site(tmp_path_factory):
    """A copy of the latest release with MHSA applied by the engine's CLI."""
    site = tmp_path_factory.mktemp("export") / "site"
    releases.copy_release(releases.LATEST, site)
    proc = subprocess.run(
        [sys.executable, "-m", "mhsa_patch", "apply", "--target", str(site)],
        capture_output=True,
        text=True,
        env=releases.release_env(site),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


@pytest.mark.training
@pytest.mark.parametrize(
    "mhsa_args, pos",
    [
        ("[14, 14, 4]", False),  # pos_emb off
        ("[20, 20, 4, True]", True),  # pos_emb on, trained at P5 of 640: the tables are used as they are
        ("[14, 14, 4, True]", True),  # pos_emb on, tables resized 14 -> 20 inside the graph (ONNX Resize)
    ],
    ids=["pos-off", "pos-on-20x20", "pos-on-resized"],
)
def test_yolov8n_mhsa_onnx_export_matches_pytorch(patched_site, tmp_path, mhsa_args, pos):
    (tmp_path / "yolov8n-mhsa.yaml").write_text(YAML.format(mhsa_args=mhsa_args))
    proc = releases.run_python(CHILD, patched_site, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    assert result["type"] == "MHSA" and result["module"].endswith("nn.modules.conv")
    assert result["fused_kernel"], "the patched conv.py does not hold this project's MHSA"
    assert result["pos"] is pos
    assert result["shape"] == result["ref_shape"] == [1, 84, 8400]
    # Relative to the output's scale, per the issue. (The class scores of a fresh model are ~1e-4 sigmoids of large
    # negative logits: relative to their own tiny scale, float32 differs already for the stock yolov8n, so they are
    # measured here only as part of the whole output.)
    assert result["rel"] < 1e-4, result
    assert result["rel_boxes"] < 1e-4, result
    if mhsa_args == "[14, 14, 4, True]":
        assert "Resize" in result["ops"]
    assert (tmp_path / "yolov8n-mhsa.onnx").exists()
