"""Child of ``mhsa-patch check``: runs against the target's ultralytics (see :mod:`mhsa_patch.child.launch`).

``python -m mhsa_patch.child.check --model M.yaml|M.pt [--imgsz 640] [--runs 10] [--train ...] --events FILE``

Steps: build; forward at ``imgsz x imgsz`` and at a rectangular ``imgsz x 3/4 imgsz``; one training step
(ultralytics' loss, backward, one SGD step) with a check that the patch's layers got a gradient; the model summary (layers,
parameters, true GFLOPs with attention); CPU latency against the baseline (the release's own config the model was
made from, at its scale and ``nc``; see :mod:`mhsa_patch.modelyaml.baseline`), measured in this process. With ``--train``: a short run of ultralytics' own trainer on a
synthetic dataset drawn on the spot, then ``last.pt`` and ``best.pt`` reloaded and run on an image.
"""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mhsa_patch.child.compat import (
    build,
    is_layer,
    layer_type,
    load_checkpoint,
    loss_fn,
    loss_floats,
    model_task,
    require_patched,
    route_checkpoint_loading,
    synthetic_batch,
    ultralytics_info,
)
from mhsa_patch.child.protocol import ChildError, one_line, run_main
from mhsa_patch.child.torchvision_ops import require as require_torchvision


