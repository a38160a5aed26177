"""Embedding similarity for data selection: top-k neighbours, threshold dedup, greedy diversity.

    scores, idx = topk_similarity(x, k=16)                 # self-kNN, cosine, self excluded
    scores, idx = topk_similarity(x, y, k=1)               # nearest item of y for each row of x
    keep = threshold_dedup(x, 0.95).keep                   # SemDeDup: drop near-duplicates
    picks = k_center(x, 1000)                              # farthest-point (max-min) diversity
    picks = mmr(x, relevance, 1000, lambda_=0.5)           # maximal marginal relevance

Semantics shared by every op:
- Cosine similarity (normalize=True) is computed as (x_i . y_j) * (1/|x_i|) * (1/|y_j|) with the
  dot product accumulated in fp32 from the stored bf16/fp16/fp32 values (products of two
  bf16/fp16 numbers are exact in fp32) and the inverse norms computed in fp32. A row with zero
  norm has no direction: it is rejected with a ValueError that counts such rows. NaN or inf
  entries are rejected too. normalize=False uses the raw inner product.
- Order of a top-k row: higher score first, then lower index. The reference and the kernels
  both rank by a unique 64-bit key built from (score, index), so ties come out identically.
- Nothing of size [N, M] is ever allocated: the torch path streams M in chunks of `block_m`
  columns (and N in chunks of rows) and merges a running top-k; the Triton kernel keeps the
  running top-k in registers (k <= 128) and larger k runs the chunked path on the device.
- Argument checks run once per call at the boundary (they read a few flags back to the host);
  the per-item and per-pick loops never synchronise with the host.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from s1kernels import backend as _backend

KEY_SENTINEL = -(2**63)
TRITON_MAX_K = 128  # the register-resident running list; larger k streams through torch chunks

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- validation

def _check_matrix(name: str, t, allow_empty: bool = False) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [rows, dim], got {type(t).__name__}")
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


def inverse_norms(t: torch.Tensor, name: str = "x", normalize: bool = True) -> torch.Tensor:
    """fp32 1/|row| (ones when normalize=False); zero-norm rows raise ValueError."""
    if not normalize:
        return torch.ones(t.shape[0], dtype=torch.float32, device=t.device)
    n = torch.linalg.vector_norm(t.float(), dim=1)
    zero = int((n == 0).sum())
    if zero:
        raise ValueError(f"{name}: {zero} row(s) have zero norm, so cosine similarity is undefined "
                         f"(drop them, or pass normalize=False for inner products)")
    return 1.0 / n


def normalized(t: torch.Tensor, name: str = "x", normalize: bool = True) -> torch.Tensor:
    """Rows as fp32 unit vectors (the same inverse norms the top-k path uses)."""
    return t.float() * inverse_norms(t, name, normalize)[:, None]


# ----------------------------------------------------------------------------- keys

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


# ----------------------------------------------------------------------------- top-k

def _topk_torch(x, y, rx, ry, k, exclude_self, block_n, block_m):
    """Chunked mm + top-k merge on any device; memory O(block_n * block_m + N * k)."""
    n, m = x.shape[0], y.shape[0]
    out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for i0 in range(0, n, block_n):
        i1 = min(n, i0 + block_n)
        xi = x[i0:i1]
        best = None
        for j0 in range(0, m, block_m):
            j1 = min(m, j0 + block_m)
            s = _dot_fp32(xi, y[j0:j1]).mul_(rx[i0:i1, None]).mul_(ry[None, j0:j1])
            if exclude_self:
                # Entry (r, c) is row i0 + r against row j0 + c: the diagonal at offset i0 - j0
                # (empty when the chunk misses the diagonal). -inf ranks below every finite
                # score; k <= valid columns keeps it out of the result.
                s.diagonal(i0 - j0).fill_(-math.inf)
            keys = _chunk_topk_keys(s, j0, k)
            if best is not None:
                keys = torch.cat([best, keys], dim=1)
            best = keys.topk(min(k, keys.shape[1]), dim=1).values
        out[i0:i1] = best
    return out


_MM_OUT_DTYPE_OK = [True]


def _dot_fp32(a, b):
    """a @ b.T as fp32 with fp32 accumulation. bf16/fp16 on CUDA use the tensor-core mm with
    an fp32 output (torch.mm(..., out_dtype=)) when this torch has it; otherwise upcast."""
    if a.device.type == "cuda" and a.dtype != torch.float32 and _MM_OUT_DTYPE_OK[0]:
        try:
            return torch.mm(a, b.T, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            _MM_OUT_DTYPE_OK[0] = False
    return a.float() @ b.float().T


def _chunk_topk_keys(s, j0, k):
    """Keys of a chunk's top-k by (score desc, index asc), without keying the whole chunk;
    column c of the chunk is item j0 + c.

    A float top-(k+1) finds the set; unless the k-th and (k+1)-th scores of a row tie, that
    set is exact and only its k entries need keys (which fix the order among equal scores).
    Rows with a tie at the boundary (exact duplicates in the pool make them common in large
    chunks; one host check per chunk) are keyed in full, alone.
    """
    w = s.shape[1]
    if k >= w:
        return score_keys(s, torch.arange(j0, j0 + w, device=s.device)[None, :])
    v, j = s.topk(k + 1, dim=1)
    keys = score_keys(v[:, :k], j[:, :k] + j0)
    tied = (v[:, k - 1] == v[:, k]).nonzero()[:, 0]
    if tied.numel():
        cols = torch.arange(j0, j0 + w, device=s.device)
        keys[tied] = score_keys(s[tied], cols[None, :]).topk(k, dim=1).values
    return keys


def _tile_config(k_pow2: int, dtype: str, device: torch.device) -> dict:
    from s1kernels.ops.similarity import triton_impl as K

    if device.type == "cpu":  # the interpreter: small tiles keep it fast enough for tests
        return dict(BLOCK_N=16, BLOCK_M=32, BLOCK_D=16, num_warps=4, num_stages=2)
    return K.gpu_config(k_pow2, dtype)


def _topk_triton(x, y, rx, ry, k, exclude_self, block_m):
    from s1kernels.ops.similarity import triton_impl as K

    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    k2 = max(1, 1 << (k - 1).bit_length())
    dt = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[x.dtype]
    cfg = _tile_config(k2, dt, x.device)
    if block_m is not None:
        # tl.arange needs a power of two; block_m only narrows the tile: a wider one is a
        # register/shared-memory tile (the torch path's 8192-column chunks would not fit on chip)
        cfg["BLOCK_M"] = min(cfg["BLOCK_M"], max(16, 1 << (block_m - 1).bit_length()))
    keys = torch.empty(n, k2, dtype=torch.int64, device=x.device)
    grid = (triton_cdiv(n, cfg["BLOCK_N"]),)
    K._topk_sim_kernel[grid](
        x, y, rx, ry, keys, n, m, d, k, x.stride(0), y.stride(0), keys.stride(0),
        EXCLUDE_SELF=exclude_self, LOW_PRECISION_DOT=(x.dtype != torch.float32 and x.device.type != "cpu"),
        K=k2, BLOCK_N=cfg["BLOCK_N"], BLOCK_M=cfg["BLOCK_M"], BLOCK_D=cfg["BLOCK_D"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return keys[:, k2 - k:]  # sorted descending: the k2 - k unused slots come first


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def topk_similarity(x: torch.Tensor, y: torch.Tensor | None = None, k: int = 10, *,
                    exclude_self: bool = True, normalize: bool = True, backend: str = "auto",
                    block_m: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k most similar rows of `y` (default: `x` itself) for every row of `x`.

    Returns (scores fp32 [N, k], indices int64 [N, k]), each row ordered by higher score
    first, then lower index. With y=None and exclude_self=True a row never lists itself
    (exclude_self is ignored when y is given). Cosine similarity when normalize=True, inner
    product otherwise. backend: "auto" | "triton" | "torch"; block_m sets the streamed tile
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
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if k > avail:
        raise ValueError(f"k: asked for {k} neighbours but the pool offers {avail} "
                         f"({m} rows{', minus the row itself' if exclude else ''})")
    if block_m is not None and (not isinstance(block_m, int) or block_m < 1):
        raise ValueError(f"block_m: expected a positive int or None, got {block_m!r}")
    _backend.resolve(backend, x.device, ("triton", "torch"), op="topk_similarity")
    return torch.ops.s1kernels.topk_similarity(x, None if self_mode else y, k, exclude, normalize,
                                               backend, block_m or 0)


@torch.library.custom_op("s1kernels::topk_similarity", mutates_args=())
def _topk_op(x: torch.Tensor, y: Optional[torch.Tensor], k: int, exclude_self: bool, normalize: bool,
             backend: str, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The compute behind topk_similarity (arguments already checked); y=None means y = x."""
    self_mode = y is None
    y = x if self_mode else y
    block_m = block_m or None
    rx = inverse_norms(x, "x", normalize)
    ry = rx if self_mode else inverse_norms(y, "y", normalize)
    exclude = exclude_self and self_mode
    choice = _backend.resolve(backend, x.device, ("triton", "torch"), op="topk_similarity")
    if choice == "triton" and k <= TRITON_MAX_K:
        keys = _topk_triton(x, y, rx, ry, k, exclude, block_m)
    else:
        bn, bm = _torch_blocks(x.shape[0], y.shape[0], k, x.device, block_m)
        keys = _topk_torch(x, y, rx, ry, k, exclude, bn, bm)
    return decode_keys(keys)


