"""Runs every kernel benchmark against its baselines in one process.

    python bench/run_all.py                 # full sizes on a GPU; a quick config on CPU
    python bench/run_all.py --quick --only loss decode

Writes bench/results/<device>-<date>.json, a markdown table (.md) and a PNG plot.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Context, finish_rows, measure_ceilings, write_results  # noqa: E402

FAMILIES = ("loss", "decode", "similarity", "train_step", "generate")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes (the default without a GPU)")
    p.add_argument("--only", nargs="*", choices=FAMILIES, help="run only these families")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick or device.type != "cuda"
    ceilings = measure_ceilings(device, quick)
    ctx = Context(device, quick, ceilings, warmup=2 if quick else 10, rep=3 if quick else 50)
    print(f"device {device}, ceilings {ceilings}", flush=True)

    rows, failures = [], []
    for fam in args.only or FAMILIES:
        try:
            mod = importlib.import_module(fam)
        except ModuleNotFoundError as e:
            if e.name == fam:
                print(f"[{fam}] no benchmark module yet, skipped")
                continue
            raise
        print(f"[{fam}] running", flush=True)
        try:
            rows += mod.run(ctx)
        except Exception:
            failures.append(fam)
            traceback.print_exc()
    rows = finish_rows(rows, ceilings)
    paths = write_results(rows, ctx, args.out)
    print(open(paths["md"]).read())
    print("wrote", ", ".join(paths.values()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
