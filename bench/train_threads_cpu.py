"""The built-in `train` run on a CPU with 1 or 2 torch threads, alone and beside a busy process.

    python bench/train_threads_cpu.py                  # 3 rounds, writes bench/results/train-threads-cpu.md
    python bench/train_threads_cpu.py --rounds 1 --out -

Each measurement is a fresh `python -m s1kernels.train` of the default tiny model on the
built-in task for --steps optimizer steps (1,024 tokens each); its figure is the trainer's own
tokens per second over those steps (the last train_log.jsonl record: loading and packing
are not in it). "busy" starts a competing process first: torch with 2 threads multiplying
512 x 512 matrices in a loop (another training job, a notebook), stopped after the run.

Conditions run interleaved, round after round (threads 1 alone, 2 alone, 1 busy, 2 busy,
...), so a change in the machine's background load reaches every condition alike; the load
average before each run is recorded beside it. The table gives the median over rounds and
the slow-down busy/alone for each thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from cpu_report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

COMPETITOR = ("import torch\n"
              "torch.set_num_threads(2)\n"
              "a = torch.randn(512, 512)\n"
              "while True:\n"
              "    a = torch.tanh(a @ a)\n")


def run_once(threads: int | None, busy: bool, steps: int, workdir: str, timeout: float) -> dict:
    competitor = None
    if busy:
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it reach its loop
    load = os.getloadavg()[0]
    out = tempfile.mkdtemp(dir=workdir)
    cmd = [sys.executable, "-m", "s1kernels.train", "--max-steps", str(steps), "--synthetic-rows", "400",
           "--eval-rows", "0", "--no-progress", "--output", out]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timed_out = False
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # a collapsed run: stop it and keep the rate of the steps it finished (a log line per step)
        timed_out = True
        proc.kill()
        _, err = proc.communicate()
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0 and not timed_out:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    log_path = os.path.join(out, "train_log.jsonl")
    records = []
    if os.path.exists(log_path):
        with open(log_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(out, "train_config.json")) as f:
        used = json.load(f).get("threads_used")
    # no step finished in time: the rate was below one step (1,024 tokens) per `timeout` seconds
    rate = records[-1]["tokens_per_s"] if records else 1024 / timeout
    return {"threads": threads, "threads_used": used, "busy": busy, "tokens_per_s": rate, "steps": len(records),
            "timed_out": timed_out, "wall_s": wall, "load1_before": load}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds before a run is stopped; its rate is then that of the steps it finished")
    p.add_argument("--threads", nargs="+", default=["1", "2"],
                   help="thread counts to compare; 'default' runs without --threads")
    p.add_argument("--out", default=os.path.join(HERE, "results", "train-threads-cpu.md"), help="'-': stdout only")
    args = p.parse_args(argv)
    threads = [None if t == "default" else int(t) for t in args.threads]
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(args.rounds):
            for busy in (False, True):
                for t in threads:
                    res = run_once(t, busy, args.steps, workdir, args.timeout)
                    res["round"] = r
                    runs.append(res)
                    print(json.dumps(res), file=sys.stderr, flush=True)
    lines = [f"# train on a CPU: torch threads alone and beside a busy 2-thread process",
             "",
             f"`python bench/train_threads_cpu.py --rounds {args.rounds} --steps {args.steps} --timeout {args.timeout:.0f}` on "
             f"{platform.machine()} with {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the default tiny model, "
             f"{args.steps} steps of 1,024 tokens, median over rounds (run interleaved); a run still going after "
             f"{args.timeout:.0f} s is stopped and counted at the rate of the steps it finished.",
             "",
             "| threads | alone tok/s | busy tok/s | busy / alone | load avg (1 min) before runs |",
             "| --- | ---: | ---: | ---: | --- |"]
    for t in threads:
        alone = [x for x in runs if x["threads"] == t and not x["busy"]]
        busy = [x for x in runs if x["threads"] == t and x["busy"]]
        a = statistics.median(x["tokens_per_s"] for x in alone)
        b = statistics.median(x["tokens_per_s"] for x in busy)
        loads = ", ".join(f"{x['load1_before']:.1f}" for x in alone + busy)
        used = alone[0]["threads_used"]
        name = f"default ({used})" if t is None else str(t)
        lines.append(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | {loads} |")
    lines += ["", "Every run (tokens/s, load before):", ""]
    for x in runs:
        cut = f" (stopped at {args.timeout:.0f} s after {x['steps']} steps)" if x["timed_out"] else ""
        lines.append(f"- round {x['round']}, threads {x['threads'] or 'default'}, {'busy' if x['busy'] else 'alone'}: "
                     f"{x['tokens_per_s']:,.0f} tok/s{cut}, load {x['load1_before']:.1f}")
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
