"""DistributedDataParallel on two CPU processes (gloo): YOLOv8n-MHSA's gradients agree across ranks; BoT3 (the module
and a whole yolov8n-BoT3) trains three steps wrapped as ultralytics 8.0-8.2 wrap it, without find_unused_parameters.

The workers are fresh interpreters that import ultralytics from PYTHONPATH, as ultralytics' own multi-GPU launcher
starts them (``python -m torch.distributed.run ... _temp_*.py``): the source-level patch is what they see.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
import trainkit

WORKER = Path(__file__).with_name("ddp_worker.py")
WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path: Path, site: Path, cfg: str, mode: str = "step") -> list[dict]:
    """Start ``WORLD`` ranks of ``ddp_worker.py`` on gloo against the ultralytics under ``site``; their reports."""
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = helpers.checkout_env(site)  # the workers import this checkout's mhsa_patch, not an installed one
        env.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
            LOCAL_RANK=str(rank), OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), cfg, str(tmp_path / f"{mode}-rank{rank}.json"), mode],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        )
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    return [json.loads((tmp_path / f"{mode}-rank{r}.json").read_text()) for r in range(WORLD)]


def assert_trained_alike(reports: list[dict]) -> None:
    """Three steps ran on every rank, on different data, and left the same finite, changed weights everywhere."""
    for r in reports:
        assert r["error"] is None and len(r["losses"]) == 3, r
        assert r["finite"] and r["weights_moved"] > 0, r
        assert r["weights_max_diff_across_ranks"] == 0.0, r
    assert reports[0]["losses"] != reports[1]["losses"]  # the batches really were different


@pytest.mark.training
def test_bot3_module_trains_under_ddp_without_find_unused_parameters(tmp_path):
    """BoT3 alone, wrapped as ultralytics 8.0-8.2 wrap the model: fc1 (kept as buffers) stops nothing. The forks'
    own class, with fc1 a Parameter the forward never uses, stops at the second step: the test can fail."""
    p = trainkit.patched()
    reports = run_ranks(tmp_path, p["site"], "-", "module")
    assert_trained_alike(reports)
    assert not reports[0]["fc1_is_parameter"] and reports[0]["fc1_in_state_dict"]
    forks = run_ranks(tmp_path, p["site"], "-", "module-forks")
    for r in forks:
        assert r["fc1_is_parameter"] and len(r["losses"]) == 1, r
        assert r["error"].startswith("step 2: Expected to have finished reduction in the prior iteration"), r


@pytest.mark.training
def test_yolov8n_bot3_trains_under_ddp_without_find_unused_parameters(tmp_path):
    """A whole yolov8n-BoT3 (gen-yaml --layer BoT3), ultralytics' loss, three steps, DDP(model) with no
    find_unused_parameters: what the 8.0-8.2 trainers (and 8.4 with compile=True) run on several GPUs."""
    p = trainkit.patched()
    cfg = trainkit.gen_yaml(p["site"], tmp_path / "cfg", "n", "--layer", "BoT3")
    reports = run_ranks(tmp_path, p["site"], str(cfg), "steps")
    assert_trained_alike(reports)
    for r in reports:
        assert Path(r["ultralytics_file"]).resolve().is_relative_to(Path(p["site"]).resolve())
        assert r["layers"].count("BoT3") == 1


@pytest.mark.training
def test_ddp_gradients_agree_across_ranks(tmp_path):
    p = trainkit.patched()
    reports = run_ranks(tmp_path, p["site"], str(p["yaml"]))

    for r in reports:
        # each worker imported the patched copy, not the ultralytics installed in the environment
        assert Path(r["ultralytics_file"]).resolve().is_relative_to(Path(p["site"]).resolve())
        assert r["added_layers"] == [10] and r["finite"] and r["added_grad_norm"] > 0
    r0 = reports[0]
    assert reports[0]["n"] == reports[1]["n"]
    # different data per rank: the gradients each rank computes alone differ ...
    assert r0["local_max_diff_across_ranks"] > 1e-6 * r0["grad_scale"]
    # ... and DDP's all-reduce makes them identical on every rank, equal to their mean
    assert r0["ddp_max_diff_across_ranks"] == 0.0
    for r in reports:
        assert r["ddp_vs_mean_of_local"] <= 1e-4 * max(r["grad_scale"], 1e-12), r
    assert reports[0]["loss"] != reports[1]["loss"]  # the batches really were different
