"""The gradient in the forward pass: the fused loss at 6·N·H·V FLOPs for scalar reductions.

When the loss is reduced to a scalar, each token's share of the gradient is known before the
backward pass (g_t = its reduction weight: 1/denominator, 1/(segment size x samples), or 1
for sum), so the forward pass can produce dH and dW and the backward only multiplies them by
the scalar grad_output. Each logits tile is then computed once (2·N·H·V) and used for dH
(2·N·H·V) and dW (2·N·H·V), against 8·N·H·V for forward + backward with recomputed logits.

Trained tokens (compacted first, as in triton_impl.py) go in chunks of C rows; for a chunk:
  1. `_lce_fwd_kernel` with STORE_P computes the logits tiles once and, besides the online
     logsumexp, writes p' = exp(z - tile max) (<= 1, input dtype) into the workspace
     [C, V rounded up to the tile] and the tile maxima [C, V tiles] (fp32);
  2. `_lce_grad_ws_kernel` turns p' into dlogits in place once the row's logsumexp is known:
     g_t / max|g| * (p' exp(tile max - lse) (1 + 2 z_loss lse) - onehot);
  3. `_lce_dh_kernel`: dH[chunk rows] = dlogits @ W (the whole vocabulary: no accumulator);
  4. `_lce_dw_kernel`: dW += dlogits^T @ H[chunk rows], fp32 between chunks.

Memory: the workspace is at most FUSED_WORKSPACE_BYTES (C is the largest multiple of the
token tile that fits, at least one tile); with more than one chunk, dW needs an fp32
accumulator [V, H] (2.18 GB at Qwen2.5-7B's V=152,064 x H=3,584; 3.11 GB at 32B's H=5,120),
and the bias one [V]. At N=8,192 bf16 and V=151,665 (rounded to 151,680) a 1 GiB workspace
holds C=3,456 tokens: 3 chunks. Softcap needs the logits themselves for its derivative and
keeps the recomputing path (triton_impl.backward).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from s1kernels.ops.loss import triton_impl as K

FUSED_WORKSPACE_BYTES = 1 << 30
# The elementwise dlogits pass: rows per program (its column tile is the forward's BLOCK_V,
# one tile max per row); 32 x 128 keeps it to 32 values per thread.
GRAD_WS_ROWS, GRAD_WS_WARPS = 32, 4


@triton.jit
def _lce_grad_ws_kernel(p_ptr, tmax_ptr, lab_ptr, count_ptr, lse_ptr, g_ptr, V, stride_p, stride_t, z_loss,
                        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):
    # grid: (token blocks, vocab tiles); BLOCK_V is the forward's tile, so one tile max per row.
    pid_n = tl.program_id(0)
    vt = tl.program_id(1)
    n_valid = tl.load(count_ptr)
    start = pid_n * BLOCK_N
    if start < n_valid:
        offs_n = start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < n_valid
        offs_v = vt * BLOCK_V + tl.arange(0, BLOCK_V)
        lab = tl.load(lab_ptr + offs_n, mask=mask_n, other=-1)
        lse = tl.load(lse_ptr + offs_n, mask=mask_n, other=0.0)
        g = tl.load(g_ptr + offs_n, mask=mask_n, other=0.0)
        tmax = tl.load(tmax_ptr + offs_n.to(tl.int64) * stride_t + vt, mask=mask_n, other=0.0)
        ptrs = p_ptr + offs_n[:, None].to(tl.int64) * stride_p + offs_v[None, :]
        p = tl.load(ptrs, mask=mask_n[:, None], other=0.0).to(tl.float32)
        f = tl.exp(tmax - lse) * (1.0 + 2.0 * z_loss * lse)
        d = (p * f[:, None] - tl.where(offs_v[None, :] == lab[:, None], 1.0, 0.0)) * g[:, None]
        # a label past the vocabulary (validate=False) takes no gradient, as in the forward
        d = tl.where(offs_v[None, :] < V, d, 0.0)
        tl.store(ptrs, d.to(p_ptr.dtype.element_ty), mask=mask_n[:, None])


def _chunk_rows(n, v_pad, itemsize, block):
    rows = FUSED_WORKSPACE_BYTES // max(1, v_pad * itemsize)
    rows = max(block, (rows // block) * block)
    return min(rows, triton.cdiv(max(n, 1), block) * block)


def forward_with_grad(hidden, weight, labels, bias, token_weight, ignore_index, z_loss, vocab_size,
                      need_hidden=True, need_weight=True):
    """Per-token (loss, lse, argmax) like triton_impl.forward, plus the gradients of
    sum_t token_weight[t] * loss[t] wrt hidden, weight and bias (a gradient not needed, or no
    bias, comes back as [0])."""
    n, h = hidden.shape
    v = weight.shape[0]
    dev = hidden.device
    cfgs = K._config(dev, hidden.dtype)
    cf, c2, c3 = cfgs["fwd"], cfgs["dh"], cfgs["dw"]
    dot_f32 = K._dot_f32(dev, hidden.dtype)
    rows, lab, count, valid, pos = K._compact(labels, ignore_index, vocab_size)
    n_vt = triton.cdiv(vocab_size, cf["BLOCK_V"])
    v_pad = n_vt * cf["BLOCK_V"]
    block = max(cf["BLOCK_N"], c2["BLOCK_N"], c3["BLOCK_K"])
    chunk = _chunk_rows(n, v_pad, hidden.element_size(), block)
    n_chunks = triton.cdiv(n, chunk) if n > 0 else 0
    # As in triton_impl.backward: dlogits are stored divided by the largest |g| (fp16 would
    # underflow at g = 1/num_items) and the dH / dW epilogues multiply it back.
    g = token_weight.to(torch.float32)
    g_max = g.abs().amax() if n > 0 else g.new_ones(())
    scale = torch.where(g_max > 0, g_max, torch.ones_like(g_max)).reshape(1)
    g_c = g.gather(0, rows.long()) / scale
    grad_hidden = torch.zeros_like(hidden) if need_hidden else hidden.new_empty(0)
    alloc = torch.zeros_like if vocab_size < v or n == 0 else torch.empty_like
    grad_weight = alloc(weight) if need_weight else hidden.new_empty(0)
    grad_bias = alloc(bias) if bias is not None and need_weight else hidden.new_empty(0)
    loss_c = torch.empty(n, dtype=torch.float32, device=dev)
    lse_c = torch.empty_like(loss_c)
    pred_c = torch.empty(n, dtype=torch.int32, device=dev)
    if n_chunks:
        probs = torch.empty(min(chunk, n), v_pad, dtype=hidden.dtype, device=dev)
        tmax = torch.empty(min(chunk, n), n_vt, dtype=torch.float32, device=dev)
        # trained rows of each chunk, on device: no sync
        # (one 16-byte row per chunk, so every chunk's count pointer is aligned as the first's
        # and the JIT compiles one variant, not two)
        counts = torch.zeros(n_chunks, 4, dtype=torch.int32, device=dev)
        counts[:, 0] = (count - torch.arange(n_chunks, device=dev, dtype=torch.int32) * chunk).clamp(0, chunk)
        multi = n_chunks > 1 and need_weight
        acc = torch.empty(v, h, dtype=torch.float32, device=dev) if multi else scale
        bacc = torch.empty(v, dtype=torch.float32, device=dev) if multi and bias is not None else scale
        gb_arg = grad_bias if grad_bias.numel() else hidden
    for c in range(n_chunks):
        t0, nc = c * chunk, min(chunk, n - c * chunk)
        r, y, cnt = rows[t0:t0 + nc], lab[t0:t0 + nc], counts[c, :1]
        lc, lsec, pc = K.forward_compact(hidden, weight, bias, r, y, cnt, nc, vocab_size, z_loss, None,
                                         probs=probs, tmax=tmax)
        loss_c[t0:t0 + nc], lse_c[t0:t0 + nc], pred_c[t0:t0 + nc] = lc, lsec, pc
        if not (need_hidden or need_weight):
            continue
        _lce_grad_ws_kernel[(triton.cdiv(nc, GRAD_WS_ROWS), n_vt)](
            probs, tmax, y, cnt, lsec, g_c[t0:t0 + nc], vocab_size, probs.stride(0), tmax.stride(0), float(z_loss),
            BLOCK_N=GRAD_WS_ROWS, BLOCK_V=cf["BLOCK_V"], num_warps=GRAD_WS_WARPS)
        if need_hidden:
            K._lce_dh_kernel[(triton.cdiv(nc, c2["BLOCK_N"]) * triton.cdiv(h, c2["BLOCK_H"]),)](
                probs, weight, r, cnt, scale, scale, grad_hidden, nc, h, v, 0, v_pad, probs.stride(0),
                weight.stride(0), grad_hidden.stride(0), FIRST=True, LAST=True, DOT_F32=dot_f32,
                **K._blocks(c2), **K._launch_opts(c2))
        if need_weight:
            cw3 = c3
            if c > 0 and c == n_chunks - 1 and c3["BLOCK_H"] >= 256:
                # the last of several chunks adds the stored sum and writes the scaled result:
                # at 128 x 256 that spills (bench/results/sass-sm90a.md), at 128 x 128 it does not
                cw3 = dict(c3, BLOCK_H=c3["BLOCK_H"] // 2)
            K._lce_dw_kernel[(triton.cdiv(v_pad, cw3["BLOCK_V"]) * triton.cdiv(h, cw3["BLOCK_H"]),)](
                probs, hidden, r, cnt, scale, acc, bacc, grad_weight, gb_arg, h, vocab_size, 0, v_pad,
                probs.stride(0), hidden.stride(0), grad_weight.stride(0), HAS_BIAS=bias is not None,
                DOT_F32=dot_f32, FIRST=c == 0, LAST=c == n_chunks - 1, **K._blocks(cw3), **K._launch_opts(cw3))
    token_loss, lse, pred = K.to_original_order(loss_c, lse_c, pred_c, valid, pos)
    return token_loss, lse, pred, grad_hidden, grad_weight, grad_bias
