"""The inserted BoT3 layer (BoTNet's CSP block): the reference's parameters and numbers, any size, C3's scaling rule.

The reference (``tests/reference_layers.py``) is written from the layer's spec, literally, on top of the tutorial's
MHSA and ultralytics' own ``Conv``: the classes a BoTNet fork pastes into its ``conv.py``.
"""

from __future__ import annotations

import ast
import builtins
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reference_layers import reference_module
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
LAYER_FILE = ROOT / "patches" / "bot3.py"
RULES_FILE = ROOT / "patches" / "parse_model_rules.py"
FORK_MODULE = "bot3_fork_legacy"  # where the reference classes live, as a fork's conv.py would hold them
FC1 = ("fc1.weight", "fc1.bias")


@pytest.fixture(scope="module")
def ours():
    """``patches/bot3.py`` as a module (imported lazily: it imports ultralytics, after conftest made it offline)."""
    from mhsa_patch.patches import bot3

    return bot3


@pytest.fixture(scope="module")
def ref():
    from ultralytics.nn.modules.conv import Conv

    module = reference_module(FORK_MODULE, Conv)
    yield module
    sys.modules.pop(FORK_MODULE, None)


def randomize_batchnorm(model: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics, so that eval mode tests them too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(1 + 0.5 * torch.rand(c, generator=g))


def pair(ref, ours, *args, dtype=torch.float32, seed=0, **kwargs):
    """The reference and ours built with the same arguments; ours holds the reference's weights (loaded strictly)."""
    torch.manual_seed(seed)
    reference = ref.BoT3(*args, **kwargs).to(dtype)
    randomize_batchnorm(reference, seed)
    layer = ours.BoT3(*args, **kwargs).to(dtype)
    layer.load_state_dict(reference.state_dict(), strict=True)
    return reference, layer


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def out_and_grads(model, x, g):
    x = x.detach().clone().requires_grad_(True)
    params = dict(model.named_parameters())
    out = model(x)
    grads = torch.autograd.grad(out, [x, *params.values()], g, allow_unused=True)
    return out.detach(), dict(zip(["x", *params], grads))


# (c1, c2, n, e, w, h): default and non-default e, w, h; n = 1 and 2
CONFIGS = [(32, 64, 1, 0.5, 20, 20), (32, 64, 2, 0.5, 20, 20), (48, 64, 1, 0.25, 6, 5), (64, 32, 2, 0.75, 5, 7)]


def config_kwargs(config):
    c1, c2, n, e, w, h = config
    return (c1, c2, n), dict(e=e, w=w, h=h)


# ----------------------------------------------------------------------------------------------- the same parameters


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_state_dict_and_structure_are_the_references(ref, ours, config):
    args, kwargs = config_kwargs(config)
    reference, layer = pair(ref, ours, *args, **kwargs)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes(layer) == shapes(reference)
    assert list(layer.state_dict()) == list(reference.state_dict())  # the same order, too
    types_of = lambda m: [(k, type(v).__name__) for k, v in m.named_modules()]
    assert types_of(layer) == types_of(reference)
    reference.load_state_dict(layer.state_dict(), strict=True)
    c_ = int(config[1] * config[3])
    block = layer.m[0]
    assert block.shortcut is True and block.cv2[0].pos is False and block.cv2[0].heads == 4
    assert block.cv1.conv.out_channels == c_ and block.fc1.in_features == c_ and len(layer.m) == config[2]


def test_bottleneck_state_dict_with_projection_shortcut(ref, ours):
    """Where the shortcut is a module (stride 2, or c1 != c2), the keys are the reference's, projection included."""
    for kwargs in (dict(stride=2), dict(stride=1)):
        torch.manual_seed(0)
        reference = ref.BottleneckTransformer(16, 32, heads=4, resolution=(8, 8), expansion=1, **kwargs)
        layer = ours.BottleneckTransformer(16, 32, heads=4, resolution=(8, 8), expansion=1, **kwargs)
        layer.load_state_dict(reference.state_dict(), strict=True)
        keys = set(layer.state_dict())
        assert {"shortcut.0.weight", "shortcut.0.bias", "shortcut.1.running_var", "fc1.weight"} <= keys
        assert [type(m).__name__ for m in layer.cv2] == [type(m).__name__ for m in reference.cv2]


# ----------------------------------------------------------------------------------------------- the same numbers


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_equals_reference_at_trained_grid(ref, ours, config):
    """Input H x W = the MHSA grid (w x h); float32; eval mode, then train mode on the same batch; gradients too."""
    args, kwargs = config_kwargs(config)
    reference, layer = pair(ref, ours, *args, **kwargs, seed=1)
    torch.manual_seed(2)
    x = torch.randn(2, config[0], kwargs["w"], kwargs["h"])
    g = torch.randn(2, config[1], kwargs["w"], kwargs["h"])
    for mode in ("eval", "train"):
        getattr(reference, mode)()
        getattr(layer, mode)()
        out_r, grads_r = out_and_grads(reference, x, g)
        out_o, grads_o = out_and_grads(layer, x, g)
        assert out_o.shape == (2, config[1], kwargs["w"], kwargs["h"])
        assert rel(out_o, out_r) <= 1e-5, (mode, rel(out_o, out_r))
        # the reference's fc1 is Parameters that get no gradient; ours holds it as buffers (no Parameter at all)
        assert grads_o.keys() == {k for k in grads_r if not k.endswith(FC1)}
        # Some gradients are zero but for rounding: every key bias (see the gradient test) and, in train mode, the
        # last block's value bias (a per-channel constant that cv3's batch-statistics BatchNorm removes).
        tiny = 1e-6 * max(grad.norm() for grad in grads_r.values() if grad is not None)
        for name, grad in grads_r.items():
            if name.endswith(FC1):
                assert grad is None and name not in grads_o
            elif grad.norm() < tiny:
                assert grads_o[name].norm() < tiny, (mode, name)
            else:
                assert rel(grads_o[name], grad) <= 1e-4, (mode, name, rel(grads_o[name], grad))
    # train mode updated the BatchNorm statistics alike
    torch.testing.assert_close(layer.state_dict(), reference.state_dict(), rtol=1e-5, atol=1e-6)


SIZES = [(7, 9), (3, 2), (1, 1), (16, 13), (5, 23)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs_at_any_size(ref, ours, size):
    """Off the trained grid (rectangular, smaller, larger): ours runs, and equals the reference.

    Built as the spec calls it, MHSA has no positional tables, so neither class depends on the grid: the reference
    runs here too. (The grid-bound tutorial behaviour, with positions, is covered by test_layer.py.)
    """
    reference, layer = pair(ref, ours, 32, 32, 2, w=10, h=10, dtype=torch.float64, seed=3)
    reference.eval(), layer.eval()
    torch.manual_seed(4)
    x, g = torch.randn(2, 32, *size, dtype=torch.float64), torch.randn(2, 32, *size, dtype=torch.float64)
    out_o, grads_o = out_and_grads(layer, x, g)
    out_r, grads_r = out_and_grads(reference, x, g)
    assert out_o.shape == (2, 32, *size)
    torch.testing.assert_close(out_o, out_r, rtol=1e-10, atol=1e-10)
    for name, grad in grads_r.items():
        if grad is not None:
            torch.testing.assert_close(grads_o[name], grad, rtol=1e-9, atol=1e-10, msg=name)


def test_gradients_reach_every_parameter_and_fc1_is_buffers(ours):
    """Every Parameter gets a gradient (what DDP without find_unused_parameters needs); the unused fc1 is kept as
    buffers, so it stays in the state_dict."""
    torch.manual_seed(5)
    layer = ours.BoT3(32, 64, n=2, w=6, h=5).double().eval()  # train mode's BatchNorm zeroes one more (see above)
    assert not [n for n, _ in layer.named_parameters() if n.endswith(FC1)]
    assert {f"m.{i}.{k}" for i in range(2) for k in FC1} <= {n for n, _ in layer.named_buffers()}
    assert layer.m[0].fc1.weight.dtype == torch.float64  # buffers follow .double()/.half() like Parameters
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64, requires_grad=True)
    (layer(x) * torch.randn(2, 64, 6, 5, dtype=torch.float64)).sum().backward()
    assert x.grad is not None and x.grad.norm() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("key.bias"):
            # q_n . (k_m + b) = q_n . k_m + q_n . b: the same for every key m, so the softmax cancels it (as in
            # the reference). The gradient reaches the bias and is zero up to rounding.
            assert p.grad.abs().max() < 1e-8, name
        else:
            assert p.grad.norm() > 0, name


# ----------------------------------------------------------------------------------------------- the bottleneck alone


def test_projection_shortcut_where_the_literal_reference_crashes(ref, ours):
    """A module shortcut (stride 2, or c1 != expansion * c2): the reference adds the bare x and crashes; ours adds
    ``shortcut(x)``. BoT3 never builds one (its blocks are c_ -> c_, stride 1, expansion 1)."""
    for c1, stride, size in ((16, 2, (8, 6)), (24, 1, (5, 7))):
        torch.manual_seed(6)
        reference = ref.BottleneckTransformer(c1, 16, stride=stride, resolution=size, expansion=1).double()
        layer = ours.BottleneckTransformer(c1, 16, stride=stride, resolution=size, expansion=1).double()
        layer.load_state_dict(reference.state_dict(), strict=True)
        x = torch.randn(2, c1, *size, dtype=torch.float64)
        with pytest.raises(RuntimeError):
            reference(x)
        expected = reference.shortcut(x) + reference.cv2(reference.cv1(x))
        out = layer(x)
        assert out.shape == (2, 16, size[0] // stride, size[1] // stride)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_expansion_other_than_one_fails_like_the_reference(ref, ours):
    """cv1 outputs c2 * expansion channels, MHSA takes c2: both fail at the first forward (documented, mirrored)."""
    for cls in (ref.BottleneckTransformer, ours.BottleneckTransformer):
        block = cls(16, 16, resolution=(4, 4), expansion=2)
        with pytest.raises(RuntimeError):
            block(torch.randn(1, 16, 4, 4))
    with pytest.raises(RuntimeError):
        ours.BoT3(16, 16, e2=2, w=4, h=4)(torch.randn(1, 16, 4, 4))


def test_bottleneck_defaults_and_construction(ref, ours):
    with pytest.raises(TypeError):
        ref.BottleneckTransformer(16, 16, expansion=1)  # resolution=None: the reference cannot unpack it
    block = ours.BottleneckTransformer(16, 16, expansion=1)
    assert block.cv2[0].pos is False and block(torch.randn(1, 16, 3, 5)).shape == (1, 16, 3, 5)
    with pytest.raises(ValueError, match="mhsa=True"):
        ours.BottleneckTransformer(16, 16, mhsa=False, expansion=1)
    with pytest.raises(ValueError, match="divisible by heads"):
        ours.BoT3(16, 20)  # c_ = 10 channels for 4 heads
    import inspect

    params = inspect.signature(ours.BoT3.__init__).parameters
    assert [(p, params[p].default) for p in list(params)[3:]] == [("n", 1), ("e", 0.5), ("e2", 1), ("w", 20), ("h", 20)]
    params = inspect.signature(ours.BottleneckTransformer.__init__).parameters
    assert [(p, params[p].default) for p in list(params)[3:]] == [
        ("stride", 1), ("heads", 4), ("mhsa", True), ("resolution", None), ("expansion", 4)
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------- old checkpoints


def test_pickled_fork_checkpoint_loads_into_our_classes(ref, ours, tmp_path, monkeypatch):
    """torch.save a whole model built from the reference classes; load it where the module now holds ours."""
    from ultralytics.nn.modules.conv import Conv

    torch.manual_seed(7)
    model = nn.Sequential(Conv(3, 32, 3, 2), ref.BoT3(32, 32, 2, w=6, h=5)).double().eval()
    randomize_batchnorm(model, 7)
    x = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    expected = model(x).detach()
    torch.save({"model": model}, tmp_path / "ckpt.pt")

    patched = type(sys)(FORK_MODULE)
    patched.__dict__.update(Conv=Conv, MHSA=ours.MHSA, BottleneckTransformer=ours.BottleneckTransformer, BoT3=ours.BoT3)
    monkeypatch.setitem(sys.modules, FORK_MODULE, patched)
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=False)["model"]
    assert type(loaded[1]) is ours.BoT3 and type(loaded[1].m[0]) is ours.BottleneckTransformer
    assert type(loaded[1].m[0].cv2[0]) is ours.MHSA
    # the fork's fc1 Parameters come back as buffers (unpickling converts them): same keys, same values
    assert not [n for n, _ in loaded.named_parameters() if n.endswith(FC1)]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert list(loaded.state_dict()) == list(model.state_dict())
    torch.testing.assert_close(loaded(x), expected, rtol=1e-12, atol=1e-12)
    loaded.train()(torch.randn(2, 3, 14, 22, dtype=torch.float64)).sum().backward()  # any size, with gradients


# ----------------------------------------------------------------------------------------------- drop-in host


def class_sources() -> str:
    """The ``BottleneckTransformer`` and ``BoT3`` definitions alone, as they are copied into conv.py."""
    text = LAYER_FILE.read_text()
    nodes = [n for n in ast.parse(text).body if isinstance(n, ast.ClassDef)]
    assert [n.name for n in nodes] == ["BottleneckTransformer", "BoT3"]
    return "\n\n\n".join(ast.get_source_segment(text, n) for n in nodes)


def free_names(source: str) -> set[str]:
    tree = ast.parse(source)
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in [*n.args, *n.kwonlyargs]}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return loaded - bound - set(dir(builtins))


def test_classes_use_only_the_hosts_names():
    """Besides builtins and each other, the classes name only torch, nn, Conv and MHSA (conv.py's, ours)."""
    assert free_names(class_sources()) == {"torch", "nn", "Conv", "MHSA"}
    assert "super(B" not in class_sources()


def test_classes_run_in_a_host_after_our_mhsa(ours):
    """conv.py after the engine's edit: its imports and Conv, our MHSA class, then these two classes, as text."""
    from test_layer import class_source as mhsa_class_source
    from ultralytics.nn.modules.conv import Conv

    namespace = {"__name__": "host_conv", "Conv": Conv}
    source = "import torch\nimport torch.nn as nn\n\n" + mhsa_class_source() + "\n\n\n" + class_sources() + "\n"
    exec(compile(source, "host_conv.py", "exec"), namespace)
    torch.manual_seed(8)
    layer = ours.BoT3(16, 32, 2, w=4, h=4).double().eval()
    host = namespace["BoT3"](16, 32, 2, w=4, h=4).double().eval()
    host.load_state_dict(layer.state_dict(), strict=True)
    assert type(host.m[0].cv2[0]) is namespace["MHSA"]
    for size in ((4, 4), (5, 9)):
        x = torch.randn(1, 16, *size, dtype=torch.float64)
        torch.testing.assert_close(host(x), layer(x), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------- parse_model rule

RULE_NAMES = ("ch", "f", "args", "n", "nc", "width", "max_channels", "make_divisible")


def rule_body() -> list[ast.stmt]:
    """The statements the engine pastes: the rule's body without its docstring and its return."""
    tree = ast.parse(RULES_FILE.read_text())
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "scale_like_c3"]
    assert [a.arg for a in fn.args.args] == list(RULE_NAMES)
    return [s for s in fn.body[1:] if not isinstance(s, ast.Return)]


def test_rule_body_uses_only_parse_models_names():
    body = ast.Module(body=rule_body(), type_ignores=[])
    loaded = {n.id for n in ast.walk(body) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    stored = {n.id for n in ast.walk(body) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    assert loaded - set(dir(builtins)) - {"c1", "c2"} == set(RULE_NAMES)
    assert stored == {"c1", "c2", "args", "n"}  # what parse_model reads after the branch: c2, args, n


def c3_branch(ch, f, args, n, nc, width, max_channels, make_divisible):
    """C3's arithmetic in parse_model (8.0.98 to 8.4.100: ``if c2 != nc``), written out for the comparison."""
    c1, c2 = ch[f], args[0]
    if c2 != nc:
        c2 = make_divisible(min(c2, max_channels) * width, 8)
    return c1, c2, [c1, c2, n, *args[1:]], 1


def test_rule_gives_c3s_numbers_for_yolov8s():
    from mhsa_patch.patches.parse_model_rules import scale_like_c3

    def make_divisible(x, divisor):
        import math

        return math.ceil(x / divisor) * divisor

    s = dict(nc=80, width=0.5, max_channels=1024, make_divisible=make_divisible)  # yolov8s: [0.33, 0.50, 1024]
    ch = [3, 32, 64, 128, 256, 512]
    rows = [(-1, [1024], 3), (-1, [2048], 1), (2, [100, 0.25, 1, 10, 10], 2), (-1, [80], 1), (4, [512, 0.5], 6)]
    for f, args, n in rows:
        given = list(args)
        got = scale_like_c3(ch, f, args, n, **s)
        assert got == c3_branch(ch, f, given, n, **s)
        assert args == given  # the YAML row is not mutated
    assert scale_like_c3(ch, -1, [1024], 3, **s) == (512, 512, [512, 512, 3], 1)
    assert scale_like_c3(ch, 2, [100, 0.25, 1, 10, 10], 2, **s) == (64, 56, [64, 56, 2, 0.25, 1, 10, 10], 1)
    assert scale_like_c3(ch, -1, [80], 1, **s)[1] == 80  # == nc: unscaled, as C3 up to 8.4.100


def test_rule_matches_c3_built_by_the_installed_parse_model():
    """C3 rows through the installed ultralytics' parse_model; the rule, fed the same values, gives C3's c1, c2, n."""
    from ultralytics.nn import tasks

    from mhsa_patch.patches.parse_model_rules import scale_like_c3

    depth, width, max_channels = 0.33, 0.50, 1024
    rows = [[-1, 1, "Conv", [64, 3, 2]], [-1, 3, "C3", [128]], [-1, 1, "Conv", [256, 3, 2]],
            [-1, 6, "C3", [2048]], [1, 2, "C3", [200, False, 1, 0.25]], [-1, 9, "C3", [120, True]]]  # fmt: skip
    d = {"nc": 80, "scales": {"s": [depth, width, max_channels]}, "scale": "s", "backbone": rows, "head": []}
    model, _ = tasks.parse_model(copy.deepcopy(d), ch=3, verbose=False)  # it may edit the rows it reads
    outs = [m.cv3.conv.out_channels if hasattr(m, "cv3") else m.conv.out_channels for m in model]
    for i, (f, n, name, args) in enumerate(rows):
        if name != "C3":
            continue
        n = max(round(n * depth), 1) if n > 1 else n  # parse_model's depth gain, before the branch
        got = scale_like_c3(outs[:i], f, list(args), n, 80, width, max_channels, tasks.make_divisible)
        c1, c2, new_args, new_n = got
        built = model[i]
        expected = (built.cv1.conv.in_channels, built.cv3.conv.out_channels, len(built.m), 1)
        assert (c1, c2, new_args[2], new_n) == expected


@pytest.mark.releases
@pytest.mark.parametrize("version", ["8.0.98", "8.0.200", "8.0.239", "8.1.47", "8.2.103", "8.3.150", "8.4.190"])
def test_rule_names_exist_in_parse_model_of_each_release(version):
    """Every name the pasted body reads is a local of that release's parse_model or a module-level name of tasks.py."""
    import releases

    tree = ast.parse((releases.pristine(version) / "nn" / "tasks.py").read_text(encoding="utf-8"))
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_model"]
    local = {a.arg for a in fn.args.args} | {
        n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    imported = {(a.asname or a.name) for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert set(RULE_NAMES) - {"make_divisible"} <= local
    assert "make_divisible" in imported and "make_divisible" not in local


# ----------------------------------------------------------------------------------------------- benchmark smoke


def test_benchmark_quick_runs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "bench_bot3.py"), "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "time ratio" in proc.stdout and "| quick" in proc.stdout and "threads=" in proc.stdout
