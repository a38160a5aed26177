"""Peak memory of the lm_head loss on a CPU: the fused (chunked) path against materialised logits.

    python bench/loss_memory_cpu.py                   # N=8192 H=1024 V=32768 fp32, writes
                                                      # bench/results/loss-memory-cpu.md
    python bench/loss_memory_cpu.py --n 2048 --out -  # smaller, table to stdout only

Each implementation runs one forward + backward in a fresh process. Its peak is the growth
of the resident set during that call, beyond the inputs: the kernel's high-water mark
(VmHWM) is reset through /proc/self/clear_refs after the inputs exist, and glibc's mmap
threshold is pinned so that every large tensor is mapped on allocation and unmapped on
free (freed memory that malloc kept and reused would hide from the count). The gradients of
hidden and weight are part of the peak, as on the GPU benchmark; their size is listed.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import time

from cpu_report import status_kb, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
IMPLS = {
    "plain torch (F.cross_entropy on materialised logits)": "plain",
    "s1kernels chunked": "torch",
}


def measure_one(impl: str, n: int, h: int, v: int, seed: int = 0) -> dict:
    """One forward + backward of `impl` in this process; peak RSS growth beyond the inputs."""
    ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD, fixed (no dynamic raise)
    import torch

    import torch.nn.functional as F

    from s1kernels.ops.loss import linear_cross_entropy

    def step(hidden, weight, labels):
        if impl == "plain":  # what a training loop writes by hand (bench/loss.py's reference)
            loss = F.cross_entropy((hidden @ weight.T).float(), labels, ignore_index=-100)
        else:
            loss = linear_cross_entropy(hidden, weight, labels, backend=impl)
        return loss, torch.autograd.grad(loss, [hidden, weight])

    # A small call first: code pages and thread pools loaded on first use are not the op's memory.
    tiny_w = torch.randn(v, h).requires_grad_()
    step(torch.randn(16, h, requires_grad=True), tiny_w, torch.randint(0, v, (16,)))
    del tiny_w
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).requires_grad_()
    weight = (torch.randn(v, h, generator=g) / h**0.5).requires_grad_()
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.3] = -100
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    base = status_kb("VmRSS")
    t0 = time.perf_counter()
    loss, grads = step(hidden, weight, labels)
    seconds = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    return {"impl": impl, "peak_mb": (peak - base) / 1024, "seconds": seconds, "loss": float(loss),
            "grad_mb": sum(x.numel() * x.element_size() for x in grads) / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8192, help="tokens (30%% ignored)")
    p.add_argument("--h", type=int, default=1024, help="hidden size")
    p.add_argument("--v", type=int, default=32768, help="vocabulary rows")
    p.add_argument("--out", default=os.path.join(HERE, "results", "loss-memory-cpu.md"),
                   help="markdown file to write, or - for stdout only")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this backend and print JSON
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.n, args.h, args.v)))
        return 0

    import torch

    results = {}
    for label, impl in IMPLS.items():
        cmd = [sys.executable, os.path.abspath(__file__), "--one", impl, "--n", str(args.n), "--h", str(args.h),
               "--v", str(args.v)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        print(label, results[label], flush=True)
    ref_loss = results[next(iter(IMPLS))]["loss"]
    logits_mb = args.n * args.v * 4 / 2**20
    grad_mb = next(iter(results.values()))["grad_mb"]
    lines = [
        f"# Loss peak memory on CPU: N={args.n} H={args.h} V={args.v} fp32, 30% of tokens ignored, forward + backward",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}. "
        f"Command: `python bench/loss_memory_cpu.py --n {args.n} --h {args.h} --v {args.v}`.",
        f"One [N, V] fp32 logits tensor is {logits_mb:.0f} MB; the gradients of hidden and weight "
        f"(included in each peak) are {grad_mb:.0f} MB.",
        "",
        "| implementation | peak beyond inputs (MB) | peak minus gradients (MB) | seconds | loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, r in results.items():
        lines.append(f"| {label} | {r['peak_mb']:.0f} | {r['peak_mb'] - grad_mb:.0f} | {r['seconds']:.1f} "
                     f"| {r['loss']:.6f} |")
    lines += ["", f"Largest loss difference from the reference: "
              f"{max(abs(r['loss'] - ref_loss) for r in results.values()):.2e}."]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
