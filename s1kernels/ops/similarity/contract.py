"""The similarity family's contract: the argument checks, the ranking key (score, index) ->
int64 that every path ranks by (so ties come out identically), the dedup result, and row
norms that cannot overflow or underflow in fp32 with the inner-product range check.

Cosine similarity does not depend on a row's scale, but fp32 arithmetic does: a row whose
entries are around 1e19 has a squared norm past fp32's 3.4e38 (inf, so 1/|x| = 0 and every
score NaN), and a row around 1e-20 squares to zero. Every op therefore first brings rows
whose norm lies outside [2^-60, 2^60] to a max-abs in [0.5, 1) by a power of two. That
scaling is exact (only the exponent changes), so the scores are bit-for-bit those of the
rescaled input, and with every norm below 2^60 no fp32 dot product or partial sum can pass
2^120. Inner products (normalize=False) have no such freedom: when they could overflow fp32
the op refuses with a ValueError instead of answering inf or NaN.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from s1kernels import checks

_SAFE_LO, _SAFE_HI = 2.0 ** -60, 2.0 ** 60
_FP32_MAX = 3.4028234663852886e38


def _pow2_scaled(t: torch.Tensor) -> torch.Tensor:
    """t with each row multiplied by the power of two that brings its max-abs into [0.5, 1)."""
    amax = t.abs().amax(dim=1).double()
    _, exp = torch.frexp(amax)  # amax = m * 2**exp with m in [0.5, 1); exp = 0 for a zero row
    # float64: a subnormal fp32 row (max-abs near 1e-40, exp down to -148) needs a scale up
    # to 2^148, past fp32's range (inf, and inf * 0 = NaN); in float64 it is exact.
    scale = torch.ldexp(torch.ones_like(amax), -exp)
    return (t.double() * scale[:, None]).to(t.dtype)


def _zero_rows(n: torch.Tensor, name: str) -> None:
    zero = int((n == 0).sum())
    if zero:
        raise ValueError(f"{name}: {zero} row(s) have zero norm, so cosine similarity is undefined "
                         f"(drop them, or pass normalize=False for inner products)")


def scaled_rows(t: torch.Tensor, name: str = "x", normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, fp32 1/|row|): `t` itself when every norm is in the safe range, else `t` with
    rows rescaled by powers of two (same dtype). normalize=False: (t, ones)."""
    t = t.detach()
    if not normalize:
        return t, torch.ones(t.shape[0], dtype=torch.float32, device=t.device)
    n = torch.linalg.vector_norm(t.float(), dim=1)
    if not bool(((n >= _SAFE_LO) & (n <= _SAFE_HI)).all()):  # a zero row rescales to zero and is refused below
        t = _pow2_scaled(t)
        n = torch.linalg.vector_norm(t.float(), dim=1)
    _zero_rows(n, name)
    return t, 1.0 / n


def inverse_norms(t: torch.Tensor, name: str = "x", normalize: bool = True) -> torch.Tensor:
    """fp32 1/|row| of `t` as given (ones when normalize=False); zero-norm rows raise ValueError.
    Use `scaled_rows` when the rows may be outside fp32's comfortable range."""
    if not normalize:
        return torch.ones(t.shape[0], dtype=torch.float32, device=t.device)
    n = torch.linalg.vector_norm(t.detach().float(), dim=1)
    _zero_rows(n, name)
    return 1.0 / n


def normalized(t: torch.Tensor, name: str = "x", normalize: bool = True) -> torch.Tensor:
    """Rows as fp32 unit vectors (a new tensor; the same inverse norms the top-k path uses).
    normalize=False: the fp32 rows, after checking their inner products fit in fp32."""
    if not normalize:
        check_inner_products(t, t, name)
        return t.detach().to(torch.float32, copy=True)
    s, inv = scaled_rows(t, name)
    return s.float() * inv[:, None]


def check_inner_products(x: torch.Tensor, y: torch.Tensor, name: str = "x") -> None:
    """ValueError when an fp32 inner product of a row of x and a row of y could overflow
    (bound: dim * max|x| * max|y|, computed in float64)."""
    if x.numel() == 0 or y.numel() == 0:
        return
    bound = x.shape[1] * float(x.detach().abs().max()) * float(y.detach().abs().max())
    if not bound < _FP32_MAX / 2:
        raise ValueError(f"{name}: inner products (normalize=False) of rows this large can overflow float32 "
                         f"(dim x max|x| x max|y| = {bound:.3g}); scale the embeddings down or use "
                         f"normalize=True (cosine does not depend on scale)")


__all__ = ["scaled_rows", "inverse_norms", "normalized", "check_inner_products"]


# ----------------------------------------------------------------------------- shared definitions

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TRITON_MAX_K = 128  # the register-resident running list of the Triton kernel

KEY_SENTINEL = -(2**63)


