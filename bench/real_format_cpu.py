"""The s1 training format rendered with a real tokenizer on the shared s1K / MATH500 data.

    python bench/real_format_cpu.py --tokenizer QWEN_TOKENIZER_FOLDER --out bench/results/real-format-qwen.md

MATH500 rows become s1 samples (problem -> question, solution -> the thinking trace,
answer -> answer), rendered in the chat format with the tokenizer's template and packed
into blocks of --block-size tokens (s1 trains Qwen2.5-32B with 32,768-token blocks). The
s1K questions have no traces in ../shared/data, so for them only the prompt (system + user
turn + assistant header + thinking start) is measured. Reported: tokens per sample, the
packing fill rate, and the share of tokens that carry a loss (the assistant turn).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cpu_report import write_report  # noqa: E402

from s1kernels.data.format import THINK_START, prompt_text, render_sample  # noqa: E402
from s1kernels.data.packing import pack  # noqa: E402
from s1kernels.data.readers import read_rows  # noqa: E402
from s1kernels.data.tokenizer import S1Tokenizer  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data")


def _dist(xs: list[int]) -> str:
    xs = sorted(xs)
    p90 = xs[int(0.9 * (len(xs) - 1))]
    return f"mean {statistics.mean(xs):.1f}, median {statistics.median(xs):.0f}, p90 {p90}, max {xs[-1]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (tokenizer.json + chat template)")
    p.add_argument("--data", default=DATA if os.path.isdir(DATA) else "/work/shared/data")
    p.add_argument("--block-size", type=int, default=32768)
    p.add_argument("--name", default=None, help="the tokenizer's name in the table (default: the folder's)")
    p.add_argument("--out", default=None, help="write the markdown table here as well")
    args = p.parse_args(argv)

    tok = S1Tokenizer.from_folder(args.tokenizer)
    t0 = time.perf_counter()
    rows, _ = read_rows(os.path.join(args.data, "math500.jsonl"))
    samples = [render_sample(tok, r["question"], r["thinking"], r["answer"]) for r in rows]
    packed = pack(samples, args.block_size, tok.pad_id)
    with open(os.path.join(args.data, "s1k_questions.jsonl"), encoding="utf-8") as f:
        questions = [json.loads(line)["question"] for line in f if line.strip()]
    prompts = [len(tok.encode(prompt_text(q, tok) + THINK_START)) for q in questions]
    seconds = time.perf_counter() - t0

    st = packed.stats
    lengths = [len(ids) for ids, _ in samples]
    trained = [sum(m) for _, m in samples]
    lines = [
        f"# s1 format with a real tokenizer ({args.name or os.path.basename(os.path.normpath(args.tokenizer))}, "
        f"vocabulary {tok.vocab_size})",
        "",
        f"Command: `python bench/real_format_cpu.py --tokenizer {'TOKENIZER_FOLDER' if args.name else args.tokenizer} "
        f"--block-size {args.block_size}`; "
        f"machine: {platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"{seconds:.1f} s to render, count and pack.",
        "",
        "| data | samples | tokens per sample | trained tokens per sample | total tokens | trained share |"
        " block | rows | fill rate |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| MATH500 as s1 samples (problem, solution as trace, answer) | {len(samples)} | {_dist(lengths)} | "
        f"{_dist(trained)} | {st['tokens']:,} | {st['trained_tokens'] / st['tokens']:.3f} | {args.block_size:,} | "
        f"{st['rows']} | {st['fill_rate']:.3f} |",
        f"| s1K questions, prompt only (to the thinking start) | {len(prompts)} | {_dist(prompts)} | - | "
        f"{sum(prompts):,} | - | - | - | - |",
        "",
        f"Truncated samples: {st['truncated']}, dropped: {st['dropped']}, empty: {st['empty']}.",
    ]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
