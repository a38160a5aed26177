"""Pick a small, hard, diverse training set from a pool of questions, the way s1 built s1K.

    python -m s1kernels.select --input pool.jsonl --k 1000 --output s1k.jsonl \\
        [--embeddings pool.npy | --embed-model DIR] [--domain-column source_type] \\
        [--method s1|kcenter|mmr] [--dedup-threshold 0.95] [--seed 0] [--plot hist.png]

Stages (each can be switched off, each reports how many rows it removed):
  quality     broken lines, missing/short questions, image references, ASCII art, API errors
              in traces, exact duplicate question strings
  difficulty  rows a model already solves (any column whose name contains "correct" is true),
              optionally traces shorter than --min-trace-chars
  dedup       drop rows whose embedding cosine to an earlier kept row exceeds the threshold
  diversity   s1: domain drawn uniformly, then a row with weight 2^-rank by trace length;
              kcenter: farthest-point picks; mmr: relevance (trace length) vs. redundancy.
              Domains come from a column (auto: source_type/domain/subject/category/source)
              or from spherical k-means over the embeddings.
Writes the selected rows (input fields + "reason") as JSONL, deterministic under --seed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from s1kernels import extras
from s1kernels.ops import similarity as sim
from s1kernels.select import stages
from s1kernels import checks


@dataclass
class SelectConfig:
    k: int
    method: str = "s1"  # s1 | kcenter | mmr
    quality: bool = True
    difficulty: bool = True
    dedup: bool = True
    diversity: bool = True
    dedup_threshold: float = 0.95
    domain_column: str | None = None  # None: auto-detect; "" : never use a column
    clusters: int = 50
    seed: int = 0
    mmr_lambda: float = 0.5
    min_trace_chars: int = 0
    min_question_chars: int = 10


@dataclass
class Selection:
    ids: list[int]  # selected row ids (indices into the input rows), in pick order
    reasons: dict[int, str]
    table: list[tuple[str, int, int, str]]  # stage, rows in, rows out, what was removed
    domains_before: dict[str, int] = field(default_factory=dict)
    domains_after: dict[str, int] = field(default_factory=dict)
    domain_source: str = ""


def read_pool(path: str) -> list:
    """Rows of the --input file, a .jsonl / .json / .parquet (its errors name --input, as the
    other command lines name their flags); a JSONL line that does not parse becomes None (row
    ids stay aligned with line numbers of non-blank lines, as embeddings files are)."""
    if not os.path.exists(path):
        raise ValueError(f"--input: no such file {path!r}")
    if path.endswith(".parquet"):
        pq = extras.require("pyarrow.parquet", f"reading the Parquet file {path}")
        return pq.read_table(path).to_pylist()
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except UnicodeDecodeError as e:
            raise ValueError(f"--input: {path} is not UTF-8 text (byte offset {e.start})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"--input: {path}:line {e.lineno}: invalid JSON ({e.msg.removesuffix(' at')} at column {e.colno})") from None
        except RecursionError:
            raise ValueError(f"--input: {path}: invalid JSON (nested too deeply)") from None
        if not isinstance(data, list):
            raise ValueError(f"--input: {path} must hold a JSON list of objects")
        return [r if isinstance(r, dict) else None for r in data]
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except (json.JSONDecodeError, RecursionError):  # counted by the quality stage as broken
                r = None
            rows.append(r if isinstance(r, dict) else None)
    return rows


def _domain_column(rows, ids, requested):
    if requested == "":
        return None
    if requested:
        if not any(requested in rows[i] for i in ids):
            raise ValueError(f"domain-column: no row has a column {requested!r}")
        return requested
    for key in stages.DOMAIN_KEYS:
        if ids and all(isinstance(rows[i].get(key), str) for i in ids):
            return key
    return None


def _check_embeddings(emb: torch.Tensor, n_rows: int, source: str) -> torch.Tensor:
    if emb.shape[0] != n_rows:
        raise ValueError(f"embeddings: {source} has {emb.shape[0]} rows but the input has {n_rows} "
                         f"(row i must embed input row i)")
    return emb


def run_selection(rows: list, cfg: SelectConfig, embeddings: torch.Tensor | None = None,
                  embed_fn=None, log=print) -> Selection:
    """The whole pipeline. `embeddings` [len(rows), D] or `embed_fn(texts) -> [n, D]` is needed
    when dedup, k-means domains, kcenter or mmr run."""
    n = len(rows)
    if n == 0:
        raise ValueError("rows: the pool is empty (no rows)")
    if not isinstance(cfg.k, int) or cfg.k < 1:
        raise checks.argument_error("k", "a positive int", repr(cfg.k))
    if cfg.k > n:
        raise ValueError(f"k: asked for {cfg.k} rows but the pool has {n}")
    if cfg.method not in ("s1", "kcenter", "mmr"):
        raise checks.argument_error("method", "s1, kcenter or mmr", repr(cfg.method))
    if embeddings is not None:
        embeddings = _check_embeddings(embeddings, n, "the embeddings file")
    table = []
    ids = list(range(n))

    def record(stage, before, after, why):
        note = ", ".join(f"{v} {k}" for k, v in sorted(why.items(), key=lambda kv: -kv[1])) or "-"
        table.append((stage, len(before), len(after), note))

    if cfg.quality:
        kept, why = stages.quality(rows, ids, cfg.min_question_chars)
    else:
        kept = [i for i in ids if stages.question_of(rows[i]) is not None]
        why = {"unusable row (no question text)": n - len(kept)} if len(kept) < n else {}
    if embeddings is not None:  # rows whose vector cannot be compared are unusable too
        bad = ~torch.isfinite(embeddings).all(1) | (embeddings.abs().amax(dim=1) == 0)  # no norm: it underflows
        nb = [i for i in kept if bool(bad[i])]
        if nb:
            why["NaN/zero embedding"] = len(nb)
            kept = [i for i in kept if not bool(bad[i])]
    record("quality" if cfg.quality else "quality (off)", ids, kept, why)
    ids = kept

    if cfg.difficulty:
        kept, why = stages.difficulty(rows, ids, cfg.min_trace_chars)
        record("difficulty", ids, kept, why)
        ids = kept

    col = _domain_column(rows, ids, cfg.domain_column) if ids else None
    need_emb = cfg.dedup or (cfg.diversity and (cfg.method != "s1" or col is None))
    if need_emb and embeddings is None and ids:
        if embed_fn is None:
            raise ValueError("embeddings: dedup/diversity need embeddings: pass --embeddings FILE or "
                             "--embed-model DIR (or switch those stages off)")
        texts = [stages.question_of(rows[i]) for i in ids]
        sub = embed_fn(texts)
        embeddings = torch.zeros(n, sub.shape[1], dtype=sub.dtype)
        embeddings[ids] = sub

    partners = {}
    if cfg.dedup:
        kept, why, partners = stages.dedup(embeddings, ids, cfg.dedup_threshold)
        record("dedup", ids, kept, why)
        ids = kept

    if col is not None:
        domain_of = {i: str(rows[i].get(col)) for i in ids}
        source = f"column '{col}'"
    elif ids and embeddings is not None and (cfg.diversity or cfg.method == "s1"):
        c = max(1, min(cfg.clusters, len(ids)))
        labels, _ = sim.kmeans(embeddings[ids], c, seed=cfg.seed)
        domain_of = {i: f"cluster {int(lab):02d}" for i, lab in zip(ids, labels.tolist())}
        source = f"spherical k-means, {c} clusters over the embeddings"
    else:
        domain_of = {i: "all" for i in ids}
        source = "none"
    # "Before" is the whole input pool when domains come from a column, else the rows that
    # reached the diversity stage (only those were clustered).
    before = {}
    for i in range(n):
        if col is not None and isinstance(rows[i], dict) and col in rows[i]:
            d = str(rows[i][col])
        elif col is None and i in domain_of:
            d = domain_of[i]
        else:
            continue
        before[d] = before.get(d, 0) + 1

    k = min(cfg.k, len(ids))
    lens, what = stages.lengths(rows, ids) if ids else (np.zeros(0, dtype=np.int64), "trace length")
    if k < cfg.k:
        log(f"note: only {len(ids)} rows survive the filters; selecting all of them (asked for {cfg.k})")
    if not cfg.diversity:
        order = np.lexsort((np.arange(len(ids)), -lens))[:k]
        picks = [ids[p] for p in order]
        reasons = {ids[p]: f"longest first: rank {r + 1} ({what} {int(lens[p])})" for r, p in enumerate(order)}
    elif cfg.method == "s1":
        picks, reasons = stages.s1_sample(ids, [domain_of[i] for i in ids], lens, k, cfg.seed, what)
    elif cfg.method == "kcenter":
        picks, reasons = stages.kcenter_select(embeddings, ids, lens, k, what)
    else:
        picks, reasons = stages.mmr_select(embeddings, ids, lens, k, cfg.mmr_lambda)
    if cfg.dedup:
        for i in picks:
            reasons[i] += f"; kept by dedup (no earlier row above cosine {cfg.dedup_threshold})"
    record(f"diversity ({cfg.method})" if cfg.diversity else "diversity (off: longest first)", ids, picks,
           {f"not picked (k={cfg.k})": len(ids) - len(picks)} if len(ids) > len(picks) else {})
    after = {}
    for i in picks:
        after[domain_of[i]] = after.get(domain_of[i], 0) + 1
    return Selection(picks, reasons, table, before, after, source)


def format_table(table) -> str:
    w = max(len(r[0]) for r in table)
    lines = [f"{'stage':<{w}}  {'in':>7}  {'out':>7}  {'removed':>7}  why", "-" * (w + 40)]
    for stage, a, b, note in table:
        lines.append(f"{stage:<{w}}  {a:>7}  {b:>7}  {a - b:>7}  {note}")
    return "\n".join(lines)


def plot_domains(before: dict, after: dict, path: str, source: str, top: int = 30) -> str:
    """Horizontal bars: share of each domain in the pool (after filtering) vs. in the selection."""
    matplotlib = extras.require("matplotlib", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(before, key=lambda d: (-before[d], d))[:top]
    nb, na = max(1, sum(before.values())), max(1, sum(after.values()))
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(names) + 1.8))
    ax.barh(y - 0.2, [100 * before[d] / nb for d in names], 0.4, label=f"input pool ({nb} rows)")
    ax.barh(y + 0.2, [100 * after.get(d, 0) / na for d in names], 0.4, label=f"selected ({na} rows)")
    ax.set_yticks(y)
    ax.set_yticklabels([d if len(d) <= 40 else d[:37] + "..." for d in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("% of rows")
    ax.set_title(f"Domains before/after selection ({source}; top {len(names)})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
