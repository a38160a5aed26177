"""The stages of s1's data selection, each a pure function of rows (and embeddings).

quality -> difficulty -> dedup -> diversity. Every stage takes the list of surviving row ids
and returns the ids it keeps (plus, for the last stage, the reason each pick was made), so
the pipeline in s1kernels.select can count what each stage removed.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch

from s1kernels.data.readers import QUESTION_KEYS
from s1kernels.ops import similarity as sim

TRACE_KEYS = ("thinking_trajectories", "thinking", "trace", "reasoning", "solution", "attempt", "response")
DOMAIN_KEYS = ("source_type", "domain", "subject", "category", "source")

# s1 dropped questions with formatting problems: references to images that are not there,
# ASCII-art diagrams, and API error strings in place of a trace.
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|<img\b|\b\S+\.(?:png|jpe?g|gif|svg)\b", re.IGNORECASE)
_ASCII_ART = re.compile(r"[-_=|+*#/\\.]{20,}")
_API_ERROR = re.compile(r"\b(?:api error|rate limit exceeded|internal server error|error code: \d{3})\b",
                        re.IGNORECASE)


def first_key(row: dict, keys) -> str | None:
    for k in keys:
        if k in row:
            return k
    return None


def question_of(row) -> str | None:
    if not isinstance(row, dict):
        return None
    k = first_key(row, QUESTION_KEYS)
    q = row.get(k) if k else None
    return q if isinstance(q, str) else None


def trace_of(row: dict) -> str:
    """The reasoning trace as one string ('' when the row has none)."""
    k = first_key(row, TRACE_KEYS)
    t = row.get(k) if k else None
    if isinstance(t, list):
        return "\n".join(x for x in t if isinstance(x, str))
    return t if isinstance(t, str) else ""


def quality(rows: list, ids: list[int], min_question_chars: int = 10) -> tuple[list[int], dict]:
    """Drops broken rows (None: the line did not parse), rows without a question string,
    too-short questions, formatting problems and exact duplicate question strings."""
    kept, why, seen = [], {}, set()

    def drop(reason):
        why[reason] = why.get(reason, 0) + 1

    for i in ids:
        row = rows[i]
        if row is None:
            drop("broken line")
            continue
        q = question_of(row)
        if q is None:
            drop("no question text")
            continue
        if len(q.strip()) < min_question_chars:
            drop("empty or too short question")
            continue
        if _IMAGE.search(q):
            drop("image reference")
            continue
        if _ASCII_ART.search(q):
            drop("ascii art")
            continue
        if _API_ERROR.search(trace_of(row)):
            drop("API error in trace")
            continue
        if q in seen:
            drop("exact duplicate question")
            continue
        seen.add(q)
        kept.append(i)
    return kept, why


def correctness_columns(rows: list, ids: list[int]) -> list[str]:
    """Columns such as isqwen7bcorrect / is_correct: a True marks a question a model solved."""
    cols = set()
    for i in ids[:1000]:
        cols.update(k for k, v in rows[i].items() if "correct" in k.lower() and isinstance(v, (bool, int, str)))
    return sorted(cols)


def _truthy(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "yes", "1", "correct")
    return bool(v)


def difficulty(rows: list, ids: list[int], min_trace_chars: int = 0) -> tuple[list[int], dict]:
    """s1's difficulty filter: drop questions some model already answers correctly (any
    correctness column true), and traces shorter than `min_trace_chars`."""
    cols = correctness_columns(rows, ids)
    kept, why = [], {}
    for i in ids:
        row = rows[i]
        if any(_truthy(row.get(c)) for c in cols if c in row):
            why["solved by a model"] = why.get("solved by a model", 0) + 1
        elif min_trace_chars and len(trace_of(row)) < min_trace_chars:
            why["trace too short"] = why.get("trace too short", 0) + 1
        else:
            kept.append(i)
    return kept, why


def lengths(rows: list, ids: list[int]) -> tuple[np.ndarray, str]:
    """Difficulty proxy: trace length in characters, or the question's when no row has a trace.
    Returns (lengths, what was measured)."""
    tr = np.array([len(trace_of(rows[i])) for i in ids], dtype=np.int64)
    if tr.sum() == 0:
        return np.array([len(question_of(rows[i]) or "") for i in ids], dtype=np.int64), "question length"
    return tr, "trace length"


def dedup(emb: torch.Tensor, ids: list[int], threshold: float) -> tuple[list[int], dict, dict]:
    """Embedding dedup (SemDeDup, exact) in row order. Returns kept ids, counts, and for every
    dropped id the (kept id, cosine) of its closest kept row."""
    if not ids:
        return [], {}, {}
    x = emb[ids]
    res = sim.threshold_dedup(x, threshold)
    keep = res.keep.tolist()
    kept = [i for i, k in zip(ids, keep) if k]
    dropped = [i for i, k in zip(ids, keep) if not k]
    partner = {}
    if dropped:
        s, j = sim.max_similarity(x[~res.keep], x[res.keep])
        partner = {d: (kept[int(jj)], float(ss)) for d, jj, ss in zip(dropped, j.tolist(), s.tolist())}
    return kept, ({f"cosine > {threshold}": len(dropped)} if dropped else {}), partner


def s1_sample(ids: list[int], domains: list[str], lens: np.ndarray, k: int,
              seed: int, what: str = "trace length") -> tuple[list[int], dict[int, str]]:
    """s1's diversity sampling: draw a domain uniformly among those with rows left, then a row
    of that domain with weight 2^-rank, rank 0 = longest trace; repeat until k rows."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[int]] = {}
    for pos, d in enumerate(domains):
        pools.setdefault(d, []).append(pos)
    for d in pools:  # longest first, file order among equal lengths
        pools[d].sort(key=lambda p: (-lens[p], p))
    sizes = {d: len(v) for d, v in pools.items()}
    names = sorted(pools)
    picks, reasons = [], {}
    while len(picks) < k and names:
        d = names[int(rng.integers(len(names)))]
        pool = pools[d]
        w = np.exp2(-np.arange(len(pool), dtype=np.float64))
        r = int(rng.choice(len(pool), p=w / w.sum()))
        pos = pool.pop(r)
        row = ids[pos]
        picks.append(row)
        reasons[row] = (f"s1 diversity: domain '{d}' ({sizes[d]} rows) drawn uniformly, then length rank "
                        f"{r + 1} of {len(pool) + 1} left (weight 2^-rank); {what} {int(lens[pos])}")
        if not pool:
            names.remove(d)
    return picks, reasons


