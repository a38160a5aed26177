"""Shared benchmark harness: timing, peak memory, ceilings, and the results writers.

Every benchmark module in bench/ exposes `run(ctx: Context) -> list[Row]`. A row times one
implementation of one case; `ratios` compares rows of the same case measured in the same run,
and `fraction_of_ceiling` relates the work a row does (FLOPs or bytes) to the ceiling
measured at the start of the run.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from typing import Callable

import torch


@dataclasses.dataclass
class Context:
    device: torch.device
    quick: bool  # CPU/CI mode: tiny shapes, few repetitions
    ceilings: dict
    warmup: int = 5
    rep: int = 20


@dataclasses.dataclass
class Row:
    bench: str  # benchmark family, e.g. "loss"
    case: str  # shape/config label, e.g. "N=8192 H=3584 V=152064"
    impl: str  # implementation, e.g. "s1kernels", "torch", "torch.compile", "liger"
    ms: float | None  # median time, None when the impl failed or was unavailable
    peak_mb: float | None = None  # peak memory beyond what existed before the call
    flops: float | None = None  # useful work, for the fraction of the matmul ceiling
    bytes: float | None = None  # bytes moved, for the fraction of copy bandwidth
    note: str = ""
    ratios: dict = dataclasses.field(default_factory=dict)  # baseline impl -> baseline_ms / ms
    ceiling_fraction: float | None = None


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], ctx: Context) -> float:
    """Median milliseconds of `fn` after warm-up (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(ctx.warmup):
        fn()
    sync(ctx.device)
    times = []
    if ctx.device.type == "cuda":
        for _ in range(ctx.rep):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(ctx.rep):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak device memory allocated during `fn`, beyond what was allocated before it."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def measure(bench: str, case: str, impl: str, fn: Callable[[], object], ctx: Context, *,
            flops=None, bytes=None, note="") -> Row:
    """Times `fn` and records its peak memory; an exception becomes a row with the error."""
    try:
        ms = time_fn(fn, ctx)
        peak = peak_memory_mb(fn, ctx.device)
    except Exception as e:  # a baseline that fails is reported, not fatal
        return Row(bench, case, impl, None, note=f"failed: {type(e).__name__}: {str(e)[:200]}")
    return Row(bench, case, impl, ms, peak, flops, bytes, note)


def measure_ceilings(device: torch.device, quick: bool) -> dict:
    """bf16 matmul rate (TFLOP/s) and device copy bandwidth (GB/s), measured now."""
    ctx = Context(device, quick, {}, warmup=3 if quick else 10, rep=5 if quick else 50)
    n = 512 if quick else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_fn(lambda: a @ b, ctx)
    tflops = 2 * n**3 / (ms * 1e-3) / 1e12
    nbytes = (8 if quick else 1024) * 2**20
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_fn(lambda: dst.copy_(src), ctx)
    gbps = 2 * nbytes / (ms * 1e-3) / 1e9  # read + write
    return {"matmul_tflops": tflops, "matmul_dtype": str(dtype).replace("torch.", ""), "copy_gbps": gbps}


def finish_rows(rows: list[Row], ceilings: dict, baselines=("torch", "torch.compile")) -> list[Row]:
    """Fills ratios against the baselines of the same case, and the fraction of the ceiling."""
    by_case = {}
    for r in rows:
        by_case.setdefault((r.bench, r.case), {})[r.impl] = r
    for r in rows:
        if r.ms is None:
            continue
        for other_impl, other in by_case[(r.bench, r.case)].items():
            if other_impl != r.impl and other.ms is not None and (other_impl in baselines or r.impl == "s1kernels"):
                r.ratios[other_impl] = other.ms / r.ms
        if r.flops:
            r.ceiling_fraction = r.flops / (r.ms * 1e-3) / 1e12 / ceilings["matmul_tflops"]
        elif r.bytes:
            r.ceiling_fraction = r.bytes / (r.ms * 1e-3) / 1e9 / ceilings["copy_gbps"]
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def write_results(rows: list[Row], ctx: Context, out_dir: str) -> dict:
    """Writes <gpu>-<date>.json, the markdown table and a PNG plot; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    name = device_name(ctx.device)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    stem = os.path.join(out_dir, f"{slug}-{datetime.date.today().isoformat()}")
    payload = {
        "device": name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "quick": ctx.quick,
        "ceilings": ctx.ceilings,
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    with open(stem + ".json", "w") as f:
        json.dump(payload, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown_table(rows, name, ctx.ceilings))
    paths = {"json": stem + ".json", "md": stem + ".md"}
    png = plot(rows, stem + ".png", name)
    if png:
        paths["png"] = png
    return paths


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def markdown_table(rows: list[Row], device: str, ceilings: dict) -> str:
    lines = [
        f"Device: {device}. Ceilings measured in this run: {ceilings['matmul_tflops']:.1f} TFLOP/s "
        f"{ceilings['matmul_dtype']} matmul, {ceilings['copy_gbps']:.0f} GB/s copy.",
        "",
        "| bench | case | impl | ms | peak MB | vs baselines (x faster) | % of ceiling | note |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for r in rows:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in r.ratios.items()) or "-"
        frac = "-" if r.ceiling_fraction is None else f"{100 * r.ceiling_fraction:.0f}%"
        lines.append(f"| {r.bench} | {r.case} | {r.impl} | {_fmt(r.ms, '.3f')} | {_fmt(r.peak_mb, '.0f')} "
                     f"| {ratios} | {frac} | {r.note} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: str, device: str) -> str | None:
    """One bar group per case: time of each implementation (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cases = list(dict.fromkeys((r.bench, r.case) for r in rows if r.ms is not None))
    impls = list(dict.fromkeys(r.impl for r in rows if r.ms is not None))
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(cases) * max(1, len(impls)) / 2), 4.5))
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        xs, ys = [], []
        for i, key in enumerate(cases):
            match = [r for r in rows if (r.bench, r.case) == key and r.impl == impl and r.ms is not None]
            if match:
                xs.append(i + j * width)
                ys.append(match[0].ms)
        ax.bar(xs, ys, width, label=impl)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    ax.set_xticklabels([f"{b}\n{c}" for b, c in cases], rotation=30, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("time per call (ms, log scale)")
    ax.set_title(f"s1kernels benchmarks on {device}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
