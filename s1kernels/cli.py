"""What the command-line tools share: the budget/sampling/runtime flags of generate and eval,
and turning parsed flags into `Budget`/`Sampling` and delimiter arguments. Only __main__
modules import this file; the loader and device/thread defaults they call are in
s1kernels.runtime.
"""
from __future__ import annotations

import argparse

from s1kernels import checks
from s1kernels.data.format import ANSWER_START, FINAL_ANSWER, THINK_START
from s1kernels.ops.decode import Budget, Sampling
from s1kernels.ops.decode.fields import BUDGET, SAMPLING


def add_budget_sampling_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by generate and eval (budget forcing, sampling, delimiters, runtime)."""
    g = p.add_argument_group("budget forcing")
    g.add_argument("--min-thinking-tokens", type=checks.arg_int(0, 2**31 - 1), default=0,
                   help="thinking may not end before this many tokens (default 0)")
    g.add_argument("--num-waits", type=checks.arg_int(0, 2**31 - 1), default=0,
                   help="ignore the end of thinking this many times (s1's NUM_IGNORE; default 0); an end "
                        "before --min-thinking-tokens gets a Wait as well, so more waits can be used")
    g.add_argument("--wait-string", default="Wait", help='text injected instead of the end of thinking ("Wait")')
    g.add_argument("--mode", choices=("wait", "suppress"), default="wait",
                   help="before the minimum/waits are met: replace the end of thinking with the wait "
                        "string (wait) or forbid it (suppress)")
    g.add_argument("--max-answer-tokens", type=checks.arg_int(1, 2**31 - 1), default=64, help="answer tokens before the row is cut (64)")
    g.add_argument("--think-start", default=THINK_START.replace("\n", "\\n"),
                   help="text that opens the thinking block, ends every prompt (\\n = newline)")
    g.add_argument("--answer-start", default=ANSWER_START.replace("\n", "\\n"),
                   help="text that closes thinking and opens the answer; its first token is the "
                        "end-of-thinking token, the rest is injected after it")
    g.add_argument("--final-answer", default=None,
                   help=f"text appended after a forced exit (default {FINAL_ANSWER!r}; eval on the built-in task: "
                        "the task's trained 'Answer:')")
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=checks.arg_float(0), default=0.0, help="0 = greedy (default)")
    s.add_argument("--top-p", type=checks.arg_float(0, 1, lo_open=True), default=1.0)
    s.add_argument("--top-k", type=checks.arg_int(0, 2**31 - 1), default=0)
    s.add_argument("--min-p", type=checks.arg_float(0, 1), default=0.0)
    s.add_argument("--seed", type=checks.arg_int(-(2**63), 2**63 - 1), default=0, help="row i samples with seed + i")
    r = p.add_argument_group("runtime")
    r.add_argument("--max-new-tokens", type=checks.arg_int(1, 2**31 - 1), default=None,
                   help="cap on generated tokens per row (default: thinking budget + forced exit + answer cap)")
    r.add_argument("--batch-size", type=checks.arg_int(1), default=None, help="rows decoded together (default: all)")
    r.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    r.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    r.add_argument("--backend", default="auto", choices=("auto", "cuda", "cpp", "torch"),
                   help="decode step backend")
    r.add_argument("--no-cuda-graph", action="store_true", help="run the decode step eagerly on CUDA")
    r.add_argument("--vocab-size", type=checks.arg_int(1, 1 << 24), default=None,
                   help="logit rows that are real tokens; padded lm_head rows past it are never sampled "
                        "(default: the tokenizer's size)")
    r.add_argument("--threads", type=checks.arg_int(1, 4096), default=None,
                   help="CPU threads for torch (default: 1 for models under 20M parameters on CPU, whose ops "
                        "are too small to split, else torch's default capped at the CPUs other processes "
                        "leave idle, by the load average)")


def _unescape(text: str) -> str:
    """Delimiters typed on a command line: "\\n" and "\\t" stand for a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def delimiters_from_args(args) -> dict:
    """The delimiter keyword arguments of ``generate`` from parsed CLI flags."""
    return dict(think_start=_unescape(args.think_start), answer_start=_unescape(args.answer_start),
                wait_string=_unescape(args.wait_string),
                final_answer=_unescape(FINAL_ANSWER if args.final_answer is None else args.final_answer))


def budget_sampling_from_args(args, max_thinking_tokens: int):
    """`Budget` and `Sampling` from the parsed flags: each field of the decode step's table
    (s1kernels/ops/decode/fields.py) is read from the flag of the same name."""
    budget = Budget(**{f.name: getattr(args, f.name) for f in BUDGET if f.name != "max_thinking_tokens"},
                    max_thinking_tokens=max_thinking_tokens)
    sampling = Sampling(**{f.name: getattr(args, f.name) for f in SAMPLING})
    return budget, sampling
