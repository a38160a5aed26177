"""Fused linear + cross-entropy benchmark: forward + backward of the lm_head loss.

GPU sizes (the s1 fine-tunes of Qwen2.5-7B/32B): (N=8192, H=3584) and (N=32768, H=5120) with
V=152,064 lm_head rows (151,665 real tokens), 30% of the tokens ignored, bf16. Work counted
as 6*N*H*V FLOPs (logits, dH, dW), so the fraction of the bf16 matmul ceiling says how close
the loss comes to the matmuls alone; ignored tokens are counted as work too, as every
baseline sees them. Baselines: the torch reference (materialised fp32 logits) and
torch.compile of it; Liger-Kernel's LigerFusedLinearCrossEntropyLoss and apple's
cut_cross_entropy.linear_cross_entropy when importable. Peak memory is measured beyond the
inputs and includes the gradients of hidden and weight (their size is in the note).
Quick mode (CPU): tiny shapes, the chunked path against the reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import common
from s1kernels.ops.loss import linear_cross_entropy

BENCH = "loss"
IGNORE = -100
GPU_CASES = [(8192, 3584, 152064), (32768, 5120, 152064)]
CPU_CASES = [(512, 128, 4099)]
IGNORED_FRACTION = 0.3
REAL_VOCAB = 151665  # Qwen2.5 tokenizer size; the lm_head is padded to 152,064 rows


def make_inputs(n, h, v, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(device=device, dtype=dtype)
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(device=device, dtype=dtype)
    labels = torch.randint(0, min(v, REAL_VOCAB), (n,), generator=g)
    labels[torch.rand(n, generator=g) < IGNORED_FRACTION] = IGNORE
    return hidden.requires_grad_(), weight.requires_grad_(), labels.to(device)


def torch_reference(hidden, weight, labels):
    """What a training loop writes by hand: full logits, upcast, cross-entropy."""
    logits = (hidden @ weight.T).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE)


def liger_fn():
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE)
    return lambda hidden, weight, labels: loss(weight, hidden, labels)


def cce_fn():
    try:
        from cut_cross_entropy import linear_cross_entropy as cce
    except ImportError:
        return None
    return lambda hidden, weight, labels: cce(hidden, weight, labels, ignore_index=IGNORE)


def fwd_bwd(loss_fn, hidden, weight, labels):
    def step():
        loss = loss_fn(hidden, weight, labels)
        return torch.autograd.grad(loss, [hidden, weight])

    return step


def run(ctx: common.Context) -> list[common.Row]:
    cuda = ctx.device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    rows = []
    for n, h, v in (CPU_CASES if ctx.quick else GPU_CASES):
        hidden, weight, labels = make_inputs(n, h, v, dtype, ctx.device)
        case = f"N={n} H={h} V={v} {str(dtype).replace('torch.', '')} {int(IGNORED_FRACTION * 100)}% ignored fwd+bwd"
        flops = 6 * n * h * v
        grad_mb = (hidden.numel() + weight.numel()) * hidden.element_size() / 2**20
        note = f"peak includes grads ({grad_mb:.0f} MB)"
        impls = [("s1kernels", lambda a, b, c: linear_cross_entropy(a, b, c, backend="auto")),
                 ("torch", torch_reference)]
        if not ctx.quick:  # compiling the reference costs more than the whole quick run may take
            impls.append(("torch.compile", torch.compile(torch_reference)))
        for name, make in (("liger", liger_fn), ("cce", cce_fn)):
            fn = make() if cuda else None  # both are Triton-on-CUDA only
            if fn is not None:
                impls.append((name, fn))
        for impl, fn in impls:
            rows.append(common.measure(BENCH, case, impl, fwd_bwd(fn, hidden, weight, labels), ctx, flops=flops,
                                       note=note))
            if cuda:
                torch.cuda.empty_cache()
        del hidden, weight, labels
    return rows
