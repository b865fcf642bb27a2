"""gen-yaml files built by the real releases of the matrix, patched with the engine CLI (slow).

One child process per release builds every model (importing torch + ultralytics costs seconds): each scale of
yolov8 detect with its stock model and a renamed copy, every base and task the release ships, the --at and
--lateral variants, --pos-emb. Every MHSA file is built as YOLO(cfg) builds it (model class, stride forward pass);
the stock models and renamed copies of scales s-x go through yaml_model_load + parse_model only, the code that
reads the scale from the name and builds the layers, which is several times cheaper. Checks: parameters = stock + 3·(C²+C) (+ C·(w+h) with positions), the wiring layer
by layer against the stock model (module, parameters, from), the scale a renamed copy builds, MHSA's FLOPs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import netguard
import releases
from helpers import absolute, checkout_env, without_row
from mhsa_patch.modelyaml import bases, emit, naming, request
from mhsa_patch.patching.target import find_target, version_tuple
from mhsa_patch.modelyaml.request import Request

pytestmark = pytest.mark.releases

# Builds each job in one process; prints one JSON line. Jobs: [cfg, mode, with_flops]. Mode "model": the
# task's model class, as YOLO(cfg) builds it (runs a forward pass for the strides); "parse": ultralytics'
# yaml_model_load + parse_model only, the code that picks the scale from the name and builds every layer (no
# forward pass: cheaper, for stock models and renamed copies of the large scales).
CHILD = r"""
import copy, json, sys
import torch
from mhsa_patch.child import compat, probe
from ultralytics.nn import tasks

class Parsed(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.yaml = tasks.yaml_model_load(cfg)
        with compat.captured_table() as lines:
            self.model, self.save = tasks.parse_model(copy.deepcopy(self.yaml), ch=3, verbose=True)
        self.lines = list(lines)

out = []
for cfg, mode, flops in json.loads(sys.argv[1]):
    if mode == "model":
        model, lines = compat.build(cfg, table=True)
    else:
        model = Parsed(cfg)
        lines = model.lines
    s = probe.summarize(model, 640, lines, flops=flops)
    s["cfg"], s["mode"] = cfg, mode
    out.append(s)
print("JSON " + json.dumps(out))
"""

WORDS = {"n": "nano", "s": "small", "m": "medium", "l": "large", "x": "xlarge"}


def strip_mhsa(layers: list[dict], mhsa: int) -> list[tuple]:
    """The built MHSA model's layers without MHSA, its readers sent to its input: (from, module, params) rows."""
    kept = [layer for k, layer in enumerate(layers) if k != mhsa]
    froms = without_row([layer["from"] for layer in layers], mhsa)
    return [(f, layer["module"], layer["params"]) for f, layer in zip(froms, kept)]


def rows(layers: list[dict]) -> list[tuple]:
    return [(layer["from"], layer["module"], layer["params"]) for layer in layers]


def patched_release(version: str, root: Path) -> Path:
    site = root / "site"
    releases.copy_release(version, site)
    r = subprocess.run(
        [sys.executable, "-m", "mhsa_patch", "apply", "--target", str(site)], capture_output=True, text=True,
        env=checkout_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return site


def build_all(site: Path, jobs: list[tuple[str, str, bool]]) -> dict[str, dict]:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(jobs)], env=checkout_env(site), capture_output=True, text=True, timeout=900
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("JSON ")), None)
    assert r.returncode == 0 and line, r.stderr[-3000:]
    return {m["cfg"]: m for m in json.loads(line[5:])}


def expected_delta(result: emit.Result) -> int:
    c = result.channels
    positions = c * (result.mhsa_args[0] + result.mhsa_args[1]) if len(result.mhsa_args) > 3 else 0
    return 3 * (c * c + c) + positions


