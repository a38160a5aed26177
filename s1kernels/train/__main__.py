"""`python -m s1kernels.train`: flags (and --config) -> TrainConfig, validated once, then
s1kernels.train.train (the module docstring of s1kernels.train describes the run).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from s1kernels import checks
from s1kernels.extras import MissingExtra
from s1kernels.runtime import SMALL_MODEL_PARAMS
import s1kernels.train as train_api
from s1kernels.train import TINY_DEFAULTS, TrainConfig, train
from s1kernels import distributed as dist_utils
from s1kernels.train.data import OVERLONG_POLICIES
from s1kernels.train.validate import check_train_config


def _fields():
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def parse_args(argv=None) -> TrainConfig:
    p = checks.Parser(prog="python -m s1kernels.train", description=train_api.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
    p.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    p.add_argument("--model", help="HF-format model folder (config.json, safetensors, tokenizer.json)")
    p.add_argument("--data", help="JSONL/Parquet s1-format rows, or a packed .safetensors shard / folder of shards")
    p.add_argument("--output", help="output folder (default runs/default)")
    p.add_argument("--lr", type=float)
    p.add_argument("--min-lr-ratio", type=float, help="cosine floor as a fraction of --lr")
    p.add_argument("--betas", type=float, nargs=2)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-ratio", type=float)
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--block-size", type=int, help="tokens per packed row")
    p.add_argument("--micro-batch", type=int, help="packed rows per forward pass")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (per rank)")
    p.add_argument("--normalize", choices=("token", "sequence"), help="loss mean over trained tokens or samples")
    p.add_argument("--max-grad-norm", type=float, help="gradient clipping (0: off)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                   help="bf16 compute (FSDP: bf16 params, fp32 grads and master weights; one process: autocast)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction)
    p.add_argument("--overlong", choices=OVERLONG_POLICIES,
                   help="a sample longer than --block-size: truncate (default), drop, or error")
    p.add_argument("--seed", type=int)
    p.add_argument("--synthetic-rows", type=int, help="rows of the built-in task (without --data)")
    p.add_argument("--max-samples", type=int, help="use only the first N rows of --data")
    p.add_argument("--save-every", type=int, help="steps between resumable checkpoints (0: final only)")
    p.add_argument("--keep-checkpoints", type=int)
    p.add_argument("--resume", nargs="?", const="latest", help="resume from the latest checkpoint in --output, or a path")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace the run an existing --output folder holds (its checkpoints and model)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--eval-rows", type=int, help="built-in task: greedy accuracy on N held-out rows at the end")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, help="tqdm progress bar")
    p.add_argument("--vocab-size", type=int,
                   help="real vocabulary size: lm_head rows past it (padding) take no probability in the loss "
                        "(default: the tokenizer's size)")
    p.add_argument("--loss-backend", help="linear_cross_entropy backend (auto, triton, torch)")
    p.add_argument("--threads", type=int,
                   help=f"CPU threads for torch (default: 1 for a model under {SMALL_MODEL_PARAMS // 10**6}M "
                        "parameters on a CPU, else torch's default capped at the CPUs other processes leave idle)")
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size"):
        p.add_argument("--" + name.replace("_", "-"), type=int, help="tiny model (without --model)")
    args = vars(p.parse_args(argv))

    file_cfg = {}
    cfg_path = args.pop("config")
    if cfg_path:
        try:
            with open(cfg_path, encoding="utf-8") as f:
                file_cfg = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            _usage_error(f"--config: cannot read {cfg_path!r}: {type(e).__name__}: {e}")
        if not isinstance(file_cfg, dict):
            _usage_error(f"--config: {cfg_path!r} must hold a JSON object")
        unknown = sorted(set(file_cfg) - set(_fields()))
        if unknown:
            _usage_error(f"--config: unknown fields {unknown}; known: {sorted(_fields())}")
    cli = {k: v for k, v in args.items() if v is not None}
    model_given = cli.get("model", file_cfg.get("model")) is not None
    merged = {} if model_given else dict(TINY_DEFAULTS)
    merged.update(file_cfg)
    merged.update(cli)
    if isinstance(merged.get("betas"), list):
        merged["betas"] = tuple(merged["betas"])
    cfg = TrainConfig(**merged)
    try:
        check_train_config(cfg)
    except (TypeError, ValueError) as e:
        _usage_error(f"{e}" + (f" (from --config {cfg_path})" if cfg_path else ""))
    return cfg


def _usage_error(message: str):
    """Exit status 2 with one line, as argparse does for a flag it cannot parse."""
    print(f"python -m s1kernels.train: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        summary = train(cfg)
    except (ValueError, TypeError, FileNotFoundError, MissingExtra) as e:
        # the checks that raise these run on every rank alike, so every rank stops here
        print(f"error: {e}", file=sys.stderr)
        dist_utils.cleanup()
        return 2
    if dist_utils.world()[0] == 0:
        print("; ".join(summary_parts(summary)))
        if summary.get("eval_example"):
            print("example completion:\n" + summary["eval_example"])
    return 0


def summary_parts(summary: dict) -> list[str]:
    """The closing line's parts. A resumed run says which steps this process trained, and a
    finished run resumed again that it trained none."""
    total, start = summary["steps"], summary.get("start_step", 0)
    size = f"a {summary['params'] / 1e6:.2f}M-parameter model"
    if start >= total:
        parts = [f"nothing to train: the run had already trained all {total} steps of {size}"]
    elif start:
        parts = [f"trained steps {start + 1}-{total} of {total} (resumed at step {start}) of {size} in "
                 f"{summary['seconds']:.0f}s"]
    else:
        parts = [f"trained {total} steps of {size} in {summary['seconds']:.0f}s"]
    if "first_loss" in summary:
        parts.append(f"loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}")
    if "eval_accuracy" in summary:
        parts.append(f"greedy accuracy on {summary['eval_rows']} held-out rows: {summary['eval_accuracy']:.1%}")
    parts.append(f"saved to {summary['output']}")
    return parts


if __name__ == "__main__":
    sys.exit(main())
