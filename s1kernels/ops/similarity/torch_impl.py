"""Torch paths of the similarity family: the chunked top-k (any device; memory
O(block_n * block_m + N * k)), the blocked threshold dedup and the greedy device loops of
k-center and MMR (one CUDA graph replay per pick on a GPU).
"""
from __future__ import annotations

import math

import torch

from s1kernels.ops.similarity.contract import score_keys


def topk_keys(x, y, rx, ry, k, exclude_self, block_n, block_m):
    """Chunked mm + top-k merge on any device; memory O(block_n * block_m + N * k).
    rx, ry: fp32 inverse row norms applied to each chunk, or None (both) for raw inner products."""
    n, m = x.shape[0], y.shape[0]
    out = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for i0 in range(0, n, block_n):
        i1 = min(n, i0 + block_n)
        xi = x[i0:i1]
        best = None
        for j0 in range(0, m, block_m):
            j1 = min(m, j0 + block_m)
            s = _dot_fp32(xi, y[j0:j1])
            if rx is not None:  # None: inner products as they are (normalize=False)
                s.mul_(rx[i0:i1, None]).mul_(ry[None, j0:j1])
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


def blocks(n, m, k, device, block_m):
    # Scores per chunk: ~8M fp32 (32 MB, 1022 x 8192) on CPU, 256M (1 GB) on a GPU. On the
    # CPU, larger products run closer to the matmul rate: at N=12,000, D=384, k=10 on 2
    # cores (raw inner products), 1022 x 8192 took 1.29 s, 2048 x 8192 1.44 s, 4096 x 4096
    # 2.16 s; the former 510 x 4096 took 2.99 s with the norm scaling normalize=False now skips.
    cpu = device.type == "cpu"
    budget = (1 << 23) if cpu else (1 << 28)
    bm = block_m or max(k, min(m, 8192))
    bn = max(1, min(n, budget // max(bm + k, 1)))
    return bn, bm


class GreedyState:
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


def run_greedy(step, st: GreedyState, k, device, use_graph):
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
