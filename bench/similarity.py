"""Similarity benchmarks: self-kNN (cosine top-k), k-center picks and threshold dedup.

GPU sizes: self-kNN at N=59,029 (s1's pool) with D in {384, 1024} and k=16, and N=1M, D=384,
k=10, bf16; k-center 1000 picks of 59,029; dedup of 59,029 at 0.95. Work counted as
2*N*M*D FLOPs. Baselines: chunked torch mm + topk (what pipelines write by hand), FAISS exact
inner-product search through a GPU index when faiss has one (never a CPU index in a GPU row),
and for k-center a loop that reads the argmax
back to the host each pick. Quick mode (CPU): the same cases at tiny sizes.
"""
from __future__ import annotations

import dataclasses

import torch

import common
from s1kernels.ops import similarity as sim

BENCH = "similarity"


def unit_rows(n, d, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=1).to(device=device, dtype=dtype)


def torch_chunked_knn(x, k, chunk):
    """The hand-written baseline: row chunks of x @ x.T in the input dtype, self masked, topk."""
    n = x.shape[0]
    scores = torch.empty(n, k, dtype=torch.float32, device=x.device)
    idx = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        s = (x[i0:i1] @ x.T).float()
        s[torch.arange(i1 - i0, device=x.device), torch.arange(i0, i1, device=x.device)] = -float("inf")
        v, j = s.topk(k, dim=1)
        scores[i0:i1], idx[i0:i1] = v, j
    return scores, idx


def faiss_knn_fn(x, k):
    """(search function, None) for exact FAISS inner-product search, or (None, why not).

    On CUDA tensors only a GPU index is ever timed: a CPU index in a GPU row would compare
    two machines, and at N=1M a CPU search of every row runs for tens of minutes."""
    try:
        import faiss
    except ImportError:
        return None, "faiss not installed"
    if x.device.type == "cuda" and not hasattr(faiss, "StandardGpuResources"):
        return None, "this faiss has no GPU index (a faiss-cpu build); a CPU index is never timed in a GPU row"
    xf = x.float().cpu().numpy()
    index = faiss.IndexFlatIP(xf.shape[1])
    if x.device.type == "cuda":
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(xf)
    return (lambda: index.search(xf, k + 1)), None


def host_sync_k_center(x, k):
    """k-center as usually written: the argmax comes back to the host every pick."""
    xn = torch.nn.functional.normalize(x.float(), dim=1)
    mind = torch.full((x.shape[0],), float("inf"), device=x.device)
    cur, picks = 0, []
    for _ in range(k):
        picks.append(cur)
        mind = torch.minimum(mind, 1.0 - xn @ xn[cur])
        mind[cur] = -float("inf")
        cur = int(mind.argmax())
    return picks


def run(ctx: common.Context) -> list[common.Row]:
    dev = ctx.device
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if ctx.quick:
        knn_cases = [(1024, 64, 16), (2048, 96, 10)]
        kc_n, kc_d, kc_k, dd_n = 2048, 64, 64, 1024
        chunk = 256
    else:
        knn_cases = [(59029, 384, 16), (59029, 1024, 16), (59029, 384, 1024), (1_000_000, 384, 10)]
        kc_n, kc_d, kc_k, dd_n = 59029, 384, 1000, 59029
        chunk = 4096
    rows = []
    for n, d, k in knn_cases:
        x = unit_rows(n, d, dtype, dev)
        case = f"self-kNN N={n} D={d} k={k} {str(dtype).replace('torch.', '')}"
        flops = 2.0 * n * n * d
        c = ctx if n < 500_000 else dataclasses.replace(ctx, warmup=1, rep=3, row_budget_s=30.0)
        rows.append(common.measure(BENCH, case, "s1kernels", lambda: sim.topk_similarity(x, k=k), c, flops=flops))
        need = chunk * n * (x.element_size() + 4 + 4)  # one chunk's scores, their fp32 copy, topk scratch
        reason = common.fit_reason(need, f"{chunk} x {n} score chunk", dev)
        if reason:
            rows.append(common.skipped(BENCH, case, "torch", reason, c))
        else:
            rows.append(common.measure(BENCH, case, "torch", lambda: torch_chunked_knn(x, k, chunk), c, flops=flops,
                                       note=f"chunked mm+topk, {chunk} rows per chunk"))
        fn, why = faiss_knn_fn(x, k)
        if fn is None:
            rows.append(common.skipped(BENCH, case, "faiss", why, c))
        else:
            rows.append(common.measure(BENCH, case, "faiss", fn, c, flops=flops,
                                       note=f"IndexFlatIP on {dev.type}, k+1 with self, host arrays in and out"))
            del fn
        del x
    x = unit_rows(kc_n, kc_d, dtype, dev, seed=1)
    case = f"k-center {kc_k} of N={kc_n} D={kc_d}"
    kc_ctx = dataclasses.replace(ctx, warmup=min(ctx.warmup, 2), rep=min(ctx.rep, 5))
    rows.append(common.measure(BENCH, case, "s1kernels", lambda: sim.k_center(x, kc_k), kc_ctx,
                               bytes=4.0 * kc_n * kc_d * kc_k, note="device loop, no host sync per pick"))
    rows.append(common.measure(BENCH, case, "torch", lambda: host_sync_k_center(x, kc_k), kc_ctx,
                               bytes=4.0 * kc_n * kc_d * kc_k, note="loop with .item() per pick"))
    x = unit_rows(dd_n, kc_d, dtype, dev, seed=2)
    case = f"dedup N={dd_n} D={kc_d} threshold 0.95"
    rows.append(common.measure(BENCH, case, "s1kernels", lambda: sim.threshold_dedup(x, 0.95), kc_ctx,
                               flops=1.0 * dd_n * dd_n * kc_d, note="exact SemDeDup, blocked"))
    return rows
