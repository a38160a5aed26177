"""The evaluation's two commands: `python -m s1kernels.eval` (accuracy, thinking length and
Control at several thinking budgets; see s1kernels.eval) and the whole suite, `suite_main`,
which `python -m s1kernels.evaluation` runs (see s1kernels.eval.suite).
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import sys
from typing import Sequence

from s1kernels import checks, extras
from s1kernels.cli import add_budget_sampling_args, budget_sampling_from_args, delimiters_from_args
from s1kernels.data.format import FINAL_ANSWER
from s1kernels.data.readers import BENCHMARKS, read_benchmark
from s1kernels.data.synthetic import FORCED_ANSWER
from s1kernels.eval import EVAL_SEED, evaluate, load_eval_rows, plot_scaling, training_questions
from s1kernels.eval import runs
from s1kernels.eval import suite
from s1kernels.eval.plots import plot_sequential_vs_parallel
from s1kernels.runtime import load_model_and_tokenizer, set_cpu_threads


def _print_table(report: dict) -> None:
    # "late": rows that went on thinking after their first answer (counted in "avg think")
    print(f"{'budget':>8} {'accuracy':>9} {'avg think':>10} {'control':>8} {'forced':>7} {'late':>6}")
    for e in report["budgets"]:
        print(f"{e['max_thinking_tokens']:>8} {100 * e['accuracy']:>8.1f}% {e['avg_thinking_tokens']:>10.1f} "
              f"{100 * e['control']:>7.1f}% {100 * e['forced_exit_rate']:>6.1f}% {e['late_thinking_rows']:>6}")
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
    from s1kernels import distributed

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
    # evaluate clips the minimum to each budget ("--min-thinking-tokens 100000": think the whole budget)
    budget = dataclasses.replace(budget, min_thinking_tokens=min(args.min_thinking_tokens, max(args.budgets)))
    budget.rows(1), sampling.rows(1)  # the range checks, before any work

    exclude = training_questions(args.model) if args.data is None else set()
    if args.data is None and args.final_answer is None:
        args.final_answer = FORCED_ANSWER  # the built-in task's trained answer prefix, not s1's "Final Answer:"
    rows = load_eval_rows(args.data, args.limit, args.num_synthetic, exclude, args.benchmark, args.seed)
    if not rows:
        p.error("no rows to evaluate")
    rank, device = _init_ranks(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, device, args.dtype)
    set_cpu_threads(model, args.threads)
    report = evaluate(model, tokenizer, rows, args.budgets, budget=budget, sampling=sampling,
                      use_math_verify=not args.no_math_verify, keep_rows=args.save_rows,
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


def _vllm_engine(args):
    """The tokenizer and a VLLMGenerate over a vLLM engine for --engine vllm."""
    from s1kernels.data.tokenizer import S1Tokenizer
    from s1kernels.extras import require

    require("vllm", "--engine vllm")
    from vllm import LLM

    from s1kernels.integrations.vllm import BudgetForcingLogitsProcessor, VLLMGenerate

    kw = {"max_model_len": args.max_model_len} if args.max_model_len else {}
    llm = LLM(model=args.model, dtype=args.dtype if args.dtype != "auto" else "auto", seed=args.seed,
              logits_processors=[BudgetForcingLogitsProcessor], **kw)
    return S1Tokenizer.from_folder(args.model), VLLMGenerate(llm)


def suite_main(argv: Sequence[str] | None = None) -> int:
    """`python -m s1kernels.evaluation`: every method of the suite on one model."""
    p = argparse.ArgumentParser(prog="python -m s1kernels.evaluation", description=suite.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/default", help="checkpoint folder (default runs/default)")
    p.add_argument("--data", default=None, help="benchmark file (default: held-out built-in task rows)")
    p.add_argument("--benchmark", choices=BENCHMARKS, default=None, help="math, aime or gpqa (default: detected)")
    p.add_argument("--limit", type=int, default=None, help="first N rows of --data")
    p.add_argument("--num-synthetic", type=int, default=100, help="built-in task rows (default 100)")
    p.add_argument("--out", default=None, help="output folder (default <model>/suite)")
    p.add_argument("--methods", nargs="+", default=list(suite.METHODS), choices=suite.METHODS)
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
    p.add_argument("--engine", choices=["s1kernels", "vllm"], default="s1kernels",
                   help="generate with s1kernels.generate (default) or a vLLM engine through its offline LLM API "
                        "and s1kernels' budget-forcing logits processor (needs vLLM)")
    p.add_argument("--max-model-len", type=checks.arg_int(16), default=None,
                   help="--engine vllm: the engine's context length (default: the model's)")
    args = p.parse_args(argv)

    if args.data is None:
        rows = load_eval_rows(None, None, args.num_synthetic, training_questions(args.model))
        rows = [dict(r, kind="aime") for r in rows]  # one-digit integer answers
        kind, defaults, source = "built-in", suite.BUILTIN, f"built-in task, seed {EVAL_SEED}, held out"
    else:
        rows, kind = read_benchmark(args.data, args.benchmark, seed=args.seed, limit=args.limit)
        defaults, source = suite.FILES, args.data
    if not rows:
        p.error("no rows to evaluate")
    cfg = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    engine = {}
    if args.engine == "vllm":
        try:
            model, tok, engine["engine"] = None, *_vllm_engine(args)
        except extras.MissingExtra as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        model, tok = load_model_and_tokenizer(args.model, args.device, args.dtype)
        set_cpu_threads(model, args.threads)
    result = suite.run_suite(model, tok, rows, methods=args.methods, samples=args.samples, temperature=args.temperature,
                       max_attempts=args.max_attempts, seed=args.seed, strings=args.strings,
                       batch_size=args.batch_size, **cfg, **engine)
    out = args.out or os.path.join(args.model, "suite")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "rows.jsonl"), "w", encoding="utf-8") as f:
        for r in result.pop("records"):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    notes = [f"{s!r} encodes to {n} unknown token(s) with this tokenizer" for s in args.strings
             if s != "none" and (n := runs.unknown_tokens(tok, s))]
    report = {"model": os.path.abspath(args.model), "engine": args.engine, "data": source, "kind": kind, "rows": len(rows), "settings": cfg,
              "temperature": args.temperature, "notes": notes, **result}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    if result["methods"]:
        table = suite.baselines_table(result)
        with open(os.path.join(out, "baselines.md"), "w", encoding="utf-8") as f:
            f.write(table)
        print(table)
    if "extensions" in result:
        table = suite.extensions_table(result["extensions"])
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
