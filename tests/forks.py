"""Fork-shaped ultralytics packages for the tests, built from real release copies (no third-party fork code).

Checkpoints trained on ultralytics forks pickle the fork's own classes under the fork's module paths, e.g. the
tutorial's MHSA as ``ultralytics.nn.modules.MHSA.MHSA`` or ``ultralytics.nn.Addmodules.Attention.MHSA``. To get
such checkpoints without any fork, :func:`build_fork` copies a release and adds what a fork adds, with plain text
edits: module files inside the package, an import of their classes in ``nn/tasks.py`` (after its imports) and a
``parse_model`` branch per class (before the chain's final ``else: c2 = ch[f]``). :func:`save_checkpoint` then
builds a model from a YAML in a child against the fork and saves a checkpoint in ultralytics' trainer format plus
the model's output on a fixed input.

The builder is generic: any files (a module imported by name, a package whose ``__init__`` star-imports its
modules, a module that ``nn/modules/__init__.py`` imports ...), any import lines, any classes with branches.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickletools
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import releases
from helpers import checkout_env
from reference_layers import TUTORIAL_SOURCE

ROOT = Path(__file__).resolve().parent.parent

# The tutorial's class in a module file of its own, as forks keep it.
TUTORIAL_MODULE = "import torch\nimport torch.nn as nn\n\n" + TUTORIAL_SOURCE.lstrip("\n")

# A class also named MHSA, as other forks write it: torch's nn.MultiheadAttention over the flattened positions plus
# an output projection. Same YAML arguments, other parameters: it must not be mistaken for the tutorial's.
MULTIHEAD_MODULE = '''import torch
import torch.nn as nn


class MHSA(nn.Module):
    def __init__(self, n_dims, width=14, height=14, heads=4, pos_emb=False):
        super().__init__()
        self.heads = heads
        self.attn = nn.MultiheadAttention(n_dims, heads, batch_first=True)
        self.proj = nn.Linear(n_dims, n_dims)

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = self.proj(self.attn(t, t, t, need_weights=False)[0])
        return t.transpose(1, 2).reshape(b, c, h, w)
'''

# Two custom blocks of the kind forks add (channel-preserving, written here for the tests).
SHUFFLE_ATTENTION_MODULE = '''import torch
import torch.nn as nn


class ShuffleAttention(nn.Module):
    def __init__(self, channel, groups=4):
        super().__init__()
        self.groups = groups
        self.gate = nn.Conv2d(channel, channel, 1, groups=groups)

    def forward(self, x):
        return x * torch.sigmoid(self.gate(x))
'''

BIFPN_MODULE = '''import torch
import torch.nn as nn


class BiFPN(nn.Module):
    def __init__(self, length):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(length, dtype=torch.float32))
        self.epsilon = 1e-4

    def forward(self, xs):
        w = torch.relu(self.weight)
        w = w / (w.sum() + self.epsilon)
        return sum(wi * xi for wi, xi in zip(w, xs))
'''

# parse_model branch for a layer whose first argument is its input channel count (MHSA's n_dims).
CHANNELS_FIRST = "c2 = ch[f]\nargs = [c2, *args]"


def module_file(module: str) -> str:
    """``ultralytics.nn.Addmodules.Attention`` -> ``nn/Addmodules/Attention.py`` (relative to the package)."""
    parts = module.split(".")
    assert parts[0] == "ultralytics" and len(parts) > 1, module
    return "/".join(parts[1:]) + ".py"


def _insert_imports(text: str, lines: list[str]) -> str:
    """``lines`` after the last top-level import that precedes the first def/class of ``nn/tasks.py``."""
    tree = ast.parse(text)
    last = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            break
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
            isinstance(node, ast.Try) and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in node.body)
        ):
            last = node
    assert last is not None, "nn/tasks.py: no top-level import"
    src = text.splitlines(keepends=True)
    return "".join(src[: last.end_lineno] + [ln + "\n" for ln in lines] + src[last.end_lineno :])


def _test(key: str) -> str:
    """``MHSA`` -> ``m is MHSA``; a key with a space is a test as written (``m in {MHSA, ShuffleAttention}``)."""
    return key if " " in key else f"m is {key}"


def _main_chain_line(fn: ast.FunctionDef) -> int:
    """0-based line of the ``if`` that heads ``parse_model``'s chain ending in ``else: c2 = ch[f]``."""
    for loop in fn.body:
        if isinstance(loop, ast.For):
            for node in loop.body:
                tail = node
                while isinstance(tail, ast.If) and len(tail.orelse) == 1 and isinstance(tail.orelse[0], ast.If):
                    tail = tail.orelse[0]
                if isinstance(tail, ast.If) and tail.orelse and ast.unparse(tail.orelse[0]) == "c2 = ch[f]":
                    return node.lineno - 1
    raise AssertionError("parse_model: main chain not found")


