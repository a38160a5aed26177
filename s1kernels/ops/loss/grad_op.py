"""The custom op for a scalar loss whose gradient is computed in the forward pass.

`s1kernels::linear_cross_entropy_with_grad` returns the scalar sum_t token_weight[t] *
loss[t], the per-token statistics, and the gradients of that scalar wrt hidden, weight and
bias (computed by triton_fused.forward_with_grad while the logits tiles are on chip, or by
torch_impl.forward_with_grad from each logits chunk). Its backward only multiplies those by
grad_output. linear_cross_entropy uses it for a scalar reduction on the Triton and torch
backends when a gradient is needed (grad mode on and an input that
requires grad); otherwise the forward-only op runs and nothing extra is computed.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor


def _no_autocast(t):
    return torch.autocast(t.device.type, enabled=False) if t.device.type in ("cuda", "cpu") \
        else contextlib.nullcontext()


@torch.library.custom_op("s1kernels::linear_cross_entropy_with_grad", mutates_args=())
def _lce_with_grad_op(hidden: Tensor, weight: Tensor, labels: Tensor, bias: Optional[Tensor], token_weight: Tensor,
                      ignore_index: int, z_loss: float, vocab_size: int, need_hidden: bool,
                      need_weight: bool, impl: str = "triton",
                      chunk: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, token_loss, lse, argmax, grad_hidden, grad_weight, grad_bias); unneeded gradients are [0].
    impl: "triton" (triton_fused) or "torch" (torch_impl, `chunk` trained tokens at a time)."""
    with _no_autocast(hidden):
        if impl == "torch":
            from s1kernels.ops.loss import torch_impl

            token_loss, lse, pred, gh, gw, gb = torch_impl.forward_with_grad(
                hidden, weight, labels, bias, token_weight, ignore_index, z_loss, vocab_size, chunk, need_hidden,
                need_weight)
        else:
            from s1kernels.ops.loss import triton_fused

            token_loss, lse, pred, gh, gw, gb = triton_fused.forward_with_grad(
                hidden, weight, labels, bias, token_weight, ignore_index, z_loss, vocab_size, need_hidden,
                need_weight)
        loss = (token_loss * token_weight.to(token_loss.dtype)).sum()
    return loss, token_loss, lse, pred, gh, gw, gb


@_lce_with_grad_op.register_fake
def _(hidden, weight, labels, bias, token_weight, ignore_index, z_loss, vocab_size, need_hidden, need_weight,
      impl="triton", chunk=0):
    n = hidden.shape[0]
    f32 = torch.float32
    gh = torch.empty_like(hidden) if need_hidden else hidden.new_empty(0)
    gw = torch.empty_like(weight) if need_weight else hidden.new_empty(0)
    gb = torch.empty_like(bias) if bias is not None and need_weight else hidden.new_empty(0)
    return (hidden.new_empty((), dtype=f32), hidden.new_empty(n, dtype=f32), hidden.new_empty(n, dtype=f32),
            hidden.new_empty(n, dtype=torch.int64), gh, gw, gb)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*output[4:])
    ctx.has_bias = inputs[3] is not None


def _backward(ctx, grad_loss, *_):
    gh, gw, gb = ctx.saved_tensors
    need_hidden, need_weight, _, need_bias = ctx.needs_input_grad[:4]
    return (gh * grad_loss if need_hidden else None, gw * grad_loss if need_weight else None, None,
            gb * grad_loss if ctx.has_bias and need_bias else None, None, None, None, None, None, None, None, None)


_lce_with_grad_op.register_autograd(_backward, setup_context=_setup_context)


def wants_grad(hidden: Tensor, weight: Tensor, bias: Optional[Tensor]) -> tuple[bool, bool]:
    """(need_hidden, need_weight_or_bias) as autograd will ask for them; both False under no_grad."""
    if not torch.is_grad_enabled():
        return False, False
    return hidden.requires_grad, weight.requires_grad or (bias is not None and bias.requires_grad)
