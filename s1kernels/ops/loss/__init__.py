"""Fused linear + cross-entropy loss for packed-sequence SFT, without the [N, V] logits.

    loss = linear_cross_entropy(hidden, lm_head_weight, labels, cu_seqlens=cu, normalize="sequence")

`hidden` [N, H] are the final hidden states of N packed tokens, `weight` [V, H] the lm_head,
`labels` [N] the already shifted targets (`ignore_index` where a token is not trained).

Structure (the same doors as every family in s1kernels.ops):
- `contract.py`: the argument checks and the reduction every path shares.
- `reference.py`: `linear_cross_entropy_reference`, the plain oracle (materialises the
  logits, fp32/fp64 math, torch autograd; used by the tests, never by the fast paths).
- The per-token op `s1kernels::linear_cross_entropy` (a `torch.library.custom_op` with a
  fake impl and a registered backward op) returns per-token loss, logsumexp and argmax.
  Its backends (s1kernels.backend.FAMILIES["loss"]): "torch" (`torch_impl.py`: trained
  tokens in chunks, so at most chunk x V logits exist at once; recomputed in backward) and
  "triton" (`triton_impl.py`: tiles over tokens and vocab with an online logsumexp, no
  [N, V] buffer).
- The reduction (token/sequence normalisation, `num_items`, mean/sum/none) is plain torch on
  [N] vectors outside the op, so autograd hands the op one gradient per token.
- Except for a scalar loss (mean/sum, no softcap) that needs a gradient: then `grad_op.py`'s
  op computes the gradient in the forward pass from the same logits tiles (`triton_fused.py`)
  or chunks (`torch_impl.forward_with_grad`), 6 N H V FLOPs instead of 8, and its backward
  only scales.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor, nn

from s1kernels import backend as _backend
from s1kernels import checks
from s1kernels.ops.loss import grad_op as _grad_op
from s1kernels.ops.loss.grad_op import _no_autocast
from s1kernels.ops.loss import torch_impl
from s1kernels.ops.loss.contract import (  # noqa: F401  (public names of the family)
    IGNORE_INDEX, LOSS_BACKENDS, NORMALIZATIONS, REDUCTIONS, _check_inputs, _reduce, _stats, _token_weights, _validate_values)
from s1kernels.ops.loss.reference import linear_cross_entropy_reference  # noqa: F401
from s1kernels.ops.loss.torch_impl import stat_dtype as _stat_dtype


# ----------------------------------------------------------------------------------------
# The custom op: per-token loss / lse / argmax, and its backward
# ----------------------------------------------------------------------------------------

def _torch_chunk(hidden, vocab_size, chunk_tokens):
    """Trained tokens per chunk of the torch path: `chunk_tokens`, else about 64M logits
    (16M on the CPU)."""
    return max(1, torch_impl.chunk_rows(hidden.shape[0], vocab_size, chunk_tokens, hidden.device))


def _impl_forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size, backend, chunk_tokens):
    if backend == "triton":
        from s1kernels.ops.loss import triton_impl as loss_kernels

        return loss_kernels.forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size)
    chunk = _torch_chunk(hidden, vocab_size, chunk_tokens)
    return torch_impl.forward(hidden, weight, labels, bias, ignore_index, z_loss, softcap, vocab_size, chunk)


def _impl_backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap, vocab_size, backend,
                   chunk_tokens, need_hidden, need_weight):
    if backend == "triton":
        from s1kernels.ops.loss import triton_impl as loss_kernels

        return loss_kernels.backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap,
                                     vocab_size, need_hidden, need_weight)
    chunk = _torch_chunk(hidden, vocab_size, chunk_tokens)
    return torch_impl.backward(grad, hidden, weight, labels, bias, lse, ignore_index, z_loss, softcap, vocab_size,
                               chunk, need_hidden, need_weight)


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


def linear_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor, *, cu_seqlens: Tensor | None = None,
                         ignore_index: int = IGNORE_INDEX, reduction: str = "mean", normalize: str = "token",
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
        backend: "auto" (Triton on CUDA; torch on CPU and for fp64), "triton" or "torch" (the
            chunked torch path: `chunk_tokens` trained tokens at a time). See
            s1kernels.backend.resolve; the plain oracle is `linear_cross_entropy_reference`.
        return_stats: also return a dict with per-token `token_loss`, `logsumexp`, `correct`
            and the token `accuracy` (all detached).
        validate: check label range, cu_seqlens contents and num_items > 0 (reads device
            memory, a sync on GPU). Default: True on CPU, False on CUDA.
        chunk_tokens: trained tokens per chunk of the torch path (default: about 64M logits).

    Under `torch.autocast`, fp32 hidden/weight/bias are cast to the autocast dtype first (as
    `F.linear` would be); the loss itself is always computed in fp32.

    Returns:
        The loss (fp32), or `(loss, stats)` with `return_stats=True`.
    """
    if validate is None:
        validate = hidden.device.type == "cpu" if isinstance(hidden, Tensor) else True
    if chunk_tokens is not None:
        checks.check_int("chunk_tokens", chunk_tokens, lo=1)  # -1 or 0 would mean "default" silently
    hidden, weight, bias = _autocast(hidden, weight, bias)
    vocab_size = _check_inputs(hidden, weight, labels, bias, cu_seqlens, num_items, ignore_index, reduction,
                               normalize, z_loss, softcap, vocab_size, backend, validate)
    impl = _backend.resolve("loss", backend, hidden, op="linear_cross_entropy")
    if impl == "triton" and hidden.dtype == torch.float64:
        # The kernels keep fp32 statistics, so fp64 would come back as fp32 (and not as the
        # fake impl declares); fp64 is the oracle's precision and goes through torch.
        if backend != "auto":
            raise TypeError("backend='triton': float64 inputs are not supported; use 'torch'")
        impl = "torch"
    need_hidden, need_weight = _grad_op.wants_grad(hidden, weight, bias)
    # (fp64, the oracle's precision, keeps forward + backward: the token weights are fp32)
    if reduction != "none" and not softcap and (need_hidden or need_weight) and hidden.dtype != torch.float64:
        # A scalar loss with a gradient: computed in the forward pass (6 N H V FLOPs, see
        # triton_fused.py; the torch path likewise skips backward's second logits product);
        # the backward only scales it by grad_output.
        w, denom = _token_weights(labels, cu_seqlens, ignore_index, normalize, num_items)
        loss, token_loss, lse, pred, *_ = torch.ops.s1kernels.linear_cross_entropy_with_grad(
            hidden.contiguous(), weight.contiguous(), labels.contiguous(),
            bias.contiguous() if bias is not None else None, w if reduction == "sum" else w / denom, ignore_index,
            float(z_loss), vocab_size, need_hidden, need_weight, impl,
            _torch_chunk(hidden, vocab_size, chunk_tokens) if impl == "torch" else 0)
        return loss if not return_stats else (loss, _stats(token_loss, lse, pred, labels, ignore_index))
    token_loss, lse, pred = _lce_op(hidden.contiguous(), weight.contiguous(), labels.contiguous(),
                                    bias.contiguous() if bias is not None else None, ignore_index,
                                    float(z_loss), float(softcap or 0.0), vocab_size, impl, int(chunk_tokens or 0))
    loss = _reduce(token_loss, labels, cu_seqlens, ignore_index, reduction, normalize, num_items)
    if not return_stats:
        return loss
    return loss, _stats(token_loss, lse, pred, labels, ignore_index)


class LinearCrossEntropy(nn.Module):
    """`linear_cross_entropy` as a module holding its options; call as `loss(hidden, weight, labels, ...)`."""

    def __init__(self, *, ignore_index: int = IGNORE_INDEX, reduction: str = "mean", normalize: str = "token",
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
