"""The smoke rows: one GPU case per kernel family, s1kernels against eager torch only (no
torch.compile, no optional baselines), sized to say in about a minute whether each family is
fast at the s1 sizes (`bench/gpu_proof.py --bench-smoke`, or `run_all.py --only smoke`).

  loss        N=8192 H=3584 V=152,064 bf16, 30% ignored, forward + backward
  decode      B=64 V=152,064 bf16 with budget forcing: greedy, and top-k 50 + top-p 0.95
  similarity  self-kNN N=59,029 D=384 k=16 bf16 (s1's question pool, MiniLM-size embeddings)

Quick mode (CPU): the same rows at small sizes, the CPU implementations against torch.
"""
from __future__ import annotations

import torch

import common
import decode as decode_bench
import loss as loss_bench
import similarity as sim_bench
from s1kernels.ops import decode as D
from s1kernels.ops import similarity as sim
from s1kernels.ops.loss import linear_cross_entropy

BENCH = "smoke"
GPU = {"loss": (8192, 3584, 152064), "decode": (64, 152064), "knn": (59029, 384, 16)}
CPU = {"loss": (256, 64, 4099), "decode": (8, 4099), "knn": (1024, 64, 16)}
DECODE_CASES = ("greedy", "top-k 50 + top-p 0.95")


def _loss_rows(ctx, n, h, v):
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else torch.float32
    hidden, weight, labels = loss_bench.make_inputs(n, h, v, dtype, ctx.device)
    case = f"loss N={n} H={h} V={v} {str(dtype).replace('torch.', '')} fwd+bwd"
    rows = []
    for impl, fn in (("s1kernels", lambda a, b, c: linear_cross_entropy(a, b, c, backend="auto")),
                     ("torch", loss_bench.torch_reference)):
        need, what = loss_bench.working_set(impl, n, h, v, hidden.element_size())
        reason = common.fit_reason(need, what, ctx.device)
        if reason:
            rows.append(common.skipped(BENCH, case, impl, reason, ctx))
            continue
        rows.append(common.measure(BENCH, case, impl, loss_bench.fwd_bwd(fn, hidden, weight, labels), ctx,
                                   flops=6 * n * h * v))
    return rows


def _decode_rows(ctx, b, v):
    cuda = ctx.device.type == "cuda"
    forcing = decode_bench._forcing_for(v)
    rows = []
    for name in DECODE_CASES:
        logits, bt, stt, state = decode_bench._setup(b, v, True, decode_bench.CASES[name], ctx.device, torch.bfloat16)
        case = f"decode B={b} V={v} bf16 {name} +forcing"
        backend = "cuda" if cuda else "cpp"
        rows.append(common.measure(BENCH, case, "s1kernels",
                                   lambda: D.decode_step(logits, state, bt, stt, forcing, backend=backend), ctx,
                                   bytes=b * v * 2, note="eager launch" if cuda else "C++ CPU twin"))
        ref_state = state.clone()
        rows.append(common.measure(BENCH, case, "torch",
                                   lambda: D.reference_decode_step(logits, ref_state, bt, stt, forcing, v), ctx,
                                   bytes=b * v * 2))
    return rows


def _knn_rows(ctx, n, d, k):
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else torch.float32
    x = sim_bench.unit_rows(n, d, dtype, ctx.device)
    case = f"self-kNN N={n} D={d} k={k} {str(dtype).replace('torch.', '')}"
    chunk = 4096 if ctx.device.type == "cuda" else 256
    flops = 2.0 * n * n * d
    return [common.measure(BENCH, case, "s1kernels", lambda: sim.topk_similarity(x, k=k), ctx, flops=flops),
            common.measure(BENCH, case, "torch", lambda: sim_bench.torch_chunked_knn(x, k, chunk), ctx, flops=flops,
                           note=f"chunked mm+topk, {chunk} rows per chunk")]


def run(ctx: common.Context) -> list[common.Row]:
    sizes = CPU if ctx.quick else GPU
    rows = _loss_rows(ctx, *sizes["loss"])
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    rows += _decode_rows(ctx, *sizes["decode"])
    rows += _knn_rows(ctx, *sizes["knn"])
    return rows
