"""The inserted MHSA layer: the tutorial's numbers, positions at any size, the heads check, speed paths, autocast.

The reference is written from the issue's formula, independently of the layer's code:
``logit[n, m] = q_n . k_m (+ r_n . q_m)``, softmax over ``m``, ``out_n = sum_m softmax[n, m] v_m``; its positional
table ``r`` is resized with an interpolation matrix built by hand from the half-pixel (``align_corners=False``) rule.
"""

from __future__ import annotations

import ast
import io
import math
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from mhsa_patch.patches.mhsa import MHSA
import reference_layers  # the tutorial's class, verbatim: trained checkpoints come from it

ROOT = Path(__file__).resolve().parent.parent
LAYER_FILE = ROOT / "patches" / "mhsa.py"

TUTORIAL_ATTRIBUTES = {"heads", "pos", "softmax", "query", "key", "value", "rel_h_weight", "rel_w_weight"}


@pytest.fixture(scope="module")
def tutorial_module():
    """A real module (picklable by reference, like ultralytics.nn.modules.conv) that holds the tutorial's class."""
    module = reference_layers.tutorial_module("mhsa_tutorial_legacy")
    yield module
    sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module")
def Tutorial(tutorial_module):
    return tutorial_module.MHSA


# ----------------------------------------------------------------------------------------------- the reference


def interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) linear-interpolation weights, half-pixel centres, clamped at the borders."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[i, i0] += 1 - lam
        m[i, i1] += lam
    return m


def reference_positions(layer, h: int, w: int) -> torch.Tensor:
    """r as (heads, d, h*w): rel_w_weight's axis runs along H (rows), rel_h_weight's along W (columns)."""
    rows = layer.rel_w_weight[0, :, :, :, 0]  # (heads, d, width)
    cols = layer.rel_h_weight[0, :, :, 0, :]  # (heads, d, height)
    rows = rows @ interp_matrix(rows.shape[-1], h).to(rows).T  # (heads, d, h)
    cols = cols @ interp_matrix(cols.shape[-1], w).to(cols).T  # (heads, d, w)
    return (rows[..., :, None] + cols[..., None, :]).reshape(rows.shape[0], rows.shape[1], h * w)


