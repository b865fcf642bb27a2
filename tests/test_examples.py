"""Every script in examples/ runs, on tiny settings, against temporary copies of the latest release."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
import releases
import trainkit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, site: Path, cwd: Path, timeout: float = 400):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=helpers.checkout_env(site),  # the examples import this checkout's mhsa_patch
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} exit {proc.returncode}\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.mark.training
def test_full_path(tmp_path):
    """apply → gen-yaml → port-weights → yolo train from the ported weights, on a fresh stock copy."""
    site = releases.copy_release(releases.LATEST, tmp_path / "site").parent
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = run_example("full_path.py", "--target", str(site), "--workdir", str(tmp_path / "w"), site=site, cwd=cwd)
    order = [
        "$ mhsa-patch apply",
        "MHSA, BoT3 applied",
        "$ mhsa-patch gen-yaml --scale n",
        "$ mhsa-patch port-weights yolov8n.pt yolov8n-MHSA.yaml -o yolov8n-MHSA.pt",
        "Transferred 355/361 tensors from yolov8n.pt",
        "$ yolo train model=",
        "Transferred 355/361 items from pretrained weights",  # ultralytics' trainer loading the ported weights
        "full_path: done ✅",
    ]
    pos = 0
    for needle in order:
        found = out.find(needle, pos)
        assert found >= 0, f"{needle!r} missing (or out of order) in:\n{out[-6000:]}"
        pos = found
    assert (tmp_path / "w" / "runs" / "full_path" / "weights" / "best.pt").is_file()
    assert list(cwd.iterdir()) == []  # everything went to the workdir
    status = trainkit.json_report(trainkit.cli("status", "--json", "--target", str(site), site=site))
    assert status["state"] == "applied"


@pytest.mark.training
def test_compare_baseline(tmp_path):
    p = trainkit.patched()
    out = run_example("compare_baseline.py", "--target", str(p["site"]), "--imgsz", "320", "--runs", "3",
                      site=p["site"], cwd=tmp_path)
    assert "YOLOv8n " in out and "YOLOv8n-MHSA" in out and "MHSA adds" in out and "true GFLOPs" in out
    r = json.loads(out.strip().splitlines()[-1])
    assert r["stock"]["parameters"] == 3157200
    assert r["mhsa"]["parameters"] - r["stock"]["parameters"] == 3 * (256 * 256 + 256)
    assert r["mhsa"]["gflops"] > r["stock"]["gflops"]
    assert r["latency"]["ratio"] > 0 and r["latency"]["imgsz"] == 320
    assert list(tmp_path.iterdir()) == []


@pytest.mark.training
def test_onnx_predict(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    p = trainkit.patched()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = run_example("onnx_predict.py", "--target", str(p["site"]), "--imgsz", "128", "--workdir",
                      str(tmp_path / "w"), site=p["site"], cwd=cwd)
    assert "onnx_predict: exported" in out and "max |diff|" in out
    assert "ultralytics' ONNX backend predicted" in out and "✅" in out
    assert (tmp_path / "w" / "yolov8n-MHSA.onnx").is_file()
    assert list(cwd.iterdir()) == []
