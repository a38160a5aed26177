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
``Answer:``) and checked against the reference (normalised strings and numbers, math-verify
when installed).

Reported per budget, following s1 (section 3.2 of the paper):
- accuracy: share of rows answered correctly;
- avg_thinking_tokens: mean length of the thinking span, measured on the emitted tokens
  (after the think marker, before the end-of-thinking token; s1kernels.control);
- control: share of rows whose measured thinking length is within [min, max] budget (100% is
  the goal; measured on the output, so a budget the decoder failed to enforce shows here);
- decoder_disagreements: rows where the decoder's own thinking counter differs from the
  measured length (0 when the forcing works);
and over all budgets s1's Scaling (mean slope of accuracy vs average thinking tokens over
all pairs of budgets) and Performance (best accuracy).
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Sequence

from s1kernels import checks, extras
from s1kernels.answers import score
from s1kernels.control import control, thinking_span
from s1kernels.data.readers import BLANK, detect_benchmark, iter_jsonl, question_of, read_benchmark
from s1kernels.generate import generate
from s1kernels.generate.sharded import generate_sharded

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
            raise ValueError(f"--data: row {n} of {path} is a {type(r).__name__}, expected a JSON object")
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
    pts = sorted(points)
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.combinations(pts, 2) if b[0] > a[0]]
    return {
        "scaling_slope": (sum(slopes) / len(slopes)) if slopes else None,
        "performance": max((p[1] for p in pts), default=None),
    }


def evaluate(model, tokenizer, rows: list[dict], budgets: Sequence[int], *, min_thinking_tokens: int = 0,
             num_waits: int = 0, max_answer_tokens: int = 64, mode: str = "wait", sampling=None,
             use_math_verify: bool = True, keep_rows: bool = False, progress: bool = True, **gen_kwargs) -> dict:
    """Runs ``generate`` at each max thinking budget and scores the answers; returns the report."""
    from s1kernels.ops.decode import Budget, ForcingTokens

    if not budgets:
        raise ValueError("budgets: expected at least one thinking budget")
    if any(int(b) < 1 for b in budgets):
        raise ValueError(f"budgets: expected positive token counts, got {list(budgets)}")
    questions = [r["question"] for r in rows]
    forcing = gen_kwargs.pop("forcing", None)
    delims = {k: gen_kwargs.pop(k) for k in ("answer_start", "wait_string", "final_answer") if k in gen_kwargs}
    if forcing is None:
        forcing = ForcingTokens.from_tokenizer(tokenizer, **delims)
    per_budget = []
    iterator = list(budgets)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="budgets", unit="budget")
    for max_think in iterator:
        max_think = int(max_think)
        budget = Budget(min_thinking_tokens=min(min_thinking_tokens, max_think), max_thinking_tokens=max_think,
                        num_waits=num_waits, max_answer_tokens=max_answer_tokens, mode=mode)
        t0 = time.perf_counter()
        results = generate_sharded(model, tokenizer, questions, budget=budget, sampling=sampling, forcing=forcing,
                                   generate_fn=generate, **gen_kwargs)
        seconds = time.perf_counter() - t0
        # thinking lengths read off the emitted tokens, not the decoder's counter
        thinking = [thinking_span(r.token_ids, forcing.end_think_ids, forcing.eos_ids).tokens for r in results]
        correct = []
        records = []
        for row, res, n_think in zip(rows, results, thinking):
            pred, ok = score(row.get("kind", "math"), res.answer_text or None, row["answer"],
                             use_math_verify=use_math_verify)
            correct.append(ok)
            if keep_rows:
                records.append({"question": row["question"], "answer": row["answer"], "prediction": pred,
                                "correct": ok, "thinking_tokens": n_think,
                                "decoder_thinking_tokens": res.thinking_tokens, "waits_used": res.waits_used,
                                "forced_exit": res.forced_exit, "finished_reason": res.finished_reason,
                                "text": res.text})
        n = len(rows)
        reasons: dict[str, int] = {}
        for r in results:
            reasons[r.finished_reason] = reasons.get(r.finished_reason, 0) + 1
        entry = {
            "max_thinking_tokens": max_think,
            "accuracy": sum(correct) / n if n else 0.0,
            "avg_thinking_tokens": sum(thinking) / n if n else 0.0,
            "max_observed_thinking_tokens": max(thinking, default=0),
            "control": control(thinking, max_think, budget.min_thinking_tokens),
            "decoder_disagreements": sum(r.thinking_tokens != t for r, t in zip(results, thinking)),
            "forced_exit_rate": sum(r.forced_exit for r in results) / n if n else 0.0,
            "avg_waits_used": sum(r.waits_used for r in results) / n if n else 0.0,
            "finished": reasons,
            "generated_tokens": sum(len(r.token_ids) for r in results),
            "seconds": seconds,
        }
        if keep_rows:
            entry["rows"] = records
        per_budget.append(entry)
    summary = scaling_metrics([(e["avg_thinking_tokens"], e["accuracy"]) for e in per_budget])
    summary["control"] = min(e["control"] for e in per_budget)
    return {
        "rows": len(rows),
        "settings": {"min_thinking_tokens": min_thinking_tokens, "num_waits": num_waits,
                     "max_answer_tokens": max_answer_tokens, "mode": mode},
        "budgets": per_budget,
        "summary": summary,
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
