"""The torch implementation of the loss's per-token op (backend "torch"): `chunk` trained
tokens at a time, so at most chunk x V logits exist (recomputed in backward). It serves CPU
and fp64; a chunk of all trained tokens is the plain one-matmul computation.
"""
from __future__ import annotations

import torch

# Logits kept at once by the chunked path: chunk_tokens x vocab fp32 values, 256 MB on a GPU
# and 64 MB on the CPU, where a step's peak is what the loss is there to keep small and a
# chunk of V=49,152 logits is still a 341-row matmul.
_CHUNK_ELEMENTS = 1 << 26
_CHUNK_ELEMENTS_CPU = 1 << 24


def stat_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunk_rows(n_rows: int, vocab: int, chunk_tokens: int | None, device: torch.device | None = None) -> int:
    if chunk_tokens is not None:
        return max(1, chunk_tokens)
    cap = _CHUNK_ELEMENTS_CPU if device is not None and device.type == "cpu" else _CHUNK_ELEMENTS
    return max(1, min(n_rows, cap // max(vocab, 1)))


def _capped_logits(h, w, b, softcap):
    # In place: a chunk of logits is the largest tensor of the torch paths, so no copies of it.
    z = h @ w.T
    if b is not None:
        z.add_(b)
    if softcap:
        z.div_(softcap).tanh_().mul_(softcap)
    return z


def _exp_stats_(z):
    """(lse, argmax, sum) per row of a logits chunk, overwriting z with exp(z - max).

    The chunk is the largest tensor here and each pass over it is memory-bound: one max pass
    gives the shift and the prediction, then exp in place and one sum, which is how
    torch.logsumexp computes lse (an infinite max shifts by 0) in three passes instead of
    logsumexp's four plus argmax's one. Callers read anything else from z first."""
    m, pred = z.max(dim=-1)
    m = m.masked_fill(m.isinf(), 0.0)
    total = z.sub_(m[:, None]).exp_().sum(-1)
    return m + total.log(), pred, total


def forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size, chunk):
    """Per-token (loss, lse, argmax) over the trained tokens only, `chunk` tokens at a time."""
    n = hidden.shape[0]
    ct = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    token_loss = torch.zeros(n, dtype=stat_dtype(hidden.dtype), device=hidden.device)
    lse_out = torch.zeros(n, dtype=stat_dtype(hidden.dtype), device=hidden.device)
    pred = torch.full((n,), -1, dtype=torch.int64, device=hidden.device)
    # The torch paths serve CPU, where finding the trained rows costs no device sync.
    rows = (labels != ignore_index).nonzero()[:, 0]
    w = weight[:vocab_size].to(ct)
    b = bias[:vocab_size].to(ct) if bias is not None else None
    for s in range(0, rows.shape[0], chunk):
        r = rows[s:s + chunk]
        z = _capped_logits(hidden[r].to(ct), w, b, softcap)
        y = labels[r].long()
        # Out-of-range labels (possible with validate=False) contribute no target logit,
        # as in the Triton kernels: never an out-of-bounds read.
        inside = (y >= 0) & (y < vocab_size)
        tgt = torch.where(inside, z.gather(1, y.clamp(0, vocab_size - 1)[:, None])[:, 0], 0.0)
        lse, pred[r], _ = _exp_stats_(z)
        token_loss[r] = (lse - tgt + z_loss * lse * lse).to(token_loss.dtype)
        lse_out[r] = lse.to(lse_out.dtype)
    return token_loss, lse_out, pred


def backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap, vocab_size, chunk,
                    need_hidden=True, need_weight=True):
    """Gradients of sum_t grad[t] * token_loss[t]; logits recomputed chunk by chunk.

    A gradient that is not needed is returned as an empty [0] tensor and not computed.
    """
    ct = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    grad_hidden = torch.zeros(hidden.shape if need_hidden else (0,), dtype=ct, device=hidden.device)
    # fp32 accumulation of the weight gradient over chunks
    grad_weight = torch.zeros(weight.shape if need_weight else (0,), dtype=ct, device=hidden.device)
    grad_bias = torch.zeros(weight.shape[0] if need_weight else 0, dtype=ct, device=hidden.device)
    rows = (labels != ignore_index).nonzero()[:, 0]
    w = weight[:vocab_size].to(ct)
    b = bias[:vocab_size].to(ct) if bias is not None else None
    for s in range(0, rows.shape[0], chunk):
        r = rows[s:s + chunk]
        h = hidden[r].to(ct)
        z = _capped_logits(h, w, b, softcap)
        l = lse[r].to(ct)
        g = grad[r].to(ct)
        # d loss_t / d z_tj = g_t * (softmax_tj * (1 + 2 z_loss lse_t) - [j == label_t]),
        # written over the logits chunk so that at most two chunk-sized tensors exist
        cap = (z / softcap).square_().neg_().add_(1.0) if softcap else None  # d(c tanh(u/c))/du = 1 - tanh^2
        d = z.sub_(l[:, None]).exp_().mul_(((1.0 + 2.0 * z_loss * l) * g)[:, None])
        y = labels[r].long()
        inside = ((y >= 0) & (y < vocab_size)).to(ct)
        d[torch.arange(r.shape[0], device=d.device), y.clamp(0, vocab_size - 1)] -= inside * g
        if softcap:
            d.mul_(cap)
        if need_hidden:
            grad_hidden[r] = d @ w
        if need_weight:
            grad_weight[:vocab_size].addmm_(d.T, h)  # in place: no [V, H] temporary
            if b is not None:
                grad_bias[:vocab_size] += d.sum(0)
    gh = grad_hidden.to(hidden.dtype) if need_hidden else hidden.new_empty(0)
    gw = grad_weight.to(weight.dtype) if need_weight else hidden.new_empty(0)
    gb = grad_bias.to(hidden.dtype) if bias is not None and need_weight else hidden.new_empty(0)
    return gh, gw, gb


