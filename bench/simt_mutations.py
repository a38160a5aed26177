"""Mutation check of the decode kernel's SIMT tests: plants known bugs in copies of csrc/decode.cu,
builds each under the host SIMT emulation and shows that the tests of tests/test_decode_simt.py
catch every one (and pass on the unaltered kernel).

    python bench/simt_mutations.py            # every check; writes bench/results/simt-mutations.md
    python bench/simt_mutations.py --quick    # a short battery (CI runs it through the simt tests)

Needs s1kernels._C (the C++ twin) built and a C++ compiler. Exit status 1 when a mutant survives.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import torch  # noqa: E402

import test_decode_simt as T  # noqa: E402
from simt_harness import KERNEL, build  # noqa: E402

# (name, what the bug is, text of csrc/decode.cu, its replacement); each text occurs exactly once.
MUTANTS = [
    ("merge-rank-order", "cluster_merge takes the ranks from the last to the first",
     "  T r = get(*cl.map_shared_rank(&sh.xch[parity], 0));\n"
     "  for (int k = 1; k < C; ++k) r = op(r, get(*cl.map_shared_rank(&sh.xch[parity], k)));",
     "  T r = get(*cl.map_shared_rank(&sh.xch[parity], C - 1));\n"
     "  for (int k = C - 2; k >= 0; --k) r = op(r, get(*cl.map_shared_rank(&sh.xch[parity], k)));"),
    ("radix-digit-off-by-one", "the top-k select stops one 8-bit digit short",
     "  const auto all = [](float, uint64_t&) { return true; };\n  for (int d = 0; d < s1k::radix_digits(DT); ++d) {",
     "  const auto all = [](float, uint64_t&) { return true; };\n  for (int d = 0; d < s1k::radix_digits(DT) - 1; ++d) {"),
    ("radix-bin-off-by-one", "the top-p select takes the bin above the one it found",
     "    prefix |= static_cast<uint32_t>(sh.sel_bin) << shift;\n    mask |= 0xFFu << shift;\n    above = sh.sel_above;",
     "    prefix |= static_cast<uint32_t>(sh.sel_bin + 1) << shift;\n    mask |= 0xFFu << shift;\n"
     "    above = sh.sel_above;"),
    ("parity-not-flipped", "top-k's histograms reuse one exchange buffer (parity not flipped)",
     "    parity ^= 1;\n    subtract_stop_ids<DT, false>",
     "    subtract_stop_ids<DT, false>"),
    ("no-syncthreads-before-exchange", "__syncthreads removed between the warp histograms and their sum",
     "    __syncwarp();\n  });\n  __syncthreads();\n  Exchange& out = sh.xch[parity];",
     "    __syncwarp();\n  });\n  Exchange& out = sh.xch[parity];"),
    ("no-syncthreads-in-block-reduce", "the __syncthreads between the warps' partial results and warp 0's sum removed",
     "  if (lane == 0) smem[warp] = v;\n  __syncthreads();\n  if (warp == 0) {",
     "  if (lane == 0) smem[warp] = v;\n  if (warp == 0) {"),
    ("no-cluster-sync-in-histogram", "cl.sync() removed between publishing a histogram and reading the others",
     "    out.mass[b] = s;\n  }\n  cl.sync();",
     "    out.mass[b] = s;\n  }"),
    ("no-final-cluster-sync", "the last cl.sync() removed: a CTA may exit while others read its shared memory",
     "  cl.sync();  // no CTA leaves while another may still read its shared memory\n",
     ""),
    ("histogram-halves-swapped", "the high and low 16-bit halves of the warp-aggregated mass swapped",
     "group_mass = (static_cast<uint64_t>(hi) << 16) + lo;",
     "group_mass = (static_cast<uint64_t>(lo) << 16) + hi;"),
]


def battery(quick: bool):
    """(name, check(sim)) pairs, cheapest and most telling first; a check raises on a failure."""
    checks = []
    for dtype in T.DTYPES:
        for cluster in (2, 8):
            checks.append((f"test_schedules_give_the_same_bits[{cluster}-{dtype}]",
                           lambda sim, d=dtype, c=cluster: T.test_schedules_give_the_same_bits(sim, d, c)))
    checks.append(("test_logprob_bits_are_the_kernels_fixed_order", T.test_logprob_bits_are_the_kernels_fixed_order))
    for dtype in T.DTYPES:
        checks.append((f"test_ties_at_the_threshold[8-{dtype}]",
                       lambda sim, d=dtype: T.test_ties_at_the_threshold(sim, d, 8)))
    n = 40 if quick else T.N_RANDOM
    for i in range(n):
        checks.append((f"test_random_cases_match_twin_and_reference[{i}]",
                       lambda sim, i=i: T.run_case(sim, T.random_case(i))))
    return checks


def run_battery(sim, checks, stop_at_first: bool):
    """Returns (number of checks run, the first failure as 'check: message' or None)."""
    for k, (name, check) in enumerate(checks):
        torch.manual_seed(0)
        try:
            check(sim)
        except Exception as e:  # noqa: BLE001 - any failure of a check is the point
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not stop_at_first:
                traceback.print_exc()
            return k + 1, f"{name}: {type(e).__name__}: {msg[:160]}"
    return len(checks), None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 random cases instead of 240; no report file")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "simt-mutations.md"))
    ap.add_argument("--only", nargs="*", help="names of mutants to run")
    ap.add_argument("--write-logprob-bits", action="store_true",
                    help=f"record the unaltered kernel's logprob bits in {os.path.relpath(T.LOGPROB_BITS, ROOT)} and exit")
    args = ap.parse_args(argv)
    if args.write_logprob_bits:
        import json
        with tempfile.TemporaryDirectory() as tmp:
            bits = T.logprob_bits(build(tmp))
        with open(T.LOGPROB_BITS, "w") as f:
            json.dump(bits, f, indent=1)
            f.write("\n")
        print(f"wrote {T.LOGPROB_BITS}")
        return 0
    with open(KERNEL) as f:
        source = f.read()
    checks = battery(args.quick)
    rows, survivors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        n, failure = run_battery(build(os.path.join(tmp, "build")), checks, stop_at_first=False)
        print(f"original kernel: {n} checks, {'FAILED ' + failure if failure else 'all pass'} ({time.time() - t0:.1f} s)",
              flush=True)
        if failure:
            return 1
        for name, what, old, new in MUTANTS:
            if args.only and name not in args.only:
                continue
            assert source.count(old) == 1, f"mutant {name}: its text occurs {source.count(old)} times in decode.cu"
            path = os.path.join(tmp, name, "decode.cu")
            os.makedirs(os.path.dirname(path))
            with open(path, "w") as f:
                f.write(source.replace(old, new))
            t0 = time.time()
            n, failure = run_battery(build(os.path.join(tmp, name), kernel=path), checks, stop_at_first=True)
            secs = time.time() - t0
            verdict = f"caught after {n} check(s) by {failure}" if failure else f"SURVIVED {n} checks"
            print(f"{name}: {verdict} ({secs:.1f} s)", flush=True)
            rows.append((name, what, n, failure, secs))
            if not failure:
                survivors.append(name)
    if not args.quick:
        with open(args.out, "w") as f:
            f.write("# Planted bugs in csrc/decode.cu against the SIMT tests\n\n"
                    "Written by `python bench/simt_mutations.py` (the unaltered kernel passes all "
                    f"{len(checks)} checks first). Each mutant is built under the host SIMT emulation and "
                    "run through the checks until one fails. Seconds are wall-clock, build included, on a "
                    f"shared machine ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the "
                    "end of the run).\n\n"
                    "| mutant | planted bug | checks run | first failure | seconds |\n| --- | --- | --- | --- | --- |\n")
            for name, what, n, failure, secs in rows:
                f.write(f"| {name} | {what} | {n} | {(failure or 'SURVIVED').replace('|', '/')} | {secs:.1f} |\n")
        print(f"wrote {args.out}")
    if survivors:
        print("surviving mutants:", ", ".join(survivors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