def reference(layer, x: torch.Tensor) -> torch.Tensor:
    """The issue's formula, written out with explicit indices."""
    b, c, h, w = x.shape
    heads = layer.heads
    d, n = c // heads, h * w

    def project(conv):
        y = torch.einsum("oi,bihw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias[None, :, None, None]
        return y.reshape(b, heads, d, n)  # head i owns channels [i*d, (i+1)*d), tokens row-major

    q, k, v = project(layer.query), project(layer.key), project(layer.value)
    logits = torch.einsum("bhdn,bhdm->bhnm", q, k)  # q_n . k_m, no 1/sqrt(d)
    if layer.pos:
        r = reference_positions(layer, h, w)
        logits = logits + torch.einsum("hdn,bhdm->bhnm", r, q)  # r_n . q_m
    attention = torch.softmax(logits, dim=-1)
    out = torch.einsum("bhnm,bhdm->bhdn", attention, v)
    return out.reshape(b, c, h, w)


def outputs_and_grads(layer, fn, x, grad_out):
    """fn(x) and the gradients of <fn(x), grad_out> w.r.t. x and every parameter of ``layer``."""
    x = x.detach().clone().requires_grad_(True)
    params = dict(layer.named_parameters())
    out = fn(x)
    grads = torch.autograd.grad(out, [x, *params.values()], grad_out)
    return out.detach(), dict(zip(["x", *params], grads))


def make(c=16, width=6, height=5, heads=4, pos=True, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    layer = MHSA(c, width, height, heads, pos).to(dtype)
    if pos:  # the tutorial's randn tables make near one-hot attention; keep the test sensitive to every term
        with torch.no_grad():
            layer.rel_h_weight.mul_(0.3)
            layer.rel_w_weight.mul_(0.3)
    return layer


# ----------------------------------------------------------------------------------------------- the same numbers


@pytest.mark.parametrize("pos", [False, True])
def test_state_dict_is_the_tutorials(Tutorial, pos):
    ours, tutorial = MHSA(32, 7, 5, 4, pos), Tutorial(32, 7, 5, 4, pos)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in tutorial.state_dict().items()}
    expected = {f"{p}.{s}" for p in ("query", "key", "value") for s in ("weight", "bias")}
    if pos:
        expected |= {"rel_h_weight", "rel_w_weight"}
        assert ours.rel_h_weight.shape == (1, 4, 8, 1, 5) and ours.rel_w_weight.shape == (1, 4, 8, 7, 1)
    assert set(ours.state_dict()) == expected
    assert ours.query.kernel_size == (1, 1) and ours.query.bias is not None
    assert isinstance(ours.softmax, nn.Softmax) and ours.softmax.dim == -1
    assert ours.heads == 4 and ours.pos is pos
    ours.load_state_dict(tutorial.state_dict(), strict=True)
    tutorial.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("pos", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_tutorial_at_trained_grid(Tutorial, pos, dtype, tol):
    """At H == width and W == height (rectangular on purpose), the tutorial's numbers, gradients included."""
    torch.manual_seed(1)
    tutorial = Tutorial(16, 6, 5, 4, pos).to(dtype)
    ours = MHSA(16, 6, 5, 4, pos).to(dtype)
    ours.load_state_dict(tutorial.state_dict())
    x, g = torch.randn(2, 16, 6, 5, dtype=dtype), torch.randn(2, 16, 6, 5, dtype=dtype)
    out_t, grads_t = outputs_and_grads(tutorial, tutorial, x, g)
    out_o, grads_o = outputs_and_grads(ours, ours, x, g)
    torch.testing.assert_close(out_o, out_t, rtol=tol, atol=tol)
    assert grads_o.keys() == grads_t.keys()
    for name in grads_t:
        torch.testing.assert_close(grads_o[name], grads_t[name], rtol=tol, atol=tol, msg=name)


SIZES = [(6, 5), (5, 6), (9, 13), (20, 20), (3, 2), (1, 1), (1, 7), (7, 1), (2, 11)]


@pytest.mark.parametrize("pos", [False, True])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_equals_formula_at_any_size(pos, size):
    """Outputs and gradients (input and every parameter) equal the formula, positions resized to H x W."""
    layer = make(pos=pos)
    torch.manual_seed(2)
    x, g = torch.randn(2, 16, *size, dtype=torch.float64), torch.randn(2, 16, *size, dtype=torch.float64)
    out, grads = outputs_and_grads(layer, layer, x, g)
    out_ref, grads_ref = outputs_and_grads(layer, lambda t: reference(layer, t), x, g)
    assert out.shape == x.shape
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-10, atol=1e-10, msg=name)

    # float32, the layer's working precision, against the float64 formula
    layer32 = make(pos=pos, dtype=torch.float32)
    out32, grads32 = outputs_and_grads(layer32, layer32, x.float(), g.float())
    torch.testing.assert_close(out32, out_ref.float(), rtol=1e-4, atol=1e-5)
    for name in grads_ref:
        torch.testing.assert_close(grads32[name], grads_ref[name].float(), rtol=1e-4, atol=1e-4, msg=name)


def test_positions_resize_each_table_along_its_own_axis():
    """rel_w_weight (size width) follows H, rel_h_weight (size height) follows W; the trained grid is untouched."""
    layer = make(c=8, width=4, height=3, heads=2)
    r = layer._positions(4, 3)  # (1, heads, N, d), trained grid
    expected = (layer.rel_h_weight + layer.rel_w_weight).reshape(1, 2, 4, 12).transpose(2, 3)
    assert torch.equal(r, expected)
    for h, w in [(8, 3), (4, 9), (2, 1), (1, 1), (3, 4)]:
        r = layer._positions(h, w)
        assert r.shape == (1, 2, h * w, 4)
        torch.testing.assert_close(r[0].transpose(1, 2), reference_positions(layer, h, w), rtol=1e-12, atol=1e-12)


def test_tutorial_breaks_off_grid_and_ours_does_not(Tutorial):
    """Regression guard for the defects fixed: the tutorial crashes above its grid, and mis-slices below it."""
    torch.manual_seed(3)
    tutorial = Tutorial(16, 14, 14, 4, True).double()
    ours = MHSA(16, 14, 14, 4, True).double()
    ours.load_state_dict(tutorial.state_dict())
    with pytest.raises((AssertionError, RuntimeError)):
        tutorial(torch.randn(1, 16, 20, 20, dtype=torch.float64))
    x = torch.randn(1, 16, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(ours, x))
    assert not torch.allclose(tutorial(x), ours(x))  # the tutorial takes the first 49 of 196 positions


def test_no_scaling_and_query_position_term():
    """The two kept quirks, checked on a case small enough to write by hand (one head, one channel, two tokens)."""
    layer = MHSA(1, width=1, height=2, heads=1, pos_emb=True).double()
    with torch.no_grad():
        for conv in (layer.query, layer.key, layer.value):
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        layer.query.weight.fill_(2.0)
        layer.rel_w_weight.zero_()
        layer.rel_h_weight.copy_(torch.tensor([0.5, -1.0]).reshape(1, 1, 1, 1, 2))
    x = torch.tensor([1.0, 3.0], dtype=torch.float64).reshape(1, 1, 1, 2)
    q, k, v, r = 2 * x.flatten(), x.flatten(), x.flatten(), torch.tensor([0.5, -1.0], dtype=torch.float64)
    logits = q[:, None] * k[None, :] + r[:, None] * q[None, :]  # unscaled; r of the query token, q of the key
    expected = torch.softmax(logits, -1) @ v
    torch.testing.assert_close(layer(x).flatten(), expected)


# ----------------------------------------------------------------------------------------------- old checkpoints


def _user_attributes(module: nn.Module) -> set[str]:
    plain = {k for k in vars(module) if not k.startswith("_") and k != "training"}
    return plain | set(module._parameters) | set(module._modules)


@pytest.mark.parametrize("pos", [False, True])
def test_object_restored_from_tutorial_attributes(Tutorial, pos):
    """An object holding only the tutorial's attributes (what unpickling a trained checkpoint yields) runs ours."""
    torch.manual_seed(4)
    tutorial = Tutorial(16, 6, 5, 4, pos).double()
    restored = MHSA.__new__(MHSA)
    restored.__dict__.update(tutorial.__dict__)
    assert _user_attributes(restored) == TUTORIAL_ATTRIBUTES - (set() if pos else {"rel_h_weight", "rel_w_weight"})
    x, g = torch.randn(2, 16, 6, 5, dtype=torch.float64), torch.randn(2, 16, 6, 5, dtype=torch.float64)
    out_t, grads_t = outputs_and_grads(tutorial, tutorial, x, g)
    out_r, grads_r = outputs_and_grads(restored, restored, x, g)
    torch.testing.assert_close(out_r, out_t, rtol=1e-12, atol=1e-12)
    for name in grads_t:
        torch.testing.assert_close(grads_r[name], grads_t[name], rtol=1e-12, atol=1e-12, msg=name)
    x = torch.randn(1, 16, 11, 3, dtype=torch.float64)  # and off the trained grid, which the tutorial could not do
    torch.testing.assert_close(restored(x), reference(restored, x))


@pytest.mark.parametrize("pos", [False, True])
def test_pickled_tutorial_checkpoint_loads_into_our_class(tutorial_module, pos, tmp_path, monkeypatch):
    """torch.save a whole tutorial model; load it where the module now defines our class (as a patched conv.py)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), tutorial_module.MHSA(16, 8, 8, 4, pos)).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = model(x).detach()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model}, path)

    patched = types.ModuleType(tutorial_module.__name__)
    patched.MHSA = MHSA
    monkeypatch.setitem(sys.modules, tutorial_module.__name__, patched)
    loaded = torch.load(path, weights_only=False)["model"]
    layer = loaded[1]
    assert type(layer) is MHSA
    assert _user_attributes(layer) <= TUTORIAL_ATTRIBUTES
    torch.testing.assert_close(loaded(x), expected, rtol=1e-12, atol=1e-12)
    loaded(torch.randn(1, 3, 12, 5, dtype=torch.float64)).sum().backward()  # any size, with gradients


def test_pickle_roundtrip_of_ours():
    layer = make(pos=True)
    clone = pickle.loads(pickle.dumps(layer))
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(clone(x), layer(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- construction


@pytest.mark.parametrize("c, heads", [(30, 4), (16, 3), (7, 2)])
def test_channels_not_divisible_by_heads(c, heads):
    with pytest.raises(ValueError, match=r"divisible by heads"):
        MHSA(c, 14, 14, heads)
    with pytest.raises(ValueError, match=r"divisible by heads"):
        MHSA(c, 14, 14, heads, True)


def test_constructor_signature_and_yaml_args():
    import inspect

    params = inspect.signature(MHSA.__init__).parameters
    assert list(params) == ["self", "n_dims", "width", "height", "heads", "pos_emb"]
    assert [params[p].default for p in ("width", "height", "heads", "pos_emb")] == [14, 14, 4, False]
    layer = MHSA(*[64, 20, 20, 4, True])  # [c1, *args] as parse_model builds it from [20, 20, 4, True]
    assert layer.rel_w_weight.shape == (1, 4, 16, 20, 1)
    assert MHSA(64).heads == 4 and not MHSA(64).pos


# ----------------------------------------------------------------------------------------------- fast paths


@pytest.mark.parametrize("pos", [False, True])
def test_fused_path_uses_the_memory_saving_kernel(pos):
    """Restricted to the flash kernel, SDPA raises if q, k, v do not qualify (e.g. a last dim with stride != 1); the
    profiler shows that the flash kernel did run, forward and backward, in float32 and under bfloat16 autocast."""
    import contextlib

    from torch.profiler import ProfilerActivity, profile

    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel  # torch >= 2.2

        only_flash = sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    except ImportError:  # older torch: no way to restrict the CPU kernel; the numbers are still checked
        only_flash = None
    layer = MHSA(32, 24, 24, 4, pos)
    x = torch.randn(2, 32, 24, 24, requires_grad=True)
    with only_flash or contextlib.nullcontext(), profile(activities=[ProfilerActivity.CPU]) as prof:
        out = layer(x)
        out.sum().backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x).float().sum().backward()
    ran = [e.name for e in prof.events()]
    assert ran.count("aten::scaled_dot_product_attention") == 2, sorted(set(ran))
    if only_flash is not None:
        assert ran.count("aten::_scaled_dot_product_flash_attention_for_cpu") == 2, sorted(set(ran))
        assert ran.count("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == 2, sorted(set(ran))
    torch.testing.assert_close(out, reference(layer, x.detach()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pos", [False, True])
def test_plain_fallback_matches(monkeypatch, pos):
    """The path for a torch without SDPA's scale argument gives the same numbers and gradients."""
    layer = make(pos=pos)
    x, g = torch.randn(2, 16, 7, 4, dtype=torch.float64), torch.randn(2, 16, 7, 4, dtype=torch.float64)
    out_f, grads_f = outputs_and_grads(layer, layer, x, g)
    monkeypatch.setattr(MHSA, "_sdpa_supported", staticmethod(lambda: False))
    called = []
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: called.append(1) or 1 / 0
    )
    out_p, grads_p = outputs_and_grads(layer, layer, x, g)
    assert not called
    torch.testing.assert_close(out_p, out_f, rtol=1e-12, atol=1e-12)
    for name in grads_f:
        torch.testing.assert_close(grads_p[name], grads_f[name], rtol=1e-12, atol=1e-12, msg=name)


