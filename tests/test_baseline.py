"""check's baseline, chosen from the release's own configs (pure: parsed YAML, nothing built; the builds are in
tests/test_check.py): a BoT3 added after SPPF, BoT3 in place of C2f, MHSA added, a user's own head, an old release."""

from __future__ import annotations

import copy

import pytest
import yaml

import releases
from helpers import fork_bot3_yaml
from mhsa_patch.modelyaml.baseline import choose, scaled_name, stock_configs
from mhsa_patch.modelyaml.emit import Request, generate
from mhsa_patch.patching.target import find_target


def _generated(version: str, **kwargs) -> tuple[dict, str]:
    res = generate(find_target(releases.pristine(version)), Request(scale="n", **kwargs))
    return yaml.safe_load(res.text), res.text


@pytest.mark.parametrize("version", [releases.LATEST, "8.0.98"])
def test_each_shape_finds_the_stock_config(version):
    pkg = releases.pristine(version)
    stock_file = "cfg/models/v8/yolov8.yaml" if version != "8.0.98" else "models/v8/yolov8.yaml"
    mhsa, text = _generated(version)
    b = choose(mhsa, pkg, "yolov8n-MHSA.yaml")
    assert (b.name, b.changes, b.config, b.note) == ("yolov8n.yaml", "MHSA added", stock_file, None)
    assert b.cfg["scale"] == "n" and b.cfg["backbone"] == yaml.safe_load((pkg / stock_file).read_text())["backbone"]
    fork = yaml.safe_load(fork_bot3_yaml(text))
    fork.pop("scale", None)  # yolov8-BoT3.yaml names no scale: parse_model takes the first, n
    b = choose(fork, pkg, "yolov8-BoT3.yaml")
    assert (b.name, b.changes, b.config) == ("yolov8n.yaml", "BoT3 added", stock_file)
    if version != "8.0.98":  # gen-yaml's BoT3 (BoT3 in place of C2f)
        bot3, _ = _generated(version, layer="BoT3")
        b = choose(bot3, pkg, "yolov8n-BoT3.yaml")
        assert (b.name, b.changes, b.config) == ("yolov8n.yaml", "BoT3 in place of C2f", stock_file)


def test_other_rows_than_any_stock_config_compare_with_the_yaml_without_our_layers():
    """A user's own head (here a C2f repeated twice): no stock config matches; the YAML without BoT3 is the baseline,
    and the report says so."""
    pkg = releases.pristine(releases.LATEST)
    fork = yaml.safe_load(fork_bot3_yaml(_generated(releases.LATEST)[1]))
    custom = copy.deepcopy(fork)
    custom["head"][2][1] = 2
    b = choose(custom, pkg, "yolov8-bifpn-BoT3.yaml")
    assert b.config is None and b.name == "yolov8-bifpn-BoT3.yaml without BoT3" and b.changes == "BoT3 added"
    assert b.note.startswith("yolov8-bifpn-BoT3.yaml's other rows match no stock config")
    assert [r[2] for r in b.cfg["backbone"]].count("BoT3") == 0 and len(b.cfg["backbone"]) == 10
    assert b.cfg["head"][2][1] == 2  # the user's own rows are kept


def test_other_scales_are_not_the_stock_model():
    pkg = releases.pristine(releases.LATEST)
    mhsa, _ = _generated(releases.LATEST)
    mhsa["scales"]["n"] = [0.33, 0.3, 1024]
    assert choose(mhsa, pkg, "m.yaml").config is None


def test_names_and_configs():
    assert scaled_name("yolov8.yaml", "n") == "yolov8n.yaml"
    assert scaled_name("yolov8-p2.yaml", "s") == "yolov8s-p2.yaml"
    assert scaled_name("yolo11-seg.yaml", "x") == "yolo11x-seg.yaml"
    assert scaled_name("rtdetr-l.yaml", None) == "rtdetr-l.yaml"
    found = dict(stock_configs(releases.pristine(releases.LATEST)))
    assert "cfg/models/v8/yolov8.yaml" in found and "cfg/models/11/yolo11.yaml" in found
