"""Evaluate a model at several thinking budgets: accuracy, thinking length, Control, the plot.

    python -m s1kernels.eval --model runs/default --budgets 4 8 16 24 32 48 64 \\
        --output report.json --plot scaling.png

Data: a JSONL (or Parquet) benchmark with a question (``problem`` or ``question``) and a
final ``answer`` per row (MATH500 rows; AIME-style integer answers work too), or by default
held-out rows of the built-in synthetic task: generated with a seed training never uses,
unique, and without the questions the model was trained on (read from the checkpoint's
train_config.json). On the built-in task a forced exit writes the task's trained answer
prefix ("Answer:") after the answer delimiter instead of s1's "Final Answer:" (a token the
tiny model never saw); ``--final-answer`` overrides it.
For every max budget the whole set is generated with budget forcing (``generate``), the
final answer is extracted from the answer span (``\\boxed{}``, ``Final Answer:``,
``Answer:``), which ends at the first complete answer or a re-opened delimiter
(``s1kernels.control.read_row``: the first answer after a forced exit is the one scored), and
checked against the reference (normalised strings and numbers, math-verify
when installed).

Reported per budget, following s1 (section 3.2 of the paper):
- accuracy: share of rows answered correctly;
- avg_thinking_tokens: mean thinking length, measured on the emitted tokens (after the
  think marker, before the end-of-thinking token, plus whatever the row wrote after its
  first answer: thinking written in the answer span; s1kernels.control.read_row);
- control: share of rows whose measured thinking length is within [min, max] budget (100% is
  the goal; measured on the output, so a budget the decoder failed to enforce shows here);
- decoder_disagreements: rows where the decoder's own thinking counter differs from the
  measured thinking span (0 when the forcing works);
- late_thinking_rows: rows that kept thinking after their first answer (each fails Control
  when that pushes it past the budget);
and over all budgets s1's Scaling (mean slope of accuracy vs average thinking tokens over
all pairs of budgets) and Performance (best accuracy).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

from s1kernels import checks, extras
from s1kernels.data.readers import BLANK, detect_benchmark, iter_jsonl, question_of, read_benchmark
from s1kernels.eval import metrics, runs
from s1kernels.ops.decode import Budget, ForcingTokens, Sampling

__all__ = ["EVAL_SEED", "load_eval_rows", "training_questions", "evaluate", "scaling_metrics", "plot_scaling"]


# Held-out rows of the built-in task come from this seed; training draws its rows from
# other seeds, so the evaluation questions are not the training questions.
EVAL_SEED = 20_250_131


def training_questions(model_dir: str) -> set[str]:
    """Questions the model in ``model_dir`` was trained on, when it was trained on the built-in
    task (read from the trainer's train_config.json); empty otherwise."""
    path = os.path.join(model_dir, "train_config.json")
    if not os.path.isfile(path):
        return set()
    cfg = checks.read_json(path, "--model", expect_object=True)
    data = cfg.get("data")
    source = data.get("source", "") if isinstance(data, dict) else ""
    if not source.startswith("built-in task") or "synthetic_rows" not in cfg or "seed" not in cfg:
        return set()
    from s1kernels.data.synthetic import make_rows

    n = checks.check_int(f"{path}: synthetic_rows", cfg["synthetic_rows"], 0, 10**8)  # the trainer's own bound
    seed = checks.check_int(f"{path}: seed", cfg["seed"], 0, 2**63 - 1)
    return {r["question"] for r in make_rows(n, seed=seed)}


def load_eval_rows(path: str | None = None, limit: int | None = None, num_synthetic: int = 200,
                   exclude_questions: set[str] | frozenset = frozenset(), benchmark: str | None = None,
                   seed: int = 0) -> list[dict]:
    """Rows ``{"question", "answer"}`` from a benchmark file, or held-out built-in task rows.

    A file row needs a question (an alias of s1kernels.data.readers.QUESTION_KEYS) and an ``answer``
    (string or number; AIME answers are integers). Other fields are kept. Built-in rows come
    from ``EVAL_SEED``, skipping repeated questions and those in ``exclude_questions`` (the
    training questions: the task's question space is small enough for a training set to
    cover part of it). Each row gets a ``kind`` that picks its answer check
    (``answers.score``): "math", "aime" (every answer an integer) or "gpqa" (multiple choice:
    CSV files, rows with options, or ``benchmark="gpqa"``: read by
    ``data.readers.read_benchmark``, the options shuffled with ``seed``).
    """
    if path is None:
        from s1kernels.data.synthetic import make_rows

        want = num_synthetic if limit is None else min(limit, num_synthetic)
        rows, seen, n = [], set(exclude_questions), max(4 * want, 64)
        for attempt in range(4):
            for r in make_rows(n, seed=EVAL_SEED + attempt):
                if len(rows) == want:
                    break
                if r["question"] not in seen:
                    seen.add(r["question"])
                    rows.append({"question": r["question"], "answer": r["answer"]})
            if len(rows) == want:
                break
        if len(rows) < want:
            raise ValueError(f"--num-synthetic: found only {len(rows)} built-in questions unseen in training, "
                             f"asked for {want}")
        return rows
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--data: no file at {path!r}")
    if benchmark is not None or path.endswith(".csv"):
        return read_benchmark(path, benchmark, seed=seed, limit=limit)[0]
    if path.endswith(".parquet"):
        pq = extras.require("pyarrow.parquet", f"reading the Parquet file {path}")
        raw = pq.read_table(path).to_pylist()
    else:
        raw = []
        for where, rec in iter_jsonl(path):  # bad bytes, bad JSON, oversized lines: named by file:line
            if isinstance(rec, Exception):
                raise ValueError(f"--data: {rec}")
            if rec is not BLANK:
                raw.append(rec)
    if raw and isinstance(raw[0], dict) and detect_benchmark(raw[:1]) == "gpqa":
        return read_benchmark(path, "gpqa", seed=seed, limit=limit)[0]
    rows = []
    for n, r in enumerate(raw, 1):
        if not isinstance(r, dict):
            raise checks.argument_error(f"--data: row {n} of {path}", "a JSON object", f"a {type(r).__name__}")
        q = question_of(r)
        a = r.get("answer")
        if q is None or a is None:
            raise ValueError(f"--data: row {n} of {path} needs a problem/question and an answer, "
                             f"got keys {sorted(r)}")
        row = dict(r)
        row["question"], row["answer"] = q, str(a)
        rows.append(row)
    kind = detect_benchmark(rows) if rows else "math"
    rows = [dict(r, kind=kind) for r in rows]
    return rows[:limit] if limit is not None else rows


def scaling_metrics(points: list[tuple[float, float]]) -> dict:
    """s1's Scaling (mean pairwise slope of accuracy over thinking tokens) and Performance.

    ``points`` are (average thinking tokens, accuracy) per budget. Pairs with equal
    thinking length are skipped (no slope).
    """
    return {"scaling_slope": metrics.scaling(points), "performance": metrics.performance(points)}


def evaluate(model, tokenizer, rows: list[dict], budgets: Sequence[int], *, budget: Budget | None = None,
             sampling: Sampling | None = None, use_math_verify: bool = True, keep_rows: bool = False,
             progress: bool = True, **gen_kwargs) -> dict:
    """Generates at each max thinking budget and scores the answers; returns the report.

    ``budget`` holds everything but the maximum (the minimum, waits, answer cap, mode;
    default ``Budget(max_answer_tokens=64)``); each entry of ``budgets`` replaces its maximum
    (and caps the minimum). Every budget is one setting of ``runs.run_setting``, the one
    "generate at a budget and score it" path the suite uses too; ``keep_rows`` keeps its
    records (one per question, the suite's rows.jsonl format) under each budget."""
    if not budgets:
        raise checks.argument_error("budgets", "at least one thinking budget")
    if any(not checks.is_real(b) or int(b) < 1 for b in budgets):
        raise checks.argument_error("budgets", "positive token counts", list(budgets))
    budget = Budget(max_answer_tokens=64) if budget is None else budget
    if not isinstance(budget, Budget):
        raise checks.argument_error("budget", "a Budget", type(budget).__name__, TypeError)
    if gen_kwargs.get("forcing") is None:
        delims = {k: gen_kwargs.pop(k) for k in ("answer_start", "wait_string", "final_answer") if k in gen_kwargs}
        gen_kwargs["forcing"] = ForcingTokens.from_tokenizer(tokenizer, **delims)
    per_budget = []
    iterator = list(budgets)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="budgets", unit="budget")
    for max_think in iterator:
        max_think = int(max_think)
        low = _capped(budget.min_thinking_tokens, max_think)
        setting = runs.Setting(f"max {max_think}", dataclasses.replace(budget, min_thinking_tokens=low,
                                                                       max_thinking_tokens=max_think),
                               low=min(low) if isinstance(low, list) else low, high=max_think)
        t0 = time.perf_counter()
        records = runs.run_setting(model, tokenizer, rows, setting, sampling=sampling,
                                   use_math_verify=use_math_verify, **gen_kwargs)
        seconds = time.perf_counter() - t0
        entry = {"max_thinking_tokens": max_think, **_budget_entry(records, len(rows)), "seconds": seconds}
        if keep_rows:
            entry["rows"] = records
        per_budget.append(entry)
    summary = scaling_metrics([(e["avg_thinking_tokens"], e["accuracy"]) for e in per_budget])
    summary["control"] = min(e["control"] for e in per_budget)
    settings = {f.name: getattr(budget, f.name) for f in dataclasses.fields(budget) if f.name != "max_thinking_tokens"}
    return {"rows": len(rows), "settings": settings, "budgets": per_budget, "summary": summary}


