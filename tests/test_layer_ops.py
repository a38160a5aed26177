"""The training-time layer functions (s1kernels/model/layer_ops.py) against the plain torch
expressions they replace: outputs and every gradient, on fresh random inputs at awkward
sizes, in fp64 (gradcheck), fp32 and bf16."""
import pytest
import torch
import torch.nn.functional as F

from s1kernels.model import layer_ops
from s1kernels.model.transformer import apply_rope

TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


def _rms_norm_plain(x, w, eps):
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _pair(fn_fused, fn_plain, inputs, tol):
    """Same outputs and gradients for a random output gradient."""
    a = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    b = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out_a, out_b = fn_fused(*a), fn_plain(*b)
    assert out_a.dtype == out_b.dtype and out_a.shape == out_b.shape
    torch.testing.assert_close(out_a, out_b, **tol)
    g = torch.randn_like(out_b)
    out_a.backward(g)
    out_b.backward(g)
    for x, y in zip(a, b):
        if y.grad is not None:
            torch.testing.assert_close(x.grad, y.grad, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7, 33), (3, 5, 64), (1, 1)])
def test_rms_norm(dtype, shape):
    torch.manual_seed(sum(shape))
    x = torch.randn(shape, dtype=dtype) * 3
    w = torch.randn(shape[-1], dtype=dtype)
    _pair(lambda x, w: layer_ops.rms_norm(x, w, 1e-6), lambda x, w: _rms_norm_plain(x, w, 1e-6), [x, w], TOL[dtype])


def test_rms_norm_fp32_weight_on_bf16_input():
    torch.manual_seed(1)
    x, w = torch.randn(6, 40, dtype=torch.bfloat16), torch.randn(40)
    _pair(lambda x, w: layer_ops.rms_norm(x, w, 1e-5), lambda x, w: _rms_norm_plain(x, w, 1e-5), [x, w],
          TOL[torch.bfloat16])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens,heads,dim", [(9, 3, 8), (17, 1, 64), (1, 5, 2)])
def test_rope(dtype, tokens, heads, dim):
    torch.manual_seed(tokens * heads + dim)
    x = torch.randn(tokens, heads, dim, dtype=dtype)
    ang = torch.randn(tokens, 1, dim // 2).repeat(1, 1, 2)
    cos, sin = ang.cos().to(dtype), ang.sin().to(dtype)
    _pair(lambda x: layer_ops.rope(x, cos, sin), lambda x: apply_rope(x, cos, sin), [x], TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 37), (2, 3, 96)])
def test_swiglu(dtype, shape):
    torch.manual_seed(shape[-1])
    gate, up = torch.randn(shape, dtype=dtype) * 4, torch.randn(shape, dtype=dtype)
    _pair(layer_ops.swiglu, lambda g, u: F.silu(g) * u, [gate, up], TOL[dtype])


def test_gradcheck_fp64():
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: layer_ops.rms_norm(x, w, 1e-6), (x, w))
    q = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    ang = torch.randn(3, 1, 4, dtype=torch.float64).repeat(1, 1, 2)
    assert torch.autograd.gradcheck(lambda q: layer_ops.rope(q, ang.cos(), ang.sin()), (q,))
    g, u = (torch.randn(5, 7, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(layer_ops.swiglu, (g, u))


def test_model_takes_them_only_for_cpu_training(monkeypatch):
    """Training forward on the CPU goes through layer_ops, inference does not; both agree."""
    from s1kernels.model import ModelConfig, Transformer

    cfg = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = Transformer(cfg).init_weights(seed=3)
    calls = []
    for name in ("rms_norm", "rope", "swiglu"):
        fn = getattr(layer_ops, name)
        monkeypatch.setattr(layer_ops, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    ids = torch.randint(0, 97, (11,))
    pos, cu = torch.arange(11), torch.tensor([0, 11], dtype=torch.int32)
    with torch.no_grad():
        plain = model(ids, pos, cu)
    assert calls == []
    fused = model(ids, pos, cu)
    assert sorted(set(calls)) == ["rms_norm", "rope", "swiglu"]
    torch.testing.assert_close(fused.detach(), plain, atol=2e-5, rtol=2e-5)
