"""Shared benchmark harness: timing, peak memory, ceilings, and the results writers.

Every benchmark module in bench/ exposes `run(ctx: Context) -> list[Row]`. A row times one
implementation of one case; `ratios` compares rows of the same case measured in the same run,
and `fraction_of_ceiling` relates the work a row does (FLOPs or bytes) to the ceiling
measured at the start of the run. Every row carries the device name, the ceilings and the
versions it was measured with, and goes to `ctx.on_row` as soon as it exists (run_all.py
appends it to a JSONL file there), so a family that dies later loses nothing already timed.
A row whose working set would not fit is not run: `skip_unless_fits` records it as skipped
with the computed size. Each row's timing stops after about `ctx.row_budget_s` seconds.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import statistics
import sys
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
    row_budget_s: float = 8.0  # repetitions are cut so that one row's timing takes about this long
    on_row: Callable | None = None  # called with each finished Row (run_all: append to the JSONL)
    meta: dict = dataclasses.field(default_factory=dict)  # device, ceilings, versions stamped on rows


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
    status: str = "ok"  # ok | failed | skipped
    device: str = ""
    ceilings: dict = dataclasses.field(default_factory=dict)
    versions: dict = dataclasses.field(default_factory=dict)


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], ctx: Context) -> float:
    """Median milliseconds of `fn` after warm-up (CUDA events on GPU, perf_counter on CPU).

    The first call (compilation, autotuning) and a second, host-timed one size the rest: at
    most `ctx.warmup` warm-ups and `ctx.rep` repetitions, fewer when they would take longer
    than `ctx.row_budget_s` (3 repetitions at least, 1 for a call slower than a third of the
    budget), so one slow row cannot eat a whole run."""
    fn()
    sync(ctx.device)
    t0 = time.perf_counter()
    fn()
    sync(ctx.device)
    est = max(time.perf_counter() - t0, 1e-6)
    fits = int(0.75 * ctx.row_budget_s / est)
    rep = min(ctx.rep, max(1 if 3 * est > ctx.row_budget_s else 3, fits))
    warmup = max(0, min(ctx.warmup - 2, int(0.25 * ctx.row_budget_s / est)))
    for _ in range(warmup):
        fn()
    sync(ctx.device)
    times = []
    if ctx.device.type == "cuda":
        for _ in range(rep):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(rep):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_with_peak(fn: Callable[[], object], ctx: Context) -> tuple[float, float | None]:
    """(median ms, peak device MB beyond what was allocated before) from the same calls."""
    if ctx.device.type != "cuda":
        return time_fn(fn, ctx), None
    sync(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    base = torch.cuda.memory_allocated(ctx.device)
    ms = time_fn(fn, ctx)
    return ms, (torch.cuda.max_memory_allocated(ctx.device) - base) / 2**20


def emit(row: Row, ctx: Context) -> Row:
    """Stamps the row with the run's device, ceilings and versions and hands it to ctx.on_row."""
    row.device = ctx.meta.get("device", "") or device_name(ctx.device)
    row.ceilings = dict(ctx.ceilings)
    row.versions = dict(ctx.meta.get("versions", {}))
    if ctx.on_row is not None:
        ctx.on_row(row)
    return row


def measure(bench: str, case: str, impl: str, fn: Callable[[], object], ctx: Context, *,
            flops=None, bytes=None, note="", rate: Callable[[float], str] | None = None) -> Row:
    """Times `fn` and records its peak memory; an exception becomes a row with the error.
    `rate(ms)` adds a derived figure (tokens/s) in front of the note."""
    try:
        ms, peak = measure_with_peak(fn, ctx)
    except Exception as e:  # a baseline that fails is reported, not fatal
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()  # an out-of-memory row must not starve the next one
        return emit(Row(bench, case, impl, None, note=f"failed: {type(e).__name__}: {str(e)[:200]}",
                        status="failed"), ctx)
    if rate is not None:
        note = "; ".join(x for x in (rate(ms), note) if x)
    return emit(Row(bench, case, impl, ms, peak, flops, bytes, note), ctx)


def skipped(bench: str, case: str, impl: str, reason: str, ctx: Context) -> Row:
    """A row that was not run, with the reason (a working set too large, a missing baseline)."""
    return emit(Row(bench, case, impl, None, note=f"skipped: {reason}", status="skipped"), ctx)


def free_bytes(device: torch.device) -> int:
    """Free memory where the row would allocate: the GPU's, or the host's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def fit_reason(need_bytes: float, what: str, device: torch.device, headroom: float = 0.85) -> str | None:
    """None when `need_bytes` fits in `headroom` of the free memory, else the reason to skip."""
    free = free_bytes(device)
    if need_bytes <= headroom * free:
        return None
    return (f"working set ~{need_bytes / 1e9:.1f} GB ({what}) would not fit: "
            f"{free / 1e9:.1f} GB free on {device.type}, {headroom:.0%} usable")


def versions() -> dict:
    """Versions a row depends on: python, torch (+ CUDA), triton, s1kernels, baselines present."""
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for dist in ("triton", "s1kernels", "liger-kernel", "cut-cross-entropy", "faiss-gpu", "faiss-gpu-cu12",
                 "faiss-cpu", "flashinfer-python", "flash-attn", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if "triton" not in out and "triton" in sys.modules:
        out["triton"] = getattr(sys.modules["triton"], "__version__", None)
    return out


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
        c = r.ceilings or ceilings
        if r.flops and c.get("matmul_tflops"):
            r.ceiling_fraction = r.flops / (r.ms * 1e-3) / 1e12 / c["matmul_tflops"]
        elif r.bytes and c.get("copy_gbps"):
            r.ceiling_fraction = r.bytes / (r.ms * 1e-3) / 1e9 / c["copy_gbps"]
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
