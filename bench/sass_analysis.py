"""Reading sm_90a SASS: what bench/sass_report.py says about one kernel.

Everything here is static: counts of instructions in the disassembly (cuobjdump -sass) and
the resource usage ptxas recorded in the cubin (cuobjdump -res-usage). The main loop is the
innermost loop (a backward branch) that holds the kernel's work: tensor-core instructions,
else FFMA, else global loads.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field

# H100 SXM (sm_90) limits per SM: 64K 32-bit registers allocated per warp in units of 256,
# 228 KB of shared memory (1 KB of it reserved per CTA), 64 warps, 32 CTAs.
H100 = dict(regs=65536, reg_unit=256, smem=228 * 1024, smem_reserved=1024, warps=64, ctas=32)

_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*([^;]*);")
_BRANCH_TARGET = re.compile(r"(0x[0-9a-f]+)")
_FLOAT_ATOMIC = re.compile(r"^(ATOM|ATOMS|ATOMG|RED|REDG|REDS|REDUX)\..*(F32|F16|BF16|F64|FADD|FMAX|FMIN)")
_CAS = re.compile(r"^(ATOM|ATOMS|ATOMG)\..*CAS")
_TMA = re.compile(r"^(UTMALDG|UTMASTG|UTMAPF|UTMAREDG|UBLKCP|UBLKRED|UBLKPF)")
_LOAD_BYTES = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}


@dataclass
class Kernel:
    name: str
    sass: list = field(default_factory=list)  # (address, opcode, operands)
    regs: int = 0
    stack: int = 0
    local: int = 0
    shared_static: int = 0


def tool(name: str) -> str:
    """cuobjdump / nvdisasm / ptxas as bundled with the Triton that is imported."""
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} not found in the Triton package ({path})")
    return path


def read_cubin(path: str) -> dict[str, Kernel]:
    """Kernels of a cubin (or a host binary with an embedded fatbin) by mangled name."""
    cuobjdump = tool("cuobjdump")
    res = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, check=True).stdout
    kernels: dict[str, Kernel] = {}
    cur = None
    for line in res.splitlines():
        m = re.search(r"Function (\S+):", line)
        if m:
            cur = kernels.setdefault(m.group(1), Kernel(m.group(1)))
            continue
        if cur is not None and "REG:" in line:
            vals = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            cur.regs, cur.stack = int(vals.get("REG", 0)), int(vals.get("STACK", 0))
            cur.local, cur.shared_static = int(vals.get("LOCAL", 0)), int(vals.get("SHARED", 0))
    sass = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True, check=True).stdout
    cur = None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            cur = kernels.setdefault(m.group(1), Kernel(m.group(1)))
            continue
        m = _INSN.search(line)
        if m and cur is not None:
            cur.sass.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return kernels


def _mma_flops(op: str) -> float:
    """Useful FLOPs of one tensor-core instruction, per warp that issues it."""
    m = re.match(r"HGMMA\.(\d+)x(\d+)x(\d+)", op)
    if m:  # warpgroup-wide: the 4 warps of the group share one MxNxK product
        a, b, c = map(int, m.groups())
        return 2 * a * b * c / 4
    m = re.match(r"HMMA\.(16)(8)(\d+)", op)
    if m:
        a, b, c = map(int, m.groups())
        return 2 * a * b * c
    return 0.0


def _loops(sass):
    """(start, end) address ranges of the loops: each backward branch closes one."""
    out = []
    for addr, op, rest in sass:
        if op.startswith("BRA") or op.startswith("BRX"):
            m = _BRANCH_TARGET.search(rest)
            if m and int(m.group(1), 16) <= addr:
                out.append((int(m.group(1), 16), addr))
    return out


def _work(ops):
    mma = [o for o in ops if o.startswith(("HGMMA", "HMMA"))]
    if mma:
        return "mma", mma
    ffma = [o for o in ops if o.startswith("FFMA")]
    if ffma:
        return "ffma", ffma
    return "ldg", [o for o in ops if o.startswith("LDG")]


def main_loop(sass, memory_bound: bool = False) -> dict:
    """The innermost loop holding the most valued work (for a memory-bound kernel: the loop
    that loads the most), and its static cost per FLOP / byte."""
    best = None
    loops = _loops(sass)
    if memory_bound:  # innermost loading loops only: an outer loop holds every load of its inner ones
        loads = [(lo, hi) for lo, hi in loops if any(lo <= a <= hi and op.startswith("LDG") for a, op, _ in sass)]
        loops = [(lo, hi) for lo, hi in loads
                 if not any((l2, h2) != (lo, hi) and lo <= l2 and h2 <= hi for l2, h2 in loads)]
    for lo, hi in loops:
        ops = [op for a, op, _ in sass if lo <= a <= hi]
        kind, work = ("ldg", [o for o in ops if o.startswith("LDG")]) if memory_bound else _work(ops)
        if not work:
            continue
        rank = (len(work), -len(ops)) if memory_bound else ({"mma": 2, "ffma": 1, "ldg": 0}[kind], -len(ops))
        if best is None or rank > best[0]:
            best = (rank, kind, ops, work)
    if best is None:
        return {"kind": "none", "body": 0}
    _, kind, ops, work = best
    row = {"kind": kind, "body": len(ops), "work_insns": len(work)}
    if kind == "mma":
        flops = sum(_mma_flops(o) for o in work)
        row.update(flops_per_warp=flops, insns_per_kflop=round(1000 * len(ops) / flops, 2))
    elif kind == "ffma":
        flops = 64.0 * len(work)
        row.update(flops_per_warp=flops, insns_per_kflop=round(1000 * len(ops) / flops, 2))
    else:
        nbytes = 0
        for o in work:
            width = next((b for k, b in _LOAD_BYTES.items() if f".{k}" in o), 4)
            nbytes += 32 * width
        row.update(bytes_per_warp=nbytes, insns_per_kb=round(1024 * len(ops) / max(nbytes, 1), 1))
    return row


def ctas_per_sm(regs: int, shared: int, threads: int) -> tuple[int, str]:
    """Resident CTAs per SM on an H100 and what limits them."""
    warps = max(1, (threads + 31) // 32)
    per_warp = -(-max(regs, 1) * 32 // H100["reg_unit"]) * H100["reg_unit"]
    by = {
        "registers": (H100["regs"] // per_warp) // warps,
        "shared memory": H100["smem"] // (shared + H100["smem_reserved"]),
        "warps": H100["warps"] // warps,
        "CTA slots": H100["ctas"],
    }
    limit = min(by, key=by.get)
    return by[limit], limit


def summarise(k: Kernel, shared: int, threads: int, memory_bound: bool = False) -> dict:
    ops = [op for _, op, _ in k.sass]
    tensor = "HGMMA" if any(o.startswith("HGMMA") for o in ops) else \
        "HMMA" if any(o.startswith("HMMA") for o in ops) else "none"
    shapes = sorted({re.sub(r"^(HGMMA\.\d+x\d+x\d+|HMMA\.\d+)\.?.*$", r"\1", o) + "." + o.split(".")[-1]
                     for o in ops if o.startswith(("HGMMA", "HMMA"))})
    ctas, limit = ctas_per_sm(k.regs, shared, threads)
    return dict(
        tensor=tensor, mma_shapes=shapes, regs=k.regs, stack=k.stack, local=k.local,
        stl=sum(o.startswith("STL") for o in ops), ldl=sum(o.startswith("LDL") for o in ops),
        shared=shared, threads=threads, ctas_per_sm=ctas, cta_limit=limit,
        float_atomics=sum(bool(_FLOAT_ATOMIC.match(o)) for o in ops), cas=sum(bool(_CAS.match(o)) for o in ops),
        tma=sum(bool(_TMA.match(o)) for o in ops), ldgsts=sum(o.startswith("LDGSTS") for o in ops),
        insns=len(ops), loop=main_loop(k.sass, memory_bound),
    )
