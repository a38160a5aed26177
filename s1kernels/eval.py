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

import atexit
import itertools
import json
import os
import sys
import time
from typing import Sequence

from s1kernels import checks, extras
from s1kernels.answers import score
from s1kernels.control import control, thinking_span
from s1kernels.cli import (
    add_budget_sampling_args,
    budget_sampling_from_args,
    delimiters_from_args,
    load_model_and_tokenizer,
    set_cpu_threads,
)
from s1kernels.data.synthetic import FORCED_ANSWER
from s1kernels.data.readers import BENCHMARKS, BLANK, detect_benchmark, iter_jsonl, question_of, read_benchmark
from s1kernels.generate import generate
from s1kernels.generate.sharded import generate_sharded

__all__ = ["EVAL_SEED", "load_eval_rows", "training_questions", "evaluate", "scaling_metrics", "plot_scaling", "main"]

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


def _print_table(report: dict) -> None:
    print(f"{'budget':>8} {'accuracy':>9} {'avg think':>10} {'control':>8} {'forced':>7}")
    for e in report["budgets"]:
        print(f"{e['max_thinking_tokens']:>8} {100 * e['accuracy']:>8.1f}% {e['avg_thinking_tokens']:>10.1f} "
              f"{100 * e['control']:>7.1f}% {100 * e['forced_exit_rate']:>6.1f}%")
    for e in report["budgets"]:
        if e.get("decoder_disagreements"):
            print(f"warning: at budget {e['max_thinking_tokens']}, {e['decoder_disagreements']} rows' thinking length "
                  f"differs from the decoder's own count: the budget forcing is not doing what it believes")
    s = report["summary"]
    slope = "n/a" if s["scaling_slope"] is None else f"{100 * s['scaling_slope']:.3f} %/token"
    print(f"control {100 * s['control']:.1f}%, scaling {slope}, performance {100 * s['performance']:.1f}%")


def _init_ranks(device: str | None) -> tuple[int, str | None]:
    """Under torchrun: join the process group (NCCL on GPUs, one per rank; gloo on CPU) so the
    questions are sharded across ranks; returns (rank, device). Without torchrun: (0, device)."""
    from s1kernels.training import distributed

    if distributed.world()[2] == 1:
        return 0, device
    import torch

    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev, rank, _ = distributed.init("cuda" if want.startswith("cuda") else "cpu")
    atexit.register(distributed.cleanup)
    return rank, str(dev)


@extras.cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    p = checks.Parser(prog="python -m s1kernels.eval",
                                description="Accuracy, thinking length and Control at several thinking budgets.")
    p.add_argument("--model", default="runs/default", help="checkpoint folder (default runs/default)")
    p.add_argument("--data", default=None,
                   help="JSONL/Parquet rows with problem/question and answer (default: held-out built-in task rows)")
    p.add_argument("--benchmark", choices=BENCHMARKS, default=None,
                   help="answer check for --data: math (boxed LaTeX), aime (integer) or gpqa (options; shuffled with "
                        "--seed); default: detected from the columns")
    p.add_argument("--limit", type=checks.arg_int(1), default=None, help="evaluate the first N rows")
    p.add_argument("--num-synthetic", type=checks.arg_int(1, 10**6), default=200,
                   help="built-in task rows when --data is not given")
    p.add_argument("--budgets", type=checks.arg_int(0, 2**31 - 1), nargs="+", default=[4, 8, 16, 24, 32, 48, 64],
                   help="max thinking tokens, one run each (default 4 8 16 24 32 48 64)")
    add_budget_sampling_args(p)
    p.add_argument("--no-math-verify", action="store_true", help="do not use math_verify even when installed")
    p.add_argument("--output", default=None, help="write the JSON report here")
    p.add_argument("--plot", default=None, help="write the accuracy vs thinking tokens PNG here")
    p.add_argument("--save-rows", action="store_true", help="keep every row's prediction and text in the report")
    args = p.parse_args(argv)
    # before the evaluation, not after it: outputs writable, the device present, plotting installed
    if args.output:
        checks.writable_file(args.output, "--output")
    if args.plot:
        checks.writable_file(args.plot, "--plot", (".png",))
        extras.require("matplotlib", "--plot")
    checks.check_device(args.device)
    budget, sampling = budget_sampling_from_args(args, max(args.budgets))
    budget.tensors(1, "cpu"), sampling.tensors(1, "cpu")  # range checks, in the kernels' dtypes

    exclude = training_questions(args.model) if args.data is None else set()
    if args.data is None and args.final_answer is None:
        args.final_answer = FORCED_ANSWER  # the built-in task's trained answer prefix, not s1's "Final Answer:"
    rows = load_eval_rows(args.data, args.limit, args.num_synthetic, exclude, args.benchmark, args.seed)
    if not rows:
        p.error("no rows to evaluate")
    rank, device = _init_ranks(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, device, args.dtype)
    set_cpu_threads(model, args.threads)
    report = evaluate(model, tokenizer, rows, args.budgets, min_thinking_tokens=args.min_thinking_tokens,
                      num_waits=args.num_waits, max_answer_tokens=args.max_answer_tokens, mode=args.mode,
                      sampling=sampling, use_math_verify=not args.no_math_verify, keep_rows=args.save_rows,
                      progress=rank == 0, max_new_tokens=args.max_new_tokens, **delimiters_from_args(args),
                      batch_size=args.batch_size, cuda_graph=not args.no_cuda_graph, backend=args.backend,
                      vocab_size=args.vocab_size)
    report["model"] = os.path.abspath(args.model)
    report["data"] = args.data or (f"built-in task, seed {EVAL_SEED}, unique questions"
                                   + (f", {len(exclude)} training questions excluded" if exclude else ""))
    if rank != 0:  # every rank holds the whole report; one writes it
        return 0
    _print_table(report)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"report: {args.output}")
    if args.plot:
        plot_scaling(report, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
