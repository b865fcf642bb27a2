"""Child of ``mhsa-patch port-weights``: runs against the target's ultralytics (see :mod:`mhsa_patch.modelyaml.align`).

``python -m mhsa_patch.child.port --src SRC.pt --model MODEL.yaml --out OUT.pt --events FILE``
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from mhsa_patch.child.compat import (
    build,
    layer_type,
    load_checkpoint,
    model_task,
    require_patched,
    route_checkpoint_loading,
    ultralytics_info,
    user_specs,
)
from mhsa_patch.child.protocol import ChildError, run_main
from mhsa_patch.errors import PatchError
from mhsa_patch.modelyaml.align import align

_KEY = re.compile(r"^model\.(\d+)\.(.+)$")


def layer_list(model) -> list[tuple[str, list[int]]]:
    """``(type, absolute input indices)`` per layer; the stem's input (the image) is ``[]``."""
    layers = []
    for j, m in enumerate(model.model):
        f = getattr(m, "f", -1)
        fs = list(f) if isinstance(f, (list, tuple)) else [f]
        ins = [] if (j == 0 and fs == [-1]) else [j + x if x < 0 else x for x in fs]
        layers.append((layer_type(m), ins))
    return layers


def _shape(t) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


def _scale(model) -> str:
    return str((getattr(model, "yaml", None) or {}).get("scale") or "?")


def _nc(model) -> int | None:
    head = model.model[-1]
    nc = getattr(head, "nc", None)
    return int(nc) if nc is not None else (getattr(model, "yaml", None) or {}).get("nc")


def port(events, src: str, model_yaml: str, out: str) -> dict:
    import torch

    version, where = ultralytics_info()
    require_patched()
    route_checkpoint_loading()  # before anything loads a checkpoint: old releases on today's torch
    events.step("load", f"Loading {Path(src).name}")
    smodel, sckpt = load_checkpoint(src)
    if not hasattr(smodel, "model") or not hasattr(smodel, "yaml"):
        raise ChildError(f"{src} holds a {type(smodel).__name__}, not an ultralytics YOLO model")
    nc = _nc(smodel)
    events.step("build", f"Building {Path(model_yaml).name}")
    import yaml as _yaml

    yaml_nc = (_yaml.safe_load(Path(model_yaml).read_text()) or {}).get("nc")
    dmodel = build(model_yaml, nc=nc)[0]

    events.step("map", "Matching layers")
    try:
        mapping = align(layer_list(smodel), layer_list(dmodel), user_specs())
    except PatchError as e:
        raise ChildError(f"{Path(src).name} does not fit {Path(model_yaml).name}: {e}") from None

    ssd, dsd = smodel.state_dict(), dmodel.state_dict()
    new_sd, left, used = {}, [], set()
    for key, tensor in dsd.items():
        m = _KEY.match(key)
        j = int(m.group(1)) if m else None
        i = mapping[j] if j is not None and j < len(mapping) else None
        if i is None:
            left.append(key)
            new_sd[key] = tensor
            continue
        skey = f"model.{i}.{m.group(2)}"
        if skey not in ssd:
            raise ChildError(
                f"{Path(src).name} does not fit {Path(model_yaml).name}: {key} has no counterpart {skey} in the "
                f"source; another base model"
            )
        st = ssd[skey]
        if st.shape != tensor.shape:
            raise ChildError(
                f"{Path(src).name} does not fit {Path(model_yaml).name}: {skey} is {_shape(st)} in the source but "
                f"{key} is {_shape(tensor)} in the model (scale {_scale(smodel)} vs {_scale(dmodel)}); "
                f"port a checkpoint of the same scale and base"
            )
        new_sd[key] = st.detach().to(dtype=tensor.dtype) if st.is_floating_point() else st.detach().clone()
        used.add(skey)
    carried = {i for i in mapping if i is not None}
    # a source layer no model layer maps to is one our layer replaced (BoT3 in place of C2f): its tensors stay behind
    dropped = [k for k in ssd if k not in used and _KEY.match(k) and int(_KEY.match(k).group(1)) not in carried]
    unused = [k for k in ssd if k not in used and k not in dropped]
    if unused:
        raise ChildError(
            f"{Path(src).name} does not fit {Path(model_yaml).name}: {len(unused)} source tensors have no place in "
            f"the model (first: {unused[0]}); another base model"
        )
    dmodel.load_state_dict(new_sd, strict=True)

    # Checkpoint in ultralytics' own (optimizer-stripped) format, as yolov8n.pt is.
    events.step("save", f"Saving {Path(out).name}")
    from datetime import datetime

    dmodel.names = getattr(smodel, "names", None) or getattr(dmodel, "names", None)
    src_args = dict(sckpt.get("train_args") or {})
    src_args["model"] = Path(model_yaml).name
    src_args["task"] = model_task(dmodel)
    dmodel.task = src_args["task"]
    dmodel.args = dict(src_args)
    if hasattr(dmodel, "criterion"):
        dmodel.criterion = None
    dmodel.half()
    for p in dmodel.parameters():
        p.requires_grad = False
    moved = [(i, j) for j, i in enumerate(mapping) if i is not None and i != j]
    kept = [i for j, i in enumerate(mapping) if i is not None and i == j]
    mhsa = [j for j, i in enumerate(mapping) if i is None]
    report = {
        "ultralytics": version,
        "site": str(where.parent),
        "src": src,
        "model": model_yaml,
        "out": out,
        "transferred": len(used),
        "total": len(dsd),
        "left_at_init": left,
        "added_layers": [
            {"index": j, "type": layer_type(dmodel.model[j]), "params": sum(p.numel() for p in dmodel.model[j].parameters())}
            for j in mhsa
        ],
        "kept": [min(kept), max(kept)] if kept else None,
        "dropped": dropped,
        "moved": [[i, j] for i, j in moved],
        "nc": nc,
        "yaml_nc": yaml_nc,
        "scale": _scale(dmodel),
    }
    ckpt = {
        "date": datetime.now().astimezone().isoformat(),
        "version": version,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": dmodel,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": src_args,
        "mhsa_patch": {
            "ported_from": Path(src).name,
            "transferred": len(used),
            "total": len(dsd),
            "left_at_init": left,
        },
    }
    out_path = Path(out)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    report["bytes"] = out_path.stat().st_size
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mhsa_patch.child.port")
    ap.add_argument("--src", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--events")
    a = ap.parse_args(argv)
    return run_main(lambda ev: port(ev, a.src, a.model, a.out), a.events)


if __name__ == "__main__":
    raise SystemExit(main())