def _insert_second_chain(text: str, branches: dict[str, str]) -> str:
    """A separate ``if``/``elif`` chain (one branch per entry) just before ``parse_model``'s main chain."""
    tree = ast.parse(text)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model")
    at = _main_chain_line(fn)
    src = text.splitlines(keepends=True)
    indent = src[at][: len(src[at]) - len(src[at].lstrip())]
    new = []
    for k, (key, body) in enumerate(branches.items()):
        new.append(f"{indent}{'el' if k else ''}if {_test(key)}:\n")
        new += [f"{indent}    {ln}\n" for ln in body.splitlines()]
    return "".join(src[:at] + new + src[at:])


def _insert_branches(text: str, branches: dict[str, str]) -> str:
    """One ``elif m is NAME:`` per entry (``elif TEST:`` for a key that is a test, see :func:`_test`), before
    ``parse_model``'s final ``else: c2 = ch[f]``."""
    tree = ast.parse(text)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model")
    src = text.splitlines(keepends=True)
    hits = [
        i
        for i in range(fn.lineno - 1, fn.end_lineno - 1)
        if re.fullmatch(r"\s*else:\s*", src[i]) and re.fullmatch(r"\s*c2 = ch\[f\]\s*", src[i + 1])
    ]
    assert len(hits) == 1, f"parse_model: {len(hits)} 'else: c2 = ch[f]' lines"
    at = hits[0]
    indent = src[at][: len(src[at]) - len(src[at].lstrip())]
    new = []
    for name, body in branches.items():
        new.append(f"{indent}elif {_test(name)}:\n")
        new += [f"{indent}    {ln}\n" for ln in body.splitlines()]
    return "".join(src[:at] + new + src[at:])


def build_fork(
    version: str,
    root: Path,
    files: dict[str, str],
    tasks_imports: list[str],
    branches: dict[str, str] | None = None,
    edits: dict[str, list[tuple[str, str]]] | None = None,
    second_chain: dict[str, str] | None = None,
) -> Path:
    """A copy of release ``version`` under ``root/site`` turned into a fork; returns the site (holds ultralytics/).

    ``files``: package-relative path -> text (new folders get an empty ``__init__.py`` unless given one);
    ``tasks_imports``: lines added to ``nn/tasks.py`` after its imports; ``branches``: class name -> the body of its
    ``parse_model`` branch (see :data:`CHANNELS_FIRST`); ``edits``: package-relative path -> ``(old, new)``
    replacements, each of which must match exactly once (e.g. an import added to ``nn/modules/__init__.py``);
    ``second_chain``: like ``branches``, as a separate ``if`` chain placed before ``parse_model``'s main one.
    Every file touched is checked to compile.
    """
    pkg = releases.copy_release(version, Path(root) / "site")
    touched = []
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        touched.append(path)
        folder = path.parent
        while folder != pkg:
            init = folder / "__init__.py"
            if not init.exists() and str(init.relative_to(pkg)) not in files:
                init.write_text("")
            folder = folder.parent
    for rel, pairs in (edits or {}).items():
        path = pkg / rel
        text = path.read_text()
        for old, new in pairs:
            assert text.count(old) == 1, f"{rel}: {old!r} occurs {text.count(old)} times"
            text = text.replace(old, new)
        path.write_text(text)
        touched.append(path)
    tasks = pkg / "nn" / "tasks.py"
    text = _insert_imports(tasks.read_text(), tasks_imports)
    if branches:
        text = _insert_branches(text, branches)
    if second_chain:
        text = _insert_second_chain(text, second_chain)
    tasks.write_text(text)
    touched.append(tasks)
    for path in touched:
        compile(path.read_text(), str(path), "exec")
    return pkg.parent


