"""Triton kernels of the fused linear + cross-entropy loss (used by s1kernels.ops.loss).

Ignored tokens cost no matmul work: `_compact` lists the trained rows first (a cumsum and a
fixed-shape scatter on device, no host sync) and stores their count in a device int32;
every kernel reads that count and its token blocks past it exit at once (the dW kernel loops
over exactly that many tokens).

Forward (`_lce_fwd_kernel`, grid = vocab splits x token blocks): each program walks its share
of the vocab tiles; for a tile it computes the [BLOCK_N, BLOCK_V] logits with `tl.dot` over
BLOCK_H slices of H (input dtype operands, fp32 accumulator), applies bias and softcap, and
folds the tile into a running max / sum-of-exp (online logsumexp), the target logit and the
running argmax. The splits' partial results ([splits, N] fp32) are combined in torch.

Backward walks the vocabulary in chunks of `cw` columns, with one bounded workspace
`ws` [N, CHUNK] in the input dtype (default budget WORKSPACE_BYTES):
  1. `_lce_dlogits_kernel` recomputes the logits tile by tile and writes
     dlogits = g_t * (softmax * (1 + 2 z_loss lse) - onehot) * softcap' into `ws`, divided
     by max|g| (multiplied back in the fp32 epilogues of 2 and 3) so that fp16 does not
     underflow when g is as small as 1/num_items.
  2. `_lce_dh_kernel`: dH += ws @ W[chunk] (fp32 accumulator [N, H] across chunks, written
     once in the input dtype after the last chunk, scattered back to the token's row).
  3. `_lce_dw_kernel`: dW[chunk] = ws^T @ H over all trained tokens in one pass, so each
     weight row's gradient is accumulated in fp32 registers and written once: no atomics,
     no fp32 [V, H] buffer. The bias gradient is the column sum of the same tiles.
Chunking over the vocabulary (not the tokens) is what allows dW without a [V, H] fp32
accumulator; the price is an fp32 [N, H] accumulator for dH (only when there is more than
one chunk). Work: 8 N H V FLOPs (the forward logits are recomputed once in backward).
The last chunk's width is rounded up to a multiple of 16 (the workspace holds zeros past
the vocabulary), so with V = 151,665 the JIT still compiles its vectorised variant.

This is the path of reduction="none" and of softcap. A scalar loss that needs a gradient
takes triton_fused.py instead: the same kernels (the forward with STORE_P, dH, and dW with
FIRST/LAST accumulation over token chunks) at 6 N H V FLOPs.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

# Bytes of the dlogits workspace [N, chunk] in backward (the chunk shrinks to fit; >= one tile).
WORKSPACE_BYTES = 256 * 2**20

# Block sizes. The CUDA values are H100 choices that have NOT been tuned on a GPU; they were
# checked offline only: compiled for sm_90a with the JIT's 16-divisibility specialisation,
# they pipeline their loads (cp.async, 3 stages), use wgmma, fit in shared memory and
# ptxas reports no register spills except a few bytes in the bias+softcap forward.
# The interpreter values are small so that tests exercise several tiles and the tail masks.
CUDA_CONFIG = dict(  # bf16 / fp16
    fwd=dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=64, num_warps=8, num_stages=3),
    dlogits=dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=64, GROUP_M=8, num_warps=8, num_stages=3),
    dh=dict(BLOCK_N=128, BLOCK_H=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
    dw=dict(BLOCK_V=128, BLOCK_H=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
)
CUDA_CONFIG_FP32 = dict(  # fp32 operands (tf32 dots) take twice the shared memory per tile
    fwd=dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=32, num_warps=8, num_stages=3),
    dlogits=dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=32, GROUP_M=8, num_warps=8, num_stages=3),
    dh=dict(BLOCK_N=128, BLOCK_H=128, BLOCK_K=32, GROUP_M=8, num_warps=8, num_stages=3),
    dw=dict(BLOCK_V=128, BLOCK_H=128, BLOCK_K=32, GROUP_M=8, num_warps=8, num_stages=3),
)
INTERPRETER_CONFIG = dict(
    fwd=dict(BLOCK_N=32, BLOCK_V=64, BLOCK_H=32),
    dlogits=dict(BLOCK_N=32, BLOCK_V=64, BLOCK_H=32, GROUP_M=2),
    dh=dict(BLOCK_N=32, BLOCK_H=32, BLOCK_K=32, GROUP_M=2),
    dw=dict(BLOCK_V=64, BLOCK_H=32, BLOCK_K=32, GROUP_M=2),
)


@triton.jit
def _grouped_tile(num_m, num_n, GROUP_M: tl.constexpr):
    """(row tile, column tile) of this program in grouped order: GROUP_M row tiles share the
    column tiles in flight, so the operands they load are reused from L2."""
    pid = tl.program_id(0)
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    group = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (pid % width) % group, (pid % width) // group


@triton.jit
def _logits_tile(h_ptr, w_ptr, b_ptr, rows, mask_n, offs_v, mask_v, H, stride_h, stride_w, softcap,
                 HAS_BIAS: tl.constexpr, HAS_SOFTCAP: tl.constexpr, DOT_F32: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr):
    """The fp32 [BLOCK_N, BLOCK_V] logits of the given token rows and vocab columns (bias and
    softcap applied): the forward and the backward recompute the same tile."""
    acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
    for k in range(0, H, BLOCK_H):
        offs_k = k + tl.arange(0, BLOCK_H)
        mask_k = offs_k < H
        a = tl.load(h_ptr + rows[:, None] * stride_h + offs_k[None, :],
                    mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(w_ptr + offs_v[:, None].to(tl.int64) * stride_w + offs_k[None, :],
                    mask=mask_v[:, None] & mask_k[None, :], other=0.0)
        if DOT_F32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_v, mask=mask_v, other=0.0).to(tl.float32)[None, :]
    if HAS_SOFTCAP:
        # softcap * tanh(x / softcap), tanh via exp (no libdevice); saturates to +-1
        acc = softcap * (1.0 - 2.0 / (tl.exp(2.0 * acc / softcap) + 1.0))
    return acc


@triton.jit
def _lce_fwd_kernel(h_ptr, w_ptr, b_ptr, rows_ptr, lab_ptr, count_ptr,
                    max_ptr, sum_ptr, tgt_ptr, arg_ptr, p_ptr, tmax_ptr,
                    N, H, V, stride_h, stride_w, n_split, softcap, stride_p, stride_t,
                    HAS_BIAS: tl.constexpr, HAS_SOFTCAP: tl.constexpr, DOT_F32: tl.constexpr, STORE_P: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr):
    # Splits vary fastest: the programs in flight cover a few token blocks x all splits, so
    # each H row block and each W tile they load is shared in L2 by several programs.
    pid_s = tl.program_id(0)
    pid_n = tl.program_id(1)
    n_valid = tl.load(count_ptr)
    start = pid_n * BLOCK_N
    if start < n_valid:  # blocks of ignored tokens do no work
        offs_n = start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < n_valid
        rows = tl.load(rows_ptr + offs_n, mask=mask_n, other=0).to(tl.int64)
        lab = tl.load(lab_ptr + offs_n, mask=mask_n, other=-1)
        m = tl.full([BLOCK_N], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK_N], tl.float32)
        tgt = tl.zeros([BLOCK_N], tl.float32)
        best = tl.full([BLOCK_N], float("-inf"), tl.float32)
        best_idx = tl.zeros([BLOCK_N], tl.int32)
        n_vt = tl.cdiv(V, BLOCK_V)
        for vt in range(pid_s, n_vt, n_split):
            offs_v = vt * BLOCK_V + tl.arange(0, BLOCK_V)
            mask_v = offs_v < V
            acc = _logits_tile(h_ptr, w_ptr, b_ptr, rows, mask_n, offs_v, mask_v, H, stride_h, stride_w, softcap,
                               HAS_BIAS, HAS_SOFTCAP, DOT_F32, BLOCK_N, BLOCK_V, BLOCK_H)
            z = tl.where(mask_v[None, :], acc, float("-inf"))
            tile_max = tl.max(z, axis=1)
            if STORE_P:
                # For the gradient in the forward pass (triton_fused.py): exp(z - tile max) <= 1
                # in the input dtype, the tile max in fp32; columns past V store 0.
                tl.store(p_ptr + offs_n[:, None].to(tl.int64) * stride_p + offs_v[None, :],
                         tl.exp(z - tile_max[:, None]).to(p_ptr.dtype.element_ty), mask=mask_n[:, None])
                tl.store(tmax_ptr + offs_n.to(tl.int64) * stride_t + vt, tile_max, mask=mask_n)
            new_m = tl.maximum(m, tile_max)
            s = s * tl.exp(m - new_m) + tl.sum(tl.exp(z - new_m[:, None]), axis=1)
            m = new_m
            tgt += tl.sum(tl.where((offs_v[None, :] == lab[:, None]) & mask_v[None, :], z, 0.0), axis=1)
            if STORE_P:  # fewer spills this way under Triton 3.6 (bench/results/sass-sm90a.md)
                tile_arg = tl.argmax(z, axis=1).to(tl.int32) + vt * BLOCK_V
            else:
                # the lowest column holding the tile max (tl.argmax's rule) as one integer
                # reduction: 178 registers instead of 235 (3.6), no spills under 3.9 either
                tile_arg = tl.min(tl.where(z == tile_max[:, None], offs_v[None, :], 2147483647), axis=1)
            better = tile_max > best
            best = tl.where(better, tile_max, best)
            best_idx = tl.where(better, tile_arg, best_idx)
        out = pid_s * N + offs_n
        tl.store(max_ptr + out, m, mask=mask_n)
        tl.store(sum_ptr + out, s, mask=mask_n)
        tl.store(tgt_ptr + out, tgt, mask=mask_n)
        tl.store(arg_ptr + out, best_idx, mask=mask_n)


@triton.jit
def _lce_dlogits_kernel(h_ptr, w_ptr, b_ptr, rows_ptr, lab_ptr, count_ptr, lse_ptr, g_ptr, ws_ptr,
                        N, H, V, v0, cw, stride_h, stride_w, stride_ws, z_loss, softcap,
                        HAS_BIAS: tl.constexpr, HAS_SOFTCAP: tl.constexpr, DOT_F32: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                        GROUP_M: tl.constexpr):
    pid_n, pid_v = _grouped_tile(tl.cdiv(N, BLOCK_N), tl.cdiv(cw, BLOCK_V), GROUP_M)
    n_valid = tl.load(count_ptr)
    start = pid_n * BLOCK_N
    if start < n_valid:
        offs_n = start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < n_valid
        rows = tl.load(rows_ptr + offs_n, mask=mask_n, other=0).to(tl.int64)
        lab = tl.load(lab_ptr + offs_n, mask=mask_n, other=-1)
        lse = tl.load(lse_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        offs_c = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)  # column inside the chunk
        offs_v = v0 + offs_c
        mask_c = offs_c < cw
        mask_v = mask_c & (offs_v < V)
        acc = _logits_tile(h_ptr, w_ptr, b_ptr, rows, mask_n, offs_v, mask_v, H, stride_h, stride_w, softcap,
                           HAS_BIAS, HAS_SOFTCAP, DOT_F32, BLOCK_N, BLOCK_V, BLOCK_H)
        p = tl.exp(acc - lse[:, None])
        d = p * (1.0 + 2.0 * z_loss * lse)[:, None] - tl.where(offs_v[None, :] == lab[:, None], 1.0, 0.0)
        d = d * g[:, None]
        if HAS_SOFTCAP:
            t = acc / softcap
            d = d * (1.0 - t * t)
        d = tl.where(mask_n[:, None] & mask_v[None, :], d, 0.0)
        tl.store(ws_ptr + offs_n[:, None].to(tl.int64) * stride_ws + offs_c[None, :],
                 d.to(ws_ptr.dtype.element_ty), mask=mask_n[:, None] & mask_c[None, :])


@triton.jit
def _lce_dh_kernel(ws_ptr, w_ptr, rows_ptr, count_ptr, scale_ptr, acc_ptr, gh_ptr,
                   N, H, V, v0, cw, stride_ws, stride_w, stride_gh,
                   FIRST: tl.constexpr, LAST: tl.constexpr, DOT_F32: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid_n, pid_h = _grouped_tile(tl.cdiv(N, BLOCK_N), tl.cdiv(H, BLOCK_H), GROUP_M)
    n_valid = tl.load(count_ptr)
    start = pid_n * BLOCK_N
    if start < n_valid:
        offs_n = start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < n_valid
        offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
        mask_h = offs_h < H
        acc = tl.zeros([BLOCK_N, BLOCK_H], tl.float32)
        for k in range(0, cw, BLOCK_K):
            offs_k = k + tl.arange(0, BLOCK_K)
            mask_k = offs_k < cw
            a = tl.load(ws_ptr + offs_n[:, None].to(tl.int64) * stride_ws + offs_k[None, :],
                        mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            # cw is a multiple of 16 (the workspace holds zeros past the vocabulary), so the
            # contiguous workspace loads vectorise; W's rows are bounded by V separately.
            b = tl.load(w_ptr + (v0 + offs_k)[:, None].to(tl.int64) * stride_w + offs_h[None, :],
                        mask=(mask_k & (v0 + offs_k < V))[:, None] & mask_h[None, :], other=0.0)
            if DOT_F32:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        mask = mask_n[:, None] & mask_h[None, :]
        acc_offs = offs_n[:, None].to(tl.int64) * H + offs_h[None, :]
        if not FIRST:
            acc += tl.load(acc_ptr + acc_offs, mask=mask, other=0.0).to(tl.float32)
        if LAST:
            acc = acc * tl.load(scale_ptr)
            rows = tl.load(rows_ptr + offs_n, mask=mask_n, other=0).to(tl.int64)
            tl.store(gh_ptr + rows[:, None] * stride_gh + offs_h[None, :], acc.to(gh_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(acc_ptr + acc_offs, acc, mask=mask)


@triton.jit
def _lce_dw_kernel(ws_ptr, h_ptr, rows_ptr, count_ptr, scale_ptr, acc_ptr, bacc_ptr, gw_ptr, gb_ptr,
                   H, V, v0, cw, stride_ws, stride_h, stride_gw,
                   HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr, FIRST: tl.constexpr, LAST: tl.constexpr,
                   BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """dW[v0 + c] = scale * ws[:, c]^T @ H[rows] over the trained tokens of `count_ptr`.

    FIRST/LAST: when the tokens come in several chunks (the forward-pass gradient), the sum
    is kept in an fp32 accumulator [V, H] (acc_ptr, bacc_ptr for the bias) between chunks
    and written scaled in the weight's dtype by the last one. Rows from V on are not stored.
    """
    pid_v, pid_h = _grouped_tile(tl.cdiv(cw, BLOCK_V), tl.cdiv(H, BLOCK_H), GROUP_M)
    n_valid = tl.load(count_ptr)
    if FIRST or LAST or n_valid > 0:  # an empty middle chunk changes nothing
        offs_c = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        mask_c = offs_c < cw
        offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
        mask_h = offs_h < H
        gw_rows = (v0 + offs_c).to(tl.int64)
        mask_r = mask_c & (v0 + offs_c < V)
        mask = mask_r[:, None] & mask_h[None, :]
        acc_offs = gw_rows[:, None] * H + offs_h[None, :]
        if FIRST:
            acc = tl.zeros([BLOCK_V, BLOCK_H], tl.float32)
            dbias = tl.zeros([BLOCK_V], tl.float32)
        else:  # the dots accumulate onto the earlier chunks' sum: no second tile in registers
            acc = tl.load(acc_ptr + acc_offs, mask=mask, other=0.0)
            dbias = tl.zeros([BLOCK_V], tl.float32)
            if HAS_BIAS:
                dbias = tl.load(bacc_ptr + v0 + offs_c, mask=mask_r, other=0.0)
        for t in range(0, n_valid, BLOCK_K):  # only trained tokens, however many there are
            offs_t = t + tl.arange(0, BLOCK_K)
            mask_t = offs_t < n_valid
            rows = tl.load(rows_ptr + offs_t, mask=mask_t, other=0).to(tl.int64)
            a = tl.load(ws_ptr + offs_t[:, None].to(tl.int64) * stride_ws + offs_c[None, :],
                        mask=mask_t[:, None] & mask_c[None, :], other=0.0)
            b = tl.load(h_ptr + rows[:, None] * stride_h + offs_h[None, :],
                        mask=mask_t[:, None] & mask_h[None, :], other=0.0)
            if HAS_BIAS:
                dbias += tl.sum(a.to(tl.float32), axis=0)
            if DOT_F32:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(tl.trans(a), b, acc)
        if LAST:
            scale = tl.load(scale_ptr)
            tl.store(gw_ptr + gw_rows[:, None] * stride_gw + offs_h[None, :], (acc * scale).to(gw_ptr.dtype.element_ty),
                     mask=mask)
            if HAS_BIAS:
                if pid_h == 0:
                    tl.store(gb_ptr + v0 + offs_c, (dbias * scale).to(gb_ptr.dtype.element_ty), mask=mask_r)
        else:
            tl.store(acc_ptr + acc_offs, acc, mask=mask)
            if HAS_BIAS:
                if pid_h == 0:
                    tl.store(bacc_ptr + v0 + offs_c, dbias, mask=mask_r)


def _blocks(cfg):
    return {k: v for k, v in cfg.items() if k.startswith(("BLOCK", "GROUP"))}


# What the GPU compiles is checked offline by s1kernels/ops/triton_compile.py, which runs the
# launchers below on meta tensors at the benchmark sizes.


# ----------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------

def _interpreting(device: torch.device) -> bool:
    return device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") == "1"


def _config(device, dtype):
    if _interpreting(device):
        return INTERPRETER_CONFIG
    return CUDA_CONFIG_FP32 if dtype == torch.float32 else CUDA_CONFIG


def _dot_f32(device, dtype) -> bool:
    # The interpreter computes bf16 dots wrongly (seen: garbage logits), so bf16 operands are
    # upcast there; fp16 and fp32 operands go to tl.dot as on the GPU.
    return _interpreting(device) and dtype == torch.bfloat16


def _launch_opts(cfg):
    return {k: v for k, v in cfg.items() if k in ("num_warps", "num_stages")}


def _num_sms(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    if device.type == "meta":  # the offline compile check (ops/triton_compile.py) imitates an H100
        from s1kernels.backend import H100_SMS

        return H100_SMS
    return 4


def _compact(labels, ignore_index, vocab_size):
    """Trained rows first: rows[i] = original index of the i-th trained token (device, no sync).

    Returns rows [N] int32 (entries past the count point at row 0 and are never used), the
    labels in that order [N] int32, the count [1] int32, the validity mask and each
    trained token's position in the compact order.
    """
    n = labels.shape[0]
    valid = labels != ignore_index
    pos = torch.cumsum(valid, 0) - 1
    count = valid.sum(dtype=torch.int32).reshape(1)
    dest = torch.where(valid, pos, torch.full_like(pos, n))
    rows = torch.zeros(n + 1, dtype=torch.int32, device=labels.device)
    rows.scatter_(0, dest, torch.arange(n, dtype=torch.int32, device=labels.device))
    rows = rows[:n]
    lab = labels.gather(0, rows.long())
    # An out-of-range label (possible with validate=False) has no target logit, as in the torch
    # paths; it becomes -1 before the int32 cast, which would wrap 2^32 + 5 onto token 5.
    lab = torch.where((lab >= 0) & (lab < vocab_size), lab, torch.full_like(lab, -1)).to(torch.int32)
    return rows, lab, count, valid, pos.clamp(min=0)


def forward_compact(hidden, weight, bias, rows, lab, count, n, vocab_size, z_loss, softcap, probs=None, tmax=None):
    """The forward kernel over `n` compact rows (rows/lab/count as from `_compact`).

    Returns (loss, lse, argmax) [n] in compact order (entries past the count are garbage).
    With `probs` [n, >= n_vt * BLOCK_V] and `tmax` [n, n_vt] it also stores each logits tile
    as exp(z - tile max) and the tile maxima (the forward-pass gradient, triton_fused.py).
    """
    h = hidden.shape[1]
    dev = hidden.device
    cfg = _config(dev, hidden.dtype)["fwd"]
    n_tok_blocks = triton.cdiv(max(n, 1), cfg["BLOCK_N"])
    n_vt = triton.cdiv(vocab_size, cfg["BLOCK_V"])
    # About sqrt(SMs) splits keep the token blocks and W tiles in flight small enough for L2
    # (see the kernel); more when there are too few token blocks to fill the GPU.
    sms = _num_sms(dev)
    n_split = max(1, min(n_vt, max(math.isqrt(sms), triton.cdiv(2 * sms, n_tok_blocks))))
    mx = torch.empty(n_split, n, dtype=torch.float32, device=dev)
    sm = torch.empty_like(mx)
    tgt = torch.empty_like(mx)
    arg = torch.empty(n_split, n, dtype=torch.int32, device=dev)
    store = probs is not None
    if n > 0:
        _lce_fwd_kernel[(n_split, n_tok_blocks)](
            hidden, weight, bias if bias is not None else hidden, rows, lab, count, mx, sm, tgt, arg,
            probs if store else hidden, tmax if store else mx,
            n, h, vocab_size, hidden.stride(0), weight.stride(0), n_split, float(softcap or 1.0),
            probs.stride(0) if store else 0, tmax.stride(0) if store else 0,
            HAS_BIAS=bias is not None, HAS_SOFTCAP=bool(softcap), DOT_F32=_dot_f32(dev, hidden.dtype),
            STORE_P=store, **_blocks(cfg), **_launch_opts(cfg))
    big = mx.max(0).values
    lse_c = big + torch.log((sm * torch.exp(mx - big)).sum(0))
    # Splits interleave the vocab tiles, so the first split holding the max is not the one
    # with the lowest index: ties go to the lowest index, as in torch.argmax.
    pred_c = torch.where(mx == big, arg, torch.full_like(arg, torch.iinfo(torch.int32).max)).amin(0)
    loss_c = lse_c - tgt.sum(0) + z_loss * lse_c * lse_c
    return loss_c, lse_c, pred_c


def to_original_order(loss_c, lse_c, pred_c, valid, pos):
    zero = torch.zeros((), dtype=torch.float32, device=loss_c.device)
    token_loss = torch.where(valid, loss_c[pos], zero)
    lse = torch.where(valid, lse_c[pos], zero)
    pred = torch.where(valid, pred_c[pos].long(), torch.full_like(pos, -1))
    return token_loss, lse, pred


def forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size):
    """Per-token (loss, logsumexp, argmax) in the original order; 0 / 0 / -1 where ignored."""
    rows, lab, count, valid, pos = _compact(labels, ignore_index, vocab_size)
    out = forward_compact(hidden, weight, bias, rows, lab, count, hidden.shape[0], vocab_size, z_loss, softcap)
    return to_original_order(*out, valid, pos)


def _chunk_columns(n, vocab_size, itemsize, block):
    cols = WORKSPACE_BYTES // max(1, n * itemsize)
    cols = max(block, (cols // block) * block)
    return min(cols, triton.cdiv(vocab_size, block) * block)


def backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap, vocab_size, need_hidden=True,
             need_weight=True):
    """Gradients of sum_t grad[t] * token_loss[t] wrt hidden, weight and bias.

    `need_weight` covers weight and bias; a gradient not needed (or no bias) comes back as [0]
    and its kernel is not launched.
    """
    n, h = hidden.shape
    v = weight.shape[0]
    dev = hidden.device
    cfgs = _config(dev, hidden.dtype)
    dot_f32 = _dot_f32(dev, hidden.dtype)
    rows, lab, count, _, _ = _compact(labels, ignore_index, vocab_size)
    # dlogits go to the workspace divided by the largest per-token gradient and the dH / dW
    # epilogues multiply it back: with a 1/num_items of 1e-6, g * softmax would underflow in
    # an fp16 workspace.
    g = grad.to(torch.float32)
    g_max = g.abs().amax() if n > 0 else g.new_ones(())
    scale = torch.where(g_max > 0, g_max, torch.ones_like(g_max)).reshape(1)
    g_c = g.gather(0, rows.long()) / scale
    lse_c = lse.to(torch.float32).gather(0, rows.long())
    grad_hidden = torch.zeros_like(hidden) if need_hidden else hidden.new_empty(0)
    # Rows past vocab_size get no kernel write: zero them up front.
    alloc = torch.zeros_like if vocab_size < v or n == 0 else torch.empty_like
    grad_weight = alloc(weight) if need_weight else hidden.new_empty(0)
    grad_bias = alloc(bias) if bias is not None and need_weight else hidden.new_empty(0)
    if n == 0 or not (need_hidden or need_weight):
        return grad_hidden, grad_weight, grad_bias
    step = max(cfgs["dlogits"]["BLOCK_V"], cfgs["dw"]["BLOCK_V"])
    chunk = _chunk_columns(n, vocab_size, hidden.element_size(), step)
    ws = torch.empty(n, chunk, dtype=hidden.dtype, device=dev)
    n_chunks = triton.cdiv(vocab_size, chunk)
    acc = torch.empty(n, h, dtype=torch.float32, device=dev) if n_chunks > 1 and need_hidden \
        else hidden.new_empty(1, dtype=torch.float32)
    bias_arg = bias if bias is not None else hidden
    gb_arg = grad_bias if grad_bias.numel() else hidden
    c1, c2, c3 = cfgs["dlogits"], cfgs["dh"], cfgs["dw"]
    for c in range(n_chunks):
        v0 = c * chunk
        # Past the vocabulary the chunk's width is rounded up to 16 (dlogits writes zeros
        # there): the JIT then specialises the last chunk like the others.
        cw = min(chunk, triton.cdiv(vocab_size - v0, 16) * 16)
        _lce_dlogits_kernel[(triton.cdiv(n, c1["BLOCK_N"]) * triton.cdiv(cw, c1["BLOCK_V"]),)](
            hidden, weight, bias_arg, rows, lab, count, lse_c, g_c, ws,
            n, h, vocab_size, v0, cw, hidden.stride(0), weight.stride(0), ws.stride(0), float(z_loss),
            float(softcap or 1.0), HAS_BIAS=bias is not None, HAS_SOFTCAP=bool(softcap), DOT_F32=dot_f32,
            **_blocks(c1), **_launch_opts(c1))
        if need_hidden:
            _lce_dh_kernel[(triton.cdiv(n, c2["BLOCK_N"]) * triton.cdiv(h, c2["BLOCK_H"]),)](
                ws, weight, rows, count, scale, acc, grad_hidden, n, h, v, v0, cw, ws.stride(0), weight.stride(0),
                grad_hidden.stride(0), FIRST=c == 0, LAST=c == n_chunks - 1, DOT_F32=dot_f32,
                **_blocks(c2), **_launch_opts(c2))
        if need_weight:
            _lce_dw_kernel[(triton.cdiv(cw, c3["BLOCK_V"]) * triton.cdiv(h, c3["BLOCK_H"]),)](
                ws, hidden, rows, count, scale, scale, scale, grad_weight, gb_arg, h, vocab_size, v0, cw, ws.stride(0),
                hidden.stride(0), grad_weight.stride(0), HAS_BIAS=bias is not None, DOT_F32=dot_f32, FIRST=True,
                LAST=True,
                **_blocks(c3), **_launch_opts(c3))
    return grad_hidden, grad_weight, grad_bias
