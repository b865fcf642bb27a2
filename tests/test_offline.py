"""Issue 9 D, issue 22 A.10: every child of the tool stays off the network: check, check --train, gen-yaml --check,
port-weights, and ablate (whose children train, validate and measure).

Each run goes through ``netguard.run``: every connect and name lookup, in the tool and in each process it starts, is
recorded and refused; the record must stay empty and every child must have been started with YOLO_OFFLINE=1 by the
tool itself (the test sets none).
"""

from __future__ import annotations

import pytest

import netguard
import trainkit

pytestmark = pytest.mark.training


def test_check_and_check_train_stay_offline():
    kit = trainkit.patched()
    site = ["--target", str(kit["site"])]
    netguard.assert_offline(netguard.run("check", str(kit["yaml"]), "--imgsz", "64", "--runs", "1", *site,
                                         site=kit["site"]))
    netguard.assert_offline(netguard.run("check", str(kit["yaml"]), "--train", "--imgsz", "64", "--runs", "1",
                                         "--images", "4", "--batch", "2", "--train-imgsz", "64", *site,
                                         site=kit["site"]))


def test_gen_yaml_check_and_port_weights_stay_offline(tmp_path):
    kit = trainkit.patched()
    out = tmp_path / "yaml"
    out.mkdir()
    netguard.assert_offline(netguard.run("gen-yaml", "--scale", "n", "--check", "--target", str(kit["site"]),
                                         site=kit["site"], cwd=out))
    netguard.assert_offline(netguard.run("port-weights", str(kit["stock"]), str(kit["yaml"]), "-o",
                                         str(tmp_path / "ported.pt"), "--target", str(kit["site"]), site=kit["site"]))


def test_ablate_stays_offline(tmp_path):
    """A tiny ablate (one run: the stock model, one seed, one epoch on the synthetic set): its measuring child and
    the run's training child (ultralytics' trainer and validator) start offline and never try the network, nor does
    the report the tool draws itself. Every run's child is the same code, so one run shows it."""
    kit = trainkit.patched()
    run = netguard.run("ablate", "--target", str(kit["site"]), "--project", str(tmp_path), "--name", "net",
                       "--data", "synthetic:4", "--epochs", "1", "--imgsz", "64", "--batch", "2", "--variant", "stock",
                       "--seeds", "1", "--", "workers=0", "plots=False", site=kit["site"])
    netguard.assert_offline(run)
    assert len(run.processes) >= 3, run.processes  # the tool, its measuring child and the run's child at least
    rows = (tmp_path / "net" / "ablation.csv").read_text().splitlines()
    assert len(rows) == 2, rows  # the header and the run: it finished


def test_check_stays_offline_on_8_0_98():
    """The first supported release (it probes DNS at import, checks PyPI and fetches a font when training starts):
    ``check --train`` on it, run once under the guard and shared with test_check.py's old-release test."""
    netguard.assert_offline(trainkit.old_release_check_train("8.0.98"))