def mhsa_files(module: str, source: str = TUTORIAL_MODULE, star: bool = False) -> tuple[dict[str, str], str]:
    """``(files, import line)`` for an MHSA class in ``module``. ``star``: the module's package ``__init__``
    star-imports it and ``nn/tasks.py`` star-imports the package (the Addmodules style); otherwise tasks imports
    MHSA from the module by name."""
    files = {module_file(module): source}
    package, _, leaf = module.rpartition(".")
    if star:
        files[module_file(package)[: -len(".py")] + "/__init__.py"] = f"from .{leaf} import *\n"
        return files, f"from {package} import *"
    return files, f"from {module} import MHSA"


def mhsa_fork(version: str, root: Path, shapes: list[tuple[str, bool]], source: str = TUTORIAL_MODULE,
              files: dict[str, str] | None = None) -> Path:
    """A fork of ``version`` holding an MHSA module for each ``(module, star)`` of ``shapes`` (see
    :func:`mhsa_files`), plus ``files``; ``nn/tasks.py`` imports MHSA the first shape's way and gets its branch.
    A checkpoint of another shape comes from :func:`save_checkpoints` with ``"layer"`` (parse_model then uses that
    module's class, as it would in a fork importing from there), so one site, imported once, serves every shape."""
    all_files, first_import = {}, None
    for module, star in shapes:
        more, line = mhsa_files(module, source, star)
        all_files.update(more)
        first_import = first_import or line
    all_files.update(files or {})
    return build_fork(version, root, all_files, [first_import], {"MHSA": CHANNELS_FIRST})


def write_mhsa_yaml(site: Path, dest_dir: Path, pos_emb: bool = False, imgsz: int = 256) -> Path:
    """yolov8n with MHSA after SPPF, written by the tool's generator from the site's own ``yolov8.yaml``."""
    from mhsa_patch.modelyaml.emit import generate
    from mhsa_patch.modelyaml.request import Request
    from mhsa_patch.patching.target import find_target

    res = generate(find_target(site), Request(scale="n", pos_emb=pos_emb, imgsz=imgsz))
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / res.file_name
    path.write_text(res.text)
    return path


SAVE = r"""
import importlib
import json
import sys
from copy import deepcopy
from datetime import datetime

import numpy as np
import torch
import ultralytics
import ultralytics.nn.tasks as tasks
from ultralytics.nn.tasks import DetectionModel

try:
    from ultralytics.cfg import get_cfg
except ImportError:  # releases before 8.0.1xx
    from ultralytics.yolo.cfg import get_cfg

done = []
for job in json.loads(sys.argv[1]):
    if job.get("layer"):  # what parse_model finds when nn/tasks.py imports MHSA from this module
        tasks.MHSA = importlib.import_module(job["layer"]).MHSA
    torch.manual_seed(job["seed"])
    model = DetectionModel(job["cfg"], nc=3, verbose=False)
    exec(job["extra"])  # the caller's changes to `model` (e.g. a fork's extra blocks)
    args = get_cfg()
    model.args = args  # what the trainer attaches: an IterableSimpleNamespace
    model.names = {0: "a", 1: "b", 2: "c"}
    model = model.half().float().eval()  # the numbers the FP16 checkpoint holds, run in FP32
    s, out = job["imgsz"], job["out"]
    x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(job["seed"] + 1))
    with torch.no_grad():
        y = model(x)
    y = y[0] if isinstance(y, (list, tuple)) else y
    np.save(out + ".input.npy", x.numpy())
    np.save(out + ".output.npy", y.numpy())
    # ultralytics' trainer format (save_model): the model and its EMA in FP16, train_args as a dict, numpy metrics
    ckpt = {
        "epoch": 0,
        "best_fitness": np.float64(0.5),
        "model": deepcopy(model).half(),
        "ema": deepcopy(model).half(),
        "updates": 1,
        "optimizer": None,
        "train_args": vars(args),
        "train_metrics": {"fitness": np.float64(0.5)},
        "date": datetime.now().isoformat(),
        "version": ultralytics.__version__,
    }
    torch.save(ckpt, out)
    done.append({type(m).__name__: type(m).__module__ for m in model.model}.get("MHSA"))
print(json.dumps(done))
"""


