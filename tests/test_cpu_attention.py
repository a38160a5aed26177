"""The CPU decode step's fused attention (s1kernels.model.cpu_attention, csrc/attention_cpu.cpp)
against the torch path it replaces: RoPE and cache writes bit for bit, attention to fp32
rounding, over GQA and plain heads, odd head sizes, strided cache rows and edge positions."""
import math

import pytest
import torch

from s1kernels import backend
from s1kernels.model import cpu_attention as CA
from s1kernels.model.attention import cached_attention
from s1kernels.model.transformer import apply_rope, rope_cos_sin

pytestmark = pytest.mark.skipif(backend.native() is None, reason="s1kernels._C is not built")


def _torch_path(qkv, cos, sin, pos, kc, vc, H, Hkv, D):
    B = qkv.shape[0]
    q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
    q, k, v = q.reshape(B, 1, H, D), k.reshape(B, 1, Hkv, D), v.reshape(B, 1, Hkv, D)
    c, s = cos[:, None, None], sin[:, None, None]
    q, k = apply_rope(q, c, s).transpose(1, 2), apply_rope(k, c, s).transpose(1, 2)
    idx = pos[:, None, None, None].expand(B, Hkv, 1, D)
    kc.scatter_(2, idx, k)
    vc.scatter_(2, idx, v.transpose(1, 2))
    return cached_attention(q, kc, vc, pos).transpose(1, 2).reshape(B, H * D)


@pytest.mark.parametrize("H,Hkv,D", [(6, 2, 16), (4, 4, 12), (9, 3, 64), (3, 1, 2)])
@pytest.mark.parametrize("rows_view", [False, True])
def test_fused_step_matches_the_torch_path(H, Hkv, D, rows_view):
    g = torch.Generator().manual_seed(H * 100 + D)
    B, S = 5, 37
    pos = torch.tensor([0, 36, 5, 17, 1])
    qkv = torch.randn(B, (H + 2 * Hkv) * D, generator=g)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    cos, sin = rope_cos_sin(pos, inv_freq, torch.float32)  # [B, D]
    full_k = torch.randn(2, B + 2, Hkv, S, D, generator=g)  # [layers, rows, ...]: a layer's view is strided
    full_v = torch.randn(2, B + 2, Hkv, S, D, generator=g)
    k1, v1 = full_k[1, 1:B + 1], full_v[1, 1:B + 1]
    if not rows_view:
        k1, v1 = k1.contiguous(), v1.contiguous()
    k2, v2 = k1.clone(), v1.clone()
    assert CA.usable(torch.zeros(B, 1, 8), k1, v1)
    got = CA.decode_attention(qkv, cos, sin, pos, k1, v1, H, Hkv)
    ref = _torch_path(qkv, cos, sin, pos, k2, v2, H, Hkv, D)
    assert torch.equal(k1, k2) and torch.equal(v1, v2)  # RoPE'd keys and values: the same bits
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    if rows_view:  # writes landed in the shared storage, other rows untouched
        assert torch.equal(full_k[1, 1:B + 1], k1) and torch.equal(full_k[0], full_k[0].clone())


def test_long_prefix_softmax_is_stable():
    """Scores far apart (large q and k): the max-subtracted softmax stays finite."""
    H, Hkv, D, S = 2, 1, 8, 300
    qkv = torch.full((1, (H + 2 * Hkv) * D), 30.0)
    pos = torch.tensor([S - 1])
    cos, sin = torch.ones(1, D), torch.zeros(1, D)
    kc, vc = torch.randn(1, Hkv, S, D) * 30, torch.randn(1, Hkv, S, D)
    k2, v2 = kc.clone(), vc.clone()
    got = CA.decode_attention(qkv, cos, sin, pos, kc, vc, H, Hkv)
    ref = _torch_path(qkv, cos, sin, pos, k2, v2, H, Hkv, D)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_positions_outside_the_cache_are_refused_and_other_layouts_not_taken():
    B, H, Hkv, D, S = 2, 2, 1, 4, 8
    qkv, cs = torch.randn(B, (H + 2 * Hkv) * D), torch.ones(B, D)
    kc, vc = torch.zeros(B, Hkv, S, D), torch.zeros(B, Hkv, S, D)
    with pytest.raises(ValueError, match="start_pos"):
        CA.decode_attention(qkv, cs, cs, torch.tensor([0, S]), kc, vc, H, Hkv)
    assert not CA.usable(torch.zeros(B, 2, 8), kc, vc)  # prefill (T > 1): the torch path
    assert not CA.usable(torch.zeros(B, 1, 8, dtype=torch.bfloat16), kc, vc)
    assert not CA.usable(torch.zeros(B, 1, 8), kc.transpose(2, 3), vc)
    assert math.isfinite(float(CA.decode_attention(qkv, cs, cs, torch.tensor([0, S - 1]), kc, vc, H, Hkv).sum()))
