"""``mhsa-patch port-weights``: stock layer i lands in the layer it moved to; refusals are one line.

The fast tests check the pure mapping logic (``strip_mhsa``, ``align``) against gen-yaml's output for every insertion
point. The slow ones port a random-weight ``yolov8n.pt`` built locally (nothing is downloaded), compare every tensor,
and train from the result with ``yolo train model=OUT.pt``.
"""

from __future__ import annotations

import json

import pytest
import yaml

import netguard
import releases
import trainkit
from helpers import assert_refused
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.target import find_target
from mhsa_patch.modelyaml.align import align, mhsa_rows, strip_mhsa
from mhsa_patch.modelyaml.emit import Request, generate

# ------------------------------------------------------------------------------------------------ fast: pure logic


def _stock_layers(pkg, rel):
    d = yaml.safe_load((pkg / rel).read_text())
    return d["backbone"] + d["head"]


@pytest.mark.parametrize("base", ["yolov8", "yolo11"])
@pytest.mark.parametrize("at", [None, "P4", "P3", "2"])
@pytest.mark.parametrize("lateral", ["attention", "pre-attention"])
def test_strip_mhsa_gives_back_the_stock_yaml(base, at, lateral):
    """Whatever gen-yaml produces, removing the MHSA row gives the release's own stock layer list. Every combination
    here is one gen-yaml writes: a refusal (PatchError) is a regression and fails the test."""
    target = find_target(releases.pristine(releases.LATEST))
    res = generate(target, Request(scale="n", base=base, at=at, lateral=lateral))
    assert mhsa_rows(res.data) == [res.index]
    stock = strip_mhsa(res.data)
    assert stock["backbone"] + stock["head"] == _stock_layers(target.package, res.base_rel)
    assert len(stock["backbone"]) == len(yaml.safe_load(res.base_file.read_text())["backbone"])


def test_strip_mhsa_several_rows_and_no_rows():
    cfg = {
        "nc": 2,
        "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "MHSA", [14, 14, 4]], [-1, 1, "Conv", [8, 3, 2]]],
        "head": [[-1, 1, "MHSA", [14, 14, 4]], [[0, 1, 3], 1, "Concat", [1]], [[-1, -2], 1, "Concat", [1]]],
    }
    stock = strip_mhsa(cfg)
    assert stock["backbone"] == [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]]]
    # 1 (MHSA) reads 0 -> 0; 3 (MHSA) reads 2 -> new 1; row 5 (new 3): -2 is 3 (MHSA) -> its input 2 -> new 1 = -2
    assert stock["head"] == [[[0, 0, 1], 1, "Concat", [1]], [[-1, -2], 1, "Concat", [1]]]
    plain = {"backbone": [[-1, 1, "Conv", [8]]], "head": [[-1, 1, "Detect", ["nc"]]]}
    assert strip_mhsa(plain) == plain and strip_mhsa(plain) is not plain


def test_align_maps_around_any_insertion_point():
    src = [("Conv", []), ("C2f", [0]), ("SPPF", [1]), ("Upsample", [2]), ("Concat", [3, 1]), ("Detect", [4])]
    for at in range(len(src) - 1):
        dst = [(t, [x + (x > at) for x in ins]) for t, ins in src[: at + 1]]
        dst.append(("MHSA", [at]))
        dst += [(t, [x + (x > at) for x in ins]) for t, ins in src[at + 1 :]]
        mapping = align(src, dst)
        assert mapping == [i if i <= at else i - 1 for i in range(at + 1)] + [None] + list(range(at + 1, len(src)))
        # a reader wired to MHSA instead of its input (the tutorial's lateral wiring) maps as well
        dst_att = [(t, [(at + 1 if x == at and j > at + 2 else x) for x in ins]) for j, (t, ins) in enumerate(dst)]
        assert align(src, dst_att) == mapping


@pytest.mark.parametrize(
    "dst, message",
    [
        ([("Conv", []), ("MHSA", [0]), ("Conv", [1]), ("Detect", [2])], "layer 1 is C2f in the source but layer 2"),
        ([("Conv", []), ("C2f", [0]), ("MHSA", [1])], "has 3 layers but the model has 2"),
        ([("Conv", []), ("C2f", []), ("MHSA", [1]), ("Detect", [2])], "takes [0] in the source but [] in the model"),
    ],
)
def test_align_refuses_another_model(dst, message):
    src = [("Conv", []), ("C2f", [0]), ("Detect", [1])]
    with pytest.raises(PatchError) as e:
        align(src, dst)
    assert message in str(e.value)


