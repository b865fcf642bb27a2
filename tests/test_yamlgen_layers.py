"""gen-yaml --layer: each layer written as its LayerSpec says; BoT3 takes the place of the backbone's last C2f/C3k2
(BoTNet's placement). Fast and pure: the real configs of the matrix releases are read, nothing is built (builds are in
test_yamlgen_builds.py)."""

from __future__ import annotations


import pytest
import yaml

import releases
from helpers import assert_refused, cli
from mhsa_patch.errors import PatchError
from mhsa_patch.modelyaml import bases, request
from mhsa_patch.modelyaml.emit import generate
from mhsa_patch.modelyaml.request import Request
from mhsa_patch.patches import LAYERS
from mhsa_patch.patching.target import find_target

REPLACED = {"yolov8": "C2f", "yolo11": "C3k2", "yolo26": "C3k2"}


def target(version: str = releases.LATEST):
    return find_target(releases.pristine(version))


def stock_rows(t, base: str, task: str = "detect") -> list:
    d = yaml.safe_load(bases.base_config(t, base, task).read_text(encoding="utf-8"))
    return d["backbone"] + d["head"]


def test_every_layer_of_the_patch_has_a_yaml_placement():
    assert [s.name for s in LAYERS][0] == request.DEFAULT_LAYER  # the default: the first layer
    for spec in LAYERS:
        assert spec.placement in ("insert", "replace") and spec.channels in ("input", "scaled")
        assert spec.suffix == f"-{spec.name}"
        assert (spec.placement == "replace") == bool(spec.replaces)


@pytest.mark.parametrize("base", ["yolov8", "yolo11", "yolo26"])
@pytest.mark.parametrize("task", list(request.TASKS))
def test_bot3_replaces_the_backbones_last_c2f_and_keeps_every_index(base, task):
    t = target()
    for scale in request.SCALES:
        res = generate(t, Request(scale=scale, base=base, task=task, layer="BoT3"))
        stock = stock_rows(t, base, task)
        new = res.data["backbone"] + res.data["head"]
        i = max(k for k, row in enumerate(stock[: len(res.data["backbone"])]) if row[2] == REPLACED[base])
        assert i == 8 and res.index == res.after == i
        assert new[i] == [stock[i][0], stock[i][1], "BoT3", [stock[i][3][0]]]  # c2 kept, the shortcut bool dropped
        assert new[:i] + new[i + 1 :] == stock[:i] + stock[i + 1 :]  # everything else as shipped, same indices
        assert res.file_name == f"{base}{scale}{request.TASKS[task]}-BoT3.yaml"
        assert "--layer BoT3" in res.command and res.command in res.text.splitlines()[5]
        assert res.params is None and res.insertions[0].replaced == REPLACED[base]
        assert res.readers == (9,)


def test_bot3_text_on_the_tutorial_base():
    res = generate(target(), Request(scale="n", layer="bot3"))  # any case
    lines = res.text.splitlines()
    assert "  - [-1, 3, BoT3, [1024]] # 8 (P5/32: 256 channels, in place of C2f [1024, True])" in lines
    assert lines[5].endswith("mhsa-patch gen-yaml --scale n --layer BoT3")
    stock = generate(target(), Request(scale="n"))
    assert res.stock_text == stock.stock_text
    assert res.channels == 256 and res.stride == 32


def test_bot3_on_the_oldest_release():
    res = generate(target(releases.MATRIX[0]), Request(scale="n", layer="BoT3"))
    assert (res.data["backbone"] + res.data["head"])[8] == [-1, 3, "BoT3", [1024]]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"at": "P4"}, "--at does not apply to --layer BoT3"),
        ({"at": "P5"}, "--at does not apply to --layer BoT3"),
        ({"pos_emb": True}, "--pos-emb does not apply to --layer BoT3"),
        ({"heads": 8}, "--heads does not apply to --layer BoT3"),
        ({"lateral": "pre-attention"}, "--lateral does not apply to --layer BoT3"),
        ({"channels": "256"}, "--channels does not apply to --layer BoT3"),
    ],
)
def test_options_that_do_not_apply_to_bot3_are_refused(kwargs, needle):
    with pytest.raises(PatchError, match=needle) as e:
        Request(scale="n", layer="BoT3", **kwargs)
    assert "C2f or C3k2" in str(e.value) and "\n" not in str(e.value)


def test_unknown_layer():
    with pytest.raises(PatchError, match="unknown layer 'CBAM': choose one of MHSA, BoT3"):
        Request(scale="n", layer="CBAM")


def test_bot3_from_a_users_file(tmp_path):
    t = target()
    src = bases.base_config(t, "yolov8", "detect").read_text()
    mine = tmp_path / "yolov8-p2x.yaml"
    mine.write_text(src)
    res = generate(t, Request(scale="s", from_yaml=str(mine), layer="BoT3"))
    assert res.file_name == "yolov8s-p2x-BoT3.yaml" and "--layer BoT3" in res.command
    assert (res.data["backbone"] + res.data["head"])[8][2:] == ["BoT3", [1024]]
    # twice is refused, and so is a backbone without the module BoT3 replaces
    again = tmp_path / "yolov8s-p2x-BoT3.yaml"
    again.write_text(res.text)
    with pytest.raises(PatchError, match="already has a BoT3 layer"):
        generate(t, Request(scale="s", from_yaml=str(again), layer="BoT3"))
    plain = tmp_path / "yolov8-c3.yaml"
    plain.write_text(src.replace("C2f", "C3"))
    with pytest.raises(PatchError, match="no C2f or C3k2 in the backbone for BoT3 to replace"):
        generate(t, Request(scale="n", from_yaml=str(plain), layer="BoT3"))
    # MHSA can still go into a BoT3 file (an inserted layer looks only for its own rows)
    both = generate(t, Request(scale="s", from_yaml=str(again)))
    assert [r[2] for r in both.data["backbone"]][8:11] == ["BoT3", "SPPF", "MHSA"]


def test_the_default_layer_is_unchanged():
    t = target()
    assert generate(t, Request(scale="n")).text == generate(t, Request(scale="n", layer="MHSA")).text
    assert "--layer" not in generate(t, Request(scale="n", layer="mhsa")).command


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_bot3(workdir):
    pkg = releases.copy_release(releases.LATEST, workdir / "site")
    r = cli("gen-yaml", "-s", "n", "--layer", "BoT3", "-t", str(pkg))
    assert r.exit_code == 0, r.stdout + r.stderr
    written = workdir / "yolov8n-BoT3.yaml"
    assert written.read_text() == generate(find_target(pkg), Request(scale="n", layer="BoT3")).text
    assert "BoT3 in place of layer 8 C2f (P5/32, 256 channels, args [1024]), read by layer 9" in r.stdout
    for args, needle in [
        (["--at", "P4"], "--at does not apply to --layer BoT3"),
        (["--pos-emb"], "--pos-emb does not apply"),
        (["--layer", "X"], "unknown layer 'X'"),
    ]:
        extra = args if args[0] == "--layer" else ["--layer", "BoT3", *args]
        assert_refused(cli("gen-yaml", "-s", "s", *extra, "-t", str(pkg)), "usage: ", needle, code=2)
    assert sorted(p.name for p in workdir.glob("*.yaml")) == ["yolov8n-BoT3.yaml"]
    assert "--layer" in cli("gen-yaml", "--help").stdout
