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
- Layout (the doors of every family): `contract.py` (argument checks, the ranking key, safe
  row norms), `reference.py` (the oracles only), `torch_impl.py` (chunked top-k, the greedy
  device loop), `triton_impl.py` (the top-k kernel and its launcher), `native.py` (the CPU
  top-k: torch's matrix product per chunk, the extension's threshold selection over it), `algorithms.py`
  (dedup, k-center, MMR, k-means, built on the kernels); this module holds the public API
  and the custom op.
- Argument checks run once per call at the boundary (they read a few flags back to the host);
  the per-item and per-pick loops never synchronise with the host.
"""
from __future__ import annotations

from typing import Optional

import torch

from s1kernels import backend as _backend
from s1kernels.ops.similarity import torch_impl
from s1kernels.ops.similarity.algorithms import k_center, kmeans, mmr, threshold_dedup  # noqa: F401
from s1kernels.ops.similarity.contract import (  # noqa: F401  (public names of the family)
    KEY_SENTINEL, TRITON_MAX_K, DedupResult, check_inner_products, check_matrix, check_topk_args, decode_keys, inverse_norms,
    normalized, scaled_rows, score_keys)
from s1kernels.ops.similarity.reference import (  # noqa: F401
    k_center_reference, mmr_reference, threshold_dedup_reference, topk_similarity_reference)


# ----------------------------------------------------------------------------- top-k

def topk_similarity(x: torch.Tensor, y: torch.Tensor | None = None, k: int = 10, *,
                    exclude_self: bool = True, normalize: bool = True, backend: str = "auto",
                    block_m: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k most similar rows of `y` (default: `x` itself) for every row of `x`.

    Returns (scores fp32 [N, k], indices int64 [N, k]), each row ordered by higher score
    first, then lower index. With y=None and exclude_self=True a row never lists itself
    (exclude_self is ignored when y is given). Cosine similarity when normalize=True, inner
    product otherwise. backend: "auto" | "triton" | "cpp" | "torch" (s1kernels.backend.resolve; "cpp", the
    extension's CPU selection, is what "auto" takes on a CPU when the extension is built); block_m sets the
    streamed tile width (columns of y per step; the Triton kernel only narrows its tile to it, never widens).
    """
    x, y, exclude = check_topk_args(x, y, k, exclude_self, block_m)
    _choose(backend, x, k)
    return torch.ops.s1kernels.topk_similarity(x, y, k, exclude, normalize, backend, block_m or 0)


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
    choice = _choose(backend, x, k)
    if choice == "triton":
        from s1kernels.ops.similarity import triton_impl

        keys = triton_impl.topk_keys(x, y, rx, ry, k, exclude, block_m)
    elif choice == "cpp":
        from s1kernels.ops.similarity import native

        keys = native.topk_keys(x, y, rx if normalize else None, ry if normalize else None, k, exclude, block_m,
                                self_mode=self_mode)
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
