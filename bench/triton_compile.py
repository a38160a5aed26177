"""Compile every Triton kernel of s1kernels.ops for an H100 (sm_90) with no GPU present and
print one JSON record per kernel variant; exit status 1 when any fails or none was found.

    python bench/triton_compile.py      # with TRITON_INTERPRET unset
    python bench/triton_compile.py --one-per-kernel    # one variant of each kernel

The cases and the compiler driving are s1kernels/ops/triton_compile.py.
"""
import json
import sys

from s1kernels.ops.triton_compile import compile_all


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python bench/triton_compile.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--one-per-kernel", action="store_true",
                   help="compile one variant of each kernel instead of every variant the cases launch")
    results = compile_all(per_kernel=p.parse_args(argv).one_per_kernel)
    print(json.dumps(results, indent=1))
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
