"""One rank of the DDP test (tests/test_ddp.py): a training step of YOLOv8n-MHSA under DistributedDataParallel.

Run as a fresh process, exactly like one of ultralytics' DDP workers: it re-imports ultralytics from PYTHONPATH (the
patched copy) and builds the model from the YAML, so only a source-level patch makes MHSA known here.

``python ddp_worker.py MODEL.yaml OUT.json`` with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. Each rank
takes a different synthetic batch, computes its gradients alone (no DDP, a copy of the model) and under DDP, and
writes both flattened gradients' digests; rank 0 also compares the gathered DDP gradients of all ranks.
"""

import copy
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def flat_grads(model):
    return torch.cat([p.grad.detach().flatten() for p in model.parameters() if p.requires_grad and p.grad is not None])


def main():
    cfg, out = sys.argv[1], sys.argv[2]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)

    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

    from mhsa_patch.child.compat import default_args, synthetic_batch

    torch.manual_seed(0)  # the same initial weights on every rank (DDP would broadcast rank 0's anyway)
    model = DetectionModel(cfg, nc=3, verbose=False)
    model.args = default_args()
    model.train()
    mhsa = [i for i, m in enumerate(model.model) if type(m).__name__ == "MHSA"]

    alone = copy.deepcopy(model)  # the same weights, outside DDP
    alone.args = model.args
    ddp = DDP(model)

    batch = synthetic_batch((96, 128), 2, 3, seed=100 + rank)  # different data on each rank, rectangular
    loss, _ = ddp(batch)  # ultralytics' trainer does exactly this: self.model(batch) -> (loss, loss_items)
    loss.sum().backward()  # DDP all-reduces (averages) the gradients during backward
    grads = flat_grads(model)

    loss_alone, _ = alone(batch)
    loss_alone.sum().backward()
    local = flat_grads(alone)

    gathered = [torch.zeros_like(grads) for _ in range(world)]
    dist.all_gather(gathered, grads)
    locals_ = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(locals_, local)
    mean_local = torch.stack(locals_).mean(0)
    mhsa_slice = torch.cat(
        [p.grad.detach().flatten() for i in mhsa for p in model.model[i].parameters()]
    )
    report = {
        "rank": rank,
        "ultralytics_file": ultralytics.__file__,
        "added_layers": mhsa,
        "loss": float(loss.sum().detach()),
        "n": grads.numel(),
        "ddp_max_diff_across_ranks": max(float((g - gathered[0]).abs().max()) for g in gathered),
        "local_max_diff_across_ranks": max(float((g - locals_[0]).abs().max()) for g in locals_),
        "ddp_vs_mean_of_local": float((grads - mean_local).abs().max()),
        "grad_scale": float(mean_local.abs().max()),
        "added_grad_norm": float(mhsa_slice.norm()),
        "finite": bool(torch.isfinite(grads).all()),
    }
    with open(out, "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
