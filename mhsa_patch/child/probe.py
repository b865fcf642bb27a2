"""Build a model from a YAML with the target's ultralytics and describe it: layers, parameters, true GFLOPs.

Runs in a child interpreter whose ``sys.path`` starts with the target's site folder (see :mod:`mhsa_patch.child.env`),
so it imports torch and ultralytics; the rest of the tool never does. Works on ultralytics 8.0.98 - 8.4.x.

Run by :func:`mhsa_patch.child.launch.run_probe` through the children's one protocol (:mod:`.protocol`); its result
is ``{"ultralytics": "8.4.190", "torch": "...", "models": [summary, ...]}``, a ``summary`` being what
:func:`summarize` returns, plus ``cfg``; a model that does not build is one ``error`` line naming it.

True GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass at ``imgsz`` x ``imgsz``, run on the
meta device (shapes only, no arithmetic, so it takes a fraction of a second even for a 258-GFLOP model). It counts
convolutions, matrix products and attention (``scaled_dot_product_attention`` decomposes into matmuls there), so
MHSA's quadratic term is included. Ultralytics' own figure (thop on a 32 x 32 input, scaled linearly to ``imgsz``)
misses the attention: MHSA computes its projections with ``F.linear`` and SDPA, which thop does not see, and a
quadratic term does not scale linearly anyway. Both count a multiply-add as 2 FLOPs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys

from mhsa_patch.child.compat import is_layer
from mhsa_patch.child.protocol import ChildError, one_line, run_main


def ultralytics_version() -> str:
    import ultralytics

    return str(getattr(ultralytics, "__version__", "?"))


def _cpu_attention_mapping():
    """FlopCounterMode formulas for the CPU SDPA kernels that torch does not register (used off the meta device)."""
    from torch.utils import flop_counter as fc

    mapping = {}
    aten = __import__("torch").ops.aten
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(aten, name, None)
        if op is not None and hasattr(fc, "sdpa_flop_count"):
            mapping[op] = lambda q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_flop_count(q, k, v)
    return mapping


def _keep_strides(src, dst) -> None:
    """Give the meta copy the real ``stride`` tensors: heads build their anchors from the values (``.item()``)."""
    import torch

    originals = dict(src.named_modules())
    for name, mod in dst.named_modules():
        value = getattr(mod, "stride", None)
        if isinstance(value, torch.Tensor) and value.is_meta and name in originals:
            real = getattr(originals[name], "stride", None)
            if isinstance(real, torch.Tensor):
                setattr(mod, "stride", real.detach().clone())


def true_flops(model, imgsz: int = 640) -> dict:
    """FLOPs of one eval forward pass at imgsz x imgsz: total and per top-level layer, in GFLOPs. Leaves model as is."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    ch = 3
    with contextlib.suppress(Exception):
        ch = int(next(p for p in model.parameters() if p.dim() == 4).shape[1])
    device = "meta"
    try:
        m = copy.deepcopy(model).to(device).eval()
        _keep_strides(model, m)
        x = torch.empty(1, ch, imgsz, imgsz, device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            m(x)
    except Exception:  # a layer that cannot run on meta: count a real pass on the CPU
        device = "cpu"
        m = copy.deepcopy(model).float().cpu().eval()
        x = torch.zeros(1, ch, imgsz, imgsz)
        try:
            counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_mapping())
        except TypeError:  # an old torch without custom_mapping
            counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            m(x)
    counts = counter.get_flop_counts()
    root = type(m).__name__
    per_layer = {}
    for i in range(len(m.model)):
        ops = counts.get(f"{root}.model.{i}", {})
        per_layer[i] = sum(ops.values()) / 1e9
    by_op = {str(k): v / 1e9 for k, v in counts.get("Global", {}).items()}
    del m
    return {"gflops": counter.get_total_flops() / 1e9, "per_layer": per_layer, "by_op": by_op, "device": device}


def thop_gflops(model, imgsz: int = 640):
    """Ultralytics' own GFLOPs figure (thop, scaled from a stride-size input), or None when unavailable."""
    try:
        try:
            from ultralytics.utils.torch_utils import get_flops
        except ImportError:
            from ultralytics.yolo.utils.torch_utils import get_flops
        with contextlib.redirect_stdout(sys.stderr):
            value = float(get_flops(model, imgsz))
        return value if value > 0 else None
    except Exception:
        return None


def _parse_table(lines: list[str], model) -> dict:
    """``n`` and ``arguments`` of each layer from parse_model's printed table (rows are fixed-width)."""
    found = {}
    for layer in model.model:
        i, f, t = int(layer.i), layer.f, str(layer.type)
        prefix = f"{i:>3}{str(f):>20}"
        for line in lines:
            if not line.startswith(prefix):
                continue
            rest = line[len(prefix) :]
            try:
                n = int(rest[:3])
                int(rest[3:13])
            except ValueError:
                continue
            tail = rest[13:]
            if not tail.startswith("  " + t):
                continue
            found[i] = {"n": n, "arguments": tail[2 + max(45, len(t)) :].strip()}
            break
    return found