def test_align_maps_a_source_of_the_same_architecture_in_place_and_refuses_another_mhsa_source():
    """A checkpoint trained on a fork already has the model's architecture: every layer stays where it is."""
    same = [("Conv", []), ("MHSA", [0]), ("Conv", [1])]
    assert align(same, same) == [0, 1, 2]
    with pytest.raises(PatchError, match="already has an MHSA layer"):
        align([("Conv", []), ("MHSA", [0])], [("Conv", []), ("MHSA", [0]), ("MHSA", [1])])


def test_align_a_replaced_layer_maps_to_none_and_the_rest_in_place():
    """BoT3 in place of C2f (gen-yaml --layer BoT3): same indices, the replaced layer keeps its initialisation."""
    src = [("Conv", []), ("C2f", [0]), ("Conv", [1]), ("C2f", [2]), ("SPPF", [3]), ("Detect", [4, 1])]
    dst = [*src[:3], ("BoT3", [2]), *src[4:]]
    assert align(src, dst) == [0, 1, 2, None, 4, 5]
    yolo11 = [(t.replace("C2f", "C3k2"), f) for t, f in src]
    assert align(yolo11, [*yolo11[:3], ("BoT3", [2]), *yolo11[4:]]) == [0, 1, 2, None, 4, 5]
    # a type may differ only where our layer replaces a module it replaces
    with pytest.raises(PatchError, match="layer 4 is SPPF in the source but layer 4 of the model is BoT3"):
        align(src, [*src[:4], ("BoT3", [3]), src[5]])
    with pytest.raises(PatchError, match="layer 3 is C2f in the source but layer 3 of the model is C3k2"):
        align(src, [*src[:3], ("C3k2", [2]), *src[4:]])
    with pytest.raises(PatchError, match=r"layer 3 \(C2f\) takes \[2\] in the source but \[1\]"):
        align(src, [*src[:3], ("BoT3", [1]), *src[4:]])


def test_align_generated_bot3_yamls_against_their_stock():
    target = find_target(releases.pristine(releases.LATEST))
    for base in ("yolov8", "yolo11", "yolo26"):
        res = generate(target, Request(scale="n", base=base, layer="BoT3"))

        def listing(rows):
            return [(r[2], [j + x if x < 0 else x for x in ([r[0]] if isinstance(r[0], int) else r[0])] if j else [])
                    for j, r in enumerate(rows)]

        stock = _stock_layers(target.package, res.base_rel)
        mapping = align(listing(stock), listing(res.data["backbone"] + res.data["head"]))
        assert mapping == [None if j == 8 else j for j in range(len(stock))]
        # the stock model of check: BoT3 turned back into the row it replaced
        stock_cfg = strip_mhsa(res.data)
        assert stock_cfg["backbone"] + stock_cfg["head"] == stock
        assert stock_cfg["scales"] == res.data["scales"]


# ------------------------------------------------------------------------------------------------ slow: real port

COMPARE = r"""
import json, re, sys
import torch
from ultralytics import YOLO

src = torch.load(sys.argv[1], weights_only=False)["model"].state_dict()
ck = torch.load(sys.argv[2], weights_only=False)
at = int(sys.argv[3])
dst = ck["model"].state_dict()
same = moved = 0
left = []
for k, v in dst.items():
    j, rest = re.match(r"model\.(\d+)\.(.+)", k).groups()
    j = int(j)
    if j == at:
        left.append(k)
        continue
    i = j if j < at else j - 1
    assert torch.equal(src[f"model.{i}.{rest}"], v), k
    same += 1
    moved += j != i
model = YOLO(sys.argv[2]).model  # ultralytics' own loader takes it
after = sum(int(k.split(".")[1]) >= at for k in src)
print(json.dumps({"same": same, "moved": moved, "after": after, "left": left, "keys": sorted(ck),
                  "dtype": str(next(ck["model"].parameters()).dtype), "names": len(ck["model"].names),
                  "loaded": type(model).__name__, "mhsa": type(model.model[at]).__name__}))
"""


