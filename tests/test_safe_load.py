"""The restricted checkpoint loader (``mhsa_patch.child.safe_load``): fork checkpoints load into a patched stock
ultralytics, everything else a checkpoint could do is refused in one line.

Slow (``training``): fork-shaped packages built from real releases 8.0.200 and 8.3.52 (see ``forks.py``) save
checkpoints with the tutorial's MHSA at three module paths; a copy of the latest release patched with
``mhsa-patch apply`` loads them with the loader in a child and gives the fork model's numbers. The same children give
the refusals that need real ultralytics classes. Fast: crafted pickles (payloads that would write a file, calls of
classes, unknown modules, mapped layers) against the loader in this process, with the repo's own MHSA as the layer.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types

import forks
from helpers import checkout_env
import numpy as np
import pytest
import reference_layers
import releases
import torch
from torch import nn

from mhsa_patch.child.safe_load import (
    FORBIDDEN_WHY,
    CheckpointRefused,
    load_checkpoint,
    tutorial_state_problems,
    unpickle,
)

FORK_RELEASES = ("8.0.200", "8.3.52")
# (module, star-imported through its package, pos_emb): three places forks keep the tutorial's class
SHAPES = (
    ("ultralytics.nn.modules.MHSA", False, False),
    ("ultralytics.nn.Addmodules.Attention", True, True),
    ("ultralytics.nn.extra_modules.attention", False, False),
)
PATCHED = "ultralytics.nn.modules.conv.MHSA"
MULTIHEAD = "ultralytics.nn.Addmodules.MHSA"  # a fork's other MHSA, built on nn.MultiheadAttention
EXTRA_FILES = {
    # more of a fork's blocks: ShuffleAttention next to the tutorial's MHSA, BiFPN in a module of its own
    "nn/extra_modules/attention.py": forks.TUTORIAL_MODULE + "\n\n" + forks.SHUFFLE_ATTENTION_MODULE.split("\n\n\n", 1)[1],
    "nn/extra_modules/bifpn.py": forks.BIFPN_MODULE,
    "nn/Addmodules/MHSA.py": forks.MULTIHEAD_MODULE,
}
ATTACH_CUSTOM = (
    "from ultralytics.nn.extra_modules.attention import ShuffleAttention\n"
    "from ultralytics.nn.extra_modules.bifpn import BiFPN\n"
    "model.model[4].extra = ShuffleAttention(64)\n"
    "model.model[15].fuse_weights = BiFPN(2)\n"
)

# ------------------------------------------------------------------------------------- slow: real releases, forks

LOAD = r"""
import json
import sys
from datetime import datetime

import numpy as np
import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel

from mhsa_patch.child.safe_load import CheckpointRefused, load_checkpoint

cases, stock = json.loads(sys.argv[1]), sys.argv[2]
# the target's own stock checkpoint, as port-weights gets one: yolov8n built here, saved as a release's yolov8n.pt
torch.manual_seed(0)
m = DetectionModel("yolov8n.yaml", verbose=False)
m.args = {"task": "detect", "imgsz": 640}
m.names = {i: f"class{i}" for i in range(80)}
m.half()
torch.save({"date": datetime.now().isoformat(), "version": ultralytics.__version__, "epoch": -1, "model": m,
            "ema": None, "optimizer": None, "train_args": {"model": "yolov8n.yaml", "task": "detect"}}, stock)
cases.append({"name": "stock-target", "ckpt": stock})
results = {}
for case in cases:
    try:
        model, ckpt, report = load_checkpoint(case["ckpt"])
    except CheckpointRefused as e:
        results[case["name"]] = {"refused": str(e)}
        continue
    r = {k: report[k] for k in ("mapped", "layers")}
    r["model"] = type(model).__name__
    r["training"] = model.training
    r["dtype"] = str(next(model.parameters()).dtype)
    r["task"] = model.task
    r["mhsa"] = sorted({f"{type(x).__module__}.{type(x).__qualname__}" for x in model.modules()
                        if type(x).__name__ == "MHSA"})
    if case.get("input"):
        x = torch.from_numpy(np.load(case["input"]))
        ref = np.load(case["output"])
        with torch.no_grad():
            y = model(x)
        y = (y[0] if isinstance(y, (list, tuple)) else y).numpy()
        r["rel"] = float(np.abs(y - ref).max() / np.abs(ref).max())
    results[case["name"]] = r
