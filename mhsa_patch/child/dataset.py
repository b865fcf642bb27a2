"""For ``mhsa-patch ablate``'s measuring child: the dataset exactly as the target's ultralytics reads it, before any run.

:func:`check` gets the recipe's ``YOLO.train`` arguments (``data``, ``task``, ``imgsz``, ...). The YAML is resolved by
the target's own ``check_det_dataset`` (the one the detect, segment, pose and obb trainers call), with downloads
off, in the working folder the runs will have (a relative ``path:`` is resolved against it, then ultralytics'
datasets folder, as ``yolo train`` does). Then the train and val datasets are built as the trainer builds them
(``build_yolo_dataset``): that reads every label and writes the label caches, once, before the runs start in
parallel (N trainers building ``labels.cache`` at once race: ultralytics removes it outside any ``try``). Anything
ultralytics refuses is a :class:`~mhsa_patch.child.protocol.ChildError` with its own reason, in one line; the result
is the class count and the resolved splits (``train``, ``val`` and the one the table reports: the paths a Ray worker
node's dataset check reads, :func:`mhsa_patch.ablate.data.checksum`).
"""

from __future__ import annotations

from pathlib import Path

from mhsa_patch.child.compat import ultralytics_info
from mhsa_patch.child.protocol import ChildError, one_line


def _api():
    try:
        from ultralytics.cfg import DEFAULT_CFG, get_cfg
        from ultralytics.data import build_yolo_dataset
        from ultralytics.data.utils import check_det_dataset
    except ImportError:  # 8.0.1xx and earlier: ultralytics.yolo
        from ultralytics.yolo.cfg import DEFAULT_CFG, get_cfg
        from ultralytics.yolo.data import build_yolo_dataset
        from ultralytics.yolo.data.utils import check_det_dataset
    return DEFAULT_CFG, get_cfg, build_yolo_dataset, check_det_dataset


def check(events, args: dict) -> dict:
    version, _ = ultralytics_info()
    default_cfg, get_cfg, build_yolo_dataset, check_det_dataset = _api()
    events.step("data", f"Reading {Path(str(args['data'])).name} with ultralytics {version}'s own check")
    try:
        data = check_det_dataset(args["data"], autodownload=False)
    except Exception as e:  # noqa: BLE001 - ultralytics' own reason, whatever it raised
        raise ChildError(one_line(e)) from None
    eval_split = args.get("eval_split", "val")
    keep = {k: v for k, v in args.items() if k not in ("model", "project", "name", "exist_ok", "device", "eval_split")}
    nc = data.get("nc") or len(data.get("names") or ())
    split_error = _split_error(Path(str(args["data"])).name, data, eval_split)
    if split_error:
        return {"nc": int(nc), "split_error": split_error}
    cfg = get_cfg(default_cfg, keep)
    sizes = {}
    for split in ("train", "val") if eval_split == "val" else ("train", "val", eval_split):
        events.step("labels", f"Reading the {split} labels (the label cache, once for every run)")
        try:
            ds = build_yolo_dataset(cfg, data[split], 1, data, mode=split, rect=False, stride=32)
            sizes[split] = len(ds)
        except Exception as e:  # noqa: BLE001
            raise ChildError(f"{split}: {one_line(e)}") from None
    splits = {s: _paths(data[s]) for s in ("train", "val", eval_split)}
    return {"nc": int(nc), "images": sizes, "path": str(data.get("path", "")), **splits}


def _paths(entry) -> list[str]:
    return [str(p) for p in (entry if isinstance(entry, list) else [entry])]


def _split_error(name: str, data: dict, split: str) -> str | None:
    """The one line refusing ``--eval-split test`` where the YAML has no such split (no entry, or an empty one as in
    ultralytics' own ``coco.yaml``), or its images are not on this machine (ultralytics checks only ``val``'s)."""
    if split == "val":
        return None
    how = f"add '{split}: images/{split}' (images best.pt was not chosen on) to it, or use --eval-split val"
    if not data.get(split):
        return f"--eval-split {split}: {name} has no '{split}' split; {how}"
    missing = next((p for p in _paths(data[split]) if not Path(p).exists()), None)
    if missing is not None:
        return (f"--eval-split {split}: {name}'s {split} images are not on this machine ({missing} is missing) and the "
                "runs never download; fetch them first, or pass --download")
    return None
