"""Triton kernel for blocked cosine top-k: tiles of x @ y.T with a running top-k per row.

No [N, M] matrix exists: a program owns BLOCK_N query rows, streams the pool in BLOCK_M
tiles (the inner product accumulated over BLOCK_D slices with tl.dot), turns each score into
a 64-bit key and merges the tile's top-K keys into the running top-K list held in registers.

The key packs (score, index) so that one integer comparison orders by higher score first,
then lower index: high 32 bits = the fp32 score's bits mapped to an order-preserving signed
int, low 32 bits = 0x7FFFFFFF - index. Keys are unique, so tl.topk (a bitonic network with
no stable order of its own) returns exactly what the torch reference returns, ties included.
"""
from __future__ import annotations

import triton
import triton.language as tl

# Key of an excluded or out-of-range column: below every real score.
KEY_SENTINEL = tl.constexpr(-(2**63))


@triton.jit
def _topk_sim_kernel(x_ptr, y_ptr, rx_ptr, ry_ptr, keys_ptr,
                     N, M, D, stride_x, stride_y, stride_k,
                     EXCLUDE_SELF: tl.constexpr, LOW_PRECISION_DOT: tl.constexpr, K: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    rx = tl.load(rx_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    best = tl.full([BLOCK_N, K], KEY_SENTINEL, tl.int64)
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
        # + 0.0 turns -0.0 into +0.0, so equal scores give equal high words.
        s = acc * rx[:, None] * ry[None, :] + 0.0
        bits = s.to(tl.int32, bitcast=True)
        hi = bits ^ ((bits >> 31) & 0x7FFFFFFF)
        keys = (hi.to(tl.int64) << 32) | (0x7FFFFFFF - cols).to(tl.int64)[None, :]
        bad = ~col_ok[None, :] | ~row_ok[:, None]
        if EXCLUDE_SELF:
            bad = bad | (rows[:, None] == cols[None, :])
        keys = tl.where(bad, KEY_SENTINEL, keys)
        # Merge only when some key of the tile beats some row's current K-th best.
        kth = tl.min(best, axis=1)
        if tl.max((tl.max(keys, axis=1) > kth).to(tl.int32)) > 0:
            cand = tl.topk(keys, K, dim=1)
            best = tl.topk(tl.reshape(tl.join(best, cand), [BLOCK_N, 2 * K]), K, dim=1)
    kk = tl.arange(0, K)
    tl.store(keys_ptr + rows64[:, None] * stride_k + kk[None, :], best, mask=row_ok[:, None])


def _spec(dtype: str, k: int, block_n: int, block_m: int, block_d: int, num_warps: int):
    ptr = "*" + dtype
    return dict(
        kernel="_topk_sim_kernel",
        signature={"x_ptr": ptr, "y_ptr": ptr, "rx_ptr": "*fp32", "ry_ptr": "*fp32", "keys_ptr": "*i64",
                   "N": "i32", "M": "i32", "D": "i32", "stride_x": "i32", "stride_y": "i32",
                   "stride_k": "i32", "EXCLUDE_SELF": "constexpr", "LOW_PRECISION_DOT": "constexpr",
                   "K": "constexpr", "BLOCK_N": "constexpr", "BLOCK_M": "constexpr", "BLOCK_D": "constexpr"},
        constexprs={"EXCLUDE_SELF": True, "LOW_PRECISION_DOT": dtype != "fp32", "K": k,
                    "BLOCK_N": block_n, "BLOCK_M": block_m, "BLOCK_D": block_d},
        num_warps=num_warps, num_stages=2)


def gpu_config(k_pow2: int, dtype: str) -> dict:
    """Tile sizes used on the GPU for a given power-of-two K (shared with the compile specs)."""
    block_m = max(64, k_pow2)
    block_n = 64 if k_pow2 <= 32 else 32
    block_d = 32 if dtype == "fp32" else 64
    return dict(BLOCK_N=block_n, BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4 if k_pow2 <= 32 else 8)


def _specs():
    # Both tile-size regimes of gpu_config, each storage dtype, and k=1 (k-means assignment).
    out = []
    for dtype, k in (("bf16", 1), ("bf16", 16), ("bf16", 128), ("fp16", 16), ("fp32", 16)):
        c = gpu_config(k, dtype)
        out.append(_spec(dtype, k, c["BLOCK_N"], c["BLOCK_M"], c["BLOCK_D"], c["num_warps"]))
    return out


TRITON_COMPILE_SPECS = _specs()
