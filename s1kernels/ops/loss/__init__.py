"""Fused linear + cross-entropy loss for packed-sequence SFT, without the [N, V] logits.

    loss = linear_cross_entropy(hidden, lm_head_weight, labels, cu_seqlens=cu, normalize="sequence")

`hidden` [N, H] are the final hidden states of N packed tokens, `weight` [V, H] the lm_head,
`labels` [N] the already shifted targets (`ignore_index` where a token is not trained).

Structure (one file, like Liger-Kernel: kernels next to their autograd wiring):
- `linear_cross_entropy_reference`: the plain oracle. Materialises the logits, fp32/fp64
  math, torch autograd. Used by the tests; never by the fast paths.
- The per-token op `s1kernels::linear_cross_entropy` (a `torch.library.custom_op` with a
  fake impl and a registered backward op) returns per-token loss, logsumexp and argmax.
  Its implementations: "torch" (one chunk: materialises the logits of all trained tokens),
  "chunked" (tokens in chunks, so at most chunk x V logits exist at once; recomputed in
  backward) and "triton" (see `loss_kernels.py`: tiles over tokens and vocab with an online
  logsumexp, no [N, V] buffer).
- The reduction (token/sequence normalisation, `num_items`, mean/sum/none) is plain torch on
  [N] vectors outside the op, so autograd hands the op one gradient per token.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
from torch import Tensor, nn

from s1kernels import backend as _backend

REDUCTIONS = ("mean", "sum", "none")
NORMALIZATIONS = ("token", "sequence")
LOSS_BACKENDS = ("auto", "triton", "chunked", "torch")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Logits kept at once by the chunked path: chunk_tokens x vocab fp32 values (~256 MB cap).
_CHUNK_ELEMENTS = 1 << 26


# ----------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------

def _check_inputs(hidden, weight, labels, bias, cu_seqlens, num_items, ignore_index, reduction,
                  normalize, z_loss, softcap, vocab_size, backend, validate):
    """Checks everything that can be checked without reading device memory; returns vocab_size."""
    if not isinstance(hidden, Tensor):
        raise TypeError(f"hidden: expected a torch.Tensor [N, H], got {type(hidden).__name__}")
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight: expected a torch.Tensor [V, H], got {type(weight).__name__}")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels: expected a torch.Tensor [N], got {type(labels).__name__}")
    if hidden.dim() != 2:
        raise ValueError(f"hidden: expected 2 dimensions [N, H], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"weight: expected 2 dimensions [V, H], got shape {tuple(weight.shape)}")
    if hidden.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"hidden: expected a floating dtype {_FLOAT_DTYPES}, got {hidden.dtype}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight: expected dtype {hidden.dtype} (the dtype of hidden), got {weight.dtype}")
    n, h = hidden.shape
    v = weight.shape[0]
    if weight.shape[1] != h:
        raise ValueError(f"weight: expected shape [V, {h}] (H of hidden), got {tuple(weight.shape)}")
    if v == 0:
        raise ValueError("weight: expected at least one vocabulary row, got V=0")
    if weight.device != hidden.device:
        raise ValueError(f"weight: expected device {hidden.device} (the device of hidden), got {weight.device}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels: expected shape [{n}] (N of hidden), got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels: expected dtype int64 or int32, got {labels.dtype}")
    if labels.device != hidden.device:
        raise ValueError(f"labels: expected device {hidden.device}, got {labels.device}")
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias: expected a torch.Tensor [V] or None, got {type(bias).__name__}")
        if bias.shape != (v,):
            raise ValueError(f"bias: expected shape [{v}] (V of weight), got {tuple(bias.shape)}")
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias: expected dtype {hidden.dtype}, got {bias.dtype}")
        if bias.device != hidden.device:
            raise ValueError(f"bias: expected device {hidden.device}, got {bias.device}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize: expected one of {NORMALIZATIONS}, got {normalize!r}")
    if backend not in LOSS_BACKENDS:
        raise ValueError(f"backend: expected one of {LOSS_BACKENDS}, got {backend!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    if isinstance(z_loss, bool) or not isinstance(z_loss, (int, float)) or not math.isfinite(z_loss) or z_loss < 0:
        raise ValueError(f"z_loss: expected a finite float >= 0, got {z_loss!r}")
    if softcap is not None and (isinstance(softcap, bool) or not isinstance(softcap, (int, float))
                                or not math.isfinite(softcap) or softcap <= 0):
        raise ValueError(f"softcap: expected None or a finite float > 0, got {softcap!r}")
    if vocab_size is None:
        vocab_size = v
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 1 <= vocab_size <= v:
        raise ValueError(f"vocab_size: expected an int in [1, {v}] (rows of weight), got {vocab_size!r}")
    if 0 <= ignore_index < vocab_size:
        raise ValueError(f"ignore_index: expected a value outside [0, vocab_size={vocab_size}), got {ignore_index}")
    if num_items is not None:
        if reduction != "mean":
            raise ValueError(f"num_items: only applies to reduction='mean', got reduction={reduction!r}")
        if not isinstance(num_items, Tensor):
            raise TypeError("num_items: expected a tensor with one element (kept on device), "
                            f"got {type(num_items).__name__}")
        if num_items.numel() != 1:
            raise ValueError(f"num_items: expected one element, got shape {tuple(num_items.shape)}")
        if num_items.device != hidden.device:
            raise ValueError(f"num_items: expected device {hidden.device}, got {num_items.device}")
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, Tensor):
            raise TypeError(f"cu_seqlens: expected an int tensor [S+1] or None, got {type(cu_seqlens).__name__}")
        if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
            raise ValueError(f"cu_seqlens: expected shape [S+1] with S >= 1, got {tuple(cu_seqlens.shape)}")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"cu_seqlens: expected dtype int32 or int64, got {cu_seqlens.dtype}")
        if cu_seqlens.device != hidden.device:
            raise ValueError(f"cu_seqlens: expected device {hidden.device}, got {cu_seqlens.device}")
    if validate:
        _validate_values(labels, cu_seqlens, n, ignore_index, vocab_size)
    return vocab_size


def _validate_values(labels, cu_seqlens, n, ignore_index, vocab_size):
    """Checks label range and cu_seqlens contents; reads device memory (a host sync on GPU)."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab_size))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"labels: expected values in [0, vocab_size={vocab_size}) or ignore_index={ignore_index}, "
                         f"got {int(labels[i])} at position {i}")
    if cu_seqlens is not None:
        first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
        if first != 0 or last != n:
            raise ValueError(f"cu_seqlens: expected to start at 0 and end at N={n}, got {first} .. {last}")
        if bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
            raise ValueError(f"cu_seqlens: expected non-decreasing boundaries, got {cu_seqlens.tolist()}")


