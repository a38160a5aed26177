"""The built-in task's two figures over training seeds, in one command:

    python bench/task_figures.py --seeds 0 1 2 --out docs/

For each seed: the default training run (``python -m s1kernels.train --seed S``), then
budget forcing on held-out questions at max thinking budgets (forced exit) and with 0, 1
and 2 forced "Wait"s. Writes ``builtin-scaling.png`` (accuracy vs average thinking tokens:
each seed, the mean, the min-max band), ``builtin-wait.png`` (accuracy with 0/1/2 forced
Waits, one dot per seed) and ``builtin-seeds.json`` / ``builtin-seeds.md`` (the numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Sequence

from s1kernels.eval import runs
from s1kernels.eval.plots import plot_seed_curves, plot_wait_gains
from s1kernels.eval.suite import BUILTIN
from s1kernels.ops.decode import Budget

__all__ = ["evaluate_seed", "main"]


def evaluate_seed(model_dir: str, num_rows: int, budgets: Sequence[int], waits: Sequence[int], cap: int) -> dict:
    """Budget-forcing points and the forced-Wait accuracies of one trained model."""
    from s1kernels.eval import load_eval_rows, training_questions
    from s1kernels.runtime import load_model_and_tokenizer, set_cpu_threads

    rows = [dict(r, kind="aime") for r in load_eval_rows(None, None, num_rows, training_questions(model_dir))]
    model, tok = load_model_and_tokenizer(model_dir)
    set_cpu_threads(model, None)
    final = BUILTIN["final_answer"]  # the forced exit writes the task's trained answer prefix
    curve, _ = runs.budget_forcing(model, tok, rows, budgets, waits, cap, final_answer=final)
    natural = runs.run_setting(model, tok, rows, runs.Setting("no forcing", Budget(max_thinking_tokens=cap,
                                                                                     max_answer_tokens=16), high=cap),
                               final_answer=final)
    waited = [runs.aggregate("no forcing", natural, len(rows))] + [p for p in curve if p["name"].startswith("wait")]
    return {"rows": len(rows), "curve": curve, "waits": waited}


def _table(results: dict[int, dict]) -> str:
    seeds = sorted(results)
    names = [p["name"] for p in results[seeds[0]]["curve"]]
    head = "| setting | avg thinking tokens | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |"
    lines = [head, "| --- | ---: |" + " ---: |" * (len(seeds) + 1)]
    for n in ["no forcing"] + names:
        key = "waits" if n == "no forcing" else "curve"
        pts = [next(p for p in results[s][key] if p["name"] == n) for s in seeds]
        accs = [100 * p["accuracy"] for p in pts]
        x = statistics.mean(p["avg_thinking_tokens"] for p in pts)
        lines.append(f"| {n} | {x:.1f} | " + " | ".join(f"{a:.1f}%" for a in accs) + f" | {statistics.mean(accs):.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/task_figures.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--out", default="docs", help="folder for the PNGs and tables (default docs)")
    p.add_argument("--runs", default="runs/task-seeds", help="folder for the trained models")
    p.add_argument("--num-synthetic", type=int, default=200, help="held-out questions per seed (default 200)")
    p.add_argument("--budgets", type=int, nargs="+", default=BUILTIN["budgets"])
    p.add_argument("--waits", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cap", type=int, default=BUILTIN["cap"])
    p.add_argument("--reuse", action="store_true", help="evaluate models already in --runs instead of training")
    args = p.parse_args(argv)
    if len(args.seeds) < 1:
        p.error("--seeds: expected at least one seed")

    from s1kernels.train import TINY_DEFAULTS, TrainConfig, train

    results = {}
    for s in args.seeds:
        folder = os.path.join(args.runs, f"seed{s}")
        if not (args.reuse and os.path.isfile(os.path.join(folder, "config.json"))):
            t0 = time.perf_counter()
            # the default run of `python -m s1kernels.train --seed S`
            summary = train(TrainConfig(**dict(TINY_DEFAULTS, output=folder, seed=s, progress=False, eval_rows=0)))
            print(f"seed {s}: trained in {time.perf_counter() - t0:.0f}s (loss {summary.get('last_loss', float('nan')):.4f})",
                  file=sys.stderr)
        results[s] = evaluate_seed(folder, args.num_synthetic, args.budgets, args.waits, args.cap)
        w = results[s]["waits"]
        print(f"seed {s}: " + ", ".join(f"{p['name']} {100 * p['accuracy']:.1f}%" for p in w), file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    n = results[args.seeds[0]]["rows"]
    plot_seed_curves({s: r["curve"] for s, r in results.items()}, os.path.join(args.out, "builtin-scaling.png"),
                     f"built-in task, budget forcing: {n} held-out questions, {len(results)} training seeds")
    plot_wait_gains({s: [p["accuracy"] for p in r["waits"]] for s, r in results.items()},
                    os.path.join(args.out, "builtin-wait.png"))
    table = _table(results)
    with open(os.path.join(args.out, "builtin-seeds.md"), "w", encoding="utf-8") as f:
        f.write(table)
    with open(os.path.join(args.out, "builtin-seeds.json"), "w", encoding="utf-8") as f:
        json.dump({str(s): r for s, r in results.items()}, f, indent=1)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
