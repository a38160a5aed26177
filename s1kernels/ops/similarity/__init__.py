"""Embedding similarity for data selection: top-k neighbours, threshold dedup, greedy diversity.

    scores, idx = topk_similarity(x, k=16)                 # self-kNN, cosine, self excluded
    scores, idx = topk_similarity(x, y, k=1)               # nearest item of y for each row of x
    keep = threshold_dedup(x, 0.95).keep                   # SemDeDup: drop near-duplicates
    picks = k_center(x, 1000)                              # farthest-point (max-min) diversity
    picks = mmr(x, relevance, 1000, lambda_=0.5)           # maximal marginal relevance

Semantics shared by every op:
- Rows whose norm is outside [2^-60, 2^60] are first rescaled by a power of two (exact; see
  norms.py), so fp32 never overflows or underflows; inner products (normalize=False) that
  could overflow fp32 are refused with a ValueError. Inputs with requires_grad are read
  detached (every op returns indices or scores, none is differentiable).
- Cosine similarity (normalize=True) is computed as (x_i . y_j) * (1/|x_i|) * (1/|y_j|) with the
  dot product accumulated in fp32 from the stored bf16/fp16/fp32 values (products of two
  bf16/fp16 numbers are exact in fp32) and the inverse norms computed in fp32. A row with zero
  norm has no direction: it is rejected with a ValueError that counts such rows. NaN or inf
  entries are rejected too. normalize=False uses the raw inner product.
- Order of a top-k row: higher score first, then lower index. The reference and the kernels
  both rank by a unique 64-bit key built from (score, index), so ties come out identically.
- Nothing of size [N, M] is ever allocated: the torch path streams M in chunks of `block_m`
  columns (and N in chunks of rows) and merges a running top-k; the Triton kernel keeps the
  running top-k in registers (k <= 128; backend="auto" takes the chunked torch path for a
  larger k on the device, an explicit backend="triton" raises).
- Layout: `reference.py` (oracles, keys), `norms.py` (safe row norms), `torch_impl.py` (chunked top-k, blocked
  dedup, greedy device loops), `triton_impl.py` (the top-k kernel and its launcher); this
  module holds the public API, the argument checks and the custom op.
- Argument checks run once per call at the boundary (they read a few flags back to the host);
  the per-item and per-pick loops never synchronise with the host.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from s1kernels import backend as _backend
from s1kernels import checks
from s1kernels.ops.similarity import torch_impl
from s1kernels.ops.similarity.reference import (  # noqa: F401  (public names of the family)
    KEY_SENTINEL, DedupResult, check_inner_products, decode_keys, inverse_norms, k_center_reference, mmr_reference,
    normalized, scaled_rows, score_keys, threshold_dedup_reference, topk_similarity_reference)
from s1kernels.ops.similarity.torch_impl import GreedyState as _GreedyState, run_greedy as _run_greedy

TRITON_MAX_K = 128  # the register-resident running list of the Triton kernel

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- validation

def _check_matrix(name: str, t, allow_empty: bool = False) -> torch.Tensor:
    checks.check_tensor(name, t, "[rows, dim]")
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D tensor [rows, dim], got shape {tuple(t.shape)}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name}: expected dtype float32, float16 or bfloat16, got {t.dtype}")
    if t.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: the pool is empty (0 rows); nothing to compare")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: embedding dimension is 0")
    # One reduction clears the common case: a NaN or inf entry makes the sum non-finite.
    # Only a non-finite sum (bad entries, or an overflow) pays for the per-row count.
    if not bool(torch.isfinite(t.sum(dtype=torch.float32))):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        if bad:
            raise ValueError(f"{name}: {bad} row(s) contain NaN or inf values")
    return t.contiguous()


# ----------------------------------------------------------------------------- top-k

def topk_similarity(x: torch.Tensor, y: torch.Tensor | None = None, k: int = 10, *,
                    exclude_self: bool = True, normalize: bool = True, backend: str = "auto",
                    block_m: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k most similar rows of `y` (default: `x` itself) for every row of `x`.

    Returns (scores fp32 [N, k], indices int64 [N, k]), each row ordered by higher score
    first, then lower index. With y=None and exclude_self=True a row never lists itself
    (exclude_self is ignored when y is given). Cosine similarity when normalize=True, inner
    product otherwise. backend: "auto" | "triton" | "torch" (s1kernels.backend.resolve); block_m sets the streamed tile
    width (columns of y per step; the Triton kernel only narrows its tile to it, never widens).
    """
    x = _check_matrix("x", x)
    self_mode = y is None
    if self_mode:
        y = x
    else:
        y = _check_matrix("y", y)
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
        raise ValueError(f"block_m: expected a positive int or None, got {block_m!r}")
    _choose(backend, x, k)
    return torch.ops.s1kernels.topk_similarity(x, None if self_mode else y, k, exclude, normalize,
                                               backend, block_m or 0)