def _tensors(out):
    """Every tensor in a (nested) model output."""
    if hasattr(out, "shape"):
        yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from _tensors(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from _tensors(v)


def _nc(model) -> int:
    nc = getattr(model.model[-1], "nc", None)
    return int(nc if nc is not None else (getattr(model, "yaml", None) or {}).get("nc", 80))


def model_of(model_path: str):
    """``(model, table_lines)``: a model YAML built fresh (with parse_model's layer table, as ultralytics logs it),
    or a checkpoint's model (FP32, trainable again; no table)."""
    if model_path.endswith(".pt"):
        model, _ = load_checkpoint(model_path)
        model = model.float()
        for p in model.parameters():
            p.requires_grad = True
        return model, None
    return build(model_path, table=True)


def baseline_of(model, package: Path, model_name: str):
    """``(stock model, baseline)``: what the model is compared with (see :mod:`mhsa_patch.modelyaml.baseline`): the
    release's own config it was made from at the same scale and ``nc``, else its own YAML without our layers."""
    from mhsa_patch.modelyaml.baseline import choose

    cfg = copy.deepcopy(getattr(model, "yaml", None) or {})
    if not cfg.get("backbone"):
        raise ChildError("the model carries no YAML (model.yaml); cannot derive its stock counterpart")
    from mhsa_patch.child.compat import user_specs

    base = choose(cfg, package, model_name, user_specs())
    stock_cfg = dict(base.cfg)
    stock_cfg.pop("yaml_file", None)
    return build(stock_cfg, nc=_nc(model))[0], base


def forward(model, h: int, w: int) -> dict:
    import torch

    model.eval()
    x = torch.zeros(1, 3, h, w)
    t = time.perf_counter()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"forward at {w}x{h} failed: {one_line(e)}") from None
    ms = (time.perf_counter() - t) * 1000
    tensors = list(_tensors(out))
    if not tensors:
        raise ChildError(f"forward at {w}x{h} returned no tensor")
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise ChildError(f"forward at {w}x{h} gave non-finite outputs (NaN or Inf)")
    main = tensors[0]
    result = {"input": [1, 3, h, w], "output": list(main.shape), "ms": round(ms, 1)}
    strides = getattr(model, "stride", None)
    if strides is not None and main.dim() == 3:
        expected = int(sum((h // int(s)) * (w // int(s)) for s in strides))
        if main.shape[-1] != expected:
            raise ChildError(f"forward at {w}x{h}: {main.shape[-1]} anchors, expected {expected}")
    return result


def train_step(model, h: int, w: int) -> dict:
    """One step of ultralytics' detection loss, backward and SGD on a copy; the added layers must get a finite, non-zero gradient."""
    import torch

    model = copy.deepcopy(model).train()
    for p in model.parameters():
        p.requires_grad = True
    batch = synthetic_batch((h, w), 1, _nc(model))
    task = model_task(model)
    try:
        if task == "detect":
            loss, items = loss_fn(model)(batch)
            kind = "ultralytics' detection loss"
        else:  # segment/pose/obb losses need masks/keypoints/angles: a surrogate still drives every gradient
            outs = [t for t in _tensors(model(batch["img"])) if t.is_floating_point()]
            loss = sum(t.float().pow(2).mean() for t in outs)
            items = [float(loss.detach())]
            kind = f"surrogate loss (mean square of the {task} outputs)"
        total = loss.sum()
        total.backward()
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"training step at {w}x{h} failed: {one_line(e)}") from None
    if not bool(torch.isfinite(total.detach())):
        raise ChildError(f"training step at {w}x{h}: the loss is not finite ({float(total.detach())})")
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        raise ChildError(f"training step at {w}x{h}: non-finite gradients")
    added = [m for m in model.modules() if is_layer(m)]
    norm = 0.0
    for m in added:  # every Parameter: one without a gradient stops DDP without find_unused_parameters
        for name, p in m.named_parameters():
            if p.grad is None:
                raise ChildError(f"training step: {type(m).__name__} parameter {name} got no gradient")
            if p.grad is not None:
                norm += float(p.grad.norm()) ** 2
    norm = math.sqrt(norm)
    learned = [m for m in added if any(True for _ in m.parameters())]  # a parameter-free layer (SimAM) learns nothing
    if learned and norm == 0.0:
        raise ChildError("training step: the gradient through the added layers is zero everywhere")
    if added and not learned:  # then the gradient must still flow through it, to the layers before
        norm = _gradient_through(model, added, batch, task)
        if norm == 0.0:
            raise ChildError("training step: no gradient flows through the added layers")
    before = [p.detach().clone() for m in learned for p in m.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt.step()
    after = [p.detach() for m in learned for p in m.parameters()]
    changed = any(not torch.equal(a, b) for a, b in zip(before, after))
    if learned and not changed:
        raise ChildError("training step: the optimizer step left the added layers unchanged")
    changed = changed or not learned
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ChildError("training step: the optimizer step made the weights non-finite")
    return {
        "input": [1, 3, h, w],
        "loss_kind": kind,
        "loss": round(float(total.detach()), 4),
        "loss_items": [round(v, 4) for v in loss_floats(items)],
        "added_grad_norm": norm,
        "added_updated": changed,
    }


def _gradient_through(model, added, batch, task) -> float:
    """The norm of the gradient that reaches the inputs of the added layers (parameter-free ones: SimAM), from one
    more forward and backward pass of the same loss with hooks on them."""
    import torch

    inputs = []

    def keep(_module, args):
        for a in args:
            if isinstance(a, torch.Tensor) and a.requires_grad:
                a.retain_grad()
                inputs.append(a)

    handles = [m.register_forward_pre_hook(keep) for m in added]
    try:
        model.zero_grad()
        if task == "detect":
            loss, _ = loss_fn(model)(batch)
        else:
            loss = sum(t.float().pow(2).mean() for t in _tensors(model(batch["img"])) if t.is_floating_point())
        loss.sum().backward()
    finally:
        for h in handles:
            h.remove()
    return math.sqrt(sum(float(a.grad.norm()) ** 2 for a in inputs if a.grad is not None))


# ------------------------------------------------------------------------------------------------------ summary


def summary(model, imgsz: int, table_lines=None) -> dict:
    """Layer table, parameters and true GFLOPs (attention included), by :func:`mhsa_patch.child.probe.summarize`."""
    from mhsa_patch.child.probe import summarize

    try:
        return dict(summarize(model, imgsz, table_lines))
    except Exception as e:  # noqa: BLE001
        raise ChildError(f"counting the model's FLOPs failed: {one_line(e)}") from None


def latency(model, stock, imgsz: int, runs: int) -> dict:
    """Median CPU latency of both models at batch 1, runs interleaved so that load on the machine hits both alike."""
    import torch

    # Threads: torch's count as this process has it. Ultralytics sets OMP_NUM_THREADS=1 on import unless the user
    # set it, so this is 1 thread by default (stable on a busy machine) and OMP_NUM_THREADS=N to time N threads.
    x = torch.zeros(1, 3, imgsz, imgsz)
    model.eval()
    stock.eval()
    times = {"model": [], "stock": []}
    with torch.no_grad():
        for m in (model, stock, model, stock):  # warm-up
            m(x)
        for _ in range(runs):
            for key, m in (("model", model), ("stock", stock)):
                t = time.perf_counter()
                m(x)
                times[key].append(time.perf_counter() - t)
    model_ms = statistics.median(times["model"]) * 1000
    stock_ms = statistics.median(times["stock"]) * 1000
    return {
        "model_ms": round(model_ms, 2),
        "stock_ms": round(stock_ms, 2),
        "ratio": round(model_ms / stock_ms, 3),
        "runs": runs,
        "threads": torch.get_num_threads(),
        "imgsz": imgsz,
    }


# ----------------------------------------------------------------------------------------------------- training


def train(events, model_path: str, imgsz: int, epochs: int, batch: int, images: int, keep: str | None) -> dict:
    """A short run of ultralytics' own trainer on a synthetic dataset; then reload last.pt/best.pt and predict."""
    from mhsa_patch.child.synthetic import write_dataset
    from ultralytics import YOLO

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mhsa-check-train-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        n_val = max(2, images // 4)
        events.step("data", f"Drawing a synthetic dataset: {images} train + {n_val} val images at {imgsz}px")
        data = write_dataset(work / "shapes", n_train=images, n_val=n_val, imgsz=imgsz)
        events.step("train", f"Training {epochs} epoch{'s' * (epochs > 1)} with ultralytics' trainer on the CPU")
        yolo = YOLO(model_path)
        losses: list[list[float]] = []

        def record(trainer):
            items = getattr(trainer, "loss_items", None)
            if items is not None:
                losses.append(loss_floats(items))

        yolo.add_callback("on_train_batch_end", record)
        yolo.add_callback("on_pretrain_routine_start", _quiet_model)
        reported: set[int] = set()

        def epoch_end(trainer):  # releases call it again for the final validation of best.pt: one line per epoch
            event = epoch_event(trainer)
            if event["epoch"] not in reported and event["epoch"] <= event["epochs"]:
                reported.add(event["epoch"])
                events.emit(**event)

        yolo.add_callback("on_fit_epoch_end", epoch_end)
        try:
            yolo.train(
                data=str(data),
                epochs=epochs,
                imgsz=imgsz,
                batch=batch,
                workers=0,
                device="cpu",
                plots=False,
                amp=False,
                val=True,
                project=str(work / "runs"),
                name="check",
                exist_ok=True,
                seed=0,
                deterministic=False,
            )
        except Exception as e:  # noqa: BLE001
            raise ChildError(f"ultralytics' trainer failed: {one_line(e)}") from None
        if not losses:
            raise ChildError("the trainer ran no iteration")
        bad = [k for k, ls in enumerate(losses) if not all(math.isfinite(v) for v in ls)]
        if bad:
            raise ChildError(f"non-finite loss at iteration {bad[0] + 1} of {len(losses)}: {losses[bad[0]]}")
        save_dir = Path(yolo.trainer.save_dir)
        reloaded = {}
        image = next(iter(sorted((work / "shapes" / "images" / "val").glob("*.jpg"))))
        for name in ("last.pt", "best.pt"):
            ckpt = save_dir / "weights" / name
            events.step("reload", f"Reloading {name} and predicting")
            if not ckpt.is_file():
                raise ChildError(f"the trainer saved no {name} in {ckpt.parent}")
            try:
                res = YOLO(str(ckpt)).predict(str(image), imgsz=imgsz, device="cpu", verbose=False)
            except Exception as e:  # noqa: BLE001
                raise ChildError(f"{name} does not reload and predict: {one_line(e)}") from None
            kept = any(is_layer(m) for m in YOLO(str(ckpt)).model.modules())
            reloaded[name] = {"boxes": len(res[0].boxes), "added_layers": kept, "bytes": ckpt.stat().st_size}
            if not kept and any(is_layer(m) for m in yolo.model.modules()):
                raise ChildError(f"{name} reloaded without the layers the patch added")
        return {
            "iterations": len(losses),
            "first_loss": [round(v, 4) for v in losses[0]],
            "last_loss": [round(v, 4) for v in losses[-1]],
            "epochs": epochs,
            "imgsz": imgsz,
            "batch": batch,
            "images": images,
            "save_dir": str(save_dir) if keep else None,
            "reloaded": reloaded,
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _quiet_model(trainer) -> None:
    """Build the trainer's model without its layer table: the parent prints the table once, with true GFLOPs."""
    get_model = trainer.get_model

    def quiet(cfg=None, weights=None, verbose=True):  # noqa: ARG001 - the trainer's signature
        return get_model(cfg=cfg, weights=weights, verbose=False)

    trainer.get_model = quiet


def epoch_event(trainer) -> dict:
    """One finished epoch for the parent's progress line: its number, mean training losses, validation metrics."""
    event: dict = {"epoch": int(trainer.epoch) + 1, "epochs": int(trainer.epochs)}
    try:
        items = trainer.label_loss_items(trainer.tloss, prefix="train")
        event["loss"] = {k.split("/", 1)[-1]: round(float(v), 4) for k, v in items.items()}
    except Exception:  # noqa: BLE001 - a release without the helper: no losses in the line, the run goes on
        pass
    metrics = getattr(trainer, "metrics", None) or {}
    event["metrics"] = {k.split("/", 1)[-1]: round(float(v), 4) for k, v in metrics.items() if "mAP" in k}
    return event


# --------------------------------------------------------------------------------------------------------- main


def check(events, a) -> dict:
    if a.train:  # ultralytics validates with torchvision's nms: a torchvision built for another torch stops us here
        require_torchvision()
    version, where = ultralytics_info()
    require_patched()
    routed = route_checkpoint_loading()  # before anything loads a checkpoint: old releases on today's torch
    name = Path(a.model).name
    events.step("build", f"Building {name}")
    model, table = model_of(a.model)
    added = [{"index": i, "type": layer_type(m)} for i, m in enumerate(model.model) if is_layer(m)]
    report = {
        "ultralytics": version,
        "site": str(where.parent),
        "model": a.model,
        "source": "checkpoint" if table is None else "yaml",
        "task": model_task(model),
        "scale": str((getattr(model, "yaml", None) or {}).get("scale") or "?"),
        "nc": _nc(model),
        "added_layers": added,
        "restricted_loading": routed,  # the release's own torch.load calls go through the restricted loader
    }
    if a.train and report["task"] != "detect":
        raise ChildError(
            f"check --train draws a detection dataset; this is a {report['task']} model: check it without --train"
        )
    s, r = a.imgsz, a.imgsz * 3 // 4 // 32 * 32
    events.step("forward", f"Forward at {s}x{s}")
    report["forward"] = [forward(model, s, s)]
    events.step("forward", f"Forward at {s}x{r} (rectangular)")
    report["forward"].append(forward(model, r, s))
    events.step("backward", f"Backward and one optimizer step at {s}x{s}")
    report["train_step"] = train_step(model, s, s)
    events.step("summary", "Counting parameters and true GFLOPs (attention included)")
    report["summary"] = summary(model, s, table)
    stock, base = baseline_of(model, where, name)
    st = summary(stock, s)
    report["baseline"] = base.name
    report["stock"] = {**base.to_dict(), "nc": _nc(stock), "parameters": st["parameters"], "gflops": st["gflops"],
                       "layers": len(st["layers"])}
    events.step("latency", f"Timing {a.runs} CPU runs each of the model and the stock model at {s}x{s}")
    report["latency"] = latency(model, stock, s, a.runs)
    if a.train:
        report["train"] = train(events, a.model, a.train_imgsz, a.epochs, a.batch, a.images, a.keep)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mhsa_patch.child.check")
    ap.add_argument("--model", required=True)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--train-imgsz", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--keep")
    ap.add_argument("--events")
    a = ap.parse_args(argv)
    return run_main(lambda ev: check(ev, a), a.events)


if __name__ == "__main__":
    raise SystemExit(main())
