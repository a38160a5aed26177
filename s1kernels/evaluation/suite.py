"""``python -m s1kernels.evaluation``: s1's evaluation of one model in one command.

    python -m s1kernels.evaluation --model runs/default --out runs/default/suite
    python -m s1kernels.evaluation --model M/ --data aime24.jsonl --budgets 1024 2048 4096 8192 --cap 16384

Runs, on the same questions: budget forcing (max thinking budgets, then forced "Wait"s),
majority voting over N samples at a temperature, token-, step- and class-conditional
prompting, rejection sampling, and the extension strings ("Wait", none, "Hmm",
"Alternatively"). Writes into --out:

    sequential_vs_parallel.png   accuracy vs average thinking tokens per question
    baselines.md                 Control / Scaling / Performance of every method
    extensions.md                accuracy and thinking length per extension string
    report.json                  every setting's point and every method's metrics
    rows.jsonl                   one line per question, sample and setting: the full
                                 generation, the extracted answer, the measured thinking
                                 length, its bounds and the budget events
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from s1kernels.data.format import FINAL_ANSWER
from s1kernels.data.synthetic import FORCED_ANSWER
from s1kernels.evaluation import runs
from s1kernels.evaluation.metrics import summarize

__all__ = ["run_suite", "baselines_table", "extensions_table", "main", "METHODS"]

METHODS = ("forcing", "parallel", "token", "step", "class", "reject", "extensions")
# The built-in task's first pass is 40 thinking tokens (a "Start" line of 4, six lines of 6);
# each check ("Wait" and a careful pass) adds 42.
# A forced exit writes the task's trained answer prefix (synthetic.FORCED_ANSWER); files
# keep s1's "Final Answer:".
BUILTIN = dict(budgets=[4, 10, 16, 22, 28, 34, 40], waits=[1, 2], steps=[1, 2, 3, 4, 5, 6], cap=128,
               tokens_per_step=6, reject=[40, 82], final_answer=FORCED_ANSWER)
FILES = dict(budgets=[1024, 2048, 4096, 8192], waits=[1, 2], steps=[4, 8, 16, 32], cap=16384,
             tokens_per_step=256, reject=[2048, 4096, 8192], final_answer=FINAL_ANSWER)


def run_suite(model, tokenizer, rows, *, methods=METHODS, budgets, waits, steps, cap, tokens_per_step, reject,
              samples=(1, 2, 4, 8), temperature: float = 0.7, max_attempts: int = 8, seed: int = 0,
              strings=("Wait", "none", "Hmm", "Alternatively"), progress: bool = True, **gen_kwargs) -> dict:
    """Every method in ``methods`` on ``rows``; returns {"methods": {name: {points, metrics}},
    "extensions": [...], "records": [...]} (records carry a "method" field)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods: expected names among {', '.join(METHODS)}, got {unknown}")
    kw = dict(gen_kwargs)
    out, records = {"methods": {}, "timings": {}}, []

    def add(name, points, recs, control_applies=True):
        m = summarize(points)
        if not control_applies:
            m["control"] = None
        out["methods"][name] = {"points": points, "metrics": m}
        records.extend(dict(r, method=name) for r in recs)

    jobs = {
        "forcing": lambda: add("budget forcing", *runs.budget_forcing(model, tokenizer, rows, budgets, waits, cap, **kw)),
        "parallel": lambda: add("majority voting", *runs.majority_voting(model, tokenizer, rows, samples, temperature,
                                                                          cap, seed, **kw), control_applies=False),
        "token": lambda: add("token-conditional", *runs.conditional(model, tokenizer, rows, "token", budgets, cap, **kw)),
        "step": lambda: add("step-conditional", *runs.conditional(model, tokenizer, rows, "step", steps, cap,
                                                                  tokens_per_step=tokens_per_step, **kw)),
        "class": lambda: add("class-conditional", *runs.conditional(model, tokenizer, rows, "class", ["short", "long"],
                                                                    cap, short_max=budgets[len(budgets) // 2], **kw)),
        "reject": lambda: add("rejection sampling", *runs.rejection_sampling(model, tokenizer, rows, reject, temperature,
                                                                             max_attempts, cap, seed, **kw)),
    }
    for name in methods:
        t0 = time.perf_counter()
        if name == "extensions":
            points, recs = runs.extension_strings(model, tokenizer, rows, strings, waits, cap, **kw)
            out["extensions"] = points
            records.extend(dict(r, method="extension strings") for r in recs)
        else:
            jobs[name]()
        out["timings"][name] = time.perf_counter() - t0
        if progress:
            print(f"[{name}: {out['timings'][name]:.0f}s]", file=sys.stderr)
    out["records"] = records
    return out


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def baselines_table(result: dict) -> str:
    """Markdown: one row per method with Control, Scaling (accuracy points per 100 thinking
    tokens), Performance, and its settings' (thinking tokens, accuracy) points."""
    lines = ["| method | Control | Scaling (points / 100 tokens) | Performance | settings: avg thinking tokens -> accuracy |",
             "| --- | ---: | ---: | ---: | --- |"]
    for name, m in result["methods"].items():
        s = m["metrics"]
        slope = "n/a" if s["scaling"] is None else f"{100 * 100 * s['scaling']:.2f}"
        pts = "; ".join(f"{p['name']}: {p['avg_thinking_tokens']:.1f} -> {100 * p['accuracy']:.1f}%"
                        + (f" ({p['mean_attempts']:.2f} attempts)" if "mean_attempts" in p else "")
                        for p in m["points"])
        lines.append(f"| {name} | {_pct(s['control'])} | {slope} | {_pct(s['performance'])} | {pts} |")
    return "\n".join(lines) + "\n"


def extensions_table(points: list[dict]) -> str:
    lines = ["| extension string | extensions | accuracy | avg thinking tokens |", "| --- | ---: | ---: | ---: |"]
    for p in points:
        s = "(no forcing)" if p.get("string") is None else ("none (end suppressed)" if p["string"] == "none"
                                                            else f'"{p["string"]}"')
        lines.append(f"| {s} | {p['extensions']} | {100 * p['accuracy']:.1f}% | {p['avg_thinking_tokens']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from s1kernels.data.readers import BENCHMARKS, read_benchmark
    from s1kernels.eval import EVAL_SEED, load_eval_rows, training_questions
    from s1kernels.evaluation.plots import plot_sequential_vs_parallel
    from s1kernels.cli import load_model_and_tokenizer, set_cpu_threads

    p = argparse.ArgumentParser(prog="python -m s1kernels.evaluation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/default", help="checkpoint folder (default runs/default)")
    p.add_argument("--data", default=None, help="benchmark file (default: held-out built-in task rows)")
    p.add_argument("--benchmark", choices=BENCHMARKS, default=None, help="math, aime or gpqa (default: detected)")
    p.add_argument("--limit", type=int, default=None, help="first N rows of --data")
    p.add_argument("--num-synthetic", type=int, default=100, help="built-in task rows (default 100)")
    p.add_argument("--out", default=None, help="output folder (default <model>/suite)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--budgets", type=int, nargs="+", help="max thinking budgets (also token-conditional's)")
    p.add_argument("--waits", type=int, nargs="+", help="forced Wait counts (also the extension-string counts)")
    p.add_argument("--steps", type=int, nargs="+", help="step-conditional step counts")
    p.add_argument("--tokens-per-step", type=int, help="step-conditional: Control bound per step in tokens")
    p.add_argument("--reject", type=int, nargs="+", help="rejection-sampling budgets")
    p.add_argument("--cap", type=int, help="thinking cap of the runs without a budget")
    p.add_argument("--final-answer", help='text a forced exit writes after the answer delimiter (default: '
                                          f'{FORCED_ANSWER!r} on the built-in task, {FINAL_ANSWER!r} on files)')
    p.add_argument("--samples", type=int, nargs="+", default=[1, 2, 4, 8], help="majority-voting sample counts")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (voting, rejection)")
    p.add_argument("--max-attempts", type=int, default=8, help="rejection sampling: attempts per question")
    p.add_argument("--strings", nargs="+", default=["Wait", "none", "Hmm", "Alternatively"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto")
    args = p.parse_args(argv)

    if args.data is None:
        rows = load_eval_rows(None, None, args.num_synthetic, training_questions(args.model))
        rows = [dict(r, kind="aime") for r in rows]  # one-digit integer answers
        kind, defaults, source = "built-in", BUILTIN, f"built-in task, seed {EVAL_SEED}, held out"
    else:
        rows, kind = read_benchmark(args.data, args.benchmark, seed=args.seed, limit=args.limit)
        defaults, source = FILES, args.data
    if not rows:
        p.error("no rows to evaluate")
    cfg = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    model, tok = load_model_and_tokenizer(args.model, args.device, args.dtype)
    set_cpu_threads(model, args.threads)
    result = run_suite(model, tok, rows, methods=args.methods, samples=args.samples, temperature=args.temperature,
                       max_attempts=args.max_attempts, seed=args.seed, strings=args.strings,
                       batch_size=args.batch_size, **cfg)
    out = args.out or os.path.join(args.model, "suite")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "rows.jsonl"), "w", encoding="utf-8") as f:
        for r in result.pop("records"):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    notes = [f"{s!r} encodes to {n} unknown token(s) with this tokenizer" for s in args.strings
             if s != "none" and (n := runs.unknown_tokens(tok, s))]
    report = {"model": os.path.abspath(args.model), "data": source, "kind": kind, "rows": len(rows), "settings": cfg,
              "temperature": args.temperature, "notes": notes, **result}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    if result["methods"]:
        table = baselines_table(result)
        with open(os.path.join(out, "baselines.md"), "w", encoding="utf-8") as f:
            f.write(table)
        print(table)
    if "extensions" in result:
        table = extensions_table(result["extensions"])
        with open(os.path.join(out, "extensions.md"), "w", encoding="utf-8") as f:
            f.write(table + "".join(f"\nnote: {n}" for n in notes) + "\n")
        print(table + "".join(f"note: {n}\n" for n in notes))
    seq, par = result["methods"].get("budget forcing"), result["methods"].get("majority voting")
    if seq and par:
        plot_sequential_vs_parallel(seq["points"], par["points"], os.path.join(out, "sequential_vs_parallel.png"),
                                    f"{source}: {len(rows)} questions")
    print(f"wrote {out}/: report.json, rows.jsonl" + (", sequential_vs_parallel.png" if seq and par else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
