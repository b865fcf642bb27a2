"""Old releases on today's torch: which releases call torch.load without weights_only, the one-line note of
``status`` and ``check``, and the routing of a release's own loading in a child (no unsafe switch anywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import releases
from helpers import cli
from mhsa_patch.patching.target import find_target
from mhsa_patch.patching.torchload import loads_without_weights_only, weights_only_note

NOTE = "calls torch.load without weights_only and torch"


@pytest.mark.parametrize(
    "version, old", [("8.0.98", True), ("8.0.239", True), ("8.1.47", True), ("8.2.103", False), ("8.4.190", False)]
)
def test_which_releases_load_without_weights_only(version, old):
    """Read from the files: 8.2.103 and later define utils/patches.py's torch_load (weights_only passed)."""
    assert loads_without_weights_only(releases.pristine(version)) is old


def test_note_needs_the_old_release_and_a_torch_from_2_6():
    old, new = find_target(releases.pristine("8.0.98")), find_target(releases.pristine(releases.LATEST))
    assert weights_only_note(old, "2.5.1") is None
    assert weights_only_note(new, "2.14.1") is None
    note = weights_only_note(old, "2.6.0")
    assert note.startswith(f"ultralytics 8.0.98 {NOTE} 2.6.0 refuses its checkpoints")
    assert note.endswith("fix: torch<2.6 with this release, or ultralytics>=8.2.103") and "\n" not in note


def test_status_says_it_in_one_line_without_importing_torch(tmp_path):
    releases.copy_release("8.0.98", tmp_path / "site")
    r = cli("status", "--target", str(tmp_path / "site"))
    assert r.exit_code == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if NOTE in ln]
    assert len(lines) == 1 and lines[0].startswith("WARNING ⚠️ ultralytics 8.0.98"), r.stderr
    data = json.loads(cli("status", "--json", "--target", str(tmp_path / "site")).stdout)
    assert NOTE in data["torch_load_note"]
    # status reads files: torch's version comes from its installed metadata, torch itself is never imported
    code = (
        "import sys; from mhsa_patch.cli import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['status', '--target', {str(tmp_path / 'site')!r}]); "
        "print(r.exit_code, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=releases.release_env(tmp_path))
    assert proc.stdout.split()[-2:] == ["0", "False"], proc.stdout + proc.stderr
    latest = tmp_path / "latest"
    releases.copy_release(releases.LATEST, latest)
    r = cli("status", "--target", str(latest))
    assert r.exit_code == 0 and NOTE not in r.stderr


def test_the_suite_sets_no_unsafe_switch(tmp_path):
    """torch's TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD would hide the wall from every test: the harness never sets it."""
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in releases.release_env(tmp_path)


ROUTED = r"""
import json, sys
import torch
from mhsa_patch.child.compat import route_checkpoint_loading
from ultralytics.nn.tasks import DetectionModel, torch_safe_load

out = sys.argv[1]
own = torch.load
routed = route_checkpoint_loading()
torch.manual_seed(0)
torch.save({"model": DetectionModel("yolov8n.yaml", verbose=False), "train_args": {}}, out)
ckpt = torch_safe_load(out)[0]  # the release's own loader: torch.load(file, map_location="cpu")
try:
    torch.load(out)  # this script is not ultralytics: torch's own load, weights only, refuses the checkpoint
    plain = "loaded"
except Exception as e:
    plain = type(e).__name__
print(json.dumps({"routed": routed, "replaced": torch.load is not own, "model": type(ckpt["model"]).__name__,
                  "plain": plain, "again": route_checkpoint_loading()}))
"""


@pytest.mark.releases
def test_a_childs_routing_covers_the_release_alone(tmp_path):
    """On 8.0.98, ultralytics' own torch.load calls go through the restricted loader; other callers keep torch's."""
    releases.copy_release("8.0.98", tmp_path / "site")
    env = releases.release_env(tmp_path / "site")
    env["PYTHONPATH"] = os.pathsep.join([str(releases.Path(__file__).resolve().parent.parent), env["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, "-c", ROUTED, str(tmp_path / "m.pt")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r == {"routed": True, "replaced": True, "model": "DetectionModel", "plain": "UnpicklingError", "again": True}
