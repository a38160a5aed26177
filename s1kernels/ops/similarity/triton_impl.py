"""Triton kernel for blocked cosine top-k: tiles of x @ y.T with a running top-k per row.

No [N, M] matrix exists: a program owns BLOCK_N = 64 query rows (one wgmma M-tile per warp
group, so every k <= 128 runs on Hopper's HGMMA), loads their vectors once and keeps them on
chip (shared memory, the wgmma A operand) while it streams the pool in BLOCK_M-column tiles;
each row's running top-k lives in registers as 64-bit keys.

A key packs (score, index) so that one integer comparison orders by higher score first,
then lower index: high 32 bits = the fp32 score's bits mapped to an order-preserving signed
int, low 32 bits = 0x7FFFFFFF - index. Keys are unique, so the result (ties included) is
exactly the reference's ranking of the same scores.

Filter and merge: a tile's scores go through one comparison each against the row's running
k-th best score (`f >= thr`; NaN marks an invalid column and never passes). Only when some
score passes does the tile enter the insertion rounds: each round takes every row's best
remaining candidate, writes it over the row's minimum key if its key is larger, and drops
the candidates the raised threshold excludes. After the first tiles a tile brings a handful
of insertions at most. The list has K = next power of two >= k slots; slots k..K-1 hold keys
above every real key that are never the minimum, so exactly k real entries compete. One sort
at the end orders the list.

fp32 input (and k-means, which passes fp32 unit vectors) reaches the tensor cores through
bf16 copies, without losing exactness (RESCORE): the bf16 score s~ of a pair is within
B_ij = ex_i * ey_j of its exact fp32 score (the bound is derived in
`rescore_bounds` below), so a column can beat the running k-th best only if
s~ + B_ij >= thr: that upper bound is what the single comparison tests. Each surviving
candidate is re-scored exactly in fp32 from the original vectors (BLOCK_D slices, fixed
order: the score of a pair never depends on its tile or position) and competes by that
exact key. bf16/fp16 input needs no re-scoring: products of two such numbers are exact in
the fp32 accumulator.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

KEY_SENTINEL = tl.constexpr(-(2**63))  # + slot: an empty slot, below every real key
KEY_DEAD = tl.constexpr(2**63 - 1)  # - slot: a slot beyond k, above every real key


@triton.jit
def _dot(a, b, acc, LOW_PRECISION_DOT: tl.constexpr):
    if LOW_PRECISION_DOT:
        # bf16/fp16 operands straight to the tensor cores, fp32 accumulate
        return tl.dot(a, b, acc)
    # The interpreter (its bf16 arithmetic is wrong): the same products, exact in fp32.
    return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")


@triton.jit
def _col_tile(yl_ptr, m0, M, D, stride_yl, D0: tl.constexpr, WIDTH: tl.constexpr, BLOCK_M: tl.constexpr):
    """Columns m0 .. m0 + BLOCK_M of y, dimensions D0 .. D0 + WIDTH, as a [WIDTH, BLOCK_M] tile."""
    cols = m0 + tl.arange(0, BLOCK_M)
    dd = D0 + tl.arange(0, WIDTH)
    return tl.load(yl_ptr + cols.to(tl.int64)[None, :] * stride_yl + dd[:, None],
                   mask=(cols < M)[None, :] & (dd < D)[:, None], other=0.0)


@triton.jit
def _key_score(kmin):
    """The score of a key as fp32, -inf for an empty slot (every column beats it)."""
    hi = (kmin >> 32).to(tl.int32)
    ms = (hi ^ ((hi >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
    return tl.where(hi == -2147483648, float("-inf"), ms)


@triton.jit
def _topk_sim_kernel(x_ptr, y_ptr, xl_ptr, yl_ptr, rx_ptr, ry_ptr, ex_ptr, ey_ptr, keys_ptr,
                     N, M, D, k, stride_x, stride_y, stride_xl, stride_yl, stride_k,
                     EXCLUDE_SELF: tl.constexpr, LOW_PRECISION_DOT: tl.constexpr, RESCORE: tl.constexpr,
                     K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                     Q1: tl.constexpr, Q2: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    rx = tl.load(rx_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    if RESCORE:
        ex = tl.load(ex_ptr + rows, mask=row_ok, other=0.0)
    # The query tile, loaded once (Q1 + Q2 >= D columns, two power-of-two parts so that
    # D = 384 needs no padding); Q1 == 0 streams it in BLOCK_D slices (D too large for chip).
    if Q1 > 0:
        d1 = tl.arange(0, Q1)
        q1 = tl.load(xl_ptr + rows64[:, None] * stride_xl + d1[None, :],
                     mask=row_ok[:, None] & (d1 < D)[None, :], other=0.0)
        if Q2 > 0:
            d2 = Q1 + tl.arange(0, Q2)
            q2 = tl.load(xl_ptr + rows64[:, None] * stride_xl + d2[None, :],
                         mask=row_ok[:, None] & (d2 < D)[None, :], other=0.0)
    slot = tl.arange(0, K).to(tl.int64)
    init = tl.where(slot < k, KEY_SENTINEL + slot, KEY_DEAD - slot)
    best = tl.zeros([BLOCK_N, K], dtype=tl.int64) + init[None, :]
    kmin = tl.min(best, axis=1)
    thr = _key_score(kmin)
    if Q1 > 0:  # the first column tile; each iteration then loads the next one early
        b1n = _col_tile(yl_ptr, 0, M, D, stride_yl, 0, Q1, BLOCK_M)
        if Q2 > 0:
            b2n = _col_tile(yl_ptr, 0, M, D, stride_yl, Q1, Q2, BLOCK_M)
    for m0 in range(0, M, BLOCK_M):
        cols = m0 + tl.arange(0, BLOCK_M)
        col_ok = cols < M
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        if Q1 > 0:
            # Hand-made double buffer: the loop holds the insertion rounds (a nested loop), which
            # Triton's software pipeliner does not handle, so tile m0 + BLOCK_M is requested into
            # registers here and its latency hides behind this tile's products and filter.
            b1 = b1n
            b1n = _col_tile(yl_ptr, m0 + BLOCK_M, M, D, stride_yl, 0, Q1, BLOCK_M)
            acc = _dot(q1, b1, acc, LOW_PRECISION_DOT)
            if Q2 > 0:
                b2 = b2n
                b2n = _col_tile(yl_ptr, m0 + BLOCK_M, M, D, stride_yl, Q1, Q2, BLOCK_M)
                acc = _dot(q2, b2, acc, LOW_PRECISION_DOT)
        else:
            cols64 = cols.to(tl.int64)
            for d0 in range(0, D, BLOCK_D):
                dd = d0 + tl.arange(0, BLOCK_D)
                a = tl.load(xl_ptr + rows64[:, None] * stride_xl + dd[None, :],
                            mask=row_ok[:, None] & (dd < D)[None, :], other=0.0)
                b = tl.load(yl_ptr + cols64[None, :] * stride_yl + dd[:, None],
                            mask=col_ok[None, :] & (dd < D)[:, None], other=0.0)
                acc = _dot(a, b, acc, LOW_PRECISION_DOT)
        ry = tl.load(ry_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        # + 0.0 turns -0.0 into +0.0, so equal scores give equal keys' high words.
        s = acc * rx[:, None] * ry[None, :] + 0.0
        if RESCORE:
            ey = tl.load(ey_ptr + cols, mask=col_ok, other=0.0)
            s = s + ex[:, None] * ey[None, :]  # upper bound of the exact score
            s = tl.where(s == s, s, float("inf"))  # an overflowed bf16 score bounds nothing
        valid = col_ok[None, :] & row_ok[:, None]
        if EXCLUDE_SELF:
            valid = valid & (rows[:, None] != cols[None, :])
        f = tl.where(valid, s, float("nan"))
        cand = f >= thr[:, None]  # the single comparison per score
        while tl.max(tl.max(cand.to(tl.int32), axis=1)) > 0:
            sc = tl.where(cand, f, float("-inf"))
            m = tl.max(sc, axis=1)
            has = tl.max(cand.to(tl.int32), axis=1) > 0
            idx = tl.min(tl.where(cand & (sc == m[:, None]), cols[None, :], 2147483647), axis=1)
            if RESCORE:
                # exact fp32 score of (row, idx) from the original vectors
                idx64 = tl.where(has, idx, 0).to(tl.int64)
                e = tl.zeros([BLOCK_N], dtype=tl.float32)
                for d0 in range(0, D, BLOCK_D):
                    dd = d0 + tl.arange(0, BLOCK_D)
                    msk = has[:, None] & (dd < D)[None, :]
                    xv = tl.load(x_ptr + rows64[:, None] * stride_x + dd[None, :], mask=msk, other=0.0)
                    yv = tl.load(y_ptr + idx64[:, None] * stride_y + dd[None, :], mask=msk, other=0.0)
                    e += tl.sum(xv * yv, axis=1)
                ryi = tl.load(ry_ptr + idx64, mask=has, other=0.0)
                m = e * rx * ryi + 0.0
            mb = m.to(tl.int32, bitcast=True)
            key = ((mb ^ ((mb >> 31) & 0x7FFFFFFF)).to(tl.int64) << 32) | (0x7FFFFFFF - idx).to(tl.int64)
            take = has & (key > kmin)
            best = tl.where(take[:, None] & (best == kmin[:, None]), key[:, None], best)
            kmin = tl.min(best, axis=1)
            thr = _key_score(kmin)
            cand = cand & (cols[None, :] != idx[:, None]) & (f >= thr[:, None])
    best = tl.sort(best, dim=1, descending=True)
    kk = tl.arange(0, K)
    tl.store(keys_ptr + rows64[:, None] * stride_k + kk[None, :], best, mask=row_ok[:, None])


# The on-chip budget for the query tile plus the pipelined column tiles (H100: 227 KB per CTA).
_SMEM_BUDGET = 200 * 1024


def query_parts(d: int, block_n: int, block_m: int, num_stages: int, elem_bytes: int = 2) -> tuple[int, int]:
    """(Q1, Q2): two power-of-two widths >= 16 covering d (384 = 256 + 128), or (0, 0) when the
    query tile and the column tiles do not fit on chip together (the kernel then streams D)."""
    q1 = 16
    while q1 * 2 <= d:
        q1 *= 2
    rest = d - q1
    q2 = 0 if rest <= 0 else max(16, 1 << (rest - 1).bit_length())
    if (block_n + num_stages * block_m) * (q1 + q2) * elem_bytes > _SMEM_BUDGET:
        return 0, 0
    return q1, q2


def gpu_config(k_pow2: int, dtype: str) -> dict:
    """Tile sizes used on the GPU for a given power-of-two K (what the compile check builds).
    Each warp group takes 64 query rows (one wgmma M-tile): for K <= 16 two of them stack along
    128 rows, so each issues 64x32 wgmma over the whole column tile and a pool tile read from L2
    serves 128 rows; larger K keeps 64 rows (the two warp groups then split the columns) so the
    running list (BLOCK_N * K int64) stays at <= 64 registers a thread. Narrower column tiles for
    larger K and narrower re-score slices for fp32 keep the variants free of spills (one
    exception: fp32 with K = 128 spills 29 words under Triton 3.6, none under 3.9)."""
    block_d = 64 if dtype != "fp32" else 32
    return dict(BLOCK_N=128 if k_pow2 <= 16 else 64, BLOCK_M=32 if k_pow2 <= 32 else 16, BLOCK_D=block_d,
                num_warps=8, num_stages=2)


# ----------------------------------------------------------------------------- launcher

def _tile_config(k_pow2: int, dtype: str, device: torch.device) -> dict:
    if device.type == "cpu":  # the interpreter: small tiles keep it fast enough for tests
        return dict(BLOCK_N=16, BLOCK_M=32, BLOCK_D=16, num_warps=4, num_stages=2)
    return gpu_config(k_pow2, dtype)


# Error bound of the bf16 scoring of fp32 input (RESCORE in triton_impl). For vectors x, y of
# dimension D, bf16 copies x~ = x(1 + d) + t with |d| <= u = 2^-8 (round to nearest gives
# 2^-9; the factor 2 is margin) and |t| <= tau = 2^-126 (flushed or subnormal values):
#   |x~.y~ - x.y| <= (2u + u^2) |x||y| + tau sqrt(D) (1 + u) (|x| + |y|) + D tau^2
# (Cauchy-Schwarz: sum |x_d y_d| <= |x||y|). The tensor cores' fp32 accumulation adds at most
# D 2^-22 (1 + u)^2 |x||y|, the exact fp32 re-score D 2^-24 |x||y|, the scalings by 1/|x|,
# 1/|y| and the bound's own fp32 arithmetic 2^-20 |x||y|: with c the sum of the |x||y|
# coefficients and a = tau sqrt(D) (1 + u), the total is at most
#   c (|x| + a/c) (|y| + a/c)  (as D tau^2 <= a^2 / c),
# times 1/|x| 1/|y| for cosine. ex_i * ey_j is twice that, split into a row and a column factor.
_BF16_U = 2.0 ** -8
_TAU = 2.0 ** -126


def rescore_bounds(t: torch.Tensor, r: torch.Tensor, d: int) -> torch.Tensor:
    """The per-vector factor e of the bound ex_i * ey_j >= 2 |bf16 score - exact fp32 score|."""
    u = _BF16_U
    c = 2 * u + u * u + d * 2.0 ** -22 * (1 + u) ** 2 + d * 2.0 ** -24 + 2.0 ** -20
    a = _TAU * math.sqrt(d) * (1 + u)
    norm = torch.linalg.vector_norm(t.double(), dim=1)
    e = math.sqrt(2 * c) * (norm + a / c) * r.double() * (1 + 2.0 ** -20)
    return e.float()


def topk_keys(x, y, rx, ry, k, exclude_self, block_m):
    """The top-k keys [N, k] of every row (sorted descending) by the kernel."""
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    self_mode = y is x
    k2 = max(1, 1 << (k - 1).bit_length())
    dt = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[x.dtype]
    cfg = _tile_config(k2, dt, x.device)
    if block_m is not None:
        # tl.arange needs a power of two; block_m only narrows the tile: a wider one is a
        # register/shared-memory tile (the torch path's 8192-column chunks would not fit on chip)
        cfg["BLOCK_M"] = min(cfg["BLOCK_M"], max(16, 1 << (block_m - 1).bit_length()))
    q1, q2 = query_parts(d, cfg["BLOCK_N"], cfg["BLOCK_M"], cfg["num_stages"])
    rescore = x.dtype == torch.float32
    if rescore:  # bf16 copies feed the tensor cores; candidates are re-scored from x, y
        xl = x.to(torch.bfloat16)
        yl = xl if self_mode else y.to(torch.bfloat16)
        ex = rescore_bounds(x, rx, d)
        ey = ex if self_mode else rescore_bounds(y, ry, d)
    else:
        xl, yl, ex, ey = x, y, rx, ry
    keys = torch.empty(n, k2, dtype=torch.int64, device=x.device)
    grid = (triton_cdiv(n, cfg["BLOCK_N"]),)
    _topk_sim_kernel[grid](
        x, y, xl, yl, rx, ry, ex, ey, keys, n, m, d, k, x.stride(0), y.stride(0), xl.stride(0), yl.stride(0),
        keys.stride(0), EXCLUDE_SELF=exclude_self, LOW_PRECISION_DOT=x.device.type != "cpu", RESCORE=rescore,
        K=k2, BLOCK_N=cfg["BLOCK_N"], BLOCK_M=cfg["BLOCK_M"], BLOCK_D=cfg["BLOCK_D"], Q1=q1, Q2=q2,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return keys[:, k2 - k:]  # sorted descending: the k2 - k unused slots come first


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b
