"""Command line: pack s1-format rows into safetensors shards, or write the built-in task.

    python -m s1kernels.data --input rows.jsonl --tokenizer default --block-size 2048 --output packed/
    python -m s1kernels.data --make-synthetic 5000 --output synthetic.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import sys


from s1kernels import checks, extras
from s1kernels.data.format import render_rows
from s1kernels.data.packing import pack
from s1kernels.data.readers import read_rows, write_jsonl
from s1kernels.data.synthetic import DEFAULT_TASK, TASKS, make_rows
from s1kernels.data.tokenizer import S1Tokenizer, build_default_tokenizer


def build_parser() -> argparse.ArgumentParser:
    p = checks.Parser(
        prog="python -m s1kernels.data",
        description="Turn s1-format rows (JSONL or Parquet; columns question, thinking_trajectories, "
        "attempt, or problem/solution/answer) into packed safetensors shards for training; "
        "or write the built-in synthetic task as JSONL (--make-synthetic).",
    )
    p.add_argument("--input", help="rows to pack: a .jsonl or .parquet file")
    p.add_argument("--tokenizer", default="default",
                   help="a tokenizer folder (tokenizer.json [+ tokenizer_config.json]) or 'default' "
                   "for the built-in tokenizer (default: %(default)s)")
    p.add_argument("--block-size", type=checks.arg_int(2, 1 << 24), default=2048, help="tokens per packed row (default: %(default)s)")
    p.add_argument("--output", required=True,
                   help="output folder for the shards (packing) or output .jsonl file (--make-synthetic)")
    p.add_argument("--overlong", "--policy", dest="overlong", choices=("truncate", "drop"), default="truncate",
                   help="samples longer than the block: keep the first block-size tokens or leave them out "
                   "(default: %(default)s); either way they are counted")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip malformed rows (counted and reported) instead of stopping at the first")
    p.add_argument("--rows-per-shard", type=checks.arg_int(1), default=1024, help="packed rows per shard file (default: %(default)s)")
    p.add_argument("--system", default=None, help="system message for the prompt (default: the template's)")
    p.add_argument("--make-synthetic", type=checks.arg_int(0, 10**8), metavar="N",
                   help="write N rows of the built-in synthetic task to --output (JSONL) and exit")
    p.add_argument("--seed", type=checks.arg_int(0, 2**63 - 1), default=0, help="seed for --make-synthetic (default: %(default)s)")
    p.add_argument("--task", choices=tuple(TASKS), default=DEFAULT_TASK,
                   help="--make-synthetic: recheck (slips, Wait, checking; the default) or chain (the earlier task)")
    p.add_argument("--min-steps", type=checks.arg_int(1), default=None, help="--make-synthetic: fewest steps per question (task default 6)")
    p.add_argument("--max-steps", type=checks.arg_int(1), default=None, help="--make-synthetic: most steps per question (task default 6)")
    p.add_argument("--max-operand", type=checks.arg_int(1), default=None, help="--make-synthetic: operands are 1..N (task default 3)")
    p.add_argument("--ops", default=None, help="--make-synthetic: step operations among + - * (task default +)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def load_tokenizer(spec: str) -> S1Tokenizer:
    """'default' -> the built-in tokenizer, else a tokenizer folder."""
    return build_default_tokenizer() if spec == "default" else S1Tokenizer.from_folder(spec)


def pack_file(args) -> dict:
    """Read, render, pack and write shards; returns the summary dict (also written as summary.json)."""
    tok = load_tokenizer(args.tokenizer)
    rows, read_stats = read_rows(args.input, skip_bad=args.skip_bad)
    if not rows:  # zero shards would "succeed" and leave training nothing to read
        why = (f"all {read_stats['skipped']} rows were skipped as bad (--skip-bad)" if read_stats["skipped"]
               else "it holds no rows")
        raise ValueError(f"--input: nothing to pack from {os.fspath(args.input)!r}: {why}")
    samples = render_rows(tok, rows, system=args.system, progress=not args.quiet)
    packed = pack(samples, args.block_size, tok.pad_id, overlong=args.overlong)
    os.makedirs(args.output, exist_ok=True)
    shards = []
    n = packed.num_rows
    for k, start in enumerate(range(0, n, args.rows_per_shard)):
        name = f"shard-{k:05d}.safetensors"
        packed.select(slice(start, min(n, start + args.rows_per_shard))).save(os.path.join(args.output, name))
        shards.append(name)
    tok.save(args.output)  # the shards' token ids only mean something with their tokenizer
    summary = {
        **packed.stats,
        "block_size": args.block_size,
        "overlong": args.overlong,
        "input": os.fspath(args.input),
        "skipped_rows": read_stats["skipped"],
        "skipped_errors": read_stats["errors"],
        "shards": shards,
    }
    with open(os.path.join(args.output, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


@extras.cli_errors
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.make_synthetic is not None:
        checks.writable_file(args.output, "--output")
        try:
            rows = make_rows(args.make_synthetic, seed=args.seed, task=args.task, min_steps=args.min_steps,
                             max_steps=args.max_steps, ops=args.ops, max_operand=args.max_operand)
        except ValueError as e:
            parser.error(str(e))
        write_jsonl(rows, args.output)
        print(f"wrote {args.make_synthetic} synthetic rows to {args.output}")
        return 0
    if not args.input:
        parser.error("--input is required (or use --make-synthetic N)")
    checks.writable_dir(args.output, "--output")  # before tokenizing, not after
    try:
        s = pack_file(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"samples {s['samples']} (packed {s['packed']}, truncated {s['truncated']}, dropped {s['dropped']}, "
        f"empty {s['empty']}, skipped rows {s['skipped_rows']}) | tokens {s['tokens']} | trained tokens "
        f"{s['trained_tokens']} | rows {s['rows']} x {s['block_size']} | fill rate {s['fill_rate']:.3f} "
        f"| {len(s['shards'])} shard(s) in {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
