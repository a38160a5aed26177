"""Compile every Triton kernel of s1kernels.ops for an H100 with no GPU present, exactly as
the JIT would specialise it at the real sizes.

A kernel is a module-level `@triton.jit` function whose name ends in `_kernel` (other jit
functions are device helpers, compiled inside the kernels that call them).

What gets compiled is not written down by hand: the cases of `launch_cases()` run the ops' own launchers on
meta tensors (shapes, strides and dtypes, no memory) at the benchmark sizes, with every
`JITFunction.run` intercepted. For each launch the interceptor calls Triton's own binder for
an sm_90 target, so the signature, the constexprs and the divisibility-by-16 attributes of
integers and pointers are the ones the JIT derives from those arguments (meta tensors report
address 0, i.e. aligned, as torch's caching allocator gives). A vocabulary of 151,665 makes
a tail chunk whose widths are not multiples of 16, and that variant is compiled too.
The launchers treat a meta device like the GPU (GPU tile configs, H100_SMS multiprocessors).

`python bench/triton_compile.py` compiles every distinct variant (`--one-per-kernel`: one of
each kernel) and fails when a kernel is launched by no case or a variant does not compile; `bench/sass_report.py` reads
the same cubins. It must run with TRITON_INTERPRET unset: under the interpreter `triton.jit`
returns an interpreted function that cannot be lowered.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import pkgutil

from s1kernels.backend import H100_SMS  # noqa: F401  (the SMs launchers assume on a meta device)

OPS_PACKAGE = "s1kernels.ops"
TARGET = ("cuda", 90, 32)

# Benchmark sizes (bench/loss.py, bench/similarity.py): the s1 fine-tunes of Qwen2.5-7B/32B
# (lm_head padded to 152,064 rows, 151,665 real tokens) and s1's 59,029-question pool.
LOSS_SIZES = [(8192, 3584, 152064, 151665), (32768, 5120, 152064, 151665)]
KNN_SIZES = [(59029, 384, 16), (59029, 1024, 16), (1_000_000, 384, 10)]


def _loss_case(n, h, v, vocab, dtype, bias=False, softcap=None, z_loss=0.0):
    def run():
        import torch

        from s1kernels.ops.loss import triton_impl as K
        from s1kernels.ops.loss.contract import IGNORE_INDEX

        dev = "meta"
        hidden = torch.empty(n, h, dtype=dtype, device=dev)
        weight = torch.empty(v, h, dtype=dtype, device=dev)
        b = torch.empty(v, dtype=dtype, device=dev) if bias else None
        labels = torch.empty(n, dtype=torch.long, device=dev)
        _, lse, _ = K.forward(hidden, weight, labels, b, IGNORE_INDEX, z_loss, softcap, vocab)
        grad = torch.empty(n, dtype=torch.float32, device=dev)
        K.backward(grad, hidden, weight, labels, b, lse, IGNORE_INDEX, z_loss, softcap, vocab)
        if not softcap:  # a scalar loss that needs a gradient: computed in the forward pass
            from s1kernels.ops.loss import triton_fused

            triton_fused.forward_with_grad(hidden, weight, labels, b, grad, IGNORE_INDEX, z_loss, vocab)
    return run


def _knn_case(n, m, d, k, dtype, exclude=True):
    def run():
        import torch

        from s1kernels.ops.similarity import triton_impl as S

        x = torch.empty(n, d, dtype=dtype, device="meta")
        y = x if exclude else torch.empty(m, d, dtype=dtype, device="meta")
        rx = torch.empty(n, dtype=torch.float32, device="meta")
        ry = rx if exclude else torch.empty(m, dtype=torch.float32, device="meta")
        S.topk_keys(x, y, rx, ry, k, exclude, None)
    return run


def launch_cases():
    """(name, hot, run): `hot` cases are the benchmark's own launches, held to the SASS policy."""
    import torch

    bf16 = torch.bfloat16
    cases = []
    for n, h, v, vocab in LOSS_SIZES:
        cases.append((f"loss bf16 N={n} H={h} V={vocab}", True, _loss_case(n, h, v, vocab, bf16)))
    n, h, v, vocab = LOSS_SIZES[0]
    cases += [
        ("loss bf16 bias", False, _loss_case(n, h, v, vocab, bf16, bias=True)),
        ("loss bf16 softcap", False, _loss_case(n, h, v, vocab, bf16, softcap=30.0)),
        ("loss bf16 bias+softcap+z_loss", False, _loss_case(n, h, v, vocab, bf16, True, 30.0, 1e-4)),
        ("loss fp16", False, _loss_case(n, h, v, vocab, torch.float16)),
        ("loss fp32", False, _loss_case(n, h, v, vocab, torch.float32, bias=True)),
    ]
    for n, d, k in KNN_SIZES:
        cases.append((f"self-kNN bf16 N={n} D={d} k={k}", True, _knn_case(n, n, d, k, bf16)))
    cases += [
        ("self-kNN bf16 k=100", True, _knn_case(59029, 59029, 384, 100, bf16)),
        ("self-kNN fp16 k=16", False, _knn_case(59029, 59029, 384, 16, torch.float16)),
        ("self-kNN fp32 k=16", True, _knn_case(59029, 59029, 384, 16, torch.float32)),
        ("k-means assignment fp32 C=1000", True, _knn_case(59029, 1000, 384, 1, torch.float32, exclude=False)),
    ]
    return cases