def max_sim_to_earlier(x: torch.Tensor, picks: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """For each pick t, the highest cosine between x[picks[t]] and x[picks[:t]] (-inf for
    the first pick): the explanation of a greedy pick, in row blocks of `block` picks."""
    p = sim.normalized(x[picks])
    out = torch.empty(len(picks))
    for t0 in range(0, len(picks), block):
        t1 = min(len(picks), t0 + block)
        s = p[t0:t1] @ p[:t1].T
        # entry (r, c) compares pick t0 + r with pick c: only c < t0 + r came earlier
        s.masked_fill_(torch.ones_like(s, dtype=torch.bool).triu(t0), -math.inf)
        out[t0:t1] = s.amax(dim=1).cpu()
    return out


def kcenter_select(emb: torch.Tensor, ids: list[int], lens: np.ndarray, k: int,
                   what: str = "trace length") -> tuple[list[int], dict]:
    """Farthest-point picks over the embeddings, starting at the longest row."""
    x = emb[ids]
    start = int(np.lexsort((np.arange(len(ids)), -lens))[0])
    picks = sim.k_center(x, k, start=start)
    nearest = max_sim_to_earlier(x, picks).tolist()
    out, reasons = [], {}
    for t, p in enumerate(picks.tolist()):
        row = ids[p]
        out.append(row)
        if t == 0:
            reasons[row] = f"k-center start: the longest row ({what} {int(lens[p])})"
        else:
            reasons[row] = (f"k-center pick {t + 1}: cosine distance {1.0 - nearest[t]:.3f} "
                            f"to the nearest earlier pick")
    return out, reasons


def mmr_select(emb: torch.Tensor, ids: list[int], lens: np.ndarray, k: int,
               lambda_: float) -> tuple[list[int], dict]:
    """MMR with relevance = trace length / longest trace (difficulty proxy)."""
    x = emb[ids]
    rel = torch.from_numpy(lens / max(1, lens.max())).float()
    picks = sim.mmr(x, rel, k, lambda_)
    nearest = max_sim_to_earlier(x, picks).tolist()
    out, reasons = [], {}
    for t, p in enumerate(picks.tolist()):
        row = ids[p]
        out.append(row)
        reasons[row] = (f"mmr pick {t + 1} (lambda {lambda_}): relevance {float(rel[p]):.3f}"
                        + (f", max cosine to earlier picks {nearest[t]:.3f}" if t else ", the most relevant row"))
    return out, reasons
