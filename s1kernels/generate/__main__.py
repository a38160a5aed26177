"""`python -m s1kernels.generate`: generate with s1 budget forcing from a model folder.

    python -m s1kernels.generate --model runs/default --prompt $'Start 8\\nA + 7 = ?\\nResult mod 10 ?'
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from s1kernels.cli import add_budget_sampling_args, budget_sampling_from_args, delimiters_from_args
from s1kernels import checks, extras
from s1kernels.control import read_row
from s1kernels.data.readers import BLANK, iter_jsonl, question_of
from s1kernels.generate import generate
from s1kernels.ops.decode import ForcingTokens
from s1kernels.runtime import load_model_and_tokenizer, set_cpu_threads


def _read_prompts_file(path: str) -> list[str]:
    """Questions of a .jsonl/.json file (one object or string per line) or of a text file (one
    per line); every error names the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompts-file: no file at {path!r}")
    prompts = []
    if path.endswith(".jsonl") or path.endswith(".json"):
        for where, row in iter_jsonl(path):
            if row is BLANK:
                continue
            if isinstance(row, Exception):
                raise ValueError(f"--prompts-file: {row}")
            q = question_of(row) if isinstance(row, dict) else row
            if not isinstance(q, str) or not q.strip():
                raise checks.argument_error(f"--prompts-file: {where}",
                                            "a question/problem/prompt text or a JSON string",
                                            type(q).__name__)
            prompts.append(q)
        return prompts
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"--prompts-file: {path}:line {n}: not UTF-8 text (byte {line[e.start]:#04x} "
                                 f"at column {e.start + 1})") from None
            if text.strip():
                prompts.append(text.rstrip("\n"))
    return prompts


def waits_text(waits: int, budget) -> str:
    """"waits: N", saying where waits past --num-waits came from: in wait mode an end of
    thinking before --min-thinking-tokens is answered with a "Wait" too, so `--num-waits 1
    --min-thinking-tokens 90` can use two."""
    extra = waits - budget.num_waits
    if extra <= 0 or budget.mode != "wait":
        return f"waits: {waits}"
    return (f"waits: {waits} ({budget.num_waits} for --num-waits, {extra} more to reach "
            f"--min-thinking-tokens {budget.min_thinking_tokens})")


@extras.cli_errors
def main(argv: Sequence[str] | None = None) -> int:
    p = checks.Parser(prog="python -m s1kernels.generate",
                                description="Generate with s1 budget forcing from a model folder.")
    p.add_argument("--model", default="runs/default", help="checkpoint folder (default runs/default)")
    p.add_argument("--prompt", action="append", default=[], help="a question (repeatable)")
    p.add_argument("--prompts-file", default=None, help="questions: .jsonl (question/problem field) or text lines")
    p.add_argument("--raw", action="store_true", help="use prompts as they are (no chat format, no think start)")
    p.add_argument("--max-thinking-tokens", type=checks.arg_int(0, 2**31 - 1), default=256,
                   help="thinking budget (default 256)")
    add_budget_sampling_args(p)
    p.add_argument("--output", default=None, help="write results as JSON lines here")
    p.add_argument("--no-stream", action="store_true", help="do not stream a single prompt to the terminal")
    args = p.parse_args(argv)

    # everything that can be wrong with the arguments is found before the model is loaded and
    # the prompts generated: the output path, the device, the budget and sampling values
    if args.output:
        checks.writable_file(args.output, "--output")
    checks.check_device(args.device)
    budget, sampling = budget_sampling_from_args(args, args.max_thinking_tokens)
    budget.rows(1), sampling.rows(1)  # the range checks, before any work
    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += _read_prompts_file(args.prompts_file)
    if not prompts:
        p.error("give --prompt or --prompts-file")
    model, tokenizer = load_model_and_tokenizer(args.model, args.device, args.dtype)
    set_cpu_threads(model, args.threads)
    stream = len(prompts) == 1 and not args.no_stream and args.output is None
    delims = delimiters_from_args(args)
    forcing = ForcingTokens.from_tokenizer(tokenizer, answer_start=delims["answer_start"],
                                           wait_string=delims["wait_string"], final_answer=delims["final_answer"])
    if stream:
        sys.stdout.write(delims["think_start"] if not args.raw else "")
    results = generate(model, tokenizer, prompts, budget=budget, sampling=sampling,
                       max_new_tokens=args.max_new_tokens, stream=stream, chat=not args.raw, forcing=forcing,
                       think_start=delims["think_start"],
                       batch_size=args.batch_size, cuda_graph=not args.no_cuda_graph, backend=args.backend,
                       vocab_size=args.vocab_size, progress=len(prompts) > 1)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    for i, r in enumerate(results):
        if not stream:
            print(f"=== prompt {i}: {prompts[i]}")
            print(delims["think_start"] + r.text if not args.raw else r.text)
        # measured on the emitted ids (as eval's Control is), not read off the decoder's counter;
        # thinking written after the first answer counts (s1kernels.control.read_row)
        thinking = read_row(r.token_ids, forcing, tokenizer).thinking_tokens
        print(f"[thinking tokens: {thinking}, {waits_text(r.waits_used, budget)}, forced exit: "
              f"{'yes' if r.forced_exit else 'no'}, finished: {r.finished_reason}, answer: {r.answer}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
