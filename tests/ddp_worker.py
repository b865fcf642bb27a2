"""One rank of the DDP tests (tests/test_ddp.py), under DistributedDataParallel on gloo.

Run as a fresh process, exactly like one of ultralytics' DDP workers: it re-imports ultralytics from PYTHONPATH (the
patched copy) and builds the model from the YAML, so only a source-level patch makes MHSA known here.

``python ddp_worker.py MODEL.yaml OUT.json [MODE]`` with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.

* ``step`` (default): each rank takes a different synthetic batch, computes its gradients alone (no DDP, a copy of
  the model) and under DDP, and writes both flattened gradients' digests; rank 0 also compares the gathered DDP
  gradients of all ranks.
* ``steps``: the model of MODEL.yaml wrapped as ultralytics 8.0 to 8.2 wrap it, ``DDP(model)`` (no
  ``find_unused_parameters``), and three SGD steps on different batches per rank.
* ``module``: the same three steps on the patched ``BoT3`` module alone (MODEL.yaml unused); ``module-forks``: on
  the forks' own BoT3 (tests/reference_layers.py, ``fc1`` a Parameter), which DDP stops at the second step.
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


STEPS = 3


def three_steps(model, batch_of, loss_of, rank: int, world: int) -> dict:
    """``DDP(model)`` as ultralytics 8.0-8.2 wrap it (no find_unused_parameters), three SGD steps, one batch per rank
    and step; the losses, whether every step ran, and how far the ranks' weights are apart afterwards."""
    ddp = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    losses, error = [], None
    for step in range(STEPS):
        try:
            opt.zero_grad()
            loss = loss_of(ddp, batch_of(1000 * rank + step))
            loss.backward()
            opt.step()
        except RuntimeError as e:  # what DDP raises at the second step when a Parameter got no gradient
            error = f"step {step + 1}: {str(e).strip().splitlines()[0]}"
            break
        losses.append(float(loss.detach()))
    report = {"losses": losses, "error": error}
    if error is None:
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.zeros_like(weights) for _ in range(world)]
        dist.all_gather(gathered, weights)
        report["weights_max_diff_across_ranks"] = max(float((g - gathered[0]).abs().max()) for g in gathered)
        report["weights_moved"] = float((weights - before).abs().max())
        report["finite"] = bool(torch.isfinite(weights).all())
        report["n_parameters"] = weights.numel()
    return report


def module_steps(mode: str, rank: int, world: int) -> dict:
    """Three DDP steps on a BoT3 module alone: the patched class, or the forks' (``module-forks``)."""
    from ultralytics.nn.modules.conv import Conv

    if mode == "module-forks":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from reference_layers import reference_module

        cls = reference_module("bot3_fork_ddp", Conv).BoT3
    else:
        from ultralytics.nn.modules.conv import BoT3 as cls

    torch.manual_seed(0)
    module = cls(16, 32, n=2, w=8, h=8)

    def batch_of(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 32, 8, 8, generator=g)

    def loss_of(ddp, batch):
        x, target = batch
        return (ddp(x) - target).pow(2).mean()

    report = three_steps(module, batch_of, loss_of, rank, world)
    report["fc1_is_parameter"] = any(n.endswith("fc1.weight") for n, _ in module.named_parameters())
    report["fc1_in_state_dict"] = any(k.endswith("fc1.weight") for k in module.state_dict())
    return report


def model_steps(cfg: str, rank: int, world: int) -> dict:
    """Three DDP steps on the whole model of ``cfg`` with ultralytics' own loss, as its trainer runs them."""
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

    from mhsa_patch.child.compat import default_args, synthetic_batch

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=3, verbose=False)
    model.args = default_args()
    model.train()
    report = three_steps(
        model,
        lambda seed: synthetic_batch((64, 96), 2, 3, seed=seed),
        lambda ddp, batch: ddp(batch)[0].sum(),  # the trainer: loss, items = model(batch); loss.sum().backward()
        rank,
        world,
    )
    report["ultralytics_file"] = ultralytics.__file__
    report["layers"] = [type(m).__name__ for m in model.model]
    return report


def main():
    cfg, out = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "step"
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    if mode != "step":
        report = model_steps(cfg, rank, world) if mode == "steps" else module_steps(mode, rank, world)
        with open(out, "w") as f:
            json.dump({"rank": rank, **report}, f)
        dist.destroy_process_group()
        return

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
