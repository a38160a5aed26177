"""The built-in reasoning tasks: chains of single-digit steps mod 10.

A question gives a start number and six labelled steps, one per line; the thinking trace
restates the start, then fills in each step line with the running result mod 10. Two tasks
share that layout (``make_rows(..., task=...)``):

``recheck`` (the default) adds the two things s1's evaluation needs from a task:

- Partial answers that improve with thinking: step k of 6 adds 0 with probability k/7, so
  later steps more often change nothing, and a trace cut after k lines already holds the
  right value when no later step changes it. The last value written after 0 to 6 lines is
  the right answer for about 5, 5, 13, 28, 45, 60 and 70% of questions (the first pass's
  slips included, see below): accuracy can rise with the thinking budget line by line.
- Slips that more thinking catches: the first pass is quick and slips in one known way (a
  step that passes 10, such as 8 + 3 or 9 + 2, comes out one short). 55% of the traces end
  after that pass, slips and all, and answer what it gives; 45% go on with ``Wait`` and a
  careful pass that restates every line with the right result, then answer that. A checked
  trace checks again, the same way, with the same 45% (at most four checks), so every
  "Wait" after a careful pass is a trained case too (19% of traces have a third pass):

    question          thinking
    Start 48          Start 48
    A + 3 = ?         A + 3 = 0        <- slip (8 + 3 = 11: written one short)
    B + 2 = ?         B + 2 = 2
    C + 0 = ?         C + 0 = 2
    ...               ...
    Result mod 10 ?   Wait
                      Start 48
                      A + 3 = 1
                      B + 2 = 3
                      C + 0 = 3        ...  answer: 3

  A model trained on these ends after each pass (ending is the likelier continuation,
  55%), yet has learned what follows "Wait": forcing "Wait" in place of its end of thinking
  (budget forcing) makes it check its work, and accuracy goes up, as in s1; a second forced
  Wait makes it check once more, which keeps a right answer right.

How the evaluation meets the trained format: the answer after a trace is trained as
``<|im_start|>answer\nAnswer: 3``, so a forced exit on this task writes ``FORCED_ANSWER``
("Answer:") after the delimiter, not s1's "Final Answer:" ("Final" is a token the task never
trains; with it every truncated trace's answer was a guess), and the built-in budgets (4, 10,
..., 40) end whole lines, their newline included, as a trained answer does.

The start is a two-digit number (only its last digit matters mod 10): it makes the
question space large enough (about 10^2 x 4^6) that held-out questions (not seen in
training) are not much biased towards the rarer, harder kinds (with one digit, held-out
questions hold the right value after 1 to 3 lines for 0 to 2% instead of 4 to 24%). Copying
it is the step the default minute of training most often gets wrong (a second digit one
off); three digits were worse. A first pass is 40 thinking tokens with the default
tokenizer (a 4-token start line and six 6-token step lines); each check adds 42.

``chain`` is the earlier task: a one-digit start, six steps of +1..3, no slips and no
checking. Accuracy is a guess (~10%) until the whole 39-token trace fits, then 100%.

Layout choices that keep both quick to learn for a tiny decoder: with six steps in every
question each trace line sits at one fixed distance after its question line (and a later
pass's line at one fixed distance after the line of the pass before), so restating is a
fixed-offset copy and each result depends only on tokens at fixed distances. Operands are
small (1-3) so the previous result alone narrows the next one to three digits: each input
gives a learning signal on its own (with 0-9, neither input alone says anything about the
sum mod 10 and a tiny model stalls, as on parity). Questions of mixed step counts
(min_steps < max_steps) break the fixed distances: a 0.8M-parameter model trained the
default minute on 1-6 step questions did not learn to copy (measured: 24% at the full trace).
"""
from __future__ import annotations

import random
import re
from s1kernels import checks

__all__ = ["TASKS", "DEFAULT_TASK", "make_row", "make_rows", "extract_answer", "check_answer", "solve",
           "quick_step", "WAIT_LINE", "FORCED_ANSWER"]

STEP_LABELS = "ABCDEFGHIJKLMNOP"
WAIT_LINE = "Wait"
# What a forced exit writes after the answer delimiter on this task: the prefix its training
# answers use ("Answer: 3", format.ANSWER_PREFIX), not s1's "Final Answer:", which a model
# trained only on the task has never seen (forcing "Final" drops every truncated trace's
# answer to a guess; measured in docs/eval.md). Real models keep s1's "Final Answer:".
FORCED_ANSWER = "Answer:"
_OPS = {"+": lambda a, b: (a + b) % 10, "-": lambda a, b: (a - b) % 10, "*": lambda a, b: (a * b) % 10}

# Each task's defaults; make_rows' keyword arguments override them.
TASKS = {
    "recheck": dict(min_steps=6, max_steps=6, ops="+", max_operand=3, slips=True, check_rate=0.45, recheck_rate=0.45,
                    max_checks=4, zero_tail=True, start_digits=2),
    "chain": dict(min_steps=6, max_steps=6, ops="+", max_operand=3, slips=False, check_rate=0.0, recheck_rate=0.0,
                  max_checks=0, zero_tail=False, start_digits=1),
}
DEFAULT_TASK = "recheck"


def quick_step(value: int, op: str, x: int) -> int:
    """The quick pass's result of one step: right, except that an addition passing 10
    (value + x > 10) comes out one short."""
    if op == "+" and value + x > 10:
        return (value + x - 1) % 10
    return _OPS[op](value, x)