def save_checkpoints(site: Path, jobs: list[dict]) -> list[dict]:
    """Build models against the ultralytics under ``site`` and save each in ultralytics' trainer format, with its
    reference output: one child for all jobs (importing a fresh release copy costs seconds).

    A job: ``{"cfg": YAML path or name, "out": checkpoint path}`` and optionally ``"layer"`` (the module whose
    ``MHSA`` parse_model uses: what a fork gets when ``nn/tasks.py`` imports it from there), ``"extra"`` (Python run
    with the built ``model`` in scope), ``"imgsz"`` (256) and ``"seed"`` (0). Returns per job ``{"ckpt", "input",
    "output", "layer_module"}``: the checkpoint, the ``.npy`` input (1x3xSxS, seeded) and the model's first output
    on it in eval mode (FP32 from the FP16-rounded weights the checkpoint holds), and the module of its MHSA class.
    """
    full = [{"layer": None, "extra": "", "imgsz": 256, "seed": 0, **j, "cfg": str(j["cfg"]), "out": str(j["out"])}
            for j in jobs]
    proc = releases.run_python(SAVE, site, json.dumps(full), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return [
        {"ckpt": Path(j["out"]), "input": Path(j["out"] + ".input.npy"), "output": Path(j["out"] + ".output.npy"),
         "layer_module": m}
        for j, m in zip(full, modules)
    ]


def pickle_globals(path: Path) -> set[str]:
    """The ``module.name`` globals a ``torch.save`` file's pickle names (protocol 2's GLOBAL opcodes), unexecuted."""
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(io.BytesIO(data)) if op.name == "GLOBAL"}


def run_child(code: str, site: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=checkout_env(site), capture_output=True, text=True, timeout=timeout
    )


def last_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# A small detection model with one custom layer (LAYER: "repeats, module, args") after the backbone's last Conv.
# Depth 1.0, so that a row's repeats are built as written (a 3-repeat BoT3 row stays 3).
MODEL = """nc: 3
scales:
  n: [1.0, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, LAYER]
head:
  - [[2, 4], 1, Detect, [nc]]
"""

# Builds each job's YAMLs against the ultralytics under the job's site, one site after the other in one interpreter
# (torch is imported once; each site's ultralytics is imported afresh): what makes two builds the same model
# (parameter count, state_dict keys and shapes), the trainable parameters, and the module of each MHSA. A job's
# "extra" is code run after its last build, with `model`, `mhsa`, `out` and `torch` in scope.
BUILD_SITES = r"""
import importlib, json, sys, traceback
import torch

results = []
for job in json.loads(sys.argv[1]):
    for name in [k for k in sys.modules if k == "ultralytics" or k.startswith("ultralytics.")]:
        del sys.modules[name]
    sys.path.insert(0, job["site"])
    importlib.invalidate_caches()
    out = []
    try:
        from ultralytics.nn.tasks import DetectionModel

        for cfg in job["cfgs"]:
            torch.manual_seed(0)
            try:
                model = DetectionModel(cfg, nc=3, verbose=False)
            except Exception as e:  # a model the site does not build: said per config
                out.append({"error": f"{type(e).__name__}: {e}"})
                continue
            mhsa = [m for m in model.modules() if type(m).__name__ == "MHSA"]
            # BoT3's unused fc1 counts whether a Parameter (forks) or a buffer with the same keys
            fc1 = sum(b.numel() for k, b in model.named_buffers() if ".fc1." in k)
            trainable = sum(p.numel() for p in model.parameters())
            out.append({"params": trainable + fc1, "trainable": trainable,
                        "state": {k: list(v.shape) for k, v in model.state_dict().items()},
                        "mhsa": [(type(m).__module__, hasattr(m, "_attend_fused")) for m in mhsa]})
        exec(job["extra"])
        results.append(out)
    except Exception:
        results.append({"error": traceback.format_exc()[-4000:]})
    finally:
        sys.path.remove(job["site"])
print(json.dumps(results))
"""