def test_sdpa_detection(monkeypatch):
    assert MHSA._sdpa_supported() is hasattr(torch.nn.functional, "scaled_dot_product_attention")
    monkeypatch.setattr(torch, "__version__", "2.0.1+cpu")
    assert MHSA._sdpa_supported() is False
    monkeypatch.setattr(torch, "__version__", "2.1.0a0+git1234")
    assert MHSA._sdpa_supported() is True
    monkeypatch.delattr(torch.nn.functional, "scaled_dot_product_attention")
    assert MHSA._sdpa_supported() is False


def test_gradcheck_small():
    layer = make(c=4, width=3, height=2, heads=2, pos=True)
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


# ----------------------------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("pos", [False, True])
def test_autocast_bfloat16_cpu(pos):
    torch.manual_seed(6)
    layer = MHSA(64, 10, 10, 4, pos)
    x = torch.randn(2, 64, 10, 12)  # off the trained grid: the resized tables go through autocast too
    expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        out.float().sum().backward()
    assert torch.isfinite(out).all()
    assert ((out.float() - expected).norm() / expected.norm()).item() < 3e-2
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())

    # unscaled logits get large: they must still go through a stable softmax, never a bare exp
    with torch.autocast("cpu", dtype=torch.bfloat16):
        big = layer(x * 100)
    assert torch.isfinite(big).all()
    assert torch.isfinite(layer(x * 1000)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="optional CUDA check")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pos", [False, True])
