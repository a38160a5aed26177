"""The similarity family's oracles and the math they share with the fast paths, torch only.

The ranking key (score, index) -> int64, the inverse norms and the unit rows are used by
every path, so ties and zero-norm rows come out identically; the `*_reference` functions
compute the full score matrix or walk host loops and are for small inputs (tests) only.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from s1kernels.ops.similarity.norms import (  # noqa: F401  (shared with the fast paths)
    check_inner_products, inverse_norms, normalized, scaled_rows)

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


def topk_similarity_reference(x, y=None, k=10, *, exclude_self=True, normalize=True):
    """The oracle: the full score matrix, ranked by the same (score, index) key. Small inputs only."""
    self_mode = y is None
    x, rx = scaled_rows(x, "x", normalize)
    y, ry = (x, rx) if self_mode else scaled_rows(y, "y", normalize)
    if not normalize:
        check_inner_products(x, y)
    s = (x.float() @ y.float().T) * rx[:, None] * ry[None, :]
    cols = torch.arange(y.shape[0], device=x.device)
    keys = score_keys(s, cols[None, :])
    if self_mode and exclude_self:
        keys.fill_diagonal_(KEY_SENTINEL)
    return decode_keys(keys.topk(k, dim=1).values)


def threshold_dedup_reference(x, threshold, order=None, *, normalize=True) -> DedupResult:
    """The oracle: one item at a time against the list of kept items."""
    n = x.shape[0]
    order = list(range(n)) if order is None else [int(i) for i in order]
    xn = normalized(x, "x", normalize)
    kept = []
    for i in order:
        if kept and float((xn[kept] @ xn[i]).max()) > threshold:
            continue
        kept.append(i)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[kept] = True
    return DedupResult(keep, torch.tensor(kept, dtype=torch.int64))


def k_center_reference(x, k, start=None, *, normalize=True):
    """The oracle: the same arithmetic with a host loop and Python lists."""
    xn = normalized(x, "x", normalize)
    n = x.shape[0]
    picks = [0 if start is None else start]
    maxsim = torch.full((n,), -math.inf)
    while True:
        maxsim = torch.maximum(maxsim, torch.mv(xn, xn[picks[-1]]))
        if len(picks) == k:
            return torch.tensor(picks, dtype=torch.int64)
        best, best_i = math.inf, -1
        for i in range(n):
            if i not in picks and float(maxsim[i]) < best:
                best, best_i = float(maxsim[i]), i
        picks.append(best_i)


def mmr_reference(x, relevance, k, lambda_=0.5, *, normalize=True):
    """The oracle: the same arithmetic with a host loop and Python lists."""
    xn = normalized(x, "x", normalize)
    relevance = torch.as_tensor(relevance).float()
    rel = lambda_ * relevance
    n = x.shape[0]
    picks = [int(relevance.argmax())]
    maxsim = torch.full((n,), -math.inf)
    while len(picks) < k:
        maxsim = torch.maximum(maxsim, xn @ xn[picks[-1]])
        score = rel - (1.0 - lambda_) * maxsim
        best, best_i = -math.inf, -1
        for i in range(n):
            if i not in picks and float(score[i]) > best:
                best, best_i = float(score[i]), i
        picks.append(best_i)
    return torch.tensor(picks, dtype=torch.int64)