def forward_with_grad(hidden, weight, labels, bias, token_weight, ignore_index, z_loss, vocab_size, chunk,
                      need_hidden=True, need_weight=True):
    """`forward` plus the gradients of sum_t token_weight[t] * loss[t] wrt hidden, weight and
    bias, from the same logits chunk: three matrix products per chunk (logits, dH, dW) where
    forward then backward take four (backward recomputes the logits), and one exp pass.
    Returns (token_loss, lse, pred, grad_hidden, grad_weight, grad_bias); a gradient not
    needed (or no bias) comes back as [0]. No softcap (linear_cross_entropy sends that
    through forward/backward)."""
    n = hidden.shape[0]
    ct = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    dev = hidden.device
    token_loss = torch.zeros(n, dtype=stat_dtype(hidden.dtype), device=dev)
    lse_out = torch.zeros(n, dtype=stat_dtype(hidden.dtype), device=dev)
    pred = torch.full((n,), -1, dtype=torch.int64, device=dev)
    grad_hidden = torch.zeros(hidden.shape if need_hidden else (0,), dtype=ct, device=dev)
    grad_weight = torch.zeros(weight.shape if need_weight else (0,), dtype=ct, device=dev)
    grad_bias = torch.zeros(weight.shape[0] if need_weight else 0, dtype=ct, device=dev)
    rows = (labels != ignore_index).nonzero()[:, 0]
    w = weight[:vocab_size].to(ct)
    b = bias[:vocab_size].to(ct) if bias is not None else None
    tw = token_weight.to(ct)
    for s in range(0, rows.shape[0], chunk):
        r = rows[s:s + chunk]
        h = hidden[r].to(ct)
        z = _capped_logits(h, w, b, None)
        y = labels[r].long()
        inside = (y >= 0) & (y < vocab_size)
        yc = y.clamp(0, vocab_size - 1)
        tgt = torch.where(inside, z.gather(1, yc[:, None])[:, 0], 0.0)
        lse, pred[r], total = _exp_stats_(z)
        token_loss[r] = (lse - tgt + z_loss * lse * lse).to(token_loss.dtype)
        lse_out[r] = lse.to(lse_out.dtype)
        # the backward's dlogits with g = token_weight (see backward), in place: z holds
        # exp(z - shift), and softmax is that over its row sum
        g = tw[r]
        d = z.mul_(((1.0 + 2.0 * z_loss * lse) * g / total)[:, None])
        d[torch.arange(r.shape[0], device=dev), yc] -= inside.to(ct) * g
        if need_hidden:
            grad_hidden[r] = d @ w
        if need_weight:
            grad_weight[:vocab_size].addmm_(d.T, h)
            if b is not None:
                grad_bias[:vocab_size] += d.sum(0)
    gh = grad_hidden.to(hidden.dtype) if need_hidden else hidden.new_empty(0)
    gw = grad_weight.to(weight.dtype) if need_weight else hidden.new_empty(0)
    gb = grad_bias.to(hidden.dtype) if bias is not None and need_weight else hidden.new_empty(0)
    return token_loss, lse_out, pred, gh, gw, gb