print(json.dumps(results))
"""

# ultralytics.utils.checks.check_requirements("evil"), as a raw protocol-2 pickle: a real ultralytics function
FORBIDDEN_ULTRALYTICS = b"\x80\x02cultralytics.utils.checks\ncheck_requirements\nX\x04\x00\x00\x00evil\x85R."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fork checkpoints of both releases, the refusal fixtures, all loaded in one child against a patched copy of
    the latest release. ``{"cases": {name: case}, "results": {name: what the child saw}}``."""
    root = tmp_path_factory.mktemp("safe-load")
    cases = {}
    for version in FORK_RELEASES:
        vroot = root / version
        site = forks.mhsa_fork(version, vroot, [(m, star) for m, star, _ in SHAPES], files=EXTRA_FILES)
        cfg = {pos: forks.write_mhsa_yaml(site, vroot / ("cfg-pos" if pos else "cfg"), pos_emb=pos) for pos in (0, 1)}
        jobs, names = [], []
        for module, _, pos in SHAPES:
            jobs.append({"cfg": cfg[pos], "out": vroot / f"{module}.pt", "layer": module})
            names.append(f"{version}:{module}")
        if version == "8.0.200":
            jobs.append({"cfg": "yolov8n.yaml", "out": vroot / "stock.pt"})
            names.append("stock-8.0.200")
        else:
            jobs.append({"cfg": cfg[0], "out": vroot / "multihead.pt", "layer": MULTIHEAD})
            names.append("multihead")
            jobs.append({"cfg": cfg[0], "out": vroot / "custom.pt", "layer": SHAPES[2][0], "extra": ATTACH_CUSTOM})
            names.append("custom")
        for name, saved in zip(names, forks.save_checkpoints(site, jobs)):
            cases[name] = {"name": name, **{k: str(v) for k, v in saved.items()}}
    bad = root / "forbidden.pt"
    bad.write_bytes(FORBIDDEN_ULTRALYTICS)
    cases["forbidden"] = {"name": "forbidden", "ckpt": str(bad)}

    target = releases.copy_release(releases.LATEST, root / "latest" / "site").parent
    env = checkout_env(target)
    proc = subprocess.run([sys.executable, "-m", "mhsa_patch", "apply", "--target", str(target)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wanted = [{k: v for k, v in c.items() if k in ("name", "ckpt", "input", "output")} for c in cases.values()]
    for c in wanted:
        if c["name"] in ("multihead", "custom", "forbidden"):
            c.pop("input", None)
    results = forks.last_json(forks.run_child(LOAD, target, json.dumps(wanted), str(root / "stock-target.pt")))
    cfgs = {version: str(forks.write_mhsa_yaml(target, root / "cfg-target" / version)) for version in FORK_RELEASES}
    return {"cases": cases, "results": results, "target": target, "cfgs": cfgs}


@pytest.mark.training
@pytest.mark.parametrize("version", FORK_RELEASES)
@pytest.mark.parametrize("module, star, pos", SHAPES)
def test_fork_checkpoint_loads_into_the_patched_stock_release(world, version, module, star, pos):
    name = f"{version}:{module}"
    case, r = world["cases"][name], world["results"][name]
    assert case["layer_module"] == module  # the fork built its own class ...
    assert f"{module}.MHSA" in forks.pickle_globals(case["ckpt"])  # ... and the pickle names its path
    assert "refused" not in r, r["refused"]
    assert r["mapped"] == {f"{module}.MHSA": PATCHED}
    assert r["mhsa"] == [PATCHED]  # every MHSA object is the patched class
    assert {x["where"] for x in r["layers"]} == {"model.model.10", "ema.model.10"}
    assert all(x == {**x, "class": f"{module}.MHSA", "channels": 256, "heads": 4, "pos": pos} for x in r["layers"])
    assert (r["model"], r["training"], r["dtype"], r["task"]) == ("DetectionModel", False, "torch.float32", "detect")
    assert r["rel"] <= 1e-4, r["rel"]  # the fork model's numbers (the tutorial's forward) from the patched layer


@pytest.mark.training
def test_an_mhsa_built_on_multihead_attention_is_refused_naming_its_keys(world):
    msg = world["results"]["multihead"].get("refused", "")
    assert f"{MULTIHEAD}.MHSA at " in msg and "is not the tutorial's MHSA" in msg, msg
    assert "missing pos, query, key, value, softmax" in msg and "unexpected attn, proj" in msg, msg
    assert "\n" not in msg


@pytest.mark.training
def test_modules_the_patch_does_not_provide_are_all_listed_in_one_line(world):
    msg = world["results"]["custom"].get("refused", "")
    assert "needs modules that the patch does not provide: " in msg, msg
    assert (
        "ShuffleAttention (ultralytics.nn.extra_modules.attention), BiFPN (ultralytics.nn.extra_modules.bifpn)" in msg
    ), msg
    assert "MHSA" not in msg.split("provide:")[1]  # the MHSA of the same fork module is mapped, not missing
    assert "\n" not in msg


@pytest.mark.training
@pytest.mark.parametrize("name", ["stock-8.0.200", "stock-target"])
def test_a_stock_checkpoint_loads_with_nothing_mapped(world, name):
    r = world["results"][name]
    assert "refused" not in r, r["refused"]
    assert r["mapped"] == {} and r["layers"] == [] and r["mhsa"] == []
    assert (r["model"], r["training"], r["dtype"]) == ("DetectionModel", False, "torch.float32")
    if "rel" in r:
        assert r["rel"] <= 1e-6


@pytest.mark.training
def test_a_function_of_the_target_ultralytics_is_refused(world):
    msg = world["results"]["forbidden"].get("refused", "")
    assert f"refuses to unpickle ultralytics.utils.checks.check_requirements: {FORBIDDEN_WHY}" in msg, msg


# ------------------------------------------------------------------------------ fast: crafted pickles, this process

OWN = {"MHSA": "mhsa_patch.patches.mhsa"}  # the layer as this repo ships it: no ultralytics needed


class _Payload:
    """An object whose unpickling calls ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _refused(path, layers=OWN) -> str:
    with pytest.raises(CheckpointRefused) as e:
        unpickle(path, layers)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_a_checkpoint_calling_os_system_writes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    torch.save({"model": nn.Conv2d(1, 1, 1), "x": _Payload(os.system, f"touch {marker}")}, ckpt)
    assert "system" in str(forks.pickle_globals(ckpt))  # the payload is in the pickle
    msg = _refused(ckpt)
    assert f"refuses to unpickle {os.system.__module__}.system: {FORBIDDEN_WHY}" in msg
    assert not marker.exists()


@pytest.mark.parametrize("module, func", [("builtins", "exec"), ("builtins", "open"), ("io", "open")])
def test_a_raw_pickle_writing_a_file_writes_nothing(tmp_path, module, func):
    """A plain protocol-0 pickle (torch.load reads one through its legacy path) that writes a file."""
    marker = tmp_path / "pwned"
    args = [f"open({str(marker)!r}, 'w').write('x')"] if func == "exec" else [str(marker), "w"]
    data = f"c{module}\n{func}\n(" + "".join(f"V{a}\n" for a in args) + "tR."
    path = tmp_path / "evil.pt"
    path.write_bytes(data.encode())
    assert f"refuses to unpickle {module}.{func}: {FORBIDDEN_WHY}" in _refused(path)
    assert not marker.exists()
    if func == "open":  # the same bytes through plain pickle: the payload is live
        pickle.loads(data.encode()).close()
        assert marker.exists()


def test_torch_functions_are_refused_by_name(tmp_path):
    path = tmp_path / "hub.pt"
    torch.save({"model": _Payload(torch.hub.load, "attacker/repo", "model")}, path)
    assert "refuses to unpickle torch.hub.load: " in _refused(path)


# Globals that load another file with plain pickle, run code, start a process, or write or remove files: a
# checkpoint needs none of them. Each is called below on a victim file's path, which it would read, run or remove.
DANGEROUS = (
    ("torch", "load"), ("torch.jit", "load"), ("torch.hub", "load"), ("torch.serialization", "load"),
    ("numpy", "load"), ("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"), ("builtins", "eval"),
    ("builtins", "exec"), ("builtins", "compile"), ("builtins", "__import__"), ("builtins", "open"), ("io", "open"),
    ("os", "system"), ("posix", "system"), ("os", "remove"), ("os", "unlink"), ("shutil", "rmtree"),
    ("subprocess", "run"), ("subprocess", "Popen"), ("importlib", "import_module"), ("runpy", "run_path"),
    ("codecs", "open"), ("webbrowser", "open"),
)  # fmt: skip


@pytest.mark.parametrize("module, func", DANGEROUS, ids=[f"{m}.{f}" for m, f in DANGEROUS])
def test_a_checkpoint_may_call_nothing_that_loads_runs_or_writes(tmp_path, module, func):
    """A protocol-0 pickle that calls ``module.func`` on a file's path: refused by that name before the call, the
    file as it was. Not only the payloads above: one more global on the allow-list shows here."""
    victim = tmp_path / "victim.pt"
    torch.save({"model": nn.Conv2d(1, 1, 1)}, victim)
    before = victim.read_bytes()
    path = tmp_path / "evil.pt"
    path.write_bytes(f"c{module}\n{func}\n(V{victim}\ntR.".encode())
    assert f"refuses to unpickle {module}.{func}: {FORBIDDEN_WHY}" in _refused(path)
    assert victim.read_bytes() == before


def test_module_classes_are_created_never_called(tmp_path):
    """Module objects come back through ``cls.__new__`` and their state; a pickle calling a module class (which
    would run its ``__init__`` with the pickle's arguments) is refused even though the class is allowed."""
    path = tmp_path / "call.pt"
    torch.save({"model": nn.Sequential(nn.Conv2d(2, 2, 1)), "x": _Payload(nn.Linear, 2, 2)}, path)
    assert "refuses to unpickle a call of torch.nn.modules.linear.Linear: " in _refused(path)
    path2 = tmp_path / "getattr.pt"
    torch.save({"x": _Payload(getattr, nn.Linear, "__init__")}, path2)
    assert "refuses to unpickle getattr(torch.nn.modules.linear.Linear, '__init__')" in _refused(path2)


def test_state_goes_into_new_objects_never_into_classes(tmp_path):
    """BUILD on a class would set a class attribute for every model in the process (here Linear.forward)."""
    path = tmp_path / "patch-class.pt"
    path.write_bytes(b"\x80\x02ctorch.nn.modules.linear\nLinear\n}X\x07\x00\x00\x00forwardK\x01sb.")
    assert "refuses to unpickle a state change of torch.nn.modules.linear.Linear: " in _refused(path)
    assert callable(nn.Linear.forward)


def _fake_module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


@pytest.fixture
def foreign(monkeypatch):
    """Install classes under module paths that exist only while saving (as the fork's or a script's did)."""
    added = []

    def install(name: str, source: str):
        module = _fake_module(name, source)
        parts = name.split(".")
        for i in range(1, len(parts)):
            monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        monkeypatch.setitem(sys.modules, name, module)
        added.append(name)
        return module

    return install


def test_every_missing_module_is_listed_in_one_pass(tmp_path, foreign, monkeypatch):
    c3 = foreign("models.common", "import torch.nn as nn\nclass C3(nn.Module):\n    pass\n").C3
    drop = foreign("timm.layers.drop", "import torch.nn as nn\nclass DropPath(nn.Module):\n    pass\n").DropPath
    path = tmp_path / "yolov5.pt"
    torch.save({"model": nn.Sequential(c3(), drop(), c3())}, path)
    monkeypatch.undo()  # the modules are gone: a stock environment
    msg = _refused(path)
    assert msg.endswith(
        "this checkpoint needs modules that the patch does not provide: C3 (models.common), DropPath "
        "(timm.layers.drop); load it with the code that trained it"
    )
    assert "models" not in sys.modules and "timm.layers.drop" not in sys.modules  # named, never imported


@pytest.mark.parametrize("module", ["models.common", "__main__", "ultralytics.nn.add.MHSA"])
def test_the_tutorial_mhsa_maps_from_any_module_path(tmp_path, foreign, monkeypatch, module):
    Tutorial = foreign(module, forks.TUTORIAL_MODULE).MHSA
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), Tutorial(32, 8, 8, 4, True)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    path = tmp_path / "fork.pt"
    torch.save({"model": model, "version": "8.0.200"}, path)
    monkeypatch.undo()
    ckpt, report = unpickle(path, OWN)
    assert report["mapped"] == {f"{module}.MHSA": "mhsa_patch.patches.mhsa.MHSA"}
    assert report["layers"] == [{"where": "model.1", "class": f"{module}.MHSA", "channels": 32, "heads": 4, "pos": True}]
    from mhsa_patch.patches.mhsa import MHSA

    assert type(ckpt["model"][1]) is MHSA
    with torch.no_grad():
        out = ckpt["model"](x)
    assert ((out - ref).abs().max() / ref.abs().max()).item() <= 1e-5


def test_a_stock_object_of_the_layer_class_is_checked_too(tmp_path):
    """The patched class's own path maps to nothing, but its objects are checked like mapped ones."""
    from mhsa_patch.patches.mhsa import MHSA

    layer = MHSA(16, 4, 4, 4, False)
    del layer._modules["value"]  # e.g. an MHSA of another design pasted into conv.py under the same name
    path = tmp_path / "own.pt"
    torch.save({"model": nn.Sequential(layer)}, path)
    msg = _refused(path)
    assert "mhsa_patch.patches.mhsa.MHSA at model.0 is not the tutorial's MHSA" in msg and "missing value" in msg


def test_tutorial_state_problems_name_what_differs(tutorial_class):
    ok = tutorial_class(16, 4, 4, 4, True)
    assert tutorial_state_problems(ok) is None
    assert tutorial_state_problems(tutorial_class(16, 4, 4, 4, False)) is None

    def broken(change):
        m = tutorial_class(16, 4, 4, 4, True)
        change(m)
        return tutorial_state_problems(m)

    assert broken(lambda m: setattr(m, "key", nn.Conv2d(16, 16, 1, bias=False))) == "key has no bias"
    assert "not Conv2d(16, 16, 1)" in broken(lambda m: setattr(m, "query", nn.Conv2d(16, 16, 3)))
    assert broken(lambda m: m._parameters.pop("rel_h_weight")) == "missing rel_h_weight"
    assert "rel_w_weight is (1, 4, 2, 4, 1), not (1, 4, 4, width, 1)" == broken(
        lambda m: setattr(m, "rel_w_weight", nn.Parameter(torch.zeros(1, 4, 2, 4, 1)))
    )
    assert broken(lambda m: setattr(m, "pos", False)) == "unexpected rel_h_weight, rel_w_weight (pos is False)"
    assert broken(lambda m: setattr(m, "heads", 3)) == "16 channels are not divisible by heads=3"
    assert "softmax is" in broken(lambda m: setattr(m, "softmax", nn.Softmax(dim=1)))


@pytest.fixture
def tutorial_class():
    yield reference_layers.tutorial_module("tutorial_for_checks").MHSA
    sys.modules.pop("tutorial_for_checks", None)


def test_what_is_not_a_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    assert "is not a PyTorch checkpoint: " in _refused(path)
    assert "no such file" in _refused(tmp_path / "missing.pt")


def test_load_checkpoint_needs_a_model(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": None, "ema": None, "epoch": 3, "when": np.float64(1.0)}, path)
    with pytest.raises(CheckpointRefused, match="no 'ema' or 'model' module"):
        load_checkpoint(path, OWN)


PORTED_OUTPUTS = """
import json, sys
import numpy as np, torch
from ultralytics import YOLO
model = YOLO(sys.argv[1]).model.float().eval()
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    y = model(x)
y = (y[0] if isinstance(y, (list, tuple)) else y).numpy()
ref = np.load(sys.argv[3])
print(json.dumps({"rel": float(np.abs(y - ref).max() / np.abs(ref).max()), "cls": type(model.model[10]).__module__}))
"""


@pytest.mark.training
@pytest.mark.parametrize("version", FORK_RELEASES)
def test_port_weights_brings_a_fork_checkpoint_to_the_patched_stock_release(world, version, tmp_path):
    """port-weights on a checkpoint trained on a fork (MHSA pickled under the fork's path): every tensor carried,
    and the result loads with ultralytics' own YOLO(path) on the patched stock release, with the fork's outputs."""
    module = SHAPES[0][0]
    case, target = world["cases"][f"{version}:{module}"], world["target"]
    out = tmp_path / "ported.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "mhsa_patch", "port-weights", case["ckpt"], world["cfgs"][version], "-o", str(out),
         "--target", str(target), "--json"],
        env=checkout_env(target), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["transferred"] == report["total"] and report["left_at_init"] == []
    r = forks.last_json(forks.run_child(PORTED_OUTPUTS, target, str(out), case["input"], case["output"]))
    assert r["cls"] == "ultralytics.nn.modules.conv" and r["rel"] <= 1e-4, r