def check_against_stock(result: emit.Result, mhsa: dict, stock: dict) -> None:
    label = result.command
    assert mhsa["parameters"] - stock["parameters"] == expected_delta(result), label
    assert mhsa["mhsa"] == [result.index], label
    layer = mhsa["layers"][result.index]
    assert layer["from"] == -1 and layer["module"].endswith("MHSA"), label
    assert layer["params"] == expected_delta(result), label
    c, heads = result.channels, result.mhsa_args[2]
    assert mhsa["mhsa_args"][0][:3] == [c, heads, len(result.mhsa_args) > 3], label
    args = ", ".join("True" if a is True else str(a) for a in result.mhsa_args)
    assert layer["arguments"] == f"[{c}, {args}]", label  # parse_model's own table
    # layer by layer: without MHSA (readers sent back to its input) the model is the stock model
    assert strip_mhsa(mhsa["layers"], result.index) == rows(stock["layers"]), label
    # the built model reads what the file says
    new_rows = result.data["backbone"] + result.data["head"]
    assert [layer["from"] for layer in mhsa["layers"]] == [r[0] for r in new_rows], label
    readers = sorted(k for k, layer in enumerate(mhsa["layers"]) if result.index in absolute(layer["from"], k))
    assert tuple(readers) == result.readers, label


def mhsa_gflops(c: int, grid: int, pos: bool) -> float:
    """What FlopCounterMode counts for MHSA: the q/k/v projection (6·N·C²) and attention (4·N²·C, 8·N²·C with
    positions: the positional term rides in the head dimension, which doubles both matmuls)."""
    n = grid * grid
    return (6 * n * c * c + (8 if pos else 4) * n * n * c) / 1e9


@pytest.mark.parametrize("version", releases.MATRIX)
def test_generated_configs_build_on_each_release(tmp_path, version):
    site = patched_release(version, tmp_path)
    t = find_target(site)
    out, renamed = tmp_path / "out", tmp_path / "renamed"
    out.mkdir()
    renamed.mkdir()
    cases: list[tuple[emit.Result, str, str | None]] = []  # (result, cfg path, renamed path)
    jobs: list[tuple[str, str, bool]] = []

    def add(req: Request, folder: Path = out, rename: bool = False, flops: bool = False):
        res = emit.generate(t, req)
        d = folder / f"{len(cases)}"
        d.mkdir()
        path = d / res.file_name
        path.write_text(res.text, encoding="utf-8")
        jobs.append((str(path), "model", flops))
        other = None
        if rename:  # a name without a scale: ultralytics would fall back to the first row of scales
            other = renamed / f"custom-{WORDS[req.scale]}.yaml"
            other.write_text(res.text, encoding="utf-8")
            assert naming.guess_scale(other.name) == "" and naming.unified_path(other) == str(other)
            jobs.append((str(other), "model" if req.scale == "n" else "parse", False))
        cases.append((res, str(path), other and str(other)))
        return res

    for scale in request.SCALES:
        add(Request(scale=scale), rename=True, flops=scale == "n")
    ships = {
        base: [task for task in request.TASKS if (t.package / rel / f"{base}{request.TASKS[task]}.yaml").is_file()]
        for base, dirs in bases.BASE_DIRS.items()
        for rel in dirs
        if (t.package / rel / f"{base}.yaml").is_file()
    }
    v = version_tuple(version)
    expected_ships = {"yolov8"} | ({"yolo11"} if v >= (8, 3) else set()) | ({"yolo26"} if v >= (8, 4) else set())
    assert set(ships) == expected_ships
    for base, tasks in ships.items():
        for task in tasks:
            if (base, task) != ("yolov8", "detect"):
                add(Request(scale="n", base=base, task=task))
    for at in ("P3", "P4", "7", "21"):
        add(Request(scale="n", at=at))
    add(Request(scale="n", lateral="pre-attention"))
    add(Request(scale="s", at="P4", lateral="pre-attention", heads=8))
    add(Request(scale="n", pos_emb=True), flops=True)
    add(Request(scale="m", pos_emb=True, heads=8, imgsz=320))
    if "yolo11" in ships:
        add(Request(scale="n", base="yolo11", at="SPPF"))
        add(Request(scale="s", base="yolo11", task="segment", at="P3", heads=2))
    stocks = sorted({res.stock_name for res, _, _ in cases})
    big = {f"yolov8{scale}.yaml" for scale in "smlx"}
    jobs += [(name, "parse" if name in big else "model", name == "yolov8n.yaml") for name in stocks]

    built = build_all(site, jobs)

    for res, path, other in cases:
        mhsa, stock = built[path], built[res.stock_name]
        check_against_stock(res, mhsa, stock)
        assert mhsa["scale"] == next(iter(res.data["scales"]))  # from the file name
        if other:
            copy = built[other]
            assert copy["scale"] in ("", None)  # ultralytics found no scale in the name ...
            assert rows(copy["layers"]) == rows(mhsa["layers"])  # ... and built the requested scale anyway
            assert copy["parameters"] == mhsa["parameters"]

    # every scale really differs (the renamed copies above did not all fall back to one scale)
    params = [built[p]["parameters"] for res, p, o in cases[:5]]
    assert len(set(params)) == 5

    # true GFLOPs: the stock count plus MHSA's own, attention included
    n = built[cases[0][1]]
    stock_n = built["yolov8n.yaml"]
    assert n["layers"][10]["gflops"] == pytest.approx(mhsa_gflops(256, 20, False))
    assert n["gflops"] - stock_n["gflops"] == pytest.approx(mhsa_gflops(256, 20, False))
    assert "aten.bmm" in n["gflops_by_op"] and "aten.bmm" not in stock_n["gflops_by_op"]
    pos = next(built[p] for res, p, _ in cases if res.command == "mhsa-patch gen-yaml --scale n --pos-emb")
    assert pos["layers"][10]["gflops"] == pytest.approx(mhsa_gflops(256, 20, True))
    assert n["flops_device"] == "meta"


