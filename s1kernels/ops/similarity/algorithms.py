"""Selection algorithms built on the similarity kernels: exact threshold dedup (SemDeDup),
farthest-point (k-center) and maximal-marginal-relevance picks as device loops, and
spherical k-means whose assignment step is the top-k op.
"""
from __future__ import annotations

import math

import torch

from s1kernels import backend as _backend
from s1kernels import checks
from s1kernels.ops.similarity.contract import (
    DedupResult, check_inner_products, check_k, check_matrix, check_order, check_relevance, check_threshold,
    normalized, scaled_rows)
from s1kernels.ops.similarity.torch_impl import GreedyState as _GreedyState, run_greedy as _run_greedy


def threshold_dedup(x: torch.Tensor, threshold: float, order=None, *, normalize: bool = True,
                    block: int = 1024, chunk: int = 2048) -> DedupResult:
    """SemDeDup on a whole pool, exact: walking items in `order` (default: row order), an item
    is dropped when its similarity to an earlier KEPT item exceeds `threshold`.

    Blocked on the device: items go in blocks of `block`; each block is compared with every
    earlier kept item in tiles of `chunk` columns, then dependencies inside the block are
    resolved by the fixed-point iteration keep = candidate & ~(A @ keep) with A the strictly
    lower-triangular "exceeds" matrix of the block. After t rounds the first t items of the
    block are final, so it ends at the block's longest drop chain (one host check per round,
    never per item). Kept items are packed at the front of the working copy as each block
    ends (one more host read per block), so later blocks compare with them alone, without a
    mask. Memory O(block * chunk) beyond that copy.
    """
    x = check_matrix("x", x)
    threshold = check_threshold(threshold)
    checks.check_positive_int("block", block)
    checks.check_positive_int("chunk", chunk)
    n = x.shape[0]
    order = check_order(order, n, x.device)
    # One working copy in walk order (x[order] always copies), normalised in place as
    # normalized() would; its front will hold the packed kept rows.
    xs, inv = scaled_rows(x, "x", normalize)
    if not normalize:
        check_inner_products(x, x)
    xn = xs[order].float()
    xn.mul_(inv[order][:, None])
    kept_sorted = torch.zeros(n, dtype=torch.bool, device=x.device)
    n_kept = 0
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        xb = xn[b0:b1]
        cand = torch.ones(b1 - b0, dtype=torch.bool, device=x.device)
        for c0 in range(0, n_kept, chunk):
            c1 = min(n_kept, c0 + chunk)
            cand &= (xb @ xn[c0:c1].T).amax(dim=1) <= threshold
        a = torch.tril(xb @ xb.T > threshold, diagonal=-1).float()
        keep = cand
        while True:
            nxt = cand & ~((a @ keep.float()) > 0)
            if torch.equal(nxt, keep):
                break
            keep = nxt
        kept_sorted[b0:b1] = keep
        # n_kept <= b0: the packed rows overwrite only rows already walked (xb[keep] is a copy)
        new = xb[keep]
        xn[n_kept:n_kept + new.shape[0]] = new
        n_kept += new.shape[0]
    keep_mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    keep_mask[order] = kept_sorted
    return DedupResult(keep_mask, order[kept_sorted])


def k_center(x: torch.Tensor, k: int, start: int | None = None, *, normalize: bool = True,
             use_graph: bool | None = None) -> torch.Tensor:
    """Farthest-point (max-min) selection: each pick maximises the cosine distance 1 - cos
    to the nearest item already picked, i.e. minimises the highest cosine similarity to the
    picks. Starts at `start` (default 0). Ties go to the lower index. Returns int64 [k] picks
    in order.

    A device loop: each pick is one matvec, a max, an argmin on device tensors; the loop body
    never reads a value back to the host. On CUDA the step is replayed from a CUDA graph
    (use_graph=None: when k >= 32; False: plain launches).
    """
    x = check_matrix("x", x)
    n = x.shape[0]
    check_k(k, n)
    start = 0 if start is None else start
    if not checks.is_int(start) or not 0 <= start < n:
        raise checks.argument_error("start", f"an index in [0, {n})", repr(start))
    xn = normalized(x, "x", normalize)
    st = _GreedyState(n, k, torch.tensor([start], dtype=torch.int64, device=x.device))

    def step():
        st.record_pick()
        torch.mv(xn, xn.index_select(0, st.cur)[0], out=st.sims)
        torch.maximum(st.maxsim, st.sims, out=st.maxsim)
        # A pick's similarity becomes +inf and stays there: maximum() never lowers it.
        st.maxsim.index_fill_(0, st.cur, math.inf)
        st.cur.copy_(st.maxsim.argmin().view(1))

    return _run_greedy(step, st, k, x.device, use_graph)


def mmr(x: torch.Tensor, relevance: torch.Tensor, k: int, lambda_: float = 0.5, *,
        normalize: bool = True, use_graph: bool | None = None) -> torch.Tensor:
    """Maximal marginal relevance: pick argmax of lambda_ * relevance[i] - (1 - lambda_) *
    max_{j picked} cos(i, j); the first pick is the most relevant item. Ties go to the lower
    index. Returns int64 [k]. A device loop like k_center (CUDA graph replay included).
    """
    x = check_matrix("x", x)
    n = x.shape[0]
    check_k(k, n)
    relevance = check_relevance(relevance, n, x.device)
    if not isinstance(lambda_, (int, float)) or not 0.0 <= lambda_ <= 1.0:
        raise checks.argument_error("lambda_", "a float in [0, 1]", repr(lambda_))
    xn = normalized(x, "x", normalize)
    rel = lambda_ * relevance
    st = _GreedyState(n, k, relevance.argmax().view(1))

    def step():
        st.record_pick()
        torch.mv(xn, xn.index_select(0, st.cur)[0], out=st.sims)
        torch.maximum(st.maxsim, st.sims, out=st.maxsim)
        rel.index_fill_(0, st.cur, -math.inf)  # a picked item scores -inf from now on
        st.cur.copy_((rel - (1.0 - lambda_) * st.maxsim).argmax().view(1))

    return _run_greedy(step, st, k, x.device, use_graph)


def kmeans(x: torch.Tensor, n_clusters: int, *, iters: int = 20, seed: int = 0,
           backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means (cosine): assignment is topk_similarity(x, centroids, k=1).

    Deterministic under `seed` (initial centroids: a seeded random choice of rows). Empty
    clusters keep their previous centroid. Returns (labels int64 [N], centroids fp32 [C, D]).
    """
    x = check_matrix("x", x)
    n = x.shape[0]
    check_k(n_clusters, n, "n_clusters")
    xn = normalized(x, "x")
    g = torch.Generator().manual_seed(seed)
    init = torch.randperm(n, generator=g)[:n_clusters].to(x.device)
    cent = xn[init].clone()
    _backend.resolve("similarity", backend, x, op="kmeans")

    def nearest(cent):  # the op itself: xn and the centroids need no per-iteration checks
        return torch.ops.s1kernels.topk_similarity(xn, cent, 1, False, True, backend, 0)[1][:, 0]

    for _ in range(iters):
        labels = nearest(cent)
        sums = torch.zeros_like(cent).index_add_(0, labels, xn)
        norms = torch.linalg.vector_norm(sums, dim=1, keepdim=True)
        cent = torch.where(norms > 0, sums / norms.clamp_min(1e-30), cent)
    return nearest(cent), cent
