"""Row norms that cannot overflow or underflow in fp32, and the inner-product range check.

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

import torch

_SAFE_LO, _SAFE_HI = 2.0 ** -60, 2.0 ** 60
_FP32_MAX = 3.4028234663852886e38


def _pow2_scaled(t: torch.Tensor) -> torch.Tensor:
    """t with each row multiplied by the power of two that brings its max-abs into [0.5, 1)."""
    amax = t.abs().amax(dim=1).float()
    _, exp = torch.frexp(amax)  # amax = m * 2**exp with m in [0.5, 1); exp = 0 for a zero row
    scale = torch.ldexp(torch.ones_like(amax), -exp)
    return (t.float() * scale[:, None]).to(t.dtype)


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