@_topk_op.register_fake
def _(x, y, k, exclude_self, normalize, backend, block_m):
    n = x.shape[0]
    return x.new_empty(n, k, dtype=torch.float32), x.new_empty(n, k, dtype=torch.int64)


def _torch_blocks(n, m, k, device, block_m):
    # Scores per chunk: ~2M fp32 (8 MB, 512 x 4096) on CPU, where the scaling and top-k
    # passes over the chunk then run from cache (measured at N=12,000, D=384 on 2 cores:
    # 1.0 s against 0.83 s for the matrix products alone); 256M (1 GB) on a GPU.
    cpu = device.type == "cpu"
    budget = (1 << 21) if cpu else (1 << 28)
    bm = block_m or max(k, min(m, 4096 if cpu else 8192))
    bn = max(1, min(n, budget // max(bm + k, 1)))
    return bn, bm


def topk_similarity_reference(x, y=None, k=10, *, exclude_self=True, normalize=True):
    """The oracle: the full score matrix, ranked by the same (score, index) key. Small inputs only."""
    self_mode = y is None
    y = x if self_mode else y
    rx = inverse_norms(x, "x", normalize)
    ry = rx if self_mode else inverse_norms(y, "y", normalize)
    s = (x.float() @ y.float().T) * rx[:, None] * ry[None, :]
    cols = torch.arange(y.shape[0], device=x.device)
    keys = score_keys(s, cols[None, :])
    if self_mode and exclude_self:
        keys.fill_diagonal_(KEY_SENTINEL)
    return decode_keys(keys.topk(k, dim=1).values)


def max_similarity(x: torch.Tensor, y: torch.Tensor | None = None, *, normalize: bool = True,
                   backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Highest similarity of each row of x to any row of y (to any other row when y is None).

    Returns (scores fp32 [N], indices int64 [N]); ties go to the lower index.
    """
    s, i = topk_similarity(x, y, 1, exclude_self=True, normalize=normalize, backend=backend)
    return s[:, 0], i[:, 0]


# ----------------------------------------------------------------------------- dedup

class DedupResult(NamedTuple):
    keep: torch.Tensor  # bool [N], indexed like x
    kept: torch.Tensor  # int64 [K], the kept items in priority order


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
    for name, v in (("block", block), ("chunk", chunk)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    n = x.shape[0]
    order = _check_order(order, n, x.device)
    # One working copy in walk order (x[order] always copies), normalised in place as
    # normalized() would; its front will hold the packed kept rows.
    xn = x[order].float()
    xn.mul_(inverse_norms(xn, "x", normalize)[:, None])
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


# ----------------------------------------------------------------------------- greedy diversity

def _check_k(k, n, what="k"):
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{what}: expected a positive int, got {k!r}")
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


class _GreedyState:
    """Device tensors of a greedy loop, updated in place so that one step can be captured
    in a CUDA graph and replayed: the step counter lives on the device too."""

    def __init__(self, n, k, cur):
        dev = cur.device
        self.picks = torch.empty(k, dtype=torch.int64, device=dev)
        self.maxsim = torch.full((n,), -math.inf, device=dev)
        self.sims = torch.empty(n, device=dev)
        self.cur = cur
        self.t = torch.zeros(1, dtype=torch.int64, device=dev)

    def record_pick(self):
        self.picks.index_copy_(0, self.t, self.cur)
        self.t.add_(1)


def _run_greedy(step, st: _GreedyState, k, device, use_graph):
    """Runs `step` k times (step i records pick i, then chooses pick i + 1). On CUDA
    (use_graph None and k >= 32, or True) one step is captured in a CUDA graph and replayed:
    one launch per pick instead of one per op, and the same arithmetic."""
    if use_graph is None:
        use_graph = device.type == "cuda" and k >= 32
    if not use_graph:
        for _ in range(k):
            step()
        return st.picks
    if device.type != "cuda":
        raise ValueError(f"use_graph: CUDA graphs need a CUDA device, got {device}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up outside the graph (allocator, lazy init): step 1
        step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # capture records the step without running it
        step()
    for _ in range(k - 1):
        graph.replay()
    return st.picks


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
    _backend.resolve(backend, x.device, ("triton", "torch"), op="kmeans")

    def nearest(cent):  # the op itself: xn and the centroids need no per-iteration checks
        return torch.ops.s1kernels.topk_similarity(xn, cent, 1, False, True, backend, 0)[1][:, 0]

    for _ in range(iters):
        labels = nearest(cent)
        sums = torch.zeros_like(cent).index_add_(0, labels, xn)
        norms = torch.linalg.vector_norm(sums, dim=1, keepdim=True)
        cent = torch.where(norms > 0, sums / norms.clamp_min(1e-30), cent)
    return nearest(cent), cent