def _capped(value, cap: int):
    """A Budget field (an int or per-row values) capped at ``cap``."""
    if isinstance(value, (list, tuple)):
        return [min(int(v), cap) for v in value]
    return min(int(value), cap)


def _budget_entry(records: list[dict], n: int) -> dict:
    """One budget's numbers from its records: accuracy, thinking length measured on the
    emitted tokens, Control, and what the decoder itself reported."""
    point = runs.aggregate("", records, n)
    thinking = [r["thinking_tokens"] for r in records]
    events = [r["events"] for r in records]
    finished: dict[str, int] = {}
    for e in events:
        finished[e["finished_reason"]] = finished.get(e["finished_reason"], 0) + 1
    return {
        "accuracy": point["accuracy"],
        "avg_thinking_tokens": point["avg_thinking_tokens"],
        "max_observed_thinking_tokens": max(thinking, default=0),
        "control": point["in_bounds"] / point["runs"] if point["runs"] else 1.0,
        # the decoder counts the thinking span only: compare it with that span
        "decoder_disagreements": sum(e["decoder_thinking_tokens"] != e["thinking_span_tokens"] for e in events),
        "late_thinking_rows": sum(r["late_thinking_tokens"] > 0 for r in records),
        "forced_exit_rate": sum(e["forced_exit"] for e in events) / n if n else 0.0,
        "avg_waits_used": sum(e["waits_used"] for e in events) / n if n else 0.0,
        "finished": finished,
        "generated_tokens": sum(e["generated_tokens"] for e in events),
    }


def plot_scaling(report: dict, path: str, title: str | None = None) -> None:
    """Accuracy against average thinking tokens, one point per budget (s1's Figure 1 style)."""
    matplotlib = extras.require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted((e["avg_thinking_tokens"], 100 * e["accuracy"], e["max_thinking_tokens"]) for e in report["budgets"])
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=150)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    ax.plot(xs, ys, "-o", color="#2a6fdb", lw=1.8, ms=5)
    labels: dict[tuple[float, float], list[str]] = {}
    for x, y, b in pts:  # budgets that land on the same point share one label
        labels.setdefault((round(x, 6), round(y, 6)), []).append(str(b))
    for (x, y), bs in labels.items():
        ax.annotate("max " + ", ".join(bs), (x, y), textcoords="offset points", xytext=(3, 5), fontsize=7,
                    color="#555")
    ax.set_xlabel("average thinking time (tokens)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"budget forcing: accuracy vs thinking tokens ({report['rows']} rows)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