@pytest.mark.parametrize("version", [releases.MATRIX[0], releases.LATEST])
def test_check_builds_with_the_patched_release(tmp_path, version):
    site = tmp_path / "site"
    releases.copy_release(version, site)
    work = tmp_path / "work"
    work.mkdir()
    args = ["gen-yaml", "-s", "n", "-t", str(site), "--check"]
    r = subprocess.run([sys.executable, "-m", "mhsa_patch", *args], capture_output=True, text=True, cwd=work, env=checkout_env(site))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--check needs the patch" in r.stderr
    assert list(work.iterdir()) == []

    r = subprocess.run([sys.executable, "-m", "mhsa_patch", "apply", "-t", str(site)], capture_output=True, text=True,
                       env=checkout_env())
    assert r.returncode == 0, r.stderr
    # under the network guard (tests/netguard.py), started without YOLO_OFFLINE as a user would: the building child
    # gets it from the tool, and neither tries the network (8.0.98 probes DNS when it is imported)
    guarded = netguard.run(*args, site=site, cwd=work)
    r = guarded.proc
    assert r.returncode == 0, r.stdout + r.stderr
    netguard.assert_offline(guarded)
    assert (work / "yolov8n-MHSA.yaml").read_text() == emit.generate(find_target(site), Request(scale="n")).text
    lines = r.stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith(" 10 "))
    assert row.split()[:5] == ["10", "-1", "1", "197376", "MHSA"] and "[256, 14, 14, 4]" in row
    assert any(ln.startswith(" 21 ") and "[-1, 10]" in ln for ln in lines)
    assert any(ln.startswith(" 23 ") and "[16, 19, 22]" in ln for ln in lines)
    stock = next(ln for ln in lines if ln.startswith("yolov8n.yaml "))
    assert "3,157,200" in stock
    diff = next(ln for ln in lines if ln.startswith("difference "))
    assert diff.split()[1:4] == ["+1", "+197,376", "+0.32"]
    assert "WARNING" not in r.stderr, r.stderr


# -- gen-yaml --layer BoT3: built by the patched release, against the stock model ------------------------------------

ROOT = Path(__file__).resolve().parent.parent

# Builds each [cfg, sizes] job as YOLO(cfg) does (the task's model class: a stride pass at 256); the model then runs
# in eval mode at each [height, width] of sizes. One JSON line: per model, each layer's type, from, params.
BOT3_CHILD = r"""
import json, sys
import torch
from ultralytics.nn.tasks import DetectionModel

torch.set_num_threads(1)
out = []
for cfg, sizes in json.loads(sys.argv[1]):
    torch.manual_seed(0)
    model = DetectionModel(cfg, verbose=False)
    rec = {"cfg": cfg, "types": [type(m).__name__ for m in model.model], "from": [m.f for m in model.model],
           "params": [sum(p.numel() for p in m.parameters()) for m in model.model]}
    bot3 = [m for m in model.model if type(m).__name__ == "BoT3"]
    if bot3:
        b = bot3[0]
        rec["bot3"] = {"c1": b.cv1.conv.in_channels, "c2": b.cv3.conv.out_channels, "n": len(b.m)}
    if sizes:
        model.eval()
        shapes = []
        with torch.no_grad():
            for h, w in sizes:
                y = model(torch.zeros(1, 3, h, w))
                y = y[0] if isinstance(y, (list, tuple)) else y
                assert torch.isfinite(y).all()
                shapes.append(list(y.shape))
        rec["shapes"] = shapes
    out.append(rec)
print("JSON " + json.dumps(out))
"""


