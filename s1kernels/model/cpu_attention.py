"""The CPU decode step's attention as one extension call per layer (csrc/attention_cpu.cpp).

With one new token per row, torch spends a decode step's attention in a dozen small calls per
layer (q/k/v split, RoPE on q and k, two cache scatters, the mask, SDPA). `decode_attention`
does all of it in one: RoPE (bit-identical to `apply_rope`), the k/v writes at each row's
position, and attention over that row's filled prefix, rows x kv-heads over threads.
`Attention.forward_cached` takes it for fp32 models decoding on the CPU with a DecodePack
(the fused q/k/v projection it reads from); anything else keeps the torch path.
"""
from __future__ import annotations

import math

import torch

from s1kernels import backend as _backend


def usable(x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    """Whether decode_attention applies: the extension is built, x [B, 1, H] fp32 on the CPU,
    an fp32 cache [B, Hkv, S, D] whose rows may be strided but whose heads are dense."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 3 or x.shape[1] != 1:
        return False
    for c in (k_cache, v_cache):
        if c.dtype != torch.float32 or c.dim() != 4 or c.stride()[1:] != (c.shape[2] * c.shape[3], c.shape[3], 1):
            return False
    return k_cache.stride(0) == v_cache.stride(0) and _backend.native() is not None


def decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """qkv [B, (H + 2 Hkv) D] fp32 (the fused projection's output, this token); cos/sin
    [B, D] at each row's position; start_pos [B] int64; caches [B, Hkv, S, D] (written at
    start_pos). Returns the attention output [B, H D] (before o_proj)."""
    B, S, D = qkv.shape[0], k_cache.shape[2], k_cache.shape[3]
    qkv, cos, sin = qkv.contiguous(), cos.reshape(B, D).contiguous(), sin.reshape(B, D).contiguous()
    pos = start_pos.to(torch.int64).contiguous()
    out = torch.empty(B, n_heads * D, dtype=torch.float32)
    err = _backend.native().decode_attention_cpu(
        qkv.data_ptr(), qkv.stride(0), cos.data_ptr(), sin.data_ptr(), pos.data_ptr(), k_cache.data_ptr(),
        v_cache.data_ptr(), k_cache.stride(0), S, B, n_heads, n_kv_heads, D, 1.0 / math.sqrt(D), out.data_ptr(),
        out.stride(0), torch.get_num_threads())
    if err:
        raise ValueError(f"start_pos: every position must lie in [0, {S}) (the cache's length), got "
                         f"{start_pos.tolist()} (decode_attention_cpu returned error {err})")
    return out
