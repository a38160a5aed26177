"""What the CPU comparison scripts in bench/ (the *_cpu.py files) share: reading the resident
set, the machine line of a report (CPU model, ISA flags, the kind of CPU the figures belong
to) and writing the report, one section per CPU kind.

Why a kind: the same scripts rank differently on an AVX-512 CPU and on an AVX2-only one
(oneDNN and ATen pick other kernels, bf16 prepacking exists only with AVX-512), so a result
file keeps one table per kind and a new run replaces only its own kind's table.
"""
from __future__ import annotations

import os
import platform

# ISA flags of /proc/cpuinfo that change which kernels oneDNN, MKL and ATen run.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
             "amx_tile", "avx_vnni")
# The variables that make an AVX-512 machine run the AVX2 code paths (the imitation): ATen's
# kernels, oneDNN's, MKL's GEMM (torch's BLAS), OpenBLAS's (FAISS's BLAS) and FAISS's own.
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
           "OPENBLAS_CORETYPE", "FAISS_SIMD_LEVEL")


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now, VmHWM: peak since the last
    reset through /proc/self/clear_refs)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_info() -> tuple[str, list[str]]:
    """(model name, the ISA_FLAGS this CPU has) from /proc/cpuinfo; ('unknown', []) elsewhere."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("unknown", "", platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, [f for f in ISA_FLAGS if f in flags]


def cpu_kind() -> str:
    """'AVX-512', 'AVX2-only', 'AVX2 imitated on AVX-512' (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA
    hold an AVX-512 machine to AVX2) or the machine's architecture elsewhere."""
    _, flags = cpu_info()
    if "avx512f" in flags:
        held = any("avx2" in os.environ.get(v, "").lower() for v in ISA_ENV)
        return "AVX2 imitated on AVX-512" if held else "AVX-512"
    if "avx2" in flags:
        return "AVX2-only"
    return platform.machine() or "unknown"


def machine() -> str:
    """e.g. 'x86_64, 2 cores (AMD EPYC), flags avx2 fma avx512f ..., torch's CPU capability AVX512'."""
    model, flags = cpu_info()
    text = f"{platform.machine()}, {os.cpu_count()} cores ({model}), ISA flags {' '.join(flags) or 'none listed'}"
    try:
        import torch

        text += f", torch's CPU capability {torch.backends.cpu.get_cpu_capability()}"
    except (ImportError, AttributeError):
        pass
    env = [f"{v}={os.environ[v]}" for v in ISA_ENV if os.environ.get(v)]
    return text + (f", {' '.join(env)}" if env else "")


def write_report(lines: list[str], out: str | None, kind: str | None = None) -> str:
    """Prints the report `lines` and writes it to `out` (None or "-": print only) as the
    section '## CPU kind: <kind>' (default cpu_kind()); other kinds' sections already in
    `out` are kept, this kind's is replaced. Returns the whole file's text."""
    kind = kind or cpu_kind()
    section = "\n".join([f"## CPU kind: {kind}", "", *lines]).rstrip("\n") + "\n"
    print(section)
    if not out or out == "-":
        return section
    kept = []
    if os.path.isfile(out):
        with open(out, encoding="utf-8") as f:
            kept = [s for s in split_sections(f.read()) if not s.startswith(f"## CPU kind: {kind}\n")]
    text = "\n".join(kept + [section])
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def split_sections(text: str) -> list[str]:
    """The '## CPU kind:' sections of a result file; text before the first one (a file written
    before sections existed) becomes the section of an unrecorded kind."""
    parts, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## CPU kind: ") and cur:
            parts.append("".join(cur))
            cur = []
        cur.append(line)
    if cur:
        parts.append("".join(cur))
    parts = [p.rstrip("\n") + "\n" for p in parts if p.strip()]
    if parts and not parts[0].startswith("## CPU kind: "):
        parts[0] = "## CPU kind: not recorded (measured before kinds were recorded)\n\n" + parts[0]
    return parts
