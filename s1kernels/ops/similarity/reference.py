"""The similarity family's oracles, torch only: each `*_reference` computes the full score
matrix or walks host loops, for small inputs (tests) only. The ranking key, the norms and
the argument checks they share with the fast paths are in contract.py.
"""
from __future__ import annotations

import math

import torch

from s1kernels.ops.similarity.contract import (
    KEY_SENTINEL, DedupResult, check_inner_products, decode_keys, normalized, scaled_rows, score_keys)


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