def test_autocast_cuda(dtype, pos):
    torch.manual_seed(7)
    layer = MHSA(64, 20, 20, 4, pos).cuda()
    x = torch.randn(2, 64, 20, 16, device="cuda")
    expected = layer(x)
    with torch.autocast("cuda", dtype=dtype):
        out = layer(x)
        out.float().sum().backward()
    assert torch.isfinite(out).all()
    assert ((out.float() - expected).norm() / expected.norm()).item() < 3e-2
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


# ----------------------------------------------------------------------------------------------- drop-in host


def class_source() -> str:
    """The ``class MHSA`` definition alone, as the engine copies it into conv.py."""
    text = LAYER_FILE.read_text()
    (node,) = [n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == "MHSA"]
    return ast.get_source_segment(text, node)


@pytest.mark.parametrize("future", [False, True], ids=["plain", "future-annotations"])
@pytest.mark.parametrize("nn_import", ["import torch.nn as nn", "from torch import nn"])
def test_class_runs_in_a_host_with_only_torch_and_nn(future, nn_import, monkeypatch):
    source = ("from __future__ import annotations\n" if future else "") + f"import torch\n{nn_import}\n\n"
    source += class_source() + "\n"
    namespace = {"__name__": "host_conv"}
    exec(compile(source, "host_conv.py", "exec"), namespace)
    assert set(namespace) - {"__builtins__", "annotations"} == {"__name__", "torch", "nn", "MHSA"}
    Host = namespace["MHSA"]
    with pytest.raises(ValueError):
        Host(30, heads=4)
    for pos in (False, True):
        layer = Host(16, 6, 5, 4, pos).double()
        ours = make(pos=pos)
        layer.load_state_dict(ours.state_dict())
        for size in [(6, 5), (3, 9)]:
            x = torch.randn(1, 16, *size, dtype=torch.float64, requires_grad=True)
            out = layer(x)
            out.sum().backward()
            torch.testing.assert_close(out, reference(ours, x.detach()), rtol=1e-10, atol=1e-10)
        with monkeypatch.context() as m:
            m.setattr(Host, "_sdpa_supported", staticmethod(lambda: False))
            torch.testing.assert_close(layer(x), reference(ours, x.detach()), rtol=1e-10, atol=1e-10)


