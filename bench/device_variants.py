"""Every Triton variant the GPU proof launches, traced on meta tensors (no GPU, no memory).

    python bench/device_variants.py --out variants.json [--quick]

Run with a Python that has torch and Triton 3.6 (the GPU machine's Triton): the launch
recorder of s1kernels.ops.triton_compile intercepts each `kernel[grid](...)` and asks Triton's
own binder what the JIT would compile for GPUTarget("cuda", 90, 32), so the signatures,
constexprs and divisibility attributes are the JIT's. The cases are those of
triton_compile.launch_cases() (the benchmark sizes, the smoke rows among them) plus the
shapes the cuda tests and bench/sanitize_cases.py launch. Each variant is written as JSON
with the hash of its Triton source object (ASTSource.hash()), which bench/device_compile.py
checks again where it compiles: a kernel whose key would differ there is refused.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def test_cases():
    """(name, run) of the launches the cuda tests and the sanitizer cases make, by shape."""
    import torch

    from s1kernels.ops.triton_compile import _knn_case, _loss_case

    cases = []
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    # tests/test_loss.py::test_triton_cuda_against_reference: vocab_size = V - 5, z_loss, both biases
    for dtype in dtypes:
        for n, h, v in ((1, 64, 1000), (777, 256, 5003), (3000, 512, 33000)):
            for softcap in (30.0, None):
                for bias in (False, True):
                    cases.append((f"test loss {dtype} N={n} H={h} V={v} softcap={softcap} bias={bias}",
                                  _loss_case(n, h, v, v - 5, dtype, bias, softcap, 1e-4)))
    # test_triton_cuda_memory_is_bounded; bench/sanitize_cases.py case_loss (no bias, scalar loss)
    cases.append(("test loss memory bound", _loss_case(8192, 512, 65536, 65536, torch.bfloat16)))
    cases.append(("sanitizer loss bf16", _loss_case(37, 64, 257, 257, torch.bfloat16)))
    cases.append(("sanitizer loss fp32", _loss_case(300, 200, 300, 300, torch.float32)))
    # the loss smoke row (bench/smoke.py): the whole padded lm_head is the vocabulary
    cases.append(("smoke loss", _loss_case(8192, 3584, 152064, 152064, torch.bfloat16)))
    # tests/test_similarity.py::test_topk_triton_gpu_matches_reference, self and cross
    for dtype in dtypes:
        for k in (1, 16, 100):
            cases.append((f"test topk self {dtype} k={k}", _knn_case(1000, 1000, 384, k, dtype)))
            cases.append((f"test topk cross {dtype} k={k}", _knn_case(1000, 3001, 384, k, dtype, exclude=False)))
        # tests/test_similarity_exact.py::test_gpu_duplicates_and_k_boundaries: 1001 rows, self
        for k in (1, 16, 17, 32, 33, 100, 128):
            cases.append((f"test topk duplicates {dtype} k={k}", _knn_case(1001, 1001, 384, k, dtype)))
    # test_gpu_fp32_bf16_blind_pool_exact: 9 queries, a pool of 3000, D=8, fp32
    for k in (1, 16, 17, 33, 128):
        cases.append((f"test topk blind pool k={k}", _knn_case(9, 3000, 8, k, torch.float32, exclude=False)))
    cases.append(("sanitizer topk bf16", _knn_case(150, 300, 100, 16, torch.bfloat16, exclude=False)))
    cases.append(("sanitizer topk fp32", _knn_case(41, 177, 24, 100, torch.float32, exclude=False)))
    return cases


def quick_cases():
    """A few small variants: what CI compiles to rehearse the whole path in seconds."""
    import torch

    from s1kernels.ops.triton_compile import _knn_case

    return [("quick topk bf16 self", _knn_case(1001, 1001, 384, 16, torch.bfloat16)),
            ("quick topk fp32 cross", _knn_case(41, 177, 24, 100, torch.float32, exclude=False))]


def all_cases(quick: bool):
    if quick:
        return quick_cases()
    from s1kernels.ops.triton_compile import launch_cases

    return [(name, run) for name, _hot, run in launch_cases()] + test_cases()


def _jsonable(launch) -> dict:
    from triton.compiler import ASTSource

    k = launch["kernel"]
    src = ASTSource(fn=k, signature=launch["signature"], constexprs=launch["constexprs"], attrs=launch["attrs"])
    # extern_libs names this install's libdevice by absolute path; the key hashes its content
    options = {o: v for o, v in launch["options"].items() if o != "extern_libs"}
    return {"module": k.fn.__module__, "kernel": k.__name__, "signature": launch["signature"],
            "constexprs": [[list(p), v] for p, v in launch["constexprs"].items()],
            "attrs": [[list(p), a] for p, a in launch["attrs"].items()],
            "options": options, "src_hash": src.hash()}


def trace(quick: bool = False) -> tuple[list[dict], list[dict]]:
    """(variants, failures): each distinct variant once, with the cases that launch it."""
    from s1kernels.ops import triton_compile as T

    cases = [(name, False, run) for name, run in all_cases(quick)]
    variants, failures = T.collect_variants(cases)
    out = []
    for v in variants:
        row = _jsonable(v)
        row.update(label=T.variant_label(v), cases=v["cases"])
        out.append(row)
    out.sort(key=lambda r: (r["module"], r["kernel"], r["label"]))
    return out, failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file of the variants")
    ap.add_argument("--quick", action="store_true", help="a few small variants only")
    args = ap.parse_args(argv)
    import triton

    if not triton.__version__.startswith("3.6"):
        print(f"device_variants: Triton {triton.__version__} traces other keys than the GPU machine's 3.6; "
              "run with a Python that has triton==3.6.0", file=sys.stderr)
        return 2
    variants, failures = trace(args.quick)
    with open(args.out, "w") as f:
        json.dump({"triton": triton.__version__, "variants": variants}, f, indent=1, default=str)
    for fail in failures:
        print(f"FAILED to trace {fail['case']}: {fail['error']}", file=sys.stderr)
    print(f"{len(variants)} variants traced, {len(failures)} cases failed -> {args.out}")
    return 1 if failures or not variants else 0


if __name__ == "__main__":
    sys.exit(main())
