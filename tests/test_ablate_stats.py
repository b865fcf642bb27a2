"""``ablate``'s evaluation on real tiny runs whose metrics are not 0 (``tinysets``: one shape per image, 2 epochs):
``--eval-split test``, validator arguments after ``--`` reaching the final validation, and a segmentation run's mask
metric. Each number of ``ablation.csv`` is checked against ``best.pt`` validated again, and each option against
what it moves: the same ``best.pt`` gives other numbers on the other split, or without the arguments."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import yaml

import helpers
import tinysets
import trainkit
from helpers import assert_refused

pytestmark = pytest.mark.training

VALIDATOR = ["max_det=1", "iou=0.6"]  # they change this model's test mAP50-95 (0.17 -> 0.37 for max_det=1)


def ablate(site: Path, project: Path, name: str, *args: str):
    return trainkit.cli("ablate", "--target", str(site), "--project", str(project), "--name", name, *args,
                        site=site, timeout=900)  # fmt: skip


def rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


VALIDATE = r"""
import json, sys
from ultralytics import YOLO

best, specs = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps([YOLO(best).val(**spec).results_dict for spec in specs]))
"""


def validate(site: Path, best: Path, *specs: dict) -> list[dict]:
    """``best`` validated once per spec (``YOLO.val`` keyword arguments), in a child on ``site``'s ultralytics."""
    proc = trainkit.run_python(VALIDATE, site, str(best), json.dumps([dict(s, device="cpu") for s in specs]),
                               cwd=trainkit.ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def site() -> Path:
    return trainkit.patched()["site"]


@pytest.fixture(scope="module")
def detect(site, tmp_path_factory):
    """stock, one seed, reported on the test split with two validator arguments."""
    root = tmp_path_factory.mktemp("evalsplit")
    data = tinysets.write(root / "data")
    proc = trainkit.ok(ablate(site, root, "d", "--data", str(data), *tinysets.TRAIN, "--variant", "stock", "--seeds",
                              "1", "--eval-split", "test", "--", *tinysets.FAST, *VALIDATOR))  # fmt: skip
    return {"dir": root / "d", "data": data, "proc": proc, "root": root}


@pytest.fixture(scope="module")
def segment(site, tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    data = tinysets.write(root / "data", task="segment", n_train=48)
    proc = trainkit.ok(ablate(site, root, "s", "--data", str(data), "--task", "segment", *tinysets.TRAIN,
                              "--variant", "stock", "--seeds", "1", "--", *tinysets.FAST))  # fmt: skip
    return {"dir": root / "s", "proc": proc}


BOX = {"map50": "metrics/mAP50(B)", "map50_95": "metrics/mAP50-95(B)", "precision": "metrics/precision(B)",
       "recall": "metrics/recall(B)"}  # fmt: skip


def test_eval_split_test_reports_the_test_split_with_the_validator_arguments(detect, site):
    d = detect["dir"]
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    val = recipe["val"]
    assert val["split"] == "test" and val["max_det"] == 1 and val["iou"] == 0.6  # the recipe records them
    assert "lr0" not in val and "nbs" not in val  # training-only arguments stay out of the validation
    assert recipe["train"]["max_det"] == 1  # and training's own validations (which pick best.pt) get them too
    (row,) = rows(d / "ablation.csv")
    best = d / row["run_dir"] / "weights" / "best.pt"
    plain = {k: v for k, v in val.items() if k not in ("max_det", "iou")}
    same, on_val, without = validate(site, best, val, dict(val, split="val"), plain)
    for column, key in BOX.items():
        assert float(row[column]) == pytest.approx(same[key], abs=1e-9), column
    assert float(row["map50_95"]) > 0 and float(row["map50"]) > 0  # a run that learned something
    # what each option moves, on the same best.pt: the split, then the validator arguments
    key = "metrics/mAP50-95(B)"
    assert on_val[key] > 0 and not math.isclose(on_val[key], same[key])
    assert without[key] > 0 and not math.isclose(without[key], same[key])
    md = (d / "summary.md").read_text()
    assert "of each run's best.pt on the test split (best.pt chosen on val)" in md and "max_det=1 iou=0.6" in md
    assert json.loads((d / "summary.json").read_text())["split"] == "test"


def test_eval_split_test_is_refused_in_one_line_before_anything_trains(site, tmp_path):
    """In-process (the refusals come before any child starts)."""

    def ablate(site, project, name, *args):
        return helpers.cli("ablate", "--target", str(site), "--project", str(project), "--name", name, *args)

    no_test = tinysets.write(tmp_path / "nt", n_train=2, n_val=2, n_test=None)
    r = ablate(site, tmp_path, "a", "--data", str(no_test), *tinysets.TRAIN, "--eval-split", "test")
    assert_refused(r, "--eval-split test: data.yaml has no 'test' split", "add 'test: images/test'")
    r = ablate(site, tmp_path, "b", "--data", "synthetic:4", *tinysets.TRAIN, "--eval-split", "test")
    assert_refused(r, "--eval-split test: synthetic:4 has no test split")
    gone = tinysets.write(tmp_path / "gone", n_train=2, n_val=2, n_test=2)
    for f in (gone.parent / "images" / "test").iterdir():
        f.unlink()
    (gone.parent / "images" / "test").rmdir()
    r = ablate(site, tmp_path, "c", "--data", str(gone), *tinysets.TRAIN, "--eval-split", "test")
    assert_refused(r, "--eval-split test: data.yaml's test images are not on this machine")
    assert not any((tmp_path / n).exists() for n in "abc")  # nothing written, nothing measured
    assert_refused(ablate(site, tmp_path, "d", "--data", "synthetic:4", "--eval-split", "train"),
                   "usage: --eval-split train: val or test", code=2)  # fmt: skip
    r = ablate(site, tmp_path, "d", "--data", "synthetic:4", "--", "split=test")
    assert_refused(r, "usage: -- split=test: split is not a free training argument here: use --eval-split", code=2)


def test_a_segment_run_reports_mask_map_next_to_box_map(segment, site):
    d = segment["dir"]
    (row,) = rows(d / "ablation.csv")
    assert list(row)[5:13] == ["map50", "map50_95", "precision", "recall", "mask_map50", "mask_map50_95",
                               "mask_precision", "mask_recall"]  # fmt: skip
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    (again,) = validate(site, d / row["run_dir"] / "weights" / "best.pt", recipe["val"])
    for column, key in {**BOX, **{f"mask_{c}": k.replace("(B)", "(M)") for c, k in BOX.items()}}.items():
        assert float(row[column]) == pytest.approx(again[key], abs=1e-9), column
    box, mask = float(row["map50_95"]), float(row["mask_map50_95"])
    assert mask > 0 and box > 0 and not math.isclose(mask, box)  # two numbers, each from its own key
    md = (d / "summary.md").read_text()
    assert "| box mAP50-95 (%) | mask mAP50-95 (%) | Δ mask mAP50-95 |" in md
    assert f"| {100 * box:.1f} | {100 * mask:.1f} |" in md
    doc = json.loads((d / "summary.json").read_text())
    assert doc["task"] == "segment" and doc["metric"] == "mask_map50_95"
    assert f"mask mAP50-95 {mask:.3f}, best epoch" in segment["proc"].stdout  # the progress line's metric
