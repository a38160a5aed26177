"""RMSNorm, rotate-half RoPE and SwiGLU as autograd functions that keep few temporaries.

Autograd through the plain torch expressions of these layers allocates a fresh activation-sized
tensor for nearly every elementwise step, forward and backward (RMSNorm's pow, mean, rsqrt and
two products; RoPE's negation, concatenation, two products and a sum; SwiGLU's product and
three backward products). On a CPU each fresh allocation of megabytes is paid again in page
faults, and under gradient checkpointing every forward runs twice, so in a training step
these small ops cost as much as a third of the attention (measured in docs/real-model.md).
Here each function writes one output forward and one gradient per input backward, the rest in
place, with the same formulas, so results agree with the plain expressions to rounding.

`Transformer` uses them while training on a CPU (grad enabled); inference keeps the plain
expressions, whose bits the decode kernels reproduce.
"""
from __future__ import annotations

import torch


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


class _RMSNorm(torch.autograd.Function):
    """weight * (x * rsqrt(mean(x^2) + eps)) over the last dimension, computed in fp32 (fp64
    stays fp64)."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        xf = x.to(_stat_dtype(x))
        rstd = xf.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)
        y = torch.mul(xf, rstd).to(x.dtype)
        return y.mul_(weight) if weight.dtype == y.dtype else weight * y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        xhat = x.to(rstd.dtype).mul(rstd)  # the normalised input, recomputed: one tensor
        dyf = dy.to(rstd.dtype)
        dw = None
        if ctx.needs_input_grad[1]:
            dw = (dyf * xhat).sum(dim=tuple(range(dy.dim() - 1))).to(weight.dtype)
        if not ctx.needs_input_grad[0]:
            return None, dw, None
        g = dyf.mul(weight.to(rstd.dtype))
        # dx = rstd * (g - xhat * mean(g * xhat)): the mean over the last dimension
        mean = torch.linalg.vecdot(g, xhat, dim=-1).div_(x.shape[-1]).unsqueeze(-1)
        dx = g.sub_(xhat.mul_(mean)).mul_(rstd)
        return dx.to(x.dtype), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _RMSNorm.apply(x, weight, eps)


class _RotateHalf(torch.autograd.Function):
    """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1] (the HF convention)."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        half = x.shape[-1] // 2
        y = x * cos
        y[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1.0)
        y[..., half:].addcmul_(x[..., :half], sin[..., half:])
        ctx.save_for_backward(cos, sin)
        return y

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        half = dy.shape[-1] // 2
        # the transpose of rotate_half is [z2, -z1]
        dx = dy * cos
        dx[..., :half].addcmul_(dy[..., half:], sin[..., half:])
        dx[..., half:].addcmul_(dy[..., :half], sin[..., :half], value=-1.0)
        return dx, None, None


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE of x with cos/sin broadcast over its heads (no gradient to cos/sin)."""
    return _RotateHalf.apply(x, cos, sin)


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return torch.nn.functional.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx, d):
        gate, up = ctx.saved_tensors
        d_up = torch.nn.functional.silu(gate).mul_(d)
        s = torch.sigmoid(gate)
        # d silu(g)/dg = s * (1 + g * (1 - s))
        d_gate = torch.mul(s, gate).neg_().add_(gate).mul_(s).add_(s).mul_(up).mul_(d)
        return d_gate, d_up


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _SwiGLU.apply(gate, up)