def _choose(backend: str, x: torch.Tensor, k: int) -> str:
    """s1kernels.backend.resolve for the top-k, plus the Triton kernel's limit on k: "auto"
    takes the chunked torch top-k past it, an explicit "triton" raises."""
    choice = _backend.resolve("similarity", backend, x, op="topk_similarity")
    if choice == "triton" and k > TRITON_MAX_K:
        if backend == "auto":
            return "torch"
        raise ValueError(f"topk_similarity: backend 'triton' keeps at most k={TRITON_MAX_K} neighbours per row in "
                         f"registers, got k={k}; use backend='torch' (the chunked top-k) or 'auto'")
    return choice


@torch.library.custom_op("s1kernels::topk_similarity", mutates_args=())
def _topk_op(x: torch.Tensor, y: Optional[torch.Tensor], k: int, exclude_self: bool, normalize: bool,
             backend: str, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The compute behind topk_similarity (arguments already checked); y=None means y = x."""
    self_mode = y is None
    y = x if self_mode else y
    block_m = block_m or None
    x, rx = scaled_rows(x, "x", normalize)
    y, ry = (x, rx) if self_mode else scaled_rows(y, "y", normalize)
    if not normalize:
        check_inner_products(x, y)
    exclude = exclude_self and self_mode
    if _choose(backend, x, k) == "triton":
        from s1kernels.ops.similarity import triton_impl

        keys = triton_impl.topk_keys(x, y, rx, ry, k, exclude, block_m)
    else:
        bn, bm = torch_impl.blocks(x.shape[0], y.shape[0], k, x.device, block_m)
        keys = torch_impl.topk_keys(x, y, rx if normalize else None, ry if normalize else None, k, exclude, bn, bm)
    return decode_keys(keys)


@_topk_op.register_fake
def _(x, y, k, exclude_self, normalize, backend, block_m):
    n = x.shape[0]
    return x.new_empty(n, k, dtype=torch.float32), x.new_empty(n, k, dtype=torch.int64)


def max_similarity(x: torch.Tensor, y: torch.Tensor | None = None, *, normalize: bool = True,
                   backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Highest similarity of each row of x to any row of y (to any other row when y is None).

    Returns (scores fp32 [N], indices int64 [N]); ties go to the lower index.
    """
    s, i = topk_similarity(x, y, 1, exclude_self=True, normalize=normalize, backend=backend)
    return s[:, 0], i[:, 0]


# ----------------------------------------------------------------------------- dedup

def _check_order(order, n, device) -> torch.Tensor:
    if order is None:
        return torch.arange(n, device=device)
    order = torch.as_tensor(order, device=device)
    if order.dim() != 1 or order.numel() != n or order.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"order: expected a permutation of range({n}) as a 1-D int tensor, got "
                         f"shape {tuple(order.shape)} dtype {order.dtype}")
    order = order.long()
    seen = torch.zeros(n, dtype=torch.bool, device=device)
    if int(order.min()) < 0 or int(order.max()) >= n:
        raise ValueError(f"order: entries must lie in [0, {n}), got [{int(order.min())}, {int(order.max())}]")
    seen[order] = True
    if not bool(seen.all()):
        raise ValueError("order: not a permutation (some index repeats)")
    return order


def _check_threshold(threshold):
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise ValueError(f"threshold: expected a finite float, got {threshold!r}")
    return float(threshold)


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
    x = _check_matrix("x", x)
    threshold = _check_threshold(threshold)
    checks.check_positive_int("block", block)
    checks.check_positive_int("chunk", chunk)
    n = x.shape[0]
    order = _check_order(order, n, x.device)
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


# ----------------------------------------------------------------------------- greedy diversity

def _check_k(k, n, what="k"):
    checks.check_positive_int(what, k)
    if k > n:
        raise ValueError(f"{what}: asked for {k} picks from a pool of {n}")


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
    x = _check_matrix("x", x)
    n = x.shape[0]
    _check_k(k, n)
    start = 0 if start is None else start
    if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < n:
        raise ValueError(f"start: expected an index in [0, {n}), got {start!r}")
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
    x = _check_matrix("x", x)
    n = x.shape[0]
    _check_k(k, n)
    relevance = _check_relevance(relevance, n, x.device)
    if not isinstance(lambda_, (int, float)) or not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_: expected a float in [0, 1], got {lambda_!r}")
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


def _check_relevance(relevance, n, device):
    relevance = torch.as_tensor(relevance, device=device)
    if relevance.shape != (n,):
        raise ValueError(f"relevance: expected shape ({n},), got {tuple(relevance.shape)}")
    relevance = relevance.float()
    if not bool(torch.isfinite(relevance).all()):
        raise ValueError("relevance: contains NaN or inf")
    return relevance


# ----------------------------------------------------------------------------- k-means

def kmeans(x: torch.Tensor, n_clusters: int, *, iters: int = 20, seed: int = 0,
           backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means (cosine): assignment is topk_similarity(x, centroids, k=1).

    Deterministic under `seed` (initial centroids: a seeded random choice of rows). Empty
    clusters keep their previous centroid. Returns (labels int64 [N], centroids fp32 [C, D]).
    """
    x = _check_matrix("x", x)
    n = x.shape[0]
    _check_k(n_clusters, n, "n_clusters")
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
