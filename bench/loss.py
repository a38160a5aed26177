"""Fused linear + cross-entropy benchmark: forward + backward of the lm_head loss.

GPU sizes (the s1 fine-tunes of Qwen2.5-7B/32B): (N=8192, H=3584) and (N=32768, H=5120) with
V=152,064 lm_head rows (151,665 real tokens), 30% of the tokens ignored, bf16. Work counted
as 6*N*H*V FLOPs (logits, dH, dW), so the fraction of the bf16 matmul ceiling says how close
the loss comes to the matmuls alone; ignored tokens are counted as work too, as every
baseline sees them. Baselines: the torch reference (materialised fp32 logits) and
torch.compile of it; Liger-Kernel's LigerFusedLinearCrossEntropyLoss and apple's
cut_cross_entropy.linear_cross_entropy when importable. Peak memory is measured beyond the
inputs and includes the gradients of hidden and weight (their size is in the note). A row
whose working set would not fit in free memory is skipped with its size: the torch
reference at N=32768 needs ~80 GB (its fp32 logits alone are 20 GB).
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


# Extra bytes per logit (N x V) each implementation allocates beyond inputs and gradients.
# torch: bf16 logits, their fp32 copy, the saved fp32 log-softmax, the fp32 and bf16 dlogits.
# torch.compile: fused upcast and softmax, but bf16 logits, an fp32 pass and bf16 dlogits stay.
# The fused losses work in vocabulary chunks and hold no N x V tensor.
LOGIT_BYTES = {"torch": 2 + 4 + 4 + 4 + 2, "torch.compile": 2 + 4 + 2}


def working_set(impl: str, n: int, h: int, v: int, elem: int) -> tuple[float, str]:
    """Bytes the implementation needs beyond its inputs, and what they are, for the fit check."""
    grads = (n * h + v * h) * elem
    per_logit = LOGIT_BYTES.get(impl, 0)
    what = f"{per_logit} B x N x V logits" if per_logit else "vocabulary chunks"
    return grads + per_logit * n * v, f"{what} + {grads / 1e9:.1f} GB gradients"


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
            if not cuda:
                continue  # both are Triton-on-CUDA only
            fn = make()
            if fn is None:
                rows.append(common.skipped(BENCH, case, name, "not installed (bench/gpu_proof.py --wheels)", ctx))
            else:
                impls.append((name, fn))
        for impl, fn in impls:
            need, what = working_set(impl, n, h, v, hidden.element_size())
            reason = common.fit_reason(need, what, ctx.device)
            if reason:
                rows.append(common.skipped(BENCH, case, impl, reason, ctx))
                continue
            rows.append(common.measure(BENCH, case, impl, fwd_bwd(fn, hidden, weight, labels), ctx, flops=flops,
                                       note=note))
            if cuda:
                torch.cuda.empty_cache()
        del hidden, weight, labels
    return rows