def _pass(start: str, steps: list[tuple[str, int]], quick: bool) -> tuple[list[str], int]:
    value, lines = int(start) % 10, [f"Start {start}"]
    for k, (op, x) in enumerate(steps):
        value = quick_step(value, op, x) if quick else _OPS[op](value, x)
        lines.append(f"{STEP_LABELS[k]} {op} {x} = {value}")
    return lines, value


def make_row(rng: random.Random, min_steps: int = 1, max_steps: int = 6, ops: str = "+", max_operand: int = 3,
             slips: bool = True, check_rate: float = 0.45, recheck_rate: float = 0.45, max_checks: int = 4,
             zero_tail: bool = True, start_digits: int = 2) -> dict:
    """One task row from `rng` (see `make_rows`)."""
    if not 1 <= start_digits <= 6:
        raise checks.argument_error("start_digits", "an int in 1..6", repr(start_digits))
    n = rng.randint(min_steps, max_steps)
    # zero-padded (007), so every start line has the same number of tokens
    start = str(rng.randrange(10 ** start_digits)).zfill(start_digits)
    steps = [(rng.choice(ops), rng.randint(1, max_operand)) for _ in range(n)]
    if zero_tail:  # step k (1-based) adds 0 with probability k / (n + 1): later steps more often
        steps = [("+", 0) if rng.random() < (k + 1) / (n + 1) else s for k, s in enumerate(steps)]
    q_lines = [f"Start {start}"] + [f"{STEP_LABELS[k]} {op} {x} = ?" for k, (op, x) in enumerate(steps)]
    q_lines.append("Result mod 10 ?")
    trace, value = _pass(start, steps, quick=slips)
    n_checks = 0
    while slips and n_checks < max_checks and rng.random() < (recheck_rate if n_checks else check_rate):
        # a careful pass after "Wait" (also when the first had no slip: checking does not
        # depend on knowing that one slipped); a checked trace checks again at recheck_rate,
        # the same careful pass each time, so a forced second "Wait" meets a trained case
        careful, value = _pass(start, steps, quick=False)
        trace = trace + [WAIT_LINE] + careful
        n_checks += 1
    answer = str(value)
    return {"question": "\n".join(q_lines), "thinking_trajectories": trace, "attempt": answer,
            "answer": solve("\n".join(q_lines))}


def make_rows(n: int, seed: int = 0, task: str = DEFAULT_TASK, *, min_steps: int | None = None,
              max_steps: int | None = None, ops: str | None = None, max_operand: int | None = None,
              slips: bool | None = None, check_rate: float | None = None, recheck_rate: float | None = None,
              max_checks: int | None = None, zero_tail: bool | None = None,
              start_digits: int | None = None) -> list[dict]:
    """`n` rows of a built-in task (``"recheck"`` or ``"chain"``), deterministic in `seed`.

    Each row has `question`, `thinking_trajectories` (the start line, then one line per
    step; for ``recheck`` sometimes "Wait" and a second pass), `attempt` (the answer the
    trace reaches, trained after "Answer: "; differs from `answer` when a slip went
    unchecked) and `answer` (the correct result, one digit). The other arguments override
    the task's defaults (`TASKS`): step counts, `ops` among "+", "-", "*" (mod 10),
    operands 1..`max_operand`, `slips` (the quick first pass), `check_rate` (share of
    traces with a second pass), `recheck_rate` (share of checked traces that check once
    more, each time), `max_checks` (most checks in a trace), `zero_tail` (step k of n adds 0 with probability
    k/(n+1)) and `start_digits` (digits of the start number).
    """
    if not isinstance(n, int) or n < 0:
        raise checks.argument_error("n", "an int >= 0", repr(n))
    if task not in TASKS:
        raise checks.argument_error("task", f"one of {', '.join(TASKS)}", repr(task))
    given = dict(min_steps=min_steps, max_steps=max_steps, ops=ops, max_operand=max_operand, slips=slips,
                 check_rate=check_rate, recheck_rate=recheck_rate, max_checks=max_checks, zero_tail=zero_tail,
                 start_digits=start_digits)
    opts = {**TASKS[task], **{k: v for k, v in given.items() if v is not None}}
    lo, hi = opts["min_steps"], opts["max_steps"]
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= len(STEP_LABELS)):
        raise checks.argument_error("min_steps/max_steps", f"1 <= min_steps <= max_steps <= {len(STEP_LABELS)}",
                                    f"{lo}, {hi}")
    if not opts["ops"] or any(o not in _OPS for o in opts["ops"]):
        raise checks.argument_error("ops", "a non-empty string of '+', '-', '*'", repr(opts['ops']))
    if not isinstance(opts["max_operand"], int) or not 1 <= opts["max_operand"] <= 9:
        raise checks.argument_error("max_operand", "an int in 1..9", repr(opts['max_operand']))
    for key in ("check_rate", "recheck_rate"):
        if not 0.0 <= float(opts[key]) <= 1.0:
            raise checks.argument_error(key, "a share in [0, 1]", repr(opts[key]))
    if not isinstance(opts["max_checks"], int) or not 0 <= opts["max_checks"] <= 8:
        raise checks.argument_error("max_checks", "an int in 0..8", repr(opts['max_checks']))
    rng = random.Random(seed)
    return [make_row(rng, **opts) for _ in range(n)]


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
    """The correct answer to a task question, computed from its text."""
    lines = question.split("\n")
    m = re.fullmatch(r"Start (\d+)", lines[0])
    if not m:
        raise checks.argument_error("question", "a first line 'Start <number>'", repr(lines[0]))
    value = int(m.group(1)) % 10
    for line in lines[1:]:
        s = re.fullmatch(r"[A-Z] ([-+*]) (\d) = \?", line)
        if s:
            value = _OPS[s.group(1)](value, int(s.group(2)))
    return str(value)