def test_class_uses_no_module_level_names():
    """Besides builtins, the class body may only name torch and nn (the engine copies nothing else)."""
    import builtins

    tree = ast.parse(class_source())
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in [*n.args, *n.kwonlyargs]}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    free = loaded - bound - set(dir(builtins))
    assert free == {"torch", "nn"}, free
    assert "super(MHSA" not in class_source()


# ----------------------------------------------------------------------------------------------- export (layer level)


@pytest.mark.parametrize("pos, size", [(False, (10, 10)), (True, (10, 10)), (True, (7, 13))])
def test_layer_onnx_parity(pos, size):
    """The bare layer through the TorchScript ONNX exporter (the one ultralytics uses), opset 18, onnxruntime."""
    import warnings

    import onnxruntime as ort  # in the test extra
    torch.manual_seed(8)
    layer = MHSA(32, 10, 10, 4, pos).eval()
    x = torch.randn(1, 32, *size)
    buffer = io.BytesIO()
    kwargs = {"dynamo": False} if "dynamo" in __import__("inspect").signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(layer, (x,), buffer, opset_version=18, input_names=["x"], **kwargs)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    expected = layer(x).detach()
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4


# ----------------------------------------------------------------------------------------------- benchmark smoke


def test_benchmark_quick_runs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "bench_mhsa.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "time ratio" in proc.stdout and "mem ratio" in proc.stdout
    assert "| quick" in proc.stdout
    assert "threads=" in proc.stdout