def bot3_params(c1: int, c2: int, n: int) -> int:
    """BoT3(c1, c2, n) counted by hand: cv1, cv2 = Conv(c1, c_, 1), cv3 = Conv(2c_, c2, 1) (conv + BatchNorm), and n
    BottleneckTransformer(c_, c_) blocks of Conv(c_, c_, 1) + MHSA(c_) (3·(c_²+c_)), shortcut the identity;
    c_ = c2 // 2. The unused fc1 Linear(c_, c_) is buffers, not parameters (it stays in the state_dict)."""
    c_ = int(c2 * 0.5)
    return 2 * (c1 * c_ + 2 * c_) + (2 * c_ * c2 + 2 * c2) + n * ((c_ * c_ + 2 * c_) + 3 * (c_ * c_ + c_))


def sizes(scale: str) -> list[list[int]]:
    """Where a BoT3 model runs: scale n at 640x640 (P5's 20x20, the grid its MHSA tables were made for) and at
    320x480 (a rectangular grid: the tables interpolated); the larger scales, the same layers with more channels, at
    128x192 (interpolated), which costs them a fiftieth of a 640x640 pass."""
    return [[640, 640], [320, 480]] if scale == "n" else [[128, 192]]


def _bot3_case(version: str, tmp_path: Path, cases: list[tuple[str, str]]) -> None:
    site = tmp_path / "site"
    releases.copy_release(version, site)
    r = subprocess.run([sys.executable, "-m", "mhsa_patch", "apply", "--target", str(site)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    t = find_target(site)
    jobs, results = [], []
    for base, scale in cases:
        res = emit.generate(t, Request(scale=scale, base=base, layer="BoT3"))
        d = tmp_path / f"{base}{scale}"
        d.mkdir()
        path = d / res.file_name
        path.write_text(res.text, encoding="utf-8")
        jobs += [(str(path), sizes(scale)), (res.stock_name, [])]
        results.append((res, str(path), scale))
    r = subprocess.run([sys.executable, "-c", BOT3_CHILD, json.dumps(jobs)], env=checkout_env(site),
                       capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("JSON ")), None)
    assert r.returncode == 0 and line, r.stderr[-3000:]
    built = {m["cfg"]: m for m in json.loads(line[5:])}
    for res, path, scale in results:
        bot3, stock = built[path], built[res.stock_name]
        i, label = res.index, res.command
        assert bot3["types"][i] == "BoT3" and stock["types"][i] == res.insertions[0].replaced, label
        # every other layer as shipped, same index, same inputs, same parameters
        assert [x for k, x in enumerate(bot3["types"]) if k != i] == [x for k, x in enumerate(stock["types"]) if k != i]
        assert bot3["from"] == stock["from"], label
        assert [p for k, p in enumerate(bot3["params"]) if k != i] == [
            p for k, p in enumerate(stock["params"]) if k != i
        ], label
        # the whole model differs by BoT3's parameters minus those of the C2f/C3k2 it replaced
        assert sum(bot3["params"]) - sum(stock["params"]) == bot3["params"][i] - stock["params"][i], label
        b = bot3["bot3"]
        assert b["c2"] == res.channels and b["n"] == max(round(res.data["backbone"][i][1] * res.data["scales"][
            next(iter(res.data["scales"]))][0]), 1), label
        assert bot3["params"][i] == bot3_params(b["c1"], b["c2"], b["n"]), label
        assert len(bot3["shapes"]) == len(sizes(scale)), label


def test_bot3_builds_at_every_scale_and_base_on_the_latest_release(tmp_path):
    _bot3_case(releases.LATEST, tmp_path, [(b, s) for b in ("yolov8", "yolo11", "yolo26") for s in request.SCALES])


def test_bot3_builds_on_the_oldest_release(tmp_path):
    _bot3_case(releases.MATRIX[0], tmp_path, [("yolov8", "n")])