def _jit_kernels():
    import triton

    pkg = importlib.import_module(OPS_PACKAGE)
    found = {}
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{OPS_PACKAGE}."):
        if info.name == __name__:
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if isinstance(obj, triton.runtime.jit.JITFunction) and name.endswith("_kernel") \
                    and obj.fn.__module__ == mod.__name__:
                found[f"{mod.__name__}.{name}"] = obj
    return found


@contextlib.contextmanager
def recorded_launches(target=TARGET):
    """Within the block, `kernel[grid](...)` launches nothing and appends to the yielded list
    what the JIT would compile for `target`: (kernel, signature, constexprs, attrs, options)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    backend = make_backend(GPUTarget(*target))
    launches = []

    def run(self, *args, grid, warmup, **kwargs):
        kwargs.setdefault("debug", False)
        binder = create_function_from_signature(self.signature, self.params, backend)
        bound, specialization, opts = binder(*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound, specialization, opts)
        launches.append(dict(kernel=self, signature=signature, constexprs=constexprs, attrs=attrs,
                             options=options.__dict__))

    saved = JITFunction.run
    JITFunction.run = run
    try:
        yield launches
    finally:
        JITFunction.run = saved


def _variant_key(launch) -> str:
    k = launch["kernel"]
    return json.dumps([k.fn.__module__, k.__name__, launch["signature"], sorted(map(str, launch["constexprs"].items())),
                       sorted(map(str, launch["attrs"].items())), launch["options"].get("num_warps"),
                       launch["options"].get("num_stages")], default=str)


def collect_variants(cases=None) -> tuple[list[dict], list[dict]]:
    """Distinct compile variants over all cases (each with the case names that launch it and
    `hot`), and a row per case that failed to run."""
    cases = launch_cases() if cases is None else cases
    variants: dict[str, dict] = {}
    failures = []
    for name, hot, run in cases:
        with recorded_launches() as launches:
            try:
                run()
            except Exception as e:  # a launcher that cannot even be traced is a failure
                failures.append({"case": name, "ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})
                continue
        for i, launch in enumerate(launches):
            v = variants.setdefault(_variant_key(launch), dict(launch, cases=[], hot=False, calls=[]))
            v["cases"].append(name) if name not in v["cases"] else None
            v["calls"].append(i)
            v["hot"] = v["hot"] or hot
    return list(variants.values()), failures


def compile_variant(v, target=TARGET):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=v["kernel"], signature=v["signature"], constexprs=v["constexprs"], attrs=v["attrs"])
    opts = {k: val for k, val in v["options"].items() if k in ("num_warps", "num_stages", "num_ctas", "maxnreg")}
    return triton.compile(src, target=GPUTarget(*target), options=opts)


def variant_label(v) -> str:
    """Kernel name plus the constexprs and the integer arguments not specialised as multiples of 16."""
    k = v["kernel"]
    names = list(k.arg_names)
    consts = {names[p[0]]: val for p, val in v["constexprs"].items() if len(p) == 1}
    flags = [f"{n}={int(val) if isinstance(val, bool) else val}" for n, val in consts.items()
             if not n.startswith(("BLOCK", "GROUP"))]
    loose = [names[p[0]] for p, a in v["attrs"].items()
             if len(p) == 1 and not a and v["signature"][names[p[0]]] in ("i32", "i64")]
    unaligned = [names[p[0]] for p, a in v["attrs"].items()
                 if len(p) == 1 and not a and v["signature"][names[p[0]]].startswith("*")]
    blocks = "x".join(str(val) for n, val in consts.items() if n.startswith("BLOCK"))
    dtype = next((t[1:] for t in v["signature"].values() if t.startswith("*") and t[1:] in ("bf16", "fp16", "fp32")), "")
    out = f"{k.__name__} {dtype} {blocks} w{v['options'].get('num_warps')}s{v['options'].get('num_stages')}"
    if flags:
        out += " " + ",".join(flags)
    if loose:
        out += " not16:" + ",".join(loose)
    if unaligned:
        out += " unaligned:" + ",".join(unaligned)
    return out


def _kernel_name(v) -> str:
    return f"{v['kernel'].fn.__module__}.{v['kernel'].__name__}"


def one_per_kernel(variants: list[dict]) -> list[dict]:
    """The first variant of each kernel, a benchmark ("hot") one where there is one: enough
    to show every kernel lowers under another Triton, at a fraction of the compile time
    (all 54 variants took 140 s on 2 busy CPU cores; there are 6 kernels)."""
    chosen: dict[str, dict] = {}
    for v in sorted(variants, key=lambda v: not v["hot"]):  # stable: hot ones first, in launch order
        chosen.setdefault(_kernel_name(v), v)
    return list(chosen.values())


def compile_all(target=TARGET, per_kernel: bool = False) -> list[dict]:
    """One row per compiled variant (every distinct one, or with `per_kernel` one per kernel)
    and one per failure; a kernel that no case launches is a failure either way."""
    variants, results = collect_variants()
    launched = {_kernel_name(v) for v in variants}
    for name in sorted(set(_jit_kernels()) - launched):
        results.append({"kernel": name, "ok": False, "error": "no case in triton_compile.launch_cases() launches it"})
    if per_kernel:
        variants = one_per_kernel(variants)
    for v in variants:
        row = {"kernel": variant_label(v), "cases": v["cases"]}
        try:
            compiled = compile_variant(v, target)
            row.update(ok=True, cubin_bytes=len(compiled.asm["cubin"]), shared_bytes=int(compiled.metadata.shared))
        except Exception as e:  # reported per variant, the run continues
            row.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
        results.append(row)
    return results
