"""s1's metrics (section 3.2 of the paper), from emitted tokens.

For a method evaluated at a set of settings (thinking budgets, sample counts, prompts):

- Control: the share of runs (one question at one setting) whose measured thinking length
  ``a`` satisfies ``a_min <= a <= a_max``, the bounds the setting asked for. Lengths are read
  off the emitted token ids (``s1kernels.control.read_row``: the thinking span and any
  thinking written after the first answer), never from the
  decoder's own counter, so a forcing that does not do what it should shows up here.
- Scaling: the average slope ``(f(b) - f(a)) / (b - a)`` over all pairs of settings, with
  ``f`` the accuracy and ``a``, ``b`` the average thinking tokens per question of each
  setting (pairs with equal thinking length have no slope and are skipped).
- Performance: the best accuracy over the settings.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Iterable, Sequence

from s1kernels.control import control, read_row, thinking_span
from s1kernels import checks

__all__ = ["thinking_lengths", "within", "control", "scaling", "performance", "summarize", "majority_vote",
           "UNBOUNDED"]

UNBOUNDED = math.inf


def thinking_lengths(results, forcing, tokenizer=None) -> list[int]:
    """Measured thinking length of each ``GenerationResult``: its emitted ids up to the first
    end-of-thinking token (forced "Wait" tokens included, the delimiter not) and, given the
    ``tokenizer``, the thinking it wrote after its first answer (``control.read_row``)."""
    if tokenizer is None:
        return [thinking_span(r.token_ids, forcing.end_think_ids, forcing.eos_ids).tokens for r in results]
    return [read_row(r.token_ids, forcing, tokenizer).thinking_tokens for r in results]


def within(length: int, low: float = 0, high: float = UNBOUNDED) -> bool:
    """True when a measured length lies in the bounds ``[low, high]``."""
    return low <= length <= high


def scaling(points: Iterable[tuple[float, float]]) -> float | None:
    """Mean slope of accuracy over average thinking tokens over every pair of points
    ``(avg_thinking_tokens, accuracy)``; None with fewer than two distinct lengths."""
    pts = sorted(points)
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.combinations(pts, 2) if b[0] > a[0]]
    return sum(slopes) / len(slopes) if slopes else None


def performance(points: Iterable[tuple[float, float]]) -> float | None:
    """The best accuracy among ``(avg_thinking_tokens, accuracy)`` points."""
    accs = [p[1] for p in points]
    return max(accs) if accs else None


def summarize(settings: Sequence[dict]) -> dict:
    """Control, Scaling and Performance of one method from its settings' entries.

    Each entry has ``accuracy``, ``avg_thinking_tokens`` and ``in_bounds`` / ``runs`` (runs
    whose measured length was within the setting's bounds, and all runs). Control pools
    the runs of every setting."""
    if not settings:
        raise checks.argument_error("settings", "at least one evaluated setting", "none")
    points = [(s["avg_thinking_tokens"], s["accuracy"]) for s in settings]
    runs = sum(s["runs"] for s in settings)
    return {"control": sum(s["in_bounds"] for s in settings) / runs if runs else 1.0,
            "scaling": scaling(points), "performance": performance(points)}


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-None answer; a tie goes to the one seen first (None when all are None)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)
