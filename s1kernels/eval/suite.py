"""s1's evaluation of one model in one command (``python -m s1kernels.evaluation``, whose flags
are in s1kernels/eval/__main__.py).

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

import sys
import time

from s1kernels.data.format import FINAL_ANSWER
from s1kernels.data.synthetic import FORCED_ANSWER
from s1kernels.eval import runs
from s1kernels.eval.metrics import summarize
from s1kernels import checks

__all__ = ["run_suite", "baselines_table", "extensions_table", "METHODS"]

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
        raise checks.argument_error("methods", f"names among {', '.join(METHODS)}", unknown)
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
