"""The built-in reasoning task: a chain of single-digit steps mod 10.

A question gives a start digit and labelled steps, one per line; the thinking trace
restates the start, then fills in each step line with the running result mod 10:

    question          thinking
    Start 8           Start 8
    A + 3 = ?         A + 3 = 1
    B + 2 = ?         B + 2 = 3
    C + 3 = ?         C + 3 = 6
    D + 1 = ?         D + 1 = 7
    E + 3 = ?         E + 3 = 0
    F + 2 = ?         F + 2 = 2      answer: 2
    Result mod 10 ?

The layout is chosen so every token of the trace is easy for a tiny decoder. With the
same number of steps in every question (the default, 6), each trace line sits at one fixed
distance after its question line, so restating it is a plain fixed-offset copy, and the
result depends only on tokens at fixed distances (the operand just before it, the previous
result one line up). Operands are small (1-3 by default) so the previous result alone
already narrows the next one to three digits: each input gives a learning signal on its
own, whereas with operands 0-9 neither input alone says anything about the sum mod 10 and
a tiny model stalls on that step (as on parity). The answer is uniform over the 10 digits
(the start is) and depends on every step, so a model whose thinking is cut short must
guess, and accuracy rises with the thinking budget: what budget forcing needs. A sample
is 101 tokens with the default tokenizer (6 steps, 39 thinking tokens; each step adds 10).
Mixed step counts (min_steps < max_steps) make a smoother accuracy-vs-budget curve but a
harder task, since the copy distance then varies. The default question space is small
(10 starts x 3^6 operand lists = 7,290 questions): evaluate on questions left out of training.
"""
from __future__ import annotations

import random
import re

STEP_LABELS = "ABCDEFGHIJKLMNOP"
_OPS = {"+": lambda a, b: (a + b) % 10, "-": lambda a, b: (a - b) % 10, "*": lambda a, b: (a * b) % 10}


def make_row(rng: random.Random, min_steps: int = 6, max_steps: int = 6, ops: str = "+",
             max_operand: int = 3) -> dict:
    """One task row from `rng` (see `make_rows`)."""
    n = rng.randint(min_steps, max_steps)
    value = rng.randrange(10)
    q_lines = [f"Start {value}"]
    trace = [f"Start {value}"]
    for k in range(n):
        op = rng.choice(ops)
        x = rng.randint(1, max_operand)
        label = STEP_LABELS[k]
        q_lines.append(f"{label} {op} {x} = ?")
        new = _OPS[op](value, x)
        trace.append(f"{label} {op} {x} = {new}")
        value = new
    q_lines.append("Result mod 10 ?")
    answer = str(value)
    return {"question": "\n".join(q_lines), "thinking_trajectories": trace, "attempt": answer, "answer": answer}


def make_rows(n: int, seed: int = 0, min_steps: int = 6, max_steps: int = 6, ops: str = "+",
              max_operand: int = 3) -> list[dict]:
    """`n` rows of the built-in task, deterministic in `seed`.

    Each row has `question`, `thinking_trajectories` (the start line, then one line per
    step), `attempt` (the answer text trained after "Answer: ") and `answer` (the canonical
    answer, one digit). `ops` picks the step operations among "+", "-", "*" (mod 10);
    the default, addition only, is the quickest to learn ("*" makes 0 and 5 likelier answers).
    Operands are drawn from 1..`max_operand`.
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
    if not isinstance(max_operand, int) or not 1 <= max_operand <= 9:
        raise ValueError(f"max_operand: expected an int in 1..9, got {max_operand!r}")
    rng = random.Random(seed)
    return [make_row(rng, min_steps, max_steps, ops, max_operand) for _ in range(n)]


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
