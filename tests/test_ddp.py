"""DistributedDataParallel over the patched YOLOv8n-MHSA: two CPU processes (gloo), one training step, equal gradients.

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

import trainkit

WORKER = Path(__file__).with_name("ddp_worker.py")
WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.training
def test_ddp_gradients_agree_across_ranks(tmp_path):
    p = trainkit.patched()
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = trainkit.env(p["site"])
        env.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
            LOCAL_RANK=str(rank), OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(p["yaml"]), str(tmp_path / f"rank{rank}.json")],
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
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]

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
