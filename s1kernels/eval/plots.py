"""Figures of the evaluation: sequential vs parallel scaling, and the built-in task's
curve and forced-Wait gains over training seeds."""
from __future__ import annotations

import statistics

__all__ = ["plot_sequential_vs_parallel", "plot_seed_curves", "plot_wait_gains"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _line(ax, points, style, color, label):
    pts = sorted((p["avg_thinking_tokens"], 100 * p["accuracy"]) for p in points)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, lw=1.8, ms=5, label=label)


def _finish(plt, fig, ax, path: str, xlabel: str, title: str, legend: dict) -> None:
    """The accuracy axis, grid, legend and title every figure here shares; writes `path`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(**legend)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_sequential_vs_parallel(sequential: list[dict], parallel: list[dict], path: str, title: str = "") -> None:
    """Budget forcing (sequential) and majority voting (parallel) on one x axis: average
    thinking tokens per question (all samples counted), like s1's Figure 4."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.8), dpi=150)
    _line(ax, sequential, "-o", "#2a6fdb", "sequential: budget forcing")
    _line(ax, parallel, "--s", "#d9622b", "parallel: majority voting")
    for p in parallel:
        ax.annotate(f"N={p['samples']}", (p["avg_thinking_tokens"], 100 * p["accuracy"]), textcoords="offset points",
                    xytext=(3, -10), fontsize=7, color="#a04010")
    for p in sequential:
        ax.annotate(p["name"], (p["avg_thinking_tokens"], 100 * p["accuracy"]), textcoords="offset points",
                    xytext=(3, 5), fontsize=6, color="#555")
    ax.set_xscale("log", base=2)
    _finish(plt, fig, ax, path, "average thinking tokens per question (log scale)",
            title or "sequential vs parallel test-time scaling", legend=dict(fontsize=8, loc="lower right"))


def plot_seed_curves(curves: dict[int, list[dict]], path: str, title: str = "") -> None:
    """Accuracy against average thinking tokens for each training seed (thin lines), their
    mean and the min-max band over seeds (the settings must be the same for every seed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.8), dpi=150)
    seeds = sorted(curves)
    names = [p["name"] for p in curves[seeds[0]]]
    xs = [statistics.mean(next(p for p in curves[s] if p["name"] == n)["avg_thinking_tokens"] for s in seeds)
          for n in names]
    accs = [[100 * next(p for p in curves[s] if p["name"] == n)["accuracy"] for s in seeds] for n in names]
    for j, s in enumerate(seeds):
        ax.plot(xs, [a[j] for a in accs], "-", color="#9bb7e8", lw=0.8, label="each seed" if j == 0 else None)
    ax.fill_between(xs, [min(a) for a in accs], [max(a) for a in accs], color="#2a6fdb", alpha=0.15,
                    label=f"min-max over {len(seeds)} seeds")
    ax.plot(xs, [statistics.mean(a) for a in accs], "-o", color="#2a6fdb", lw=1.8, ms=4, label="mean")
    for x, a, n in zip(xs, accs, names):
        ax.annotate(n, (x, statistics.mean(a)), textcoords="offset points", xytext=(3, 5), fontsize=6, color="#555")
    _finish(plt, fig, ax, path, "average thinking tokens", title or "built-in task: budget forcing",
            legend=dict(fontsize=7, loc="upper left"))


def plot_wait_gains(per_seed: dict[int, list[float]], path: str, title: str = "") -> None:
    """Accuracy with 0, 1, 2, ... forced Waits: mean bar, min-max whisker, one dot per seed."""
    plt = _plt()
    seeds = sorted(per_seed)
    k = len(per_seed[seeds[0]])
    fig, ax = plt.subplots(figsize=(4.6, 3.6), dpi=150)
    for w in range(k):
        vals = [100 * per_seed[s][w] for s in seeds]
        mean = statistics.mean(vals)
        ax.bar(w, mean, color="#2a6fdb", alpha=0.6, width=0.6)
        ax.errorbar(w, mean, yerr=[[mean - min(vals)], [max(vals) - mean]], color="k", capsize=4, lw=1)
        ax.scatter([w] * len(vals), vals, color="#1b3f80", s=12, zorder=3)
        ax.annotate(f"{mean:.1f}%", (w, mean), textcoords="offset points", xytext=(12, 0), fontsize=7)
    ax.set_xticks(range(k), ["no forcing" if w == 0 else f"{w} forced Wait" + ("s" if w > 1 else "") for w in range(k)])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title or f"built-in task: forcing 'Wait' ({len(seeds)} training seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