class DedupResult(NamedTuple):
    keep: torch.Tensor  # bool [N], indexed like x
    kept: torch.Tensor  # int64 [K], the kept items in priority order


def score_keys(scores: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering by score (descending) then column (ascending): the tie rule."""
    bits = (scores.float() + 0.0).view(torch.int32)  # + 0.0 maps -0.0 to +0.0
    hi = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (hi.to(torch.int64) << 32) | (0x7FFFFFFF - cols).to(torch.int64)


def decode_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hi = (keys >> 32).to(torch.int32)
    bits = hi ^ ((hi >> 31) & 0x7FFFFFFF)
    scores = bits.view(torch.float32)
    idx = 0x7FFFFFFF - (keys & 0xFFFFFFFF)
    return scores, idx


# ----------------------------------------------------------------------------- argument checks

def check_matrix(name: str, t, allow_empty: bool = False) -> torch.Tensor:
    checks.check_tensor(name, t, "[rows, dim]")
    if t.dim() != 2:
        raise checks.argument_error(name, "a 2-D tensor [rows, dim]", f"shape {tuple(t.shape)}")
    if t.dtype not in DTYPES:
        raise checks.argument_error(name, "dtype float32, float16 or bfloat16", t.dtype, TypeError)
    if t.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: the pool is empty (0 rows); nothing to compare")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: embedding dimension is 0")
    if t.device.type == "meta":  # selection reads values (norms, thresholds, picks): shapes are not enough
        raise checks.argument_error(name, "a tensor with values (cpu or cuda)",
                                    "a meta tensor; the similarity ops' results depend on the values, "
                                    "so they cannot run on meta")
    # One reduction clears the common case: a NaN or inf entry makes the sum non-finite.
    # Only a non-finite sum (bad entries, or an overflow) pays for the per-row count.
    if not bool(torch.isfinite(t.sum(dtype=torch.float32))):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        if bad:
            raise ValueError(f"{name}: {bad} row(s) contain NaN or inf values")
    return t.contiguous()

def check_order(order, n, device) -> torch.Tensor:
    if order is None:
        return torch.arange(n, device=device)
    order = torch.as_tensor(order, device=device)
    if order.dim() != 1 or order.numel() != n or order.dtype not in (torch.int32, torch.int64):
        raise checks.argument_error("order", f"a permutation of range({n}) as a 1-D int tensor",
                                    f"shape {tuple(order.shape)} dtype {order.dtype}")
    order = order.long()
    seen = torch.zeros(n, dtype=torch.bool, device=device)
    if int(order.min()) < 0 or int(order.max()) >= n:
        raise ValueError(f"order: entries must lie in [0, {n}), got [{int(order.min())}, {int(order.max())}]")
    seen[order] = True
    if not bool(seen.all()):
        raise ValueError("order: not a permutation (some index repeats)")
    return order


def check_threshold(threshold):
    if not checks.is_number(threshold) or not math.isfinite(threshold):
        raise checks.argument_error("threshold", "a finite float", repr(threshold))
    return float(threshold)

def check_k(k, n, what="k"):
    checks.check_positive_int(what, k)
    if k > n:
        raise ValueError(f"{what}: asked for {k} picks from a pool of {n}")

def check_relevance(relevance, n, device):
    relevance = torch.as_tensor(relevance, device=device)
    if relevance.shape != (n,):
        raise checks.argument_error("relevance", f"shape ({n},)", tuple(relevance.shape))
    relevance = relevance.float()
    if not bool(torch.isfinite(relevance).all()):
        raise ValueError("relevance: contains NaN or inf")
    return relevance


def check_topk_args(x, y, k, exclude_self, block_m):
    """topk_similarity's arguments: returns (x, y or None for x itself, whether to exclude self)."""
    x = check_matrix("x", x)
    self_mode = y is None
    if self_mode:
        y = x
    else:
        y = check_matrix("y", y)
        if y.shape[1] != x.shape[1]:
            raise ValueError(f"y: embedding dimension {y.shape[1]} does not match x's {x.shape[1]}")
        if y.dtype != x.dtype:
            raise TypeError(f"y: dtype {y.dtype} does not match x's {x.dtype}")
        if y.device != x.device:
            raise ValueError(f"y: device {y.device} does not match x's {x.device}")
    exclude = bool(exclude_self and self_mode)
    m = y.shape[0]
    avail = m - (1 if exclude else 0)
    checks.check_positive_int("k", k)
    if k > avail:
        raise ValueError(f"k: asked for {k} neighbours but the pool offers {avail} "
                         f"({m} rows{', minus the row itself' if exclude else ''})")
    if block_m is not None and (not isinstance(block_m, int) or block_m < 1):
        raise checks.argument_error("block_m", "a positive int or None", repr(block_m))
    return x, None if self_mode else y, exclude