# ----------------------------------------------------------------------------------------
# Reduction: token / sequence normalisation on [N] vectors (shared by every backend)
# ----------------------------------------------------------------------------------------

def _token_weights(labels, cu_seqlens, ignore_index, normalize, num_items):
    """Per-token weight w [N] (fp32) and the mean's denominator (device scalar).

    token:    w = 1 on trained tokens; denominator = trained tokens (or num_items).
    sequence: w = 1 / (trained tokens of the token's sample); denominator = samples that
              hold at least one trained token (or num_items). A sample is a cu_seqlens
              segment; without cu_seqlens all N tokens form one sample.
    """
    valid = (labels != ignore_index).to(torch.float32)
    if normalize == "token":
        w = valid
        count = valid.sum()
    else:
        n = labels.shape[0]
        if cu_seqlens is None:
            seg = torch.zeros(n, dtype=torch.long, device=labels.device)
            nseg = 1
        else:
            pos = torch.arange(n, device=labels.device, dtype=cu_seqlens.dtype)
            seg = torch.searchsorted(cu_seqlens[1:].contiguous(), pos, right=True)
            nseg = cu_seqlens.shape[0] - 1
            seg = seg.clamp(max=nseg - 1)
        per_seg = torch.zeros(nseg, dtype=torch.float32, device=labels.device).index_add_(0, seg, valid)
        w = valid / per_seg.clamp(min=1.0)[seg]
        count = (per_seg > 0).to(torch.float32).sum()
    denom = count if num_items is None else num_items.reshape(()).to(torch.float32)
    # All tokens ignored: the sum is 0, so any non-zero denominator gives loss 0 and zero grads.
    denom = torch.where(denom == 0, torch.ones_like(denom), denom)
    return w, denom