def _build_env(sites: list[Path]) -> dict[str, str]:
    """A child's environment for :data:`BUILD_SITES`: the side packages on PYTHONPATH, no site (each job puts its
    own first on sys.path), and no bytecode written into the trees (a tree's bytes are compared before and after)."""
    env = releases.release_env(Path(sites[0]))
    paths = env["PYTHONPATH"].split(os.pathsep)
    env["PYTHONPATH"] = os.pathsep.join(paths[1:])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Builds:
    """A :data:`BUILD_SITES` child started in the background; :meth:`result` waits for it."""

    def __init__(self, jobs: list[dict], folder: Path):
        self.jobs = [{"site": str(j["site"]), "cfgs": [str(c) for c in j["cfgs"]], "extra": j.get("extra", "")}
                     for j in jobs]
        folder.mkdir(parents=True, exist_ok=True)
        self.out, self.err = folder / "stdout", folder / "stderr"
        self.proc = None
        if not self.jobs:
            return
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", BUILD_SITES, json.dumps(self.jobs)],
                env=_build_env([j["site"] for j in self.jobs]), cwd=folder, stdout=o, stderr=e, text=True,
            )

    def result(self, timeout: float = 600) -> list:
        """Per job: a list of per-config results (``{"error": ...}`` for a config that does not build, plus what
        the job's extra code appended), or ``{"error": traceback}`` where the site does not import."""
        if self.proc is None:
            return []
        self.proc.wait(timeout=timeout)
        stdout, stderr = self.out.read_text(), self.err.read_text()
        assert self.proc.returncode == 0, stderr[-4000:]
        results = json.loads(stdout.strip().splitlines()[-1])
        assert len(results) == len(self.jobs)
        return results


def build_sites(jobs: list[dict], folder: Path) -> list:
    """Build every job's configs (``{"site", "cfgs", "extra"}``) in one child; see :meth:`Builds.result`."""
    assert all(j["cfgs"] for j in jobs), "no model config to build: a fork test must build at least one"
    return Builds(jobs, folder).result()


