"""``ablate``'s option parsing and recipe comparison, without training (fast)."""

from __future__ import annotations

import pytest

from mhsa_patch.ablate.recipe import first_difference, parse_extra
from mhsa_patch.ablate.runner import parse_device, parse_seeds
from mhsa_patch.ablate.variants import _slug
from mhsa_patch.cli.ablate import optional_ray_address
from mhsa_patch.errors import PatchError, UsageError


def test_seeds_devices_and_folder_names():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,5,7") == [0, 5, 7]
    for bad in ("0", "a", "1,1", "-1,2"):
        with pytest.raises(PatchError):
            parse_seeds(bad)
    assert parse_device("cpu") == ["cpu"] and parse_device("0,1,2,3") == ["0", "1", "2", "3"]
    with pytest.raises(PatchError):
        parse_device("0,0")
    assert [_slug(v) for v in ("MHSA@P3+P4+P5", "stock:s", "yaml:cfg/my model.yaml", "BoT3")] == [
        "MHSA-P3-P4-P5", "stock-s", "yaml-my-model", "BoT3"
    ]


def test_extra_arguments_read_as_ultralytics_reads_them():
    assert parse_extra(["lr0=0.005", "mosaic=0.5", "cos_lr=True", "optimizer=SGD", "fraction=1", "cache=None"]) == {
        "lr0": 0.005, "mosaic": 0.5, "cos_lr": True, "optimizer": "SGD", "fraction": 1, "cache": None
    }
    for bad, msg in (("epochs=3", "use --epochs"), ("seed=1", "use --seeds"), ("lr0", "expected key=value"),
                     ("deterministic=False", "the command sets it")):  # fmt: skip
        with pytest.raises(PatchError, match=msg):
            parse_extra([bad])


def test_the_first_differing_key_is_named():
    old = {"data": "d", "epochs": 2, "extra": {"lr0": 0.01}, "train": {"epochs": 2, "lr0": 0.01}, "torch": "2.4"}
    assert first_difference(old, dict(old)) is None
    assert first_difference(old, {**old, "epochs": 3}) == ("epochs", 2, 3)
    assert first_difference(old, {**old, "extra": {"lr0": 0.01, "mosaic": 0.5}}) == ("extra.mosaic", "<unset>", 0.5)
    assert first_difference(old, {**old, "torch": "2.5"}) == ("torch", "2.4", "2.5")
    assert first_difference(old, {**old, "device": "0,1"}) is None  # where runs go is not the recipe


def test_ray_without_an_address_means_auto():
    assert optional_ray_address(["ablate", "--ray"]) == ["ablate", "--ray", "auto"]
    assert optional_ray_address(["ablate", "--ray", "--quiet", "--", "x=1"]) == ["ablate", "--ray", "auto", "--quiet",
                                                                                "--", "x=1"]  # fmt: skip
    assert optional_ray_address(["ablate", "--ray", "head:6379"]) == ["ablate", "--ray", "head:6379"]
    assert optional_ray_address(["check", "--ray"]) == ["check", "--ray"]


def test_validator_arguments_and_the_split_reach_the_final_validation():
    from mhsa_patch.ablate.recipe import VAL_KEYS, val_args

    extra = parse_extra(["lr0=0.005", "mosaic=0", "iou=0.6", "conf=0.01", "max_det=1", "rect=True", "workers=0"])
    val = val_args(data="d.yaml", imgsz=64, batch=2, extra=extra, split="test")
    assert val == {"data": "d.yaml", "imgsz": 64, "batch": 2, "split": "test", "plots": False, "verbose": False,
                   "iou": 0.6, "conf": 0.01, "max_det": 1, "rect": True, "workers": 0}  # fmt: skip
    assert val_args(data="d.yaml", imgsz=64, batch=2, extra={})["split"] == "val"  # the default
    assert {"iou", "conf", "max_det", "rect", "agnostic_nms", "half", "single_cls", "classes"} <= set(VAL_KEYS)
    # the split has its own option: after -- it would reach training only, where ultralytics ignores it
    with pytest.raises(UsageError, match="split is not a free training argument here: use --eval-split"):
        parse_extra(["split=test"])