def _reduce(token_loss, labels, cu_seqlens, ignore_index, reduction, normalize, num_items):
    if reduction == "none":
        return token_loss
    w, denom = _token_weights(labels, cu_seqlens, ignore_index, normalize, num_items)
    total = (token_loss * w.to(token_loss.dtype)).sum()
    if reduction == "sum":
        return total
    return total / denom.to(total.dtype)


def _stats(token_loss, lse, pred, labels, ignore_index):
    valid = labels != ignore_index
    correct = (pred == labels) & valid
    count = valid.sum().clamp(min=1).to(torch.float32)
    return {
        "token_loss": token_loss.detach(),
        "logsumexp": lse.detach(),
        "correct": correct,
        "accuracy": correct.sum().to(torch.float32) / count,
    }


# ----------------------------------------------------------------------------------------
# The oracle
# ----------------------------------------------------------------------------------------

def linear_cross_entropy_reference(hidden, weight, labels, *, cu_seqlens=None, ignore_index=-100,
                                   reduction="mean", normalize="token", num_items=None, z_loss=0.0,
                                   softcap=None, vocab_size=None, bias=None, return_stats=False,
                                   validate=True):
    """Plain reference: materialises [N, V] logits; fp64 when inputs are fp64, else fp32.

    Same arguments and results as `linear_cross_entropy`; differentiable through torch autograd.
    """
    vocab_size = _check_inputs(hidden, weight, labels, bias, cu_seqlens, num_items, ignore_index, reduction,
                               normalize, z_loss, softcap, vocab_size, "torch", validate)
    ct = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logits = hidden.to(ct) @ weight.to(ct).T
    if bias is not None:
        logits = logits + bias.to(ct)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logits = logits[:, :vocab_size]  # rows past the tokenizer's vocabulary take no probability
    lse = torch.logsumexp(logits, dim=-1)
    valid = labels != ignore_index
    target = torch.where(valid, labels, torch.zeros_like(labels)).long()
    target_logit = logits.gather(1, target[:, None])[:, 0]
    token_loss = lse - target_logit + z_loss * lse * lse
    token_loss = torch.where(valid, token_loss, torch.zeros_like(token_loss))
    loss = _reduce(token_loss, labels, cu_seqlens, ignore_index, reduction, normalize, num_items)
    if not return_stats:
        return loss
    lse = torch.where(valid, lse, torch.zeros_like(lse))
    return loss, _stats(token_loss, lse, logits.argmax(-1), labels, ignore_index)


# ----------------------------------------------------------------------------------------
# Torch implementations of the per-token op ("torch" = one chunk, "chunked")
# ----------------------------------------------------------------------------------------

