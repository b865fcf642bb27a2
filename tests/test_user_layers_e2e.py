"""Issue 21 (your own layer), slow part: real releases built, the gallery trained and reloaded, a fork taken over,
every order of applies and reverts, and a checkpoint carried to another install.

* 8.0.98 (the oldest) and 8.3.150 (8.4.190, the latest, below): the whole gallery (``examples/layers/``) and ultralytics' own CBAM
  applied, every layer's model built and run forward and backward by the release's own ``parse_model``, layers
  reverted one at a time and then all, the tree byte-identical; a refusal names that release's ``FILE:LINE``.
* The gallery end to end on the latest release: apply, gen-yaml, one tiny epoch of ultralytics' trainer per model,
  ``last.pt`` reloaded by the tool's restricted loader and by ultralytics' own, ``check --train`` on the
  parameter-free layer (reverts of the latest release: the fast tests and the property below).
* A property (hypothesis): any subset of the gallery applied in any order, then reverted one at a time in any order.
* A fork with a hand-pasted class of a user layer's name: refused, taken over with ``--force``, or refused as foreign.
* A checkpoint trained with a user layer loads in another install location after ``apply --layer`` of the same file
  from another path, applied after another layer: the pickled class path is the class's alone.
"""

from __future__ import annotations

import json
import pickletools
import shutil
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import forks
import releases
from helpers import assert_refused, checkout_env, cli, run_tool

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "examples" / "layers"
RELEASES = ("8.0.98", "8.3.150", releases.LATEST)  # the oldest, one of 8.1-8.3, the latest
# name -> the apply arguments of the gallery file that registers it (CBAM collides with ultralytics' own: --as)
LAYERS = {
    "SE": ["--layer", str(GALLERY / "se.py")],
    "ECA": ["--layer", str(GALLERY / "eca.py")],
    "CBAMBlock": ["--layer", str(GALLERY / "cbam.py"), "--as", "CBAMBlock"],
    "CoordAtt": ["--layer", str(GALLERY / "coordatt.py")],
    "SimAM": ["--layer", str(GALLERY / "simam.py")],
    "C3SE": ["--layer", str(GALLERY / "c3se.py")],
}
CSP = {"C3SE"}  # placed in place of the backbone's last C2f

BUILD = r"""
import json, sys
import torch
from ultralytics.nn.tasks import DetectionModel

out = {}
for path in sys.argv[1:]:
    torch.manual_seed(0)
    model = DetectionModel(path, nc=3, verbose=False)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    y = model(x)

    def leaves(o):  # a tensor, or the tensors of the lists, tuples and dicts a head returns
        if torch.is_tensor(o):
            return [o] if o.is_floating_point() else []
        items = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else []
        return [t for i in items for t in leaves(i)]

    loss = sum(t.float().pow(2).mean() for t in leaves(y))
    loss.backward()
    mods = {type(m).__module__ + "." + type(m).__name__ for m in model.modules()}
    out[path] = {"modules": sorted(m for m in mods if ".user_" in m or m.endswith(".CBAM")),
                 "params": sum(p.numel() for p in model.parameters()),
                 "grad": float(x.grad.norm()), "finite": bool(torch.isfinite(loss))}
print(json.dumps(out))
"""


def _yaml(target_pkg: Path, name: str, dest: Path) -> Path:
    """gen-yaml's file for the layer, written with its library (the CLI is the fast tests')."""
    from mhsa_patch.modelyaml.emit import generate
    from mhsa_patch.modelyaml.request import Request
    from mhsa_patch.patching.engine import user_specs
    from mhsa_patch.patching.target import find_target

    target = find_target(target_pkg)
    res = generate(target, Request(scale="n", layer=name, extra=user_specs(target)))
    path = dest / res.file_name
    path.write_text(res.text)
    return path