@pytest.mark.training
def test_port_transfers_every_stock_tensor():
    p = trainkit.patched()
    out = trainkit.ported()
    netguard.assert_offline(trainkit.ported_run()[2])  # the tool and its child: no connect, no lookup
    proc = trainkit.run_python(COMPARE, p["site"], str(p["stock"]), str(out), "10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["same"] == 355  # every stock tensor is there, equal
    assert r["moved"] == r["after"] > 150  # those of layers 10-22 moved by one, to 11-23
    assert r["left"] == [f"model.10.{k}.{w}" for k in ("query", "key", "value") for w in ("weight", "bias")]
    assert {"model", "train_args", "date", "version", "epoch"} <= set(r["keys"])
    assert r["dtype"] == "torch.float16" and r["names"] == 80
    assert r["loaded"] == "DetectionModel" and r["mhsa"] == "MHSA"
    human = trainkit.ported_run()[1]  # what the user sees, ultralytics-like
    assert "Transferred 355/361 tensors from yolov8n.pt" in human
    assert "layers 10-22 → 11-23" in human and "layer 10 MHSA: left at its initialisation (6 tensors" in human
    assert "yolo train model=" in human


@pytest.mark.training
def test_port_output_and_json():
    p = trainkit.patched()
    out = p["root"] / "json-port.pt"
    proc = trainkit.cli(
        "port-weights", str(p["stock"]), str(p["yaml"]), "-o", str(out), "--json", "--target", str(p["site"]),
        site=p["site"],
    )
    r = trainkit.json_report(proc)
    assert (r["transferred"], r["total"]) == (355, 361)
    assert r["kept"] == [0, 9] and r["moved"][0] == [10, 11] and r["moved"][-1] == [22, 23]
    assert [m["index"] for m in r["added_layers"]] == [10]
    assert out.is_file() and r["bytes"] == out.stat().st_size
    assert [f.name for f in out.parent.iterdir() if f.name.startswith(".")] == []  # no temporary file left


@pytest.mark.training
def test_port_at_another_insertion_point(tmp_path):
    """gen-yaml --at P4: MHSA after layer 6, so layers 7-22 move to 8-23."""
    p = trainkit.patched()
    cfg = trainkit.gen_yaml(p["site"], tmp_path / "p4", "n", "--at", "P4")
    out = tmp_path / "p4.pt"
    r = trainkit.json_report(
        trainkit.cli("port-weights", str(p["stock"]), str(cfg), "-o", str(out), "--json", "--target", str(p["site"]),
                     site=p["site"])
    )
    assert (r["transferred"], r["total"]) == (355, 361) and r["kept"] == [0, 6]
    assert r["moved"][0] == [7, 8] and [m["index"] for m in r["added_layers"]] == [7]
    proc = trainkit.run_python(COMPARE, p["site"], str(p["stock"]), str(out), "7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["same"] == 355


COMPARE_BOT3 = r"""
import json, re, sys
import torch
from ultralytics import YOLO

src = torch.load(sys.argv[1], weights_only=False)["model"].state_dict()
ck = torch.load(sys.argv[2], weights_only=False)
dst = ck["model"].state_dict()
same, left = 0, []
for k, v in dst.items():
    if k.startswith("model.8."):
        left.append(k)
        continue
    assert torch.equal(src[k], v), k  # same name: nothing moved
    same += 1
model = YOLO(sys.argv[2]).model
print(json.dumps({"same": same, "left": len(left), "src_total": len(src), "src_8": sum(k.startswith("model.8.") for k in src),
                  "bot3": type(model.model[8]).__name__}))
"""


@pytest.mark.training
def test_port_into_bot3_carries_every_tensor_but_the_replaced_layer(tmp_path):
    """port-weights yolov8n.pt yolov8n-BoT3.yaml: every layer but 8 (BoT3 in place of C2f) carried in place."""
    p = trainkit.patched()
    cfg = trainkit.gen_yaml(p["site"], tmp_path / "bot3", "n", "--layer", "BoT3")
    assert cfg.name == "yolov8n-BoT3.yaml"
    out = tmp_path / "bot3.pt"
    r = trainkit.json_report(
        trainkit.cli("port-weights", str(p["stock"]), str(cfg), "-o", str(out), "--json", "--target", str(p["site"]),
                     site=p["site"])
    )
    bot3_tensors = r["total"] - r["transferred"]
    assert [m["index"] for m in r["added_layers"]] == [8] and r["added_layers"][0]["type"] == "BoT3"
    assert r["left_at_init"] and all(k.startswith("model.8.") for k in r["left_at_init"])
    assert len(r["left_at_init"]) == bot3_tensors > 0
    assert r["moved"] == [] and all(k.startswith("model.8.") for k in r["dropped"])
    proc = trainkit.run_python(COMPARE_BOT3, p["site"], str(p["stock"]), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = json.loads(proc.stdout.strip().splitlines()[-1])
    assert c["same"] == r["transferred"] == c["src_total"] - c["src_8"]  # total - the BoT3 layer's tensors
    assert c["left"] == bot3_tensors and len(r["dropped"]) == c["src_8"]
    assert c["bot3"] == "BoT3"


OLD_BOT3_CKPT = r"""
import sys
from datetime import datetime

import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel

cfg, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = DetectionModel(cfg, nc=80, verbose=False)
for m in model.modules():  # fc1 back to Parameters with distinct values, as a fork (or an older patch) pickled it
    if type(m).__name__ == "BottleneckTransformer":
        w, b = m.fc1.weight.detach().clone().normal_(), m.fc1.bias.detach().clone().normal_()
        del m.fc1.weight, m.fc1.bias
        m.fc1.weight, m.fc1.bias = torch.nn.Parameter(w), torch.nn.Parameter(b)
assert any(n.endswith("fc1.weight") for n, _ in model.named_parameters())
model.names = {i: f"class{i}" for i in range(80)}
model.args = {"task": "detect", "imgsz": 640}
torch.save({"date": datetime.now().isoformat(), "version": ultralytics.__version__, "epoch": -1, "model": model.half(),
            "ema": None, "optimizer": None, "train_args": {"model": cfg, "task": "detect"}}, out)
"""

CHECK_CARRIED = r"""
import json, sys
import torch
from ultralytics.nn.tasks import DetectionModel

src = torch.load(sys.argv[1], weights_only=False)["model"]  # unpickling turns the old fc1 Parameters into buffers
dst = torch.load(sys.argv[2], weights_only=False)["model"]
ssd, dsd = src.state_dict(), dst.state_dict()
fc1 = [k for k in dsd if ".fc1." in k]
fresh = DetectionModel(sys.argv[3], nc=80, verbose=False)
fresh.load_state_dict(ssd, strict=True)  # the old checkpoint's keys load strictly into today's class
print(json.dumps({
    "fc1": fc1, "equal": all(torch.equal(ssd[k], dsd[k]) for k in dsd), "same_keys": list(ssd) == list(dsd),
    "fc1_params": [n for n, _ in list(src.named_parameters()) + list(dst.named_parameters()) if ".fc1." in n],
    "fc1_nonzero": all(float(dsd[k].float().abs().sum()) > 0 for k in fc1),
}))
"""


@pytest.mark.training
def test_port_carries_an_old_bot3_checkpoints_fc1(tmp_path):
    """A BoT3 checkpoint whose fc1 was pickled as Parameters (forks, older patches) ported into the same BoT3 YAML:
    every tensor carried, fc1's included; fc1 arrives as buffers; the old state_dict loads strictly into a fresh
    model."""
    p = trainkit.patched()
    cfg = trainkit.gen_yaml(p["site"], tmp_path / "bot3", "n", "--layer", "BoT3")
    old = tmp_path / "old-bot3.pt"
    proc = trainkit.run_python(OLD_BOT3_CKPT, p["site"], str(cfg), str(old))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "ported.pt"
    r = trainkit.json_report(
        trainkit.cli("port-weights", str(old), str(cfg), "-o", str(out), "--json", "--target", str(p["site"]),
                     site=p["site"])
    )
    assert r["transferred"] == r["total"] and r["left_at_init"] == [] and r["added_layers"] == []
    proc = trainkit.run_python(CHECK_CARRIED, p["site"], str(old), str(out), str(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = json.loads(proc.stdout.strip().splitlines()[-1])
    assert c["fc1"] == ["model.8.m.0.fc1.weight", "model.8.m.0.fc1.bias"]
    assert c["equal"] and c["same_keys"] and c["fc1_nonzero"] and c["fc1_params"] == []


# ``yolo train model=OUT.pt`` starting from the ported weights (ultralytics transfers 355 of 361 tensors at nc=3: all
# but the 6 class-output ones, MHSA included) is test_examples.py::test_full_path: apply, gen-yaml, port-weights, then
# ultralytics' own trainer on the result, as the README's full path runs them.


# ------------------------------------------------------------------------------------------------------ refusals


@pytest.mark.training
@pytest.mark.parametrize(
    "cfg, needles",
    [
        ("yolov8s.yaml", ["does not fit", "model.0.conv.weight is 32x3x3x3 in the source", "scale s vs n"]),
        ("yolo11n.yaml", ["does not fit", "another base model"]),
    ],
)
def test_refuses_another_scale_or_base(tmp_path, cfg, needles):
    p = trainkit.patched()
    src = trainkit.stock_checkpoint(p["site"], cfg, p["root"] / cfg.replace(".yaml", ".pt"))
    out = tmp_path / "out.pt"
    proc = trainkit.cli("port-weights", str(src), str(p["yaml"]), "-o", str(out), "--target", str(p["site"]),
                        site=p["site"])
    assert_refused(proc, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


@pytest.mark.training
def test_refuses_an_unpatched_target(tmp_path):
    p = trainkit.patched()
    site = trainkit.unpatched()
    proc = trainkit.cli("port-weights", str(p["stock"]), str(p["yaml"]), "-o", str(tmp_path / "o.pt"),
                        "--target", str(site), site=site)
    assert_refused(proc, "not patched", "mhsa-patch apply")
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.training
def test_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    p = trainkit.patched()
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    proc = trainkit.cli("port-weights", str(bad), str(p["yaml"]), "-o", str(tmp_path / "o.pt"),
                        "--target", str(p["site"]), site=p["site"])
    assert_refused(proc, "bad.pt")
    assert not (tmp_path / "o.pt").exists()


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    """Parent-side checks: no child, no torch (fast)."""
    site = releases.copy_release(releases.LATEST, tmp_path / "site").parent
    y = tmp_path / "m.yaml"
    y.write_text("nc: 1\n")
    src = tmp_path / "s.pt"
    src.write_bytes(b"x")
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"x")
    cases = [
        ((str(tmp_path / "missing.pt"), str(y), "-o", str(tmp_path / "o.pt")), "no such checkpoint"),
        ((str(y), str(y), "-o", str(tmp_path / "o.pt")), "expected a .pt checkpoint"),
        ((str(src), str(tmp_path / "none.yaml"), "-o", str(tmp_path / "o.pt")), "no such model YAML"),
        ((str(src), str(src), "-o", str(tmp_path / "o.pt")), "expected a model .yaml"),
        ((str(src), str(y), "-o", str(tmp_path / "o.onnx")), "must end in .pt"),
        ((str(src), str(y), "-o", str(src), "--force"), "would overwrite the source"),
        ((str(src), str(y), "-o", str(existing)), "exists; pass --force"),
        ((str(src), str(y), "-o", str(tmp_path / "nodir" / "o.pt")), "no such folder"),
    ]
    for args, needle in cases:
        proc = trainkit.cli("port-weights", *args, "--target", str(site), site=site)
        assert_refused(proc, needle)
    usage = trainkit.cli("port-weights", str(src), "--target", str(site), site=site)
    assert usage.returncode == 2


NAIVE = r"""
import sys
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER

try:
    from ultralytics.nn.tasks import load_checkpoint
except ImportError:
    from ultralytics.nn.tasks import attempt_load_one_weight as load_checkpoint
model = DetectionModel(sys.argv[1], verbose=False)
weights, _ = load_checkpoint(sys.argv[2])
model.load(weights, verbose=True)  # what pretrained=yolov8n.pt does: match by name and shape
"""


@pytest.mark.training
def test_without_port_weights_only_the_backbone_loads():
    """The problem port-weights solves: ultralytics' own transfer matches by layer index, so the head is lost."""
    p = trainkit.patched()
    proc = trainkit.run_python(NAIVE, p["site"], str(p["yaml"]), str(p["stock"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Transferred 162/361 items from pretrained weights" in proc.stdout + proc.stderr  # layers 0-9 only
