"""Runs the kernel benchmarks against their baselines, writing every row as it is measured.

    python bench/run_all.py                 # full sizes on a GPU; a quick config on CPU
    python bench/run_all.py --quick --only loss decode
    python bench/run_all.py --only loss --jsonl /tmp/out/bench.jsonl

Each row is appended to a JSONL file the moment it is timed (default
bench/results/<device>-<date>.jsonl) and the markdown table (.md) and PNG plot (.png) beside
it are regenerated after every family. A family that cannot be imported (a missing
dependency) or raises is recorded as failed in the same file, and the other families still
run; the exit status is 1 when any family failed. bench/gpu_proof.py runs each family in its
own process with a timeout, through `--only FAMILY --jsonl PATH`.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the checkout, when s1kernels is built in place
# Extra folders that hold family modules (tests use it to plant a family that raises).
for extra in filter(None, os.environ.get("S1K_BENCH_PATH", "").split(os.pathsep)):
    sys.path.insert(0, extra)

import torch  # noqa: E402

import common  # noqa: E402
import results  # noqa: E402

FAMILIES = ("loss", "decode", "similarity", "train_step", "generate")


def default_jsonl(device: torch.device) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in common.device_name(device).lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return os.path.join(HERE, "results", f"{slug}-{datetime.date.today().isoformat()}.jsonl")


def run_family(fam: str, ctx: common.Context, jsonl: str) -> bool:
    """Runs one family; its rows reach the JSONL through ctx.on_row. False when it failed."""
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(fam)
        print(f"[{fam}] running", flush=True)
        mod.run(ctx)
    except Exception as e:  # a missing dependency or a crash loses this family only
        traceback.print_exc()
        reason = f"{type(e).__name__}: {e}"
        results.append(jsonl, {"kind": "family", "bench": fam, "status": "failed", "reason": reason[:2000],
                               "wall_s": time.perf_counter() - t0, "device": ctx.meta.get("device")})
        return False
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes (the default without a GPU)")
    p.add_argument("--only", nargs="*", help=f"run only these families (of {', '.join(FAMILIES)})")
    p.add_argument("--jsonl", help="results file to append to (default bench/results/<device>-<date>.jsonl)")
    p.add_argument("--out", help="folder for the default results file (overrides bench/results)")
    p.add_argument("--row-budget", type=float, default=None, help="seconds of timing per row (default 8, quick 2)")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick or device.type != "cuda"
    jsonl = args.jsonl or default_jsonl(device)
    if args.out and not args.jsonl:
        jsonl = os.path.join(args.out, os.path.basename(jsonl))
    ceilings = common.measure_ceilings(device, quick)
    meta = {"device": common.device_name(device), "versions": common.versions()}
    ctx = common.Context(device, quick, ceilings, warmup=2 if quick else 10, rep=3 if quick else 50,
                         row_budget_s=args.row_budget or (2.0 if quick else 8.0), meta=meta,
                         on_row=lambda row: results.append_row(jsonl, row))
    print(f"device {meta['device']}, ceilings {ceilings}, writing {jsonl}", flush=True)

    failures = []
    for fam in args.only or FAMILIES:
        if not run_family(fam, ctx, jsonl):
            failures.append(fam)
        paths = results.render(jsonl)
    print(open(paths["md"]).read())
    print("wrote", ", ".join(paths.values()))
    if failures:
        print("failed families:", ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
