"""Benchmark results on disk: one JSONL file written as rows arrive, and the markdown table
and PNG plot regenerated from it.

A JSONL line is either a row (`"kind": "row"`, the fields of `common.Row`: device, ceilings
and versions included) or a family record (`"kind": "family"`: a family that was skipped or
failed as a whole, with the reason). Rendering reads the whole file, so the table and plot
always show every row written so far, whichever process wrote it.
"""
from __future__ import annotations

import dataclasses
import json
import os

from common import Row, finish_rows

ROW_FIELDS = {f.name for f in dataclasses.fields(Row)}


def append(path: str, record: dict) -> None:
    """Appends one record and flushes it to disk at once (a killed process keeps its rows)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def append_row(path: str, row: Row) -> None:
    append(path, {"kind": "row", **dataclasses.asdict(row)})


def load(path: str) -> tuple[list[Row], list[dict]]:
    """Rows and family records of a JSONL file; a torn last line (a killed writer) is ignored."""
    rows, families = [], []
    if not os.path.exists(path):
        return rows, families
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("kind") == "family":
                families.append(rec)
            elif rec.get("kind") == "row":
                rows.append(Row(**{k: v for k, v in rec.items() if k in ROW_FIELDS}))
    return rows, families


def render(path: str) -> dict:
    """Writes <stem>.md and <stem>.png beside the JSONL file from everything in it."""
    rows, families = load(path)
    for r in rows:  # ratios and ceiling fractions are derived: recompute them over all rows
        r.ratios, r.ceiling_fraction = {}, None
    rows = finish_rows(rows, {})
    stem = os.path.splitext(path)[0]
    with open(stem + ".md", "w") as f:
        f.write(markdown_table(rows, families))
    paths = {"jsonl": path, "md": stem + ".md"}
    png = plot(rows, stem + ".png")
    if png:
        paths["png"] = png
    return paths


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _header(rows: list[Row]) -> list[str]:
    lines = []
    seen = set()
    for r in rows:
        c, v = r.ceilings, r.versions
        key = (r.device, json.dumps(c, sort_keys=True), json.dumps(v, sort_keys=True))
        if key in seen or not r.device:
            continue
        seen.add(key)
        if c:
            lines.append(f"- {r.bench}: {r.device}; ceilings measured in that run: {c.get('matmul_tflops', 0):.1f} "
                         f"TFLOP/s {c.get('matmul_dtype', '')} matmul, {c.get('copy_gbps', 0):.0f} GB/s copy; "
                         + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    return lines


def markdown_table(rows: list[Row], families: list[dict] = ()) -> str:
    lines = ["Measured on (each family runs in its own process and measures its own ceilings):", ""]
    lines += _header(rows) or ["- (no rows)"]
    lines += ["", "| bench | case | impl | ms | peak MB | vs baselines (x faster) | % of ceiling | note |",
              "| --- | --- | --- | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in r.ratios.items()) or "-"
        frac = "-" if r.ceiling_fraction is None else f"{100 * r.ceiling_fraction:.0f}%"
        note = r.note.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.bench} | {r.case} | {r.impl} | {_fmt(r.ms, '.3f')} | {_fmt(r.peak_mb, '.0f')} "
                     f"| {ratios} | {frac} | {note} |")
    if families:
        lines += ["", "| family | status | wall s | reason |", "| --- | --- | ---: | --- |"]
        for fam in families:
            reason = str(fam.get("reason", "")).replace("|", "/").replace("\n", " ")[:300]
            lines.append(f"| {fam.get('bench')} | {fam.get('status')} | {_fmt(fam.get('wall_s'), '.0f')} | {reason} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: str) -> str | None:
    """One bar group per case: time of each implementation (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    timed = [r for r in rows if r.ms is not None]
    cases = list(dict.fromkeys((r.bench, r.case) for r in timed))
    impls = list(dict.fromkeys(r.impl for r in timed))
    if not cases:
        return None
    devices = sorted({r.device for r in timed if r.device})
    fig, ax = plt.subplots(figsize=(min(60, max(6, 0.9 * len(cases) * max(1, len(impls)) / 2)), 4.5))
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        xs, ys = [], []
        for i, key in enumerate(cases):
            match = [r for r in timed if (r.bench, r.case) == key and r.impl == impl]
            if match:
                xs.append(i + j * width)
                ys.append(match[0].ms)
        ax.bar(xs, ys, width, label=impl)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    ax.set_xticklabels([f"{b}\n{c}" for b, c in cases], rotation=30, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("time per call (ms, log scale)")
    ax.set_title(f"s1kernels benchmarks on {', '.join(devices) or 'unknown device'}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