def _stat_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunk_rows(n_rows: int, vocab: int, chunk_tokens: int | None) -> int:
    if chunk_tokens is not None:
        return max(1, chunk_tokens)
    return max(1, min(n_rows, _CHUNK_ELEMENTS // max(vocab, 1)))


def _capped_logits(h, w, b, softcap):
    # In place: a chunk of logits is the largest tensor of the torch paths, so no copies of it.
    z = h @ w.T
    if b is not None:
        z.add_(b)
    if softcap:
        z.div_(softcap).tanh_().mul_(softcap)
    return z


def _torch_forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size, chunk):
    """Per-token (loss, lse, argmax) over the trained tokens only, `chunk` tokens at a time."""
    n = hidden.shape[0]
    ct = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    token_loss = torch.zeros(n, dtype=_stat_dtype(hidden.dtype), device=hidden.device)
    lse_out = torch.zeros(n, dtype=_stat_dtype(hidden.dtype), device=hidden.device)
    pred = torch.full((n,), -1, dtype=torch.int64, device=hidden.device)
    # The torch paths serve CPU, where finding the trained rows costs no device sync.
    rows = (labels != ignore_index).nonzero()[:, 0]
    w = weight[:vocab_size].to(ct)
    b = bias[:vocab_size].to(ct) if bias is not None else None
    for s in range(0, rows.shape[0], chunk):
        r = rows[s:s + chunk]
        z = _capped_logits(hidden[r].to(ct), w, b, softcap)
        lse = torch.logsumexp(z, dim=-1)
        y = labels[r].long()
        # Out-of-range labels (possible with validate=False) contribute no target logit,
        # as in the Triton kernels: never an out-of-bounds read.
        inside = (y >= 0) & (y < vocab_size)
        tgt = torch.where(inside, z.gather(1, y.clamp(0, vocab_size - 1)[:, None])[:, 0], 0.0)
        token_loss[r] = (lse - tgt + z_loss * lse * lse).to(token_loss.dtype)
        lse_out[r] = lse.to(lse_out.dtype)
        pred[r] = z.argmax(-1)
    return token_loss, lse_out, pred


def _torch_backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap, vocab_size, chunk,
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
            grad_weight[:vocab_size] += d.T @ h
            grad_bias[:vocab_size] += d.sum(0)
    gh = grad_hidden.to(hidden.dtype) if need_hidden else hidden.new_empty(0)
    gw = grad_weight.to(weight.dtype) if need_weight else hidden.new_empty(0)
    gb = grad_bias.to(hidden.dtype) if bias is not None and need_weight else hidden.new_empty(0)
    return gh, gw, gb


# ----------------------------------------------------------------------------------------
# The custom op: per-token loss / lse / argmax, and its backward
# ----------------------------------------------------------------------------------------

def _impl_forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size, backend, chunk_tokens):
    if backend == "triton":
        from s1kernels.ops.loss import triton_impl as loss_kernels

        return loss_kernels.forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size)
    chunk = hidden.shape[0] if backend == "torch" else _chunk_rows(hidden.shape[0], vocab_size, chunk_tokens)
    return _torch_forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size, max(chunk, 1))


def _impl_backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap, vocab_size, backend,
                   chunk_tokens, need_hidden, need_weight):
    if backend == "triton":
        from s1kernels.ops.loss import triton_impl as loss_kernels

        return loss_kernels.backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap,
                                     vocab_size, need_hidden, need_weight)
    chunk = hidden.shape[0] if backend == "torch" else _chunk_rows(hidden.shape[0], vocab_size, chunk_tokens)
    return _torch_backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap, vocab_size,
                           max(chunk, 1), need_hidden, need_weight)


def _no_autocast(t):
    return torch.autocast(t.device.type, enabled=False) if t.device.type in ("cuda", "cpu") \
        else contextlib.nullcontext()


