"""Compile every Triton kernel of s1kernels.ops for an H100 with no GPU present.

A kernel is a module-level `@triton.jit` function whose name ends in `_kernel`; other jit
functions are device helpers, compiled inside the kernels that call them. Each ops module
that defines Triton kernels lists how to compile them in
`TRITON_COMPILE_SPECS`: dicts with `kernel` (the attribute name), `signature` (argument name
-> Triton type string such as "*bf16", "i32", "fp32", "constexpr"), `constexprs` (name ->
value) and optionally `num_warps` / `num_stages` and `divisible_by_16` (names of integer
arguments, such as strides, that the launches pass as multiples of 16). Pointer arguments
are compiled as 16-byte aligned, as the JIT specialises them for torch's allocations, so
the check builds the vectorised, pipelined variant that really runs. `python -m s1kernels.ops.triton_compile`
compiles them all for sm_90 and fails when a kernel has no spec or does not compile, so a
kernel that would not build on the GPU fails CI on a CPU machine.

It must run with TRITON_INTERPRET unset: under the interpreter `triton.jit` returns an
interpreted function that cannot be lowered.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import sys

OPS_PACKAGE = "s1kernels.ops"


def _modules():
    pkg = importlib.import_module(OPS_PACKAGE)
    # Every module under ops/, family packages included (ops/<family>/triton_impl.py).
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{OPS_PACKAGE}."):
        if info.name != f"{OPS_PACKAGE}.triton_compile":
            yield importlib.import_module(info.name)


def _divisibility_attrs(fn, spec) -> dict:
    aligned = {name for name, ty in spec["signature"].items() if ty.startswith("*")}
    aligned |= set(spec.get("divisible_by_16", ()))
    return {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}


def compile_all(target=("cuda", 90, 32)) -> list[dict]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    results = []
    for mod in _modules():
        kernels = {name for name, obj in vars(mod).items()
                   if isinstance(obj, triton.runtime.jit.JITFunction) and name.endswith("_kernel")}
        specs = getattr(mod, "TRITON_COMPILE_SPECS", [])
        covered = {s["kernel"] for s in specs}
        for name in sorted(kernels - covered):
            results.append({"module": mod.__name__, "kernel": name, "ok": False, "error": "no entry in TRITON_COMPILE_SPECS"})
        for spec in specs:
            row = {"module": mod.__name__, "kernel": spec["kernel"], "constexprs": spec.get("constexprs", {})}
            try:
                fn = getattr(mod, spec["kernel"])
                src = ASTSource(fn=fn, signature=spec["signature"], constexprs=spec.get("constexprs", {}),
                                attrs=_divisibility_attrs(fn, spec))
                options = {k: spec[k] for k in ("num_warps", "num_stages") if k in spec}
                compiled = triton.compile(src, target=GPUTarget(*target), options=options)
                row.update(ok=True, cubin_bytes=len(compiled.asm["cubin"]),
                           shared_bytes=int(getattr(compiled.metadata, "shared", 0)))
            except Exception as e:  # reported per kernel, the run continues
                row.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
            results.append(row)
    return results


def main() -> int:
    results = compile_all()
    print(json.dumps(results, indent=1))
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
