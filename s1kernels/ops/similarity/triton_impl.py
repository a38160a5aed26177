"""Triton kernel for blocked cosine top-k: tiles of x @ y.T with a running top-k per row.

No [N, M] matrix exists: a program owns BLOCK_N query rows, streams the pool in BLOCK_M
tiles (the inner product accumulated over BLOCK_D slices with tl.dot) and keeps each row's
running top-k in registers as 64-bit keys.

A key packs (score, index) so that one integer comparison orders by higher score first,
then lower index: high 32 bits = the fp32 score's bits mapped to an order-preserving signed
int, low 32 bits = 0x7FFFFFFF - index. Keys are unique, so the result (ties included) is
exactly the torch reference's.

Merging a tile is threshold-based insertion, not a sort: a column is a candidate for a row
when its (score, index) beats the row's current k-th best. Each round takes every row's best
remaining candidate and writes it over that row's minimum key; rounds repeat while any row
has a candidate. After the first tiles a tile brings a handful of insertions at most, so a
tile costs a few fp32 compares and reductions per score instead of a bitonic network.
The list has K = next power of two >= k slots; slots k..K-1 hold keys above every real key
that are never the minimum, so exactly k real entries compete. One sort at the end orders
the list.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

KEY_SENTINEL = tl.constexpr(-(2**63))  # + slot: an empty slot, below every real key
KEY_DEAD = tl.constexpr(2**63 - 1)  # - slot: a slot beyond k, above every real key


@triton.jit
def _topk_sim_kernel(x_ptr, y_ptr, rx_ptr, ry_ptr, keys_ptr,
                     N, M, D, k, stride_x, stride_y, stride_k,
                     EXCLUDE_SELF: tl.constexpr, LOW_PRECISION_DOT: tl.constexpr, K: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    rx = tl.load(rx_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    slot = tl.arange(0, K).to(tl.int64)
    init = tl.where(slot < k, KEY_SENTINEL + slot, KEY_DEAD - slot)
    best = tl.zeros([BLOCK_N, K], dtype=tl.int64) + init[None, :]
    kmin = tl.min(best, axis=1)
    for m0 in range(0, M, BLOCK_M):
        cols = m0 + tl.arange(0, BLOCK_M)
        col_ok = cols < M
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + tl.arange(0, BLOCK_D)
            d_ok = dd < D
            a = tl.load(x_ptr + rows64[:, None] * stride_x + dd[None, :],
                        mask=row_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
            b = tl.load(y_ptr + cols.to(tl.int64)[None, :] * stride_y + dd[:, None],
                        mask=col_ok[None, :] & d_ok[:, None], other=0.0).to(tl.float32)
            if LOW_PRECISION_DOT:
                # bf16/fp16 storage: the round trip is exact, products are exact in the fp32
                # accumulator, and the tensor cores do the work.
                acc = tl.dot(a.to(x_ptr.dtype.element_ty), b.to(y_ptr.dtype.element_ty), acc)
            else:
                acc = tl.dot(a, b, acc, input_precision="ieee")
        ry = tl.load(ry_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        # + 0.0 turns -0.0 into +0.0, so equal scores give equal keys' high words.
        s = acc * rx[:, None] * ry[None, :] + 0.0
        valid = col_ok[None, :] & row_ok[:, None]
        if EXCLUDE_SELF:
            valid = valid & (rows[:, None] != cols[None, :])
        # the row's k-th best as (score, index); an empty slot admits every valid column
        hi = (kmin >> 32).to(tl.int32)
        ms = (hi ^ ((hi >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
        mi = 0x7FFFFFFF - (kmin & 0xFFFFFFFF).to(tl.int32)
        empty = hi == -2147483648
        cand = valid & (empty[:, None] | (s > ms[:, None]) | ((s == ms[:, None]) & (cols[None, :] < mi[:, None])))
        while tl.max(tl.max(cand.to(tl.int32), axis=1)) > 0:
            sc = tl.where(cand, s, float("-inf"))
            m = tl.max(sc, axis=1)
            has = tl.max(cand.to(tl.int32), axis=1) > 0
            idx = tl.min(tl.where(cand & (sc == m[:, None]), cols[None, :], 2147483647), axis=1)
            mb = m.to(tl.int32, bitcast=True)
            key = ((mb ^ ((mb >> 31) & 0x7FFFFFFF)).to(tl.int64) << 32) | (0x7FFFFFFF - idx).to(tl.int64)
            best = tl.where(has[:, None] & (best == kmin[:, None]), key[:, None], best)
            kmin = tl.min(best, axis=1)
            hi = (kmin >> 32).to(tl.int32)
            ms = (hi ^ ((hi >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
            mi = 0x7FFFFFFF - (kmin & 0xFFFFFFFF).to(tl.int32)
            empty = hi == -2147483648
            cand = cand & (cols[None, :] != idx[:, None])
            cand = cand & (empty[:, None] | (s > ms[:, None]) | ((s == ms[:, None]) & (cols[None, :] < mi[:, None])))
    best = tl.sort(best, dim=1, descending=True)
    kk = tl.arange(0, K)
    tl.store(keys_ptr + rows64[:, None] * stride_k + kk[None, :], best, mask=row_ok[:, None])


def gpu_config(k_pow2: int, dtype: str) -> dict:
    """Tile sizes used on the GPU for a given power-of-two K.
    The running list costs BLOCK_N * K int64 registers, so large K takes fewer rows."""
    block_n = 64 if k_pow2 <= 32 else 32
    block_d = 32 if dtype == "fp32" else 64
    return dict(BLOCK_N=block_n, BLOCK_M=128, BLOCK_D=block_d, num_warps=4 if k_pow2 <= 32 else 8, num_stages=2)


# ----------------------------------------------------------------------------- launcher

def _tile_config(k_pow2: int, dtype: str, device: torch.device) -> dict:
    if device.type == "cpu":  # the interpreter: small tiles keep it fast enough for tests
        return dict(BLOCK_N=16, BLOCK_M=32, BLOCK_D=16, num_warps=4, num_stages=2)
    return gpu_config(k_pow2, dtype)


def topk_keys(x, y, rx, ry, k, exclude_self, block_m):
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
    _topk_sim_kernel[grid](
        x, y, rx, ry, keys, n, m, d, k, x.stride(0), y.stride(0), keys.stride(0),
        EXCLUDE_SELF=exclude_self, LOW_PRECISION_DOT=(x.dtype != torch.float32 and x.device.type != "cpu"),
        K=k2, BLOCK_N=cfg["BLOCK_N"], BLOCK_M=cfg["BLOCK_M"], BLOCK_D=cfg["BLOCK_D"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return keys[:, k2 - k:]  # sorted descending: the k2 - k unused slots come first


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b
