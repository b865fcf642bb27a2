"""The engine issue's matrix: on each release, patch a copy, import it, build and run YOLOv8n+MHSA, revert, compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import releases

pytestmark = pytest.mark.releases

BUILD = r"""
import json, sys
import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel

assert ultralytics.__file__.startswith(sys.argv[1]), ultralytics.__file__  # the patched copy, not the installed one
def tensors(o):
    if isinstance(o, torch.Tensor):
        return [o]
    items = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else []
    return [t for i in items for t in tensors(i)]

torch.manual_seed(0)
out = {"version": ultralytics.__version__}
stock = DetectionModel("yolov8n.yaml", verbose=False)
out["stock"] = sum(p.numel() for p in stock.parameters())
for name in sys.argv[2:]:
    model = DetectionModel(name, verbose=False)
    mhsa = model.model[10]
    assert type(mhsa).__name__ == "MHSA" and model.model[11].f == -1 and model.model[11 + 1].f == [-1, 6]
    model.eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 640, 640))
    y = y[0] if isinstance(y, (list, tuple)) else y
    model.train()
    feats = model(torch.rand(2, 3, 320, 256))  # rectangular, training mode
    sum(t.float().mean() for t in tensors(feats)).backward()
    out[name] = {"params": sum(p.numel() for p in model.parameters()), "out": list(y.shape), "finite": bool(torch.isfinite(y).all()),
                 "grad": bool(mhsa.query.weight.grad is not None and torch.isfinite(mhsa.query.weight.grad).all())}
print(json.dumps(out))
"""


def mhsa_yaml(version: str, dest: Path, args: list) -> Path:
    """YOLOv8n with MHSA after SPPF, written from the release's own config (an oracle independent of gen-yaml)."""
    pkg = releases.pristine(version)
    base = next(p for p in (pkg / "cfg/models/v8/yolov8.yaml", pkg / "models/v8/yolov8.yaml") if p.exists())
    cfg = yaml.safe_load(base.read_text())
    cfg["backbone"].append([-1, 1, "MHSA", args])
    for row in cfg["head"]:
        f = row[0]
        row[0] = [(i + 1 if i >= 9 else i) for i in f] if isinstance(f, list) else f
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


@pytest.mark.parametrize("version", releases.MATRIX)
def test_patch_build_run_revert(tmp_path, version):
    patch_build_run_revert(tmp_path, version)


def test_the_newest_release_on_pypi(tmp_path):
    """Issue 22 A.11: everything else in the suite tests pinned releases (MATRIX, and the ultralytics the test extras
    install); this test alone takes the newest ultralytics on PyPI today, so a new release that breaks the tool fails
    here, under this name."""
    version = releases.newest()
    if version is None:
        pytest.skip("pip could not reach PyPI: the newest ultralytics release was not tried")
    patch_build_run_revert(tmp_path, version)


def test_the_test_extras_pin_the_latest_release_of_the_matrix():
    """The ultralytics that ``pip install '.[test]'`` installs is the matrix's latest, pinned: CI tests what the suite
    was written against, never what PyPI has that day."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    test_extras = text.split("[project.optional-dependencies]", 1)[1].split("]", 1)[0]
    assert f'"ultralytics=={releases.LATEST}"' in test_extras, test_extras


def patch_build_run_revert(tmp_path: Path, version: str) -> None:
    site = tmp_path / "site"
    pkg = releases.copy_release(version, site)
    stock = releases.tree_bytes(pkg)
    cli = [sys.executable, "-m", "mhsa_patch"]

    r = subprocess.run([*cli, "apply", "-t", str(site)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    yamls = [
        mhsa_yaml(version, tmp_path / "yolov8n-MHSA.yaml", [14, 14, 4]),
        mhsa_yaml(version, tmp_path / "yolov8n-MHSA-pos.yaml", [20, 20, 4, True]),
    ]
    r = releases.run_python(BUILD, site, str(pkg), *map(str, yamls), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["version"] == version
    c = 256  # channels at P5 for scale n
    for y in yamls:
        res = out[str(y)]
        assert res["params"] == out["stock"] + 3 * (c * c + c) + (2 * c * 20 if "pos" in y.name else 0)
        assert res["finite"] and res["grad"]

    r = subprocess.run([*cli, "revert", "-t", str(site)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert releases.tree_bytes(pkg) == stock