def _jsonable_from(f):
    return f if isinstance(f, int) else [int(x) for x in f]


def summarize(model, imgsz: int = 640, table_lines: list[str] | None = None, flops: bool = True) -> dict:
    """A JSON-ready description of an ultralytics model.

    Keys: ``layers`` (index, from, n, params, module, arguments, gflops), ``parameters``, ``gradients``, ``gflops``
    (true, :func:`true_flops`), ``gflops_thop`` (ultralytics' figure), ``imgsz``, ``scale``, ``yaml_file``,
    ``stride``, ``mhsa`` (indices of the MHSA layers), ``flops_device``.
    ``n`` and ``arguments`` come from parse_model's table when ``table_lines`` holds it (see :func:`build`).
    """
    table = _parse_table(table_lines or [], model)
    fl = true_flops(model, imgsz) if flops else None
    layers = []
    for layer in model.model:
        i = int(layer.i)
        row = table.get(i, {})
        layers.append(
            {
                "index": i,
                "from": _jsonable_from(layer.f),
                "n": row.get("n"),
                "params": sum(p.numel() for p in layer.parameters()),
                "module": str(layer.type),
                "arguments": row.get("arguments"),
                "gflops": None if fl is None else fl["per_layer"].get(i),
            }
        )
    yaml_d = getattr(model, "yaml", {}) or {}
    stride = getattr(model, "stride", None)
    return {
        "layers": layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gradients": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gflops": None if fl is None else fl["gflops"],
        "gflops_by_op": None if fl is None else fl["by_op"],
        "flops_device": None if fl is None else fl["device"],
        "gflops_thop": thop_gflops(model, imgsz) if flops else None,
        "imgsz": imgsz,
        "scale": yaml_d.get("scale"),
        "yaml_file": yaml_d.get("yaml_file"),
        "stride": [float(s) for s in stride] if stride is not None else None,
        "mhsa": [int(layer.i) for layer in model.model if is_layer(layer)],
        "mhsa_args": [
            [int(m.query.in_channels), int(m.heads), bool(m.pos)]
            + ([int(m.rel_w_weight.shape[3]), int(m.rel_h_weight.shape[4])] if m.pos else [])
            for m in model.model
            if type(m).__name__ in _tutorial_state_layers()
        ],
    }


def _tutorial_state_layers() -> frozenset[str]:
    """The layers whose objects carry the tutorial MHSA's attributes (``query``, ``heads``, ``pos``, ...)."""
    from mhsa_patch.patches import LAYERS

    return frozenset(spec.name for spec in LAYERS if spec.tutorial_state)


def probe_yaml(cfg: str, imgsz: int = 640, flops: bool = True) -> dict:
    """Build ``cfg`` and summarize it (see :func:`summarize`); adds ``cfg`` and ``task_model`` (the model class)."""
    from mhsa_patch.child.compat import build

    model, lines = build(cfg, table=True)
    out = summarize(model, imgsz, lines, flops=flops)
    out["cfg"] = cfg
    out["task_model"] = type(model).__name__
    return out


def probe(events, cfgs: list[str], imgsz: int, flops: bool, release: str) -> dict:
    """Build and summarize each config; the first that fails is one error line naming it (``release``: the version
    the parent read from the target's files, for messages even when ultralytics does not import)."""
    models = []
    for cfg in cfgs:
        events.step("build", f"Building {os.path.basename(cfg)}")
        try:
            models.append(probe_yaml(cfg, imgsz, flops=flops))
        except Exception as e:  # noqa: BLE001 - one line to the parent, naming the config
            why = str(e).removeprefix("the model does not build: ") if isinstance(e, ChildError) else one_line(e)
            raise ChildError(f"{os.path.basename(cfg)} does not build with ultralytics {release}: {why}") from None
    import torch

    return {"ultralytics": ultralytics_version(), "torch": torch.__version__, "models": models}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mhsa_patch.child.probe", description=__doc__.splitlines()[0])
    parser.add_argument("cfg", nargs="+", help="model YAML paths (or stock names such as yolov8n.yaml)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP counts (faster)")
    parser.add_argument("--release", default="?", help="the target's version, for messages")
    parser.add_argument("--events")
    a = parser.parse_args(argv)
    return run_main(lambda events: probe(events, a.cfg, a.imgsz, not a.no_flops, a.release), a.events)


if __name__ == "__main__":
    sys.exit(main())