@torch.library.custom_op("s1kernels::linear_cross_entropy", mutates_args=())
def _lce_op(hidden: Tensor, weight: Tensor, labels: Tensor, bias: Optional[Tensor], ignore_index: int,
            z_loss: float, softcap: float, vocab_size: int, backend: str,
            chunk_tokens: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token loss (0 where ignored), logsumexp (0 where ignored) and argmax (-1 where ignored)."""
    with _no_autocast(hidden):  # the fp32 math inside must stay fp32
        return _impl_forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap or None, vocab_size,
                             backend, chunk_tokens or None)


@_lce_op.register_fake
def _(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size, backend, chunk_tokens):
    n = hidden.shape[0]
    st = _stat_dtype(hidden.dtype)
    return (hidden.new_empty(n, dtype=st), hidden.new_empty(n, dtype=st),
            hidden.new_empty(n, dtype=torch.int64))


@torch.library.custom_op("s1kernels::linear_cross_entropy_backward", mutates_args=())
def _lce_backward_op(grad: Tensor, hidden: Tensor, weight: Tensor, labels: Tensor, bias: Optional[Tensor],
                     lse: Tensor, ignore_index: int, z_loss: float, softcap: float, vocab_size: int, backend: str,
                     chunk_tokens: int, need_hidden: bool, need_weight: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of sum_t grad[t] * token_loss[t] wrt hidden, weight and bias.

    `need_weight` covers weight and bias; a gradient not needed (or no bias) comes back as [0].
    """
    with _no_autocast(hidden):
        return _impl_backward(grad.contiguous(), hidden, weight, labels, bias, lse, ignore_index, z_loss,
                              softcap or None, vocab_size, backend, chunk_tokens or None, need_hidden, need_weight)


@_lce_backward_op.register_fake
def _(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap, vocab_size, backend, chunk_tokens,
      need_hidden, need_weight):
    gb = torch.empty_like(bias) if bias is not None and need_weight else hidden.new_empty(0)
    gh = torch.empty_like(hidden) if need_hidden else hidden.new_empty(0)
    gw = torch.empty_like(weight) if need_weight else hidden.new_empty(0)
    return gh, gw, gb


def _setup_context(ctx, inputs, output):
    hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size, backend, chunk_tokens = inputs
    ctx.save_for_backward(hidden, weight, labels, bias, output[1])
    ctx.args = (ignore_index, z_loss, softcap, vocab_size, backend, chunk_tokens)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_loss, grad_lse, grad_pred):
    # logsumexp and argmax are statistics: only the per-token loss carries a gradient.
    hidden, weight, labels, bias, lse = ctx.saved_tensors
    need_hidden, need_weight, _, need_bias = ctx.needs_input_grad[:4]
    # A frozen lm_head (or frozen trunk) skips its matmuls in backward.
    gh, gw, gb = _lce_backward_op(grad_loss, hidden, weight, labels, bias, lse, *ctx.args, need_hidden,
                                  need_weight or need_bias)
    return (gh if need_hidden else None, gw if need_weight else None, None,
            gb if ctx.has_bias and need_bias else None, None, None, None, None, None, None)


_lce_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------

def _autocast(hidden, weight, bias):
    """Under torch.autocast, cast like F.linear does: fp32 operands to the autocast dtype."""
    if not isinstance(hidden, Tensor) or not isinstance(weight, Tensor):
        return hidden, weight, bias
    dev = hidden.device.type
    if dev not in ("cuda", "cpu") or not torch.is_autocast_enabled(dev):
        return hidden, weight, bias
    dt = torch.get_autocast_dtype(dev)

    def cast(t):
        return t.to(dt) if isinstance(t, Tensor) and t.dtype == torch.float32 else t

    return cast(hidden), cast(weight), cast(bias)


def resolve_backend(backend: str, device: torch.device) -> str:
    """auto -> "triton" on CUDA, "chunked" on CPU; checks that an explicit choice can run."""
    if backend not in LOSS_BACKENDS:
        raise ValueError(f"backend: expected one of {LOSS_BACKENDS}, got {backend!r}")
    if backend in ("chunked", "torch"):
        return backend
    if backend == "auto":
        return "triton" if device.type == "cuda" and _backend.triton_usable(device) else "chunked"
    return _backend.resolve(backend, device, available=("triton", "torch"), op="linear_cross_entropy")