def _built(site: Path, paths: list[Path]) -> dict:
    r = releases.run_python(BUILD, site, *map(str, paths), timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- real releases --------------------------------------------------------------------------------------------------

@pytest.mark.releases
@pytest.mark.parametrize("version", RELEASES[:2])
def test_the_gallery_applies_builds_and_reverts_on_real_releases(tmp_path, version):
    """The latest release gets the same (and training, checkpoints, orders) in the tests below and the fast ones."""
    pkg = releases.copy_release(version, tmp_path / "site")
    site = pkg.parent
    # a refusal names this release's own CBAM line and changes nothing
    before = releases.tree_state(pkg)
    line = next(k for k, ln in enumerate((pkg / "nn/modules/conv.py").read_text().splitlines(), 1)
                if ln.startswith("class CBAM("))
    assert_refused(cli("apply", "-t", str(pkg), "--layer", str(GALLERY / "cbam.py")),
                   f"{pkg / 'nn/modules/conv.py'}:{line}:", "--as NAME")
    assert releases.tree_state(pkg) == before

    plain = [a for n, args in LAYERS.items() if "--as" not in args for a in args]
    for args in (plain, LAYERS["CBAMBlock"], ["--layer", "CBAM"]):
        r = cli("apply", "-t", str(pkg), *args)
        assert r.exit_code == 0, r.output
    for rel in ("nn/tasks.py", "nn/modules/__init__.py", *(f"nn/modules/user_{n}.py" for n in LAYERS)):
        compile((pkg / rel).read_bytes(), rel, "exec")
    paths = [_yaml(pkg, name, tmp_path) for name in [*LAYERS, "CBAM"]]
    built = _built(site, paths)
    for name, path in zip([*LAYERS, "CBAM"], paths):
        got = built[str(path)]
        want = "ultralytics.nn.modules.conv.CBAM" if name == "CBAM" else f"ultralytics.nn.modules.user_{name}.{name}"
        assert want in got["modules"] and got["finite"] and got["grad"] > 0, (name, got)

    for name in ("SimAM", "CBAM"):  # one at a time: the others stay
        assert cli("revert", "-t", str(pkg), "--layer", name).exit_code == 0
    st = json.loads(cli("status", "-t", str(pkg), "--json").stdout)
    assert st["state"] == "applied" and [u["name"] for u in st["user_layers"]] == [
        "SE", "ECA", "CoordAtt", "C3SE", "CBAMBlock"]
    assert cli("revert", "-t", str(pkg)).exit_code == 0
    assert releases.tree_bytes(pkg) == releases.tree_bytes(releases.pristine(version))


# -- the gallery end to end -----------------------------------------------------------------------------------------

TRAIN = r"""
import json, sys, tempfile
from pathlib import Path

import mhsa_patch.child.offline as offline
offline.install()
import torch
from mhsa_patch.child.compat import loss_floats, route_checkpoint_loading
from mhsa_patch.child.safe_load import load_checkpoint
from mhsa_patch.child.synthetic import write_dataset
from ultralytics import YOLO

route_checkpoint_loading()
work = Path(sys.argv[1])
data = write_dataset(work / "shapes", n_train=4, n_val=2, imgsz=32)
out = {}
for path in sys.argv[2:]:
    name = Path(path).stem.split("-", 1)[1]
    yolo = YOLO(path)
    first = {}

    def keep(trainer):
        for m in trainer.model.modules():
            if type(m).__name__ == name:
                first.update({k: v.detach().clone() for k, v in m.state_dict().items()})

    losses = []
    yolo.add_callback("on_pretrain_routine_end", keep)
    yolo.add_callback("on_train_batch_end", lambda t: losses.append(loss_floats(t.loss_items)))
    yolo.train(data=str(data), epochs=1, imgsz=32, batch=2, workers=0, device="cpu", plots=False, amp=False,
               val=False, project=str(work / "runs"), name=name, exist_ok=True, seed=0, verbose=False)
    trained = next(m for m in yolo.trainer.model.modules() if type(m).__name__ == name)
    moved = [k for k, v in trained.state_dict().items() if v.is_floating_point() and not torch.equal(v, first[k])]
    last = Path(yolo.trainer.save_dir) / "weights" / "last.pt"
    mine, _, report = load_checkpoint(last)  # the tool's restricted loader
    theirs = YOLO(str(last)).model.float().eval()  # ultralytics' own loader
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = mine(x)[0], theirs(x)[0]
    classes = sorted({type(m).__module__ + "." + type(m).__name__ for m in mine.modules() if type(m).__name__ == name})
    out[name] = {"losses": losses, "moved": moved, "params": len(first), "classes": classes,
                 "same": bool(torch.equal(a, b)), "last": str(last)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The latest release with the whole gallery applied, each layer's yolov8n YAML, one epoch of each trained."""
    root = tmp_path_factory.mktemp("gallery")
    pkg = releases.copy_release(releases.LATEST, root / "site")
    for args in ([a for n, args in LAYERS.items() if "--as" not in args for a in args], LAYERS["CBAMBlock"]):
        r = cli("apply", "-t", str(pkg), *args)
        assert r.exit_code == 0, r.output
    (root / "cfg").mkdir()
    for name in LAYERS:
        r = cli("gen-yaml", "-t", str(pkg), "--scale", "n", "--layer", name, "-o", str(root / "cfg") + "/")
        assert r.exit_code == 0, r.output
    paths = sorted((root / "cfg").glob("yolov8n-*.yaml"))
    assert [p.stem for p in paths] == sorted(f"yolov8n-{n}" for n in LAYERS)
    proc = __import__("subprocess").run(
        [__import__("sys").executable, "-c", TRAIN, str(root / "work"), *map(str, paths)],
        env=checkout_env(pkg.parent), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return {"pkg": pkg, "root": root, "runs": json.loads(proc.stdout.strip().splitlines()[-1]),
            "yamls": {p.stem.split("-", 1)[1]: p for p in paths}}


@pytest.mark.training
def test_every_gallery_layer_trains_and_its_checkpoint_reloads(trained):
    runs = trained["runs"]
    assert sorted(runs) == sorted(LAYERS)
    for name, run in runs.items():
        assert run["classes"] == [f"ultralytics.nn.modules.user_{name}.{name}"], (name, run["classes"])
        assert run["losses"] and all(v == v and abs(v) != float("inf") for ls in run["losses"] for v in ls), name
        assert run["same"], f"{name}: the tool's loader and ultralytics' give other numbers"
        if run["params"]:  # SimAM has none: nothing to move
            assert run["moved"], f"{name}: one epoch left its parameters where they started"
    assert runs["SimAM"]["params"] == 0 and runs["SE"]["params"] > 0


@pytest.mark.training
def test_check_trains_a_parameter_free_user_layer(trained):
    """``check --train`` on SimAM: it has no parameter, so the gradient must flow through it instead."""
    pkg = trained["pkg"]
    r = run_tool("check", str(trained["yamls"]["SimAM"]), "--train", "--imgsz", "64", "--train-imgsz", "32",
                 "--images", "4", "--batch", "2", "--runs", "1", "--json", "--target", str(pkg), site=pkg.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["added_layers"] == [{"index": 10, "type": "SimAM"}]
    assert report["baseline"] == "yolov8n.yaml" and report["train_step"]["added_grad_norm"] > 0
    assert report["train"]["reloaded"]["last.pt"]["added_layers"]


# -- any subset, any order ------------------------------------------------------------------------------------------

def _structure_ok(pkg: Path, applied: list[str]) -> None:
    """Per step: every file compiles, and each applied layer is imported, exported and read by parse_model."""
    import ast

    tasks = (pkg / "nn/tasks.py").read_text()
    init = (pkg / "nn/modules/__init__.py").read_text()
    for rel in ("nn/tasks.py", "nn/modules/__init__.py", "nn/modules/conv.py"):
        compile((pkg / rel).read_bytes(), rel, "exec")
    modules = {p.stem for p in (pkg / "nn/modules").glob("user_*.py")}
    assert modules == {f"user_{n}" for n in applied}, (modules, applied)
    imported = {a.asname or a.name for n in ast.parse(tasks).body if isinstance(n, ast.ImportFrom) for a in n.names}
    for name in applied:
        compile((pkg / f"nn/modules/user_{name}.py").read_bytes(), name, "exec")
        assert name in imported and f"elif m is {name}:  # mhsa-patch" in tasks, name
        assert f"from .user_{name} import {name}  # mhsa-patch" in init and f'"{name}",  # mhsa-patch' in init


@pytest.mark.releases
def test_any_subset_in_any_order_applies_and_reverts_to_the_same_bytes(tmp_path_factory):
    """Hypothesis draws a subset of the gallery, the order to apply it and the order to revert it one layer at a
    time, on the latest release. Every step is checked with compile-and-structure checks (each file compiles; each
    applied layer is imported, exported and has its branch; its module file is there and no other); the end must be
    byte-identical to the start. Real builds at the ends: the state with every drawn layer applied is saved, and after
    the search one child builds and runs, for every example, a model holding all of its layers with that tree's own
    parse_model. Four examples of two to four layers (about 20 s on an idle 2-core machine)."""
    from mhsa_patch.patching import engine
    from mhsa_patch.patching.register import ask
    from mhsa_patch.patching.target import find_target

    root = tmp_path_factory.mktemp("orders")
    start = releases.copy_release(releases.LATEST, root / "start")
    assert cli("apply", "-t", str(start)).exit_code == 0  # MHSA and BoT3: the user layers come and go around them
    start_bytes = releases.tree_bytes(start)
    records = {}
    for name, args in LAYERS.items():
        (asked,) = ask(find_target(start), args[1], as_name=args[3] if "--as" in args else None)
        records[name] = asked.layer
    full_states: list[tuple[list[str], dict]] = []
    names = list(LAYERS)

    @settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.sampled_from(names), min_size=2, max_size=4, unique=True).flatmap(
        lambda chosen: st.tuples(st.just(chosen), st.permutations(chosen))))
    def orders(drawn):
        apply_order, revert_order = drawn
        work = root / "work"
        shutil.rmtree(work, ignore_errors=True)
        pkg = Path(shutil.copytree(start, work / "ultralytics"))
        target = find_target(pkg)
        applied: list[str] = []
        for name in apply_order:
            engine.apply(target, add=(records[name],))
            applied.append(name)
            _structure_ok(pkg, applied)
        full_states.append((list(apply_order), {p: b for p, b in releases.tree_bytes(pkg).items() if p.startswith("nn/")}))
        for name in revert_order:
            engine.revert(target, layer=name)
            applied.remove(name)
            _structure_ok(pkg, applied)
        assert releases.tree_bytes(pkg) == start_bytes, (apply_order, revert_order)

    orders()
    # the real builds: each example's fully applied tree, a model with every drawn layer (gen-yaml's rows, one after
    # the other), built and run by that tree's own parse_model, all of them in one child
    from mhsa_patch.modelyaml.emit import generate
    from mhsa_patch.modelyaml.request import Request
    from mhsa_patch.patching.engine import user_specs

    jobs = []
    for k, (order, files) in enumerate(full_states):
        site = root / f"full{k}"
        pkg = Path(shutil.copytree(start, site / "ultralytics"))
        for rel, data in files.items():
            (pkg / rel).write_bytes(data)
        target = find_target(pkg)
        yaml = site / "yolov8n-all.yaml"
        yaml.write_text((pkg / "cfg/models/v8/yolov8.yaml").read_text())
        for name in order:
            res = generate(target, Request(scale="n", from_yaml=str(yaml), layer=name, extra=user_specs(target)))
            yaml.write_text(res.text)
        jobs += [str(site), str(yaml)]
    r = releases.run_python(BUILD_MANY, root, *jobs, timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    built = json.loads(r.stdout.strip().splitlines()[-1])
    for (order, _), got in zip(full_states, built):
        assert {f"ultralytics.nn.modules.user_{n}.{n}" for n in order} <= set(got["modules"]), (order, got)
        assert got["grad"] > 0, (order, got)


BUILD_MANY = r"""
import json, sys
import torch

out = []
args = sys.argv[1:]
for site, path in zip(args[::2], args[1::2]):
    for name in [m for m in sys.modules if m == "ultralytics" or m.startswith("ultralytics.")]:
        del sys.modules[name]  # each tree is a package of its own: import it afresh (torch stays)
    sys.path.insert(0, site)
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(path, nc=3, verbose=False)
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    y = model(x)

    def leaves(o):
        if torch.is_tensor(o):
            return [o] if o.is_floating_point() else []
        items = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else []
        return [t for i in items for t in leaves(i)]

    sum(t.float().pow(2).mean() for t in leaves(y)).backward()
    mods = sorted({type(m).__module__ + "." + type(m).__name__ for m in model.modules() if ".user_" in type(m).__module__})
    assert all(m.startswith(site) for m in [sys.modules["ultralytics"].__file__]), sys.modules["ultralytics"].__file__
    out.append({"modules": mods, "grad": float(x.grad.norm())})
    sys.path.remove(site)
print(json.dumps(out))
"""


# -- a fork with a hand-pasted class of the same name -----------------------------------------------------------------

@pytest.mark.releases
def test_a_fork_s_hand_pasted_class_is_taken_over_with_force_or_refused_as_foreign(tmp_path):
    eca = (GALLERY / "eca.py").read_text()
    other = eca.replace("def __init__(self, channel, gamma=2, b=1):", "def __init__(self, channel, k_size=3):").replace(
        "k = adaptive_kernel(channel, gamma, b)", "k = k_size")
    line = "from ultralytics.nn.modules.ECA import ECA"
    for source, foreign in ((eca, False), (other, True)):
        site = forks.build_fork(releases.LATEST, tmp_path / ("foreign" if foreign else "same"),
                                {"nn/modules/ECA.py": source}, [line], {"ECA": forks.CHANNELS_FIRST})
        pkg = site / "ultralytics"
        fork_bytes = releases.tree_bytes(pkg)
        tasks_line = (pkg / "nn/tasks.py").read_text().splitlines().index(line) + 1
        before = releases.tree_state(pkg)
        assert_refused(cli("apply", "-t", str(pkg), "--layer", str(GALLERY / "eca.py")),
                       f"{pkg / 'nn/modules/ECA.py'}:", "without mhsa-patch's marker", "--force takes it over",
                       "--as NAME")
        assert releases.tree_state(pkg) == before
        r = cli("apply", "-t", str(pkg), "--force", "--layer", str(GALLERY / "eca.py"))
        if foreign:
            assert_refused(r, f"{pkg / 'nn/modules/ECA.py'}:", "class ECA is not the one in", "--replace-foreign")
            assert releases.tree_state(pkg) == before
            r = cli("apply", "-t", str(pkg), "--replace-foreign", "--layer", str(GALLERY / "eca.py"))
        assert r.exit_code == 0, r.output
        tasks = (pkg / "nn/tasks.py").read_text()
        assert line not in tasks and "elif m is ECA:  # mhsa-patch" in tasks and tasks.count("m is ECA") == 1
        assert (pkg / "nn/modules/ECA.py").read_text() == source  # the fork's own file is never touched
        st = json.loads(cli("status", "-t", str(pkg), "--json").stdout)
        assert st["state"] == "applied", st["notes"]
        assert cli("revert", "-t", str(pkg)).exit_code == 0
        assert releases.tree_bytes(pkg) == fork_bytes, "revert gives the fork back, its pasted pieces included"
        assert tasks_line  # the refusal above named the fork's file; its import line was there


# -- a checkpoint travels ---------------------------------------------------------------------------------------------

LOAD = r"""
import json, os, sys
import mhsa_patch.child.offline as offline
offline.install()
import torch
from mhsa_patch.child.safe_load import load_checkpoint
from ultralytics import YOLO

path = sys.argv[1]
x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
mine, _, _ = load_checkpoint(path)
theirs = YOLO(path).model.float().eval()
with torch.no_grad():
    a, b = mine(x)[0], theirs(x)[0]
print(json.dumps({"out": a.flatten()[:64].tolist(), "same": bool(torch.equal(a, b)),
                  "module": next(type(m).__module__ for m in theirs.modules() if type(m).__name__ == "ECA")}))
"""


def _pickled_globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    out, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            out.add(arg.replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            out.add(f"{strings[-2]}.{strings[-1]}")
    return out


@pytest.mark.training
def test_a_checkpoint_loads_in_another_install_after_apply_layer_of_the_same_file(trained, tmp_path):
    """Install A: the gallery fixture (a site folder, ECA applied from examples/layers/eca.py, second of six). Install
    B: a clone's layout (``clone/ultralytics/ultralytics``), run from the clone, ECA applied from a copy of the file
    elsewhere, after SimAM. The class path in the pickle is ``ultralytics.nn.modules.user_ECA.ECA`` (no path, no
    version, no order in it); B loads A's ``last.pt`` with the tool's loader and with ultralytics' own and gives A's
    numbers. Before ECA is applied in B (the patch is), the restricted loader refuses the file, naming
    ``ECA (ultralytics.nn.modules.user_ECA)`` and ``apply --layer``."""
    last = Path(trained["runs"]["ECA"]["last"])
    carried = tmp_path / "carried" / "yolov8n-ECA.pt"
    carried.parent.mkdir()
    shutil.copy(last, carried)
    assert "ultralytics.nn.modules.user_ECA.ECA" in _pickled_globals(carried)
    assert not [g for g in _pickled_globals(carried) if "eca" in g.lower() and g != "ultralytics.nn.modules.user_ECA.ECA"]

    clone = tmp_path / "clone" / "ultralytics"
    pkg = releases.copy_release(releases.LATEST, clone)
    mine = tmp_path / "my layers" / "eca.py"
    mine.parent.mkdir()
    shutil.copy(GALLERY / "eca.py", mine)
    # patched, but before the layer is applied there: the restricted loader refuses it by its exact class path
    assert run_tool("apply", cwd=clone, site=clone).returncode == 0
    r = run_tool("check", str(carried), "--imgsz", "64", "--runs", "1", "--target", str(pkg), site=clone)
    assert_refused(r, "ECA (ultralytics.nn.modules.user_ECA)", "apply --layer FILE.py")
    r = run_tool("apply", "--layer", str(GALLERY / "simam.py"), "--layer", str(mine), cwd=clone, site=clone)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(pkg) in r.stdout  # the clone's package, found from the folder it runs in
    assert (pkg / "nn/modules/user_ECA.py").read_bytes() == (trained["pkg"] / "nn/modules/user_ECA.py").read_bytes()

    results = []
    for site in (trained["pkg"].parent, clone):
        proc = __import__("subprocess").run([__import__("sys").executable, "-c", LOAD, str(carried)],
                                            env=checkout_env(site), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    a, b = results
    assert a["same"] and b["same"] and a["out"] == b["out"]
    assert a["module"] == b["module"] == "ultralytics.nn.modules.user_ECA"


# -- the data and the benchmark -----------------------------------------------------------------------------------

@pytest.mark.releases
@pytest.mark.parametrize("version", releases.MATRIX)
def test_ultralytics_names_cover_every_release(version):
    """``patches/ultralytics_names.py`` holds every name ultralytics binds where a layer's name goes (what tells a
    class ultralytics ships from a fork's): the classes and functions of nn/modules/*.py, the submodules, and what
    nn/modules/__init__.py and nn/tasks.py bind, in each release of the test matrix."""
    import ast

    from mhsa_patch.patches.ultralytics_names import STOCK_NAMES

    pkg = releases.pristine(version)
    names = set()
    for path in [*(pkg / "nn/modules").glob("*.py"), pkg / "nn/tasks.py"]:
        for node in ast.parse(path.read_bytes()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and path.name in ("__init__.py", "tasks.py"):
                names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name != "*"}
            elif isinstance(node, ast.Assign) and path.name in ("__init__.py", "tasks.py"):
                names |= {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if path.parent.name == "modules" and path.stem != "__init__":
            names.add(path.stem)
    assert names <= STOCK_NAMES, sorted(names - STOCK_NAMES)


@pytest.mark.releases
def test_the_benchmark_prints_its_ratio_against_apply(tmp_path):
    """examples/bench_layer.py on one repeat: it runs and prints both rows and the ratio (the figure itself is the
    README's, measured on an idle machine; no timing is asserted)."""
    import subprocess
    import sys

    site = releases.copy_release(releases.LATEST, tmp_path / "site").parent
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "bench_layer.py"), "--target", str(site),
                           "--repeats", "1"], env=checkout_env(site), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "baseline: mhsa-patch apply" in proc.stdout and "mhsa-patch apply --layer eca.py" in proc.stdout
    assert "target <= 1.20" in proc.stdout
    assert releases.tree_bytes(site / "ultralytics") == releases.tree_bytes(releases.pristine(releases.LATEST))
