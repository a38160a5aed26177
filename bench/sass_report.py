"""The sm_90a machine code of every kernel, read without a GPU: bench/results/sass-sm90a.md.

    python bench/sass_report.py            # every variant; writes the report
    python bench/sass_report.py --check    # CI: the hot variants and decode only, no file

Triton kernels are compiled for sm_90a exactly as the JIT specialises them at the benchmark
sizes (s1kernels/ops/triton_compile.py runs the launchers on meta tensors through Triton's own
binder, tail chunks included); the CUDA decode kernel is compiled with nvcc -cubin with the
flags setup.py uses. cuobjdump from the Triton package disassembles both. Per kernel variant
the report gives the tensor-core path, registers, local memory (spills: STL/LDL), shared
memory, CTAs per SM on an H100, float atomics (CAS loops included), TMA and cp.async use, and
the static size of the main loop per useful FLOP (or per loaded byte for memory loops).

Policy (what --check fails on): a hot kernel (one the benchmarks launch) that spills, a hot
kernel with a matmul whose tensor-core path is not HGMMA, a float atomic or CAS loop in the
decode kernel. KNOWN_VIOLATIONS lists the violations present when this policy was set, each
with its reason; --check fails only on violations not in that list. Issue 15 is done when
the list is empty. An entry that no longer occurs is reported so it can be removed.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compiling needs the real JIT, not the interpreter
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sass_analysis as SA  # noqa: E402

OUT = ROOT / "bench" / "results" / "sass-sm90a.md"
DECODE_DTYPES = {"0": "fp32", "1": "fp16", "2": "bf16"}  # decode_step_kernel<DT>, s1k::LogitDtype

# (case, kernel, rule) -> why it is still there. Must be empty for issue 15 to be done.
KNOWN_VIOLATIONS = {
}


# Static estimates (not measurements: no GPU has run these variants), per kernel family.
ESTIMATES = [
    ("fused loss, scalar reduction (fwd STORE_P, grad_ws, dH, dW)",
     "6·N·H·V FLOPs (was 8·N·H·V: the backward recomputed the logits). Every matmul variant at the "
     "benchmark sizes is HGMMA without spills, cp.async 3 stages, no TMA, 1 CTA/SM. Main loops: 92-100 "
     "instructions per 4 HGMMA.64x128x16 (forward), 141 (dH), 291-296 per 4 HGMMA.64x256x16 (dW), i.e. "
     "0.35-0.56 instructions per 1000 FLOPs per warp. Extra traffic: ~10 bytes per (token, vocab) element "
     "of workspace against 6·H FLOPs, plus one fp32 read+write of dW [V, H] per token chunk after the first "
     "(3 chunks at N=8,192). Estimate: if each kernel keeps the ~45-55% of the matmul rate the audit "
     "estimated for the old kernels, removing a quarter of the FLOPs gives ~55-70% of the matmul rate "
     "counted at 6·N·H·V (goal 80%)."),
    ("loss, reduction='none' / softcap (fwd, dlogits, dH, dW)",
     "8·N·H·V FLOPs, unchanged by design (the per-token gradient is only known in backward). The "
     "vocabulary's last chunk now rounds its width to 16, so the tail runs the same pipelined variant as "
     "the other chunks (before: synchronous loads, 64 KB shared memory, half the LDGSTS)."),
    ("self-kNN / k-means top-k (_topk_sim_kernel)",
     "HGMMA for every k <= 128 and for fp32 input (scored in bf16 within a proven bound, candidates "
     "re-scored in fp32; docs/similarity-kernel.md); no spills at the benchmark sizes; the query tile "
     "(128 rows for k <= 16, else 64) stays in shared memory across pool tiles (D = 384; D = 1024 "
     "streams D slices with cp.async); one comparison per score. bf16 N=59,029 D=384 k=16: 851k tiles "
     "of 128x32x384, ~0.42 us of HGMMA.64x32x16 each per SM at peak plus ~0.17 us of filter (not "
     "overlapped: 1 CTA/SM); ~21 FLOP per shared-memory byte of wgmma operands caps the tensor cores "
     "near 65%; ~20 GB from L2 in all. Estimate: 40-55% of the bf16 matmul rate for k <= 16, 30-40% "
     "for k 17-32 (64-row tiles, HGMMA.64x16x16), ~20% for k 33-128 (HGMMA.64x8x16); goal 70%. "
     "Before: query re-read per column tile, mma.sync for k 33-128, FFMA for fp32 and k-means."),
    ("decode step (decode_step_kernel, nvcc)",
     "No atomics at all: integer histograms (counts, 32.32 fixed-point mass) with match.any/redux warp "
     "aggregation, so the same (seed, step) gives the same token at every batch position; a row is split "
     "over a cluster of up to 8 CTAs (B=64: 256 CTAs on 132 SMs) exchanging through distributed shared "
     "memory; 126-128 registers, no spills, 2 CTAs/SM. Estimate for B=64, V=152,064 bf16 with top-k: "
     "~20 us per sampled step (pass A from HBM at ~70% of copy bandwidth, three L2 passes), greedy ~7 us "
     "(docs/decode-kernel.md). Before: one CTA per row (64 of 132 SMs), float CAS loops on hot bins."),
]


# What the same run under another Triton showed (kept by hand: CI holds the policy at 3.6.0,
# the GPU machine's version).
NOTES = [
    "Triton 3.9.0 (python bench/sass_report.py --out /tmp/sass39.md, same sources) compiles the hot "
    "loss forward-pass-gradient variant (STORE_P=1) with spills: 40/37 STL/LDL at 255 registers; 3.6.0 "
    "has none. Under 3.9 the forward-only variant (STORE_P=0) is spill-free since its argmax is one "
    "integer min-reduction (it spilled 3/3 with tl.argmax); the same change in STORE_P=1 would cut 3.9 "
    "to 22/18 but make 3.6 spill 9/5, so it keeps tl.argmax. Every other loss variant is spill-free and "
    "HGMMA under both versions.",
    "_topk_sim_kernel is HGMMA and spill-free under both versions at every benchmark size (3.9 uses fewer "
    "registers: 136 for bf16 k=16, 197 for k=100, 205 for fp32 k=16). Outside the benchmark cases, fp32 "
    "input with k = 65-128 spills 29 STL under 3.6 (none under 3.9); docs/similarity-kernel.md lists "
    "every k regime.",
]


def _uses_dot(kernel) -> bool:
    """Whether a Triton kernel (or a jit helper it calls) contains tl.dot: it then must use HGMMA."""
    import triton

    mod = sys.modules[kernel.fn.__module__]
    seen, todo = set(), [kernel]
    while todo:
        fn = todo.pop()
        if fn.__name__ in seen:
            continue
        seen.add(fn.__name__)
        src = inspect.getsource(fn.fn)
        if "tl.dot(" in src:
            return True
        todo += [obj for name, obj in vars(mod).items()
                 if isinstance(obj, triton.runtime.jit.JITFunction) and re.search(rf"\b{name}\(", src)]
    return False


def triton_rows(hot_only: bool, tmp: Path) -> list[dict]:
    from s1kernels.ops import triton_compile as TC

    variants, failures = TC.collect_variants()
    if failures:
        raise RuntimeError(f"launch cases failed: {failures}")
    rows = []
    for i, v in enumerate(variants):
        if hot_only and not v["hot"]:
            continue
        compiled = TC.compile_variant(v)
        cubin = tmp / f"triton_{i}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        kernels = SA.read_cubin(str(cubin))
        (k,) = kernels.values()
        threads = 32 * int(v["options"]["num_warps"])
        s = SA.summarise(k, int(compiled.metadata.shared), threads)
        rows.append(dict(s, name=v["kernel"].__name__, label=TC.variant_label(v), cases=v["cases"], hot=v["hot"],
                         matmul=_uses_dot(v["kernel"]), source="triton"))
    return rows


def nvcc_path() -> str | None:
    home = os.environ.get("CUDA_HOME")
    for cand in ([os.path.join(home, "bin", "nvcc")] if home else []) + [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]:
        if cand and os.path.exists(cand):
            return cand
    return None


def decode_rows(tmp: Path) -> list[dict]:
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set CUDA_HOME): the decode kernel cannot be compiled")
    cubin = tmp / "decode.cubin"
    # setup.py's flags, one arch
    subprocess.run([nvcc, "-cubin", "-O3", "-std=c++17", "--use_fast_math", "-DS1K_WITH_CUDA=1", "-arch=sm_90a",
                    f"-I{ROOT / 'csrc' / 'include'}", str(ROOT / "csrc" / "decode.cu"), "-o", str(cubin)],
                   check=True, capture_output=True, text=True)
    threads = int(re.search(r"kThreads\s*=\s*(\d+)", (ROOT / "csrc" / "decode.cu").read_text()).group(1))
    rows = []
    for name, k in sorted(SA.read_cubin(str(cubin)).items()):
        m = re.search(r"decode_step_kernelILi(\d)E", name)
        if not m:
            continue
        dt = DECODE_DTYPES.get(m.group(1), m.group(1))
        s = SA.summarise(k, k.shared_static, threads, memory_bound=True)
        rows.append(dict(s, name="decode_step_kernel", label=f"decode_step_kernel<{dt}> {threads} threads",
                         cases=[f"decode step {dt}"], hot=True, matmul=False, source="nvcc"))
    return rows


def violations(rows) -> list[tuple[str, str, str]]:
    out = []
    for r in rows:
        if not r["hot"]:
            continue
        rules = []
        if r["stl"] or r["ldl"] or r["local"]:
            rules.append("spill")
        if r["matmul"] and r["tensor"] != "HGMMA":
            rules.append("not-HGMMA")
        if r["source"] == "nvcc" and (r["float_atomics"] or r["cas"]):
            rules.append("float-atomic")
        for case in r["cases"]:
            out += [(case, r["name"], rule) for rule in rules]
    return sorted(set(out))


def _loop_cell(loop):
    if loop["kind"] == "none":
        return "-"
    if "insns_per_kflop" in loop:
        return f"{loop['body']} ({loop['work_insns']} {loop['kind'].upper()}): {loop['insns_per_kflop']} / kFLOP"
    return f"{loop['body']} ({loop['work_insns']} LDG, {loop['bytes_per_warp']} B/warp): {loop['insns_per_kb']} / KB"


def versions() -> dict:
    import triton

    ptxas = subprocess.run([SA.tool("ptxas"), "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    nvcc = nvcc_path()
    nv = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines() if nvcc else []
    return dict(triton=triton.__version__, ptxas=ptxas[-1] if ptxas else "?", nvcc=nv[-1] if nv else "not found")


def render(rows, found, ver) -> str:
    known = set(KNOWN_VIOLATIONS)
    new = [v for v in found if v not in known]
    stale = sorted(known - set(found))
    lines = [
        "# SASS report, sm_90a (H100)",
        "",
        f"Generated by `python bench/sass_report.py` on {datetime.date.today().isoformat()} with Triton "
        f"{ver['triton']} (its ptxas: {ver['ptxas']}) for the Triton kernels and nvcc ({ver['nvcc']}) for "
        "the decode kernel; no GPU involved. Triton kernels are compiled with the specialisation the JIT "
        "derives at the benchmark sizes (s1kernels/ops/triton_compile.py: the launchers run on meta tensors "
        "through Triton's binder), so a tail chunk whose widths are not multiples of 16 appears as its own "
        "variant (`not16:` lists the integer arguments not specialised as multiples of 16, `unaligned:` the "
        "pointers not specialised as 16-byte aligned).",
        "",
        "Columns: tensor-core path (and instruction shapes), registers per thread, local memory "
        "(stack bytes; STL/LDL instructions = spills), shared memory per CTA, resident CTAs per SM on an H100 "
        "and what limits them, float atomics / CAS loops, TMA instructions, cp.async (LDGSTS), and the main "
        "loop: static instructions per iteration (work instructions) and instructions per 1000 useful FLOPs "
        "per warp (or per KB loaded). Hot = launched by a benchmark-size case.",
        "",
        "## Policy (enforced by `python bench/sass_report.py --check` in CI)",
        "",
        "A hot kernel must not spill; a hot kernel with a matmul must run it on HGMMA (wgmma); the decode "
        "kernel must contain no float atomic (and no CAS loop). Violations already known when the policy was "
        "set are listed below with their reason; CI fails on any violation not in the list. "
        "**Issue 15 is done only when this list is empty.**",
        "",
        "| case | kernel | rule | reason | still present |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (case, kernel, rule), reason in sorted(KNOWN_VIOLATIONS.items()):
        present = "yes" if (case, kernel, rule) in found else "**no: remove this entry**"
        lines.append(f"| {case} | {kernel} | {rule} | {reason} | {present} |")
    lines += ["", f"New violations (not in the list): {len(new)}" + (": " + "; ".join(map(str, new)) if new else ""),
              f"Listed but no longer present: {len(stale)}" + (": " + "; ".join(map(str, stale)) if stale else ""), ""]
    lines += ["## Other Triton versions", ""] + [f"- {n}" for n in NOTES] + [""]
    lines += ["## Static estimates (not measured)", ""]
    lines += [f"- **{name}**: {text}" for name, text in ESTIMATES]
    lines += ["", "## Kernels", "",
              "| kernel variant | hot | cases | tensor | regs | stack, STL/LDL | smem KB | CTAs/SM | float atom / CAS "
              "| TMA | LDGSTS | main loop |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        tensor = r["tensor"] + (f" ({', '.join(r['mma_shapes'])})" if r["mma_shapes"] else "")
        cases = "; ".join(r["cases"][:3]) + (f" (+{len(r['cases']) - 3})" if len(r["cases"]) > 3 else "")
        lines.append(
            f"| `{r['label']}` | {'yes' if r['hot'] else ''} | {cases} | {tensor} | {r['regs']} | "
            f"{r['stack']} B, {r['stl']}/{r['ldl']} | {r['shared'] / 1024:.1f} | {r['ctas_per_sm']} ({r['cta_limit']}) | "
            f"{r['float_atomics']} / {r['cas']} | {r['tma']} | {r['ldgsts']} | {_loop_cell(r['loop'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="hot variants and decode only; fail on new violations")
    ap.add_argument("--out", default=None, help=f"report path (default {OUT.relative_to(ROOT)} without --check)")
    ap.add_argument("--no-decode", action="store_true", help="skip the nvcc compile of the decode kernel")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        rows = triton_rows(args.check, Path(d))
        if not args.no_decode:
            rows += decode_rows(Path(d))
    found = violations(rows)
    new = [v for v in found if v not in KNOWN_VIOLATIONS]
    stale = sorted(set(KNOWN_VIOLATIONS) - set(found))
    out = args.out or (None if args.check else str(OUT))
    if out:
        Path(out).write_text(render(rows, found, versions()))
        print(f"wrote {out}")
    for r in rows:
        print(f"{r['label']:<90} {r['tensor']:<6} regs={r['regs']:<3} STL/LDL={r['stl']}/{r['ldl']} "
              f"ctas/SM={r['ctas_per_sm']} fatom/cas={r['float_atomics']}/{r['cas']} loop={_loop_cell(r['loop'])}")
    for v in stale:
        print(f"no longer present, remove from KNOWN_VIOLATIONS: {v}")
    for v in new:
        print(f"NEW VIOLATION: {v}")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
