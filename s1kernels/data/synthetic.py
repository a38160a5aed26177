"""The built-in reasoning task: a chain of single-digit steps mod 10.

A question gives a start digit and labelled steps, one per line; the thinking trace
restates the start, then fills in each step line with the running result mod 10:

    question          thinking
    Start 3           Start 3
    A + 7 = ?         A + 7 = 0
    B + 2 = ?         B + 2 = 2
    C + 9 = ?         C + 9 = 1
    D + 5 = ?         D + 5 = 6
    E + 4 = ?         E + 4 = 0
    F + 8 = ?         F + 8 = 8      answer: 8
    Result mod 10 ?

The layout is chosen so every token of the trace is easy for a tiny decoder. With the
same number of steps in every question (the default, 6), each trace line sits at one fixed
distance after its question line, so restating it is a plain fixed-offset copy, and the
result depends only on tokens at fixed distances (the operand just before it, the previous
result one line up). The answer is a uniformly distributed digit that depends on every
step, so a model whose thinking is cut short guesses (~10%), and accuracy rises with the
thinking budget: what budget forcing needs. A sample is 93 tokens with the default
tokenizer (6 steps; each step adds 10). Mixed step counts (min_steps < max_steps) make a
smoother accuracy-vs-budget curve but a harder task, since the copy distance then varies.
"""
from __future__ import annotations

import random
import re

STEP_LABELS = "ABCDEFGHIJKLMNOP"
_OPS = {"+": lambda a, b: (a + b) % 10, "-": lambda a, b: (a - b) % 10, "*": lambda a, b: (a * b) % 10}


def make_row(rng: random.Random, min_steps: int = 6, max_steps: int = 6, ops: str = "+") -> dict:
    """One task row from `rng` (see `make_rows`)."""
    n = rng.randint(min_steps, max_steps)
    value = rng.randrange(10)
    q_lines = [f"Start {value}"]
    trace = [f"Start {value}"]
    for k in range(n):
        op = rng.choice(ops)
        x = rng.randrange(10)
        label = STEP_LABELS[k]
        q_lines.append(f"{label} {op} {x} = ?")
        new = _OPS[op](value, x)
        trace.append(f"{label} {op} {x} = {new}")
        value = new
    q_lines.append("Result mod 10 ?")
    answer = str(value)
    return {"question": "\n".join(q_lines), "thinking_trajectories": trace, "attempt": answer, "answer": answer}


def make_rows(n: int, seed: int = 0, min_steps: int = 6, max_steps: int = 6, ops: str = "+") -> list[dict]:
    """`n` rows of the built-in task, deterministic in `seed`.

    Each row has `question`, `thinking_trajectories` (the start line, then one line per
    step), `attempt` (the answer text trained after "Answer: ") and `answer` (the canonical
    answer, one digit). `ops` picks the step operations among "+", "-", "*" (mod 10);
    the default, addition only, is the quickest to learn ("*" makes 0 and 5 likelier answers).
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected an int >= 0, got {n!r}")
    if not (1 <= min_steps <= max_steps <= len(STEP_LABELS)):
        raise ValueError(
            f"min_steps/max_steps: expected 1 <= min_steps <= max_steps <= {len(STEP_LABELS)}, "
            f"got {min_steps}, {max_steps}"
        )
    if not ops or any(o not in _OPS for o in ops):
        raise ValueError(f"ops: expected a non-empty string of '+', '-', '*', got {ops!r}")
    rng = random.Random(seed)
    return [make_row(rng, min_steps, max_steps, ops) for _ in range(n)]


_ANSWER_RE = re.compile(r"Answer\s*:\s*(-?\d+)")


def extract_answer(text: str) -> str | None:
    """The number after the last "Answer:" (also matches "Final Answer:") in `text`, or None."""
    found = _ANSWER_RE.findall(text or "")
    return found[-1] if found else None


def check_answer(pred_text: str, row: dict) -> bool:
    """True when the answer extracted from `pred_text` equals `row["answer"]`."""
    pred = extract_answer(pred_text)
    return pred is not None and pred == str(row["answer"]).strip()


def solve(question: str) -> str:
    """The answer to a task question, computed from its text (checks rows and predictions)."""
    lines = question.split("\n")
    m = re.fullmatch(r"Start (\d)", lines[0])
    if not m:
        raise ValueError(f"question: expected a first line 'Start <digit>', got {lines[0]!r}")
    value = int(m.group(1))
    for line in lines[1:]:
        s = re.fullmatch(r"[A-Z] ([-+*]) (\d) = \?", line)
        if s:
            value = _OPS[s.group(1)](value, int(s.group(2)))
    return str(value)