def linear_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor, *, cu_seqlens: Tensor | None = None,
                         ignore_index: int = -100, reduction: str = "mean", normalize: str = "token",
                         num_items: Tensor | None = None, z_loss: float = 0.0, softcap: float | None = None,
                         vocab_size: int | None = None, bias: Tensor | None = None, backend: str = "auto",
                         return_stats: bool = False, validate: bool | None = None,
                         chunk_tokens: int | None = None):
    """Cross-entropy of `hidden @ weight.T (+ bias)` against `labels`, without [N, V] logits.

    Args:
        hidden: [N, H] fp32/bf16/fp16 hidden states of N packed tokens.
        weight: [V, H] lm_head weight, same dtype and device.
        labels: [N] int64/int32 targets, already shifted; `ignore_index` marks untrained tokens.
        cu_seqlens: [S+1] sample boundaries in the packed row (for normalize="sequence").
        reduction: "mean" (scalar), "sum" (scalar) or "none" ([N] per-token loss, 0 where ignored).
        normalize: "token" (mean over trained tokens) or "sequence" (mean over the trained
            tokens of each sample, then mean over samples that have trained tokens).
        num_items: device tensor replacing the mean's denominator (total trained tokens, or
            samples for normalize="sequence", over all micro-batches and ranks). Never synced.
        z_loss: weight of the z-loss term z_loss * logsumexp^2 added to every trained token.
        softcap: logits become softcap * tanh(logits / softcap) before the softmax.
        vocab_size: rows of `weight` past this index are excluded from the softmax (padded vocab).
        bias: optional [V] lm_head bias.
        backend: "auto" (Triton on CUDA, chunked on CPU and for fp64), "triton", "chunked" or "torch".
        return_stats: also return a dict with per-token `token_loss`, `logsumexp`, `correct`
            and the token `accuracy` (all detached).
        validate: check label range and cu_seqlens contents (reads device memory, a sync on
            GPU). Default: True on CPU, False on CUDA.
        chunk_tokens: tokens per chunk of the chunked path (default: about 64M logits).

    Under `torch.autocast`, fp32 hidden/weight/bias are cast to the autocast dtype first (as
    `F.linear` would be); the loss itself is always computed in fp32.

    Returns:
        The loss (fp32), or `(loss, stats)` with `return_stats=True`.
    """
    if validate is None:
        validate = hidden.device.type == "cpu" if isinstance(hidden, Tensor) else True
    hidden, weight, bias = _autocast(hidden, weight, bias)
    vocab_size = _check_inputs(hidden, weight, labels, bias, cu_seqlens, num_items, ignore_index, reduction,
                               normalize, z_loss, softcap, vocab_size, backend, validate)
    impl = resolve_backend(backend, hidden.device)
    if impl == "triton" and hidden.dtype == torch.float64:
        # The kernels keep fp32 statistics, so fp64 would come back as fp32 (and not as the
        # fake impl declares); fp64 is the oracle's precision and goes through torch.
        if backend != "auto":
            raise TypeError("backend='triton': float64 inputs are not supported; use 'chunked' or 'torch'")
        impl = "chunked"
    token_loss, lse, pred = _lce_op(hidden.contiguous(), weight.contiguous(), labels.contiguous(),
                                    bias.contiguous() if bias is not None else None, ignore_index,
                                    float(z_loss), float(softcap or 0.0), vocab_size, impl, int(chunk_tokens or 0))
    loss = _reduce(token_loss, labels, cu_seqlens, ignore_index, reduction, normalize, num_items)
    if not return_stats:
        return loss
    return loss, _stats(token_loss, lse, pred, labels, ignore_index)


class LinearCrossEntropy(nn.Module):
    """`linear_cross_entropy` as a module holding its options; call as `loss(hidden, weight, labels, ...)`."""

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean", normalize: str = "token",
                 z_loss: float = 0.0, softcap: float | None = None, vocab_size: int | None = None,
                 backend: str = "auto"):
        super().__init__()
        self.options = dict(ignore_index=ignore_index, reduction=reduction, normalize=normalize, z_loss=z_loss,
                            softcap=softcap, vocab_size=vocab_size, backend=backend)

    def forward(self, hidden, weight, labels, *, cu_seqlens=None, num_items=None, bias=None, return_stats=False):
        return linear_cross_entropy(hidden, weight, labels, cu_seqlens=cu_seqlens, num_items=num_items, bias=bias,
                                    return_stats=return_stats, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