def build_models(site: Path, cfgs: list, extra: str = "") -> list[dict]:
    """Build every config in one child against the ultralytics under ``site``: per config ``{"params" (BoT3's fc1
    counted, Parameter or buffer), "trainable", "state" (state_dict key -> shape), "mhsa" ([module, fused] of each
    MHSA)}``; ``extra``: code run in the child before it prints. An empty list is a test's mistake."""
    assert cfgs, "no model config to build: a fork test must build at least one before and after"
    (out,) = build_sites([{"site": site, "cfgs": cfgs, "extra": extra}], Path(tempfile.mkdtemp(prefix="builds-")))
    assert isinstance(out, list), out["error"]
    for r in out[: len(cfgs)]:
        assert "error" not in r, r["error"]
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Fork trees shared by the session: each shape built once, patched once, its models built before and after in batches
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A fork shape: how it is built, what apply needs, the models that must keep building.

    ``rows``: models that build on the fork and must build the same after apply: a row of :data:`MODEL`
    (``"1, MHSA, [14, 14, 4]"``) or a YAML of the fork's package (``"cfg/models/v8/fork-MHSA.yaml"``), built where it
    is; ``new_rows``: models that build only after apply; ``model``: the template rows go into (a fork that reads
    other scale rows has its own); ``extra``: code run in the after-build child (see :data:`BUILD_SITES`)."""

    build: Callable[[Path], Path]  # root -> the site (the folder holding ultralytics/)
    flags: tuple[str, ...] = ("--force",)  # what apply needs here (() where plain apply patches it)
    rows: tuple[str, ...] = ()
    new_rows: tuple[str, ...] = ()
    model: str = MODEL
    extra: str = ""


@dataclass
class Tree:
    """One shape, built: ``site``/``pkg`` the fork as built (never written: tests run read-only commands on it and
    check it stays ``fork``), ``applied_site``/``applied_pkg`` a copy patched by ``apply`` with the shape's flags
    (``applied_by`` the CLI result; ``applied`` its bytes right after), and the builds of ``cfgs`` on the fork
    (``before``) and of ``applied_cfgs + new_cfgs`` on the patched copy (``after``)."""

    name: str
    shape: Shape
    site: Path
    fork: dict
    cfgs: list
    applied_site: Path | None = None
    applied_cfgs: list = field(default_factory=list)
    new_cfgs: list = field(default_factory=list)
    applied_by: object = None
    applied: dict = field(default_factory=dict)
    before: object = None
    after: object = None

    @property
    def pkg(self) -> Path:
        return self.site / "ultralytics"

    @property
    def applied_pkg(self) -> Path:
        return self.applied_site / "ultralytics"

    def applied_copy(self, dest: Path) -> Path:
        """A copy of the patched package (journal included) for a test that writes: returns its package folder."""
        shutil.copytree(self.applied_pkg, Path(dest) / "ultralytics")
        return Path(dest) / "ultralytics"

    def built(self, which: str) -> list:
        """``before`` or ``after`` (builds of ``cfgs`` / of ``applied_cfgs + new_cfgs``), each model built."""
        out = getattr(self, which)
        assert isinstance(out, list), f"{self.name}: the site does not import ({which}): {out['error']}"
        for cfg, r in zip(self.cfgs + self.new_cfgs, out):
            assert "error" not in r, f"{self.name}: {cfg} does not build ({which}): {r['error']}"
        return out


def write_models(dest: Path, rows, pkg: Path, template: str = MODEL, prefix: str = "fork") -> list[str]:
    """A config per row (a row that names a YAML of the fork's package is that file, built where it is)."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, row in enumerate(rows):
        if row.endswith(".yaml"):
            paths.append(str(pkg / row))
            continue
        path = dest / f"{prefix}{k}.yaml"
        path.write_text(template.replace("LAYER", row))
        paths.append(str(path))
    return paths


class ForkTrees:
    """Every fork shape a session's tests ask for, built once (see :class:`Tree`). The first use builds them all
    together: the forks, then the copies patched in-process while one child builds every fork's models, then one
    child builds every patched copy's models (torch imported twice in all, not twice per shape)."""

    def __init__(self, root: Path, shapes: dict[str, Shape]):
        self.root, self.shapes, self.trees = Path(root), shapes, {}

    def __getitem__(self, name: str) -> Tree:
        if name not in self.trees:
            self.prepare([name])
        return self.trees[name]

    def prepare(self, names) -> None:
        from helpers import cli

        todo = [n for n in dict.fromkeys(names) if n not in self.trees]
        if not todo:
            return
        new = []
        for name in todo:
            shape = self.shapes[name]
            folder = self.root / name
            site = shape.build(folder / "fork")
            pkg = site / "ultralytics"
            cfgs = write_models(folder / "models", shape.rows, pkg, shape.model)
            new.append(Tree(name, shape, site, releases.tree_bytes(pkg), cfgs))
        built = [t for t in new if t.cfgs or t.shape.new_rows]  # a stock tree for gen-yaml has no models of its own
        before = Builds([{"site": t.site, "cfgs": t.cfgs} for t in built], self.root / f".before-{len(self.trees)}")
        for t in new:
            t.applied_site = self.root / t.name / "applied"
            shutil.copytree(t.site, t.applied_site, symlinks=True)
            t.applied_cfgs = [c.replace(str(t.pkg), str(t.applied_pkg)) for c in t.cfgs]
            t.new_cfgs = write_models(self.root / t.name / "models", t.shape.new_rows, t.applied_pkg, t.shape.model,
                                      prefix="after")
            t.applied_by = cli("apply", *t.shape.flags, "-t", str(t.applied_pkg))
            t.applied = releases.tree_bytes(t.applied_pkg)
        after = Builds([{"site": t.applied_site, "cfgs": t.applied_cfgs + t.new_cfgs, "extra": t.shape.extra}
                        for t in built], self.root / f".after-{len(self.trees)}")
        for t, b, a in zip(built, before.result(), after.result()):
            t.before, t.after = b, a
        for t in new:
            self.trees[t.name] = t


def asked_for(items, fixture: str = "fork_trees") -> list:
    """The shapes these collected tests, those that use ``fixture``, name in their ``shape`` parameter (a name or a
    tuple)."""
    names = []
    for item in items:
        if fixture not in getattr(item, "fixturenames", ()):
            continue
        spec = getattr(item, "callspec", None)
        shape = spec.params.get("shape") if spec is not None else None
        names += [shape] if isinstance(shape, str) else list(shape or ())
    return names


# ----------------------------------------------------------------------------------------------------------------------
# What some forks carry besides their code
# ----------------------------------------------------------------------------------------------------------------------


def to_crlf(pkg: Path) -> None:
    """Every ``.py`` file of the package with Windows line endings (a fork checked out with ``core.autocrlf``)."""
    for path in pkg.rglob("*.py"):
        data = path.read_bytes()
        path.write_bytes(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def commit_pycache(pkg: Path, rels) -> list[str]:
    """``__pycache__`` bytecode of these package files, as a fork that committed its ``__pycache__`` folders ships
    it: compiled from the sources as they are (timestamp-checked, so valid until a source changes). Returns the
    package-relative paths of the ``.pyc`` files."""
    import importlib.util
    import py_compile

    out = []
    for rel in rels:
        src = pkg / rel
        pyc = Path(importlib.util.cache_from_source(str(src)))
        py_compile.compile(str(src), cfile=str(pyc), doraise=True)
        out.append(str(pyc.relative_to(pkg)))
    return out
