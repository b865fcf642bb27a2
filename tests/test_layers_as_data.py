"""Layers are data: a third layer needs only files in patches/, and several layers apply and revert as one.

The test copies the tool's source (``mhsa_patch/``, ``patches/``, ``pyproject.toml``) into a temporary checkout,
adds a tiny test-only layer there by writing files under ``patches/`` alone, and runs that checkout's CLI against a
copy of a real release: every layer is inserted in one transaction, a model that uses the new layer builds with
ultralytics' own ``parse_model``, ``status`` reports each layer, and ``revert`` gives the release back byte for byte.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import releases
from helpers import checkout_env
from mhsa_patch.patches import LAYERS

ROOT = Path(__file__).resolve().parent.parent

SCALE_LAYER = '''"""A test-only layer: multiplies its input by a learned per-channel scale."""

import torch
from torch import nn


class ChannelScale(nn.Module):
    """``x * scale`` with one learned factor per channel; width-preserving like MHSA."""

    def __init__(self, c1):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, c1, 1, 1))

    def forward(self, x):
        return x * self.scale
'''

NEW_SPEC = '''
LAYERS = (
    *LAYERS,
    LayerSpec(
        name="ChannelScale",
        source="channel_scale.py",
        parse_model_rule="prepend_input_channels",
        summary="a test-only per-channel scale",
    ),
)
'''

YAML = """nc: 80
scales:
  n: [0.33, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]  # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]]  # 1-P2/4
  - [-1, 1, ChannelScale, []]  # 2
  - [-1, 1, MHSA, [14, 14, 4]]  # 3
head:
  - [[-1, 2], 1, Concat, [1]]  # 4
  - [-1, 1, Conv, [64, 3, 1]]  # 5
"""

BUILD = """
import sys, json
from ultralytics.nn.tasks import DetectionModel, parse_model
import ultralytics.nn.tasks as tasks, yaml, torch
d = yaml.safe_load(open(sys.argv[1]))
d["scale"] = "n"
model, save = parse_model(d, ch=3, verbose=False)
x = torch.zeros(1, 3, 64, 64)
y = []
for m in model:
    if m.f != -1:
        x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
    x = m(x)
    y.append(x)
print(json.dumps({"types": [type(m).__name__ for m in model], "out": list(x.shape)}))
"""


def checkout_with_a_third_layer(dest: Path) -> Path:
    """The tool's source tree with one more layer, added by writing files under patches/ only."""
    for part in ("mhsa_patch", "patches"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "patches" / "channel_scale.py").write_text(SCALE_LAYER)
    with open(dest / "patches" / "__init__.py", "a") as f:
        f.write(NEW_SPEC)
    return dest


def changed_outside_patches(checkout: Path) -> list[str]:
    changed = []
    for path in sorted(checkout.rglob("*")):
        rel = path.relative_to(checkout)
        if path.is_dir() or rel.parts[0] == "patches" or "__pycache__" in rel.parts:
            continue
        if not (ROOT / rel).is_file() or (ROOT / rel).read_bytes() != path.read_bytes():
            changed.append(str(rel))
    return changed


def tool(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    env = checkout_env(checkout, checkout=checkout)
    # cwd: ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH
    return subprocess.run(
        [sys.executable, "-m", "mhsa_patch", *args], env=env, cwd=checkout, capture_output=True, text=True
    )


@pytest.mark.releases
def test_a_third_layer_needs_only_files_in_patches(tmp_path):
    checkout = checkout_with_a_third_layer(tmp_path / "checkout")
    assert changed_outside_patches(checkout) == []
    pkg = releases.copy_release(releases.LATEST, tmp_path / "site")

    r = tool(checkout, "apply", "--target", str(pkg))
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(tool(checkout, "status", "--target", str(pkg), "--json").stdout)
    expected = [spec.name for spec in LAYERS] + ["ChannelScale"]
    assert st["state"] == "applied" and st["layers"] == expected
    layers_per_file = {rel: {p["layer"] for p in f["pieces"] if p["state"] == "marked"} for rel, f in st["files"].items()}
    assert all(found == set(expected) for found in layers_per_file.values()), layers_per_file
    for rel in ("nn/modules/conv.py", "nn/modules/__init__.py", "nn/tasks.py"):
        compile((pkg / rel).read_bytes(), rel, "exec")

    cfg = tmp_path / "scaled.yaml"
    cfg.write_text(YAML)
    b = releases.run_python(BUILD, pkg.parent, str(cfg))
    assert b.returncode == 0, b.stderr[-3000:]
    built = json.loads(b.stdout.strip().splitlines()[-1])
    assert built["types"][2:4] == ["ChannelScale", "MHSA"] and built["out"] == [1, 16, 16, 16]

    assert tool(checkout, "apply", "--target", str(pkg)).returncode == 0  # a re-apply is a no-op
    r = tool(checkout, "revert", "--target", str(pkg))
    assert r.returncode == 0, r.stderr
    assert releases.tree_bytes(pkg) == releases.tree_bytes(releases.pristine(releases.LATEST))


@pytest.mark.releases
@pytest.mark.parametrize("version", releases.MATRIX)
def test_two_layers_structural_revert_on_every_matrix_release(tmp_path, version):
    """Without the journal (deleted), revert removes both layers' pieces, the last inserted first: byte-exact."""
    checkout = checkout_with_a_third_layer(tmp_path / "checkout")
    pkg = releases.copy_release(version, tmp_path / "site")
    assert tool(checkout, "apply", "--target", str(pkg)).returncode == 0
    (pkg / ".mhsa-patch-journal.json").unlink()
    st = json.loads(tool(checkout, "status", "--target", str(pkg), "--json").stdout)
    assert st["state"] == "applied", st
    r = tool(checkout, "revert", "--target", str(pkg))
    assert r.returncode == 0, r.stderr
    assert releases.tree_bytes(pkg) == releases.tree_bytes(releases.pristine(version))
