"""Attention over packed rows (training) and over a static KV cache (generation).

Packed attention: tokens of several samples sit in one row of T tokens; `cu_seqlens` holds
the sample boundaries, and a query attends only to earlier keys of its own sample. Backends,
first usable wins:
  1. flash-attn's `flash_attn_varlen_func` (CUDA, fp16/bf16) when installed;
  2. torch's own `torch.nn.attention.varlen.varlen_attn` (CUDA, fp16/bf16) when present;
  3. on a GPU without those, SDPA with a block-diagonal causal mask built on device from
     cu_seqlens (small T, no host sync);
  4. SDPA per sample, one causal call per segment (CPU, or large T; reads cu_seqlens on the host).
"""
from __future__ import annotations

import inspect

import torch
from s1kernels import checks
import torch.nn.functional as F

try:  # optional fast path
    from flash_attn import flash_attn_varlen_func as _flash_varlen
except Exception:  # ImportError, or a broken CUDA build of flash-attn
    _flash_varlen = None

try:
    from torch.nn.attention.varlen import varlen_attn as _torch_varlen

    _TORCH_VARLEN_PARAMS = set(inspect.signature(_torch_varlen).parameters)
except Exception:
    _torch_varlen = None
    _TORCH_VARLEN_PARAMS = set()

# Above this many tokens per row the dense [T, T] mask costs more than a loop over samples.
DENSE_MASK_MAX_TOKENS = 2048


def _repeat_kv(x: torch.Tensor, n_rep: int, dim: int) -> torch.Tensor:
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=dim)


def packed_attention_backend(q: torch.Tensor) -> str:
    """The backend `varlen_causal_attention` uses for this query tensor."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        if _flash_varlen is not None:
            return "flash_attn"
        if _torch_varlen is not None and ("window_size" in _TORCH_VARLEN_PARAMS or "is_causal" in _TORCH_VARLEN_PARAMS):
            return "torch_varlen"
    # On CPU reading cu_seqlens is free and per-sample calls skip the masked-out work
    if q.device.type == "cpu":
        return "sdpa_loop"
    return "sdpa_mask" if q.shape[0] <= DENSE_MASK_MAX_TOKENS else "sdpa_loop"


def block_causal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[T, T] bool: True where query i may attend key j (same sample, j <= i). No host sync."""
    pos = torch.arange(total, device=cu_seqlens.device)
    seg = torch.searchsorted(cu_seqlens[1:].to(torch.int64), pos, right=True)
    return (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None])


def _equal_length_runs(bounds: list[int]) -> list[tuple[int, int]]:
    """(samples, length) of each run of consecutive non-empty samples of equal length."""
    runs: list[tuple[int, int]] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            if runs and runs[-1][1] == b - a:
                runs[-1] = (runs[-1][0] + 1, b - a)
            else:
                runs.append((1, b - a))
    return runs


def _sdpa_per_run(q, k, v, bounds: list[int], gqa: bool) -> torch.Tensor:
    """Causal SDPA over each sample of a packed row, one call per run of consecutive samples of
    equal length, the run viewed as [samples, heads, length, dim] (no copy).

    Why runs and split: torch's CPU flash kernel spreads batch x heads over threads, so one
    call over 4 samples keeps 2 threads busier than 4 calls of 9 heads each; and split's
    backward is one concatenation, where the backward of each slice writes a zero-filled
    gradient the size of the whole row (fwd+bwd at 4 x 1,024 tokens: 0.24 s vs 0.15 s)."""
    _, H, D = q.shape
    runs = _equal_length_runs(bounds)
    if not runs:
        return q.clone()
    sizes = [c * n for c, n in runs]
    outs = []
    for (c, n), qs, ks, vs in zip(runs, q.split(sizes), k.split(sizes), v.split(sizes)):
        qr, kr, vr = (x.reshape(c, n, x.shape[1], D).transpose(1, 2) for x in (qs, ks, vs))
        o = F.scaled_dot_product_attention(qr, kr, vr, is_causal=True, enable_gqa=gqa)
        outs.append(o.transpose(1, 2).reshape(c * n, H, D))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def varlen_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                            max_seqlen: int | None = None, backend: str | None = None) -> torch.Tensor:
    """Causal attention within each sample of a packed row.

    q [T, H, D], k/v [T, Hkv, D] (H a multiple of Hkv), cu_seqlens [S+1] int32 with
    cu_seqlens[0] == 0 and cu_seqlens[-1] == T. Returns [T, H, D].
    """
    T, H, D = q.shape
    n_rep = H // k.shape[1]
    backend = backend or packed_attention_backend(q)
    if backend in ("flash_attn", "torch_varlen") and max_seqlen is None:
        max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    if backend == "flash_attn":
        if _flash_varlen is None:
            from s1kernels.extras import require

            require("flash_attn", "backend='flash_attn'")  # raises MissingExtra when it is not installed
            raise RuntimeError("backend='flash_attn': flash_attn imports but flash_attn_varlen_func does not")
        cu = cu_seqlens.to(torch.int32)
        return _flash_varlen(q, k, v, cu, cu, max_seqlen, max_seqlen, causal=True)
    if backend == "torch_varlen":
        cu = cu_seqlens.to(torch.int32)
        kw = {"window_size": (-1, 0)} if "window_size" in _TORCH_VARLEN_PARAMS else {"is_causal": True}
        if "enable_gqa" in _TORCH_VARLEN_PARAMS:
            kw["enable_gqa"] = n_rep > 1
        else:
            k, v = _repeat_kv(k, n_rep, 1), _repeat_kv(v, n_rep, 1)
        return _torch_varlen(q, k, v, cu, cu, max_seqlen, max_seqlen, **kw)
    # torch SDPA paths work in [batch, heads, tokens, dim]: with 3-D inputs torch's CPU flash
    # kernel is skipped for the math path (T x T scores; 3x slower fwd+bwd at T=1024)
    gqa = n_rep > 1
    if backend == "sdpa_loop":
        return _sdpa_per_run(q, k, v, cu_seqlens.tolist(), gqa)
    if backend != "sdpa_mask":
        raise checks.argument_error("backend", "flash_attn|torch_varlen|sdpa_mask|sdpa_loop", repr(backend))
    qh, kh, vh = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=block_causal_mask(cu_seqlens, T), enable_gqa=gqa)
    return out[0].transpose(0, 1)


def cached_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     start_pos: torch.Tensor) -> torch.Tensor:
    """Attention of T new queries per row over a static cache.

    q [B, H, T, D]; k_cache/v_cache [B, Hkv, S, D]; query t of row b sees cache positions
    <= start_pos[b] + t. Static shapes, no host sync (CUDA-graph friendly).
    """
    T = q.shape[2]
    S = k_cache.shape[2]
    n_rep = q.shape[1] // k_cache.shape[1]
    q_pos = start_pos[:, None] + torch.arange(T, device=q.device)  # [B, T]
    mask = torch.arange(S, device=q.device)[None, None, :] <= q_pos[:, :, None]  # [B, T, S]
    # enable_gqa lets SDPA broadcast the kv heads instead of copying the whole cache
    return F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask[:, None], enable_gqa=n_rep > 1)
