"""Compile every Triton kernel of s1kernels.ops for an H100 (sm_90) with no GPU present and
print one JSON record per kernel variant; exit status 1 when any fails or none was found.

    python bench/triton_compile.py      # with TRITON_INTERPRET unset

The cases and the compiler driving are s1kernels/ops/triton_compile.py.
"""
import json
import sys

from s1kernels.ops.triton_compile import compile_all


def main() -> int:
    results = compile_all()
    print(json.dumps(results, indent=1))
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
