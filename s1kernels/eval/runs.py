"""Evaluating one test-time method at its settings: budget forcing, majority voting,
conditional prompting, rejection sampling, extension strings.

Every method runs the same engine (``s1kernels.generate.generate``, or ``engine=`` one with
its signature and results, such as ``integrations.vllm.VLLMGenerate``) and yields one record
per question, sample and setting, with the full generation, the extracted answer, the
thinking length measured on the emitted tokens and the budget events (waits used, forced
exit, finish reason, and for rejection sampling the attempts). ``aggregate`` turns a
setting's records into its point (average thinking tokens per question, accuracy) and its
Control counts; ``metrics.summarize`` turns a method's points into Control, Scaling and
Performance.
"""
from __future__ import annotations

import dataclasses

from s1kernels.answers import score
from s1kernels.data.format import FINAL_ANSWER
from s1kernels.control import read_row
from s1kernels.eval.metrics import UNBOUNDED, majority_vote, within
from s1kernels.generate import generate
from s1kernels.generate.sharded import generate_sharded
from s1kernels.ops.decode import Budget, ForcingTokens, Sampling
from s1kernels import checks

__all__ = ["Setting", "run_setting", "aggregate", "budget_forcing", "majority_voting", "conditional",
           "rejection_sampling", "extension_strings", "CONDITIONAL_PROMPTS"]

# s1's length-control prompts (section 5.2), appended to the question
CONDITIONAL_PROMPTS = {
    "token": "Think for up to {n} tokens.",
    "step": "Think for up to {n} steps.",
    "class": {"short": "Think briefly.", "long": "Think step by step, at length."},
}


@dataclasses.dataclass
class Setting:
    """One setting of a method: how to decode and what thinking length it asks for.

    ``low``/``high``: the Control bounds on the measured thinking length (tokens);
    ``suffix``: text appended to every question (conditional prompting); ``wait_string``:
    the extension string; ``budget``: the decode budget (per-row fields allowed)."""

    name: str
    budget: Budget
    low: float = 0
    high: float = UNBOUNDED
    suffix: str = ""
    wait_string: str = "Wait"


def run_setting(model, tokenizer, rows: list[dict], setting: Setting, *, sampling: Sampling | None = None,
                samples: int = 1, measure=None, forcing=None, use_math_verify: bool = False,
                final_answer: str = FINAL_ANSWER, **gen_kwargs) -> list[dict]:
    """Generate ``samples`` outputs per row at ``setting`` and score them; one record each.

    The one "generate at a budget and score it" path: the suite's methods and
    ``s1kernels.eval.evaluate`` both run it, and its records are the one record format
    (the suite's rows.jsonl, eval's ``--save-rows``). Under torchrun the prompts are
    sharded over the ranks (``generate_sharded``). Each row is read by
    ``s1kernels.control.read_row``: the answer from the answer span (up to the first complete
    answer), the thinking length with the thinking written after that answer.

    ``forcing``: the ForcingTokens used to decode (default: built with the setting's wait
    string and ``final_answer``, the text a forced exit writes after the answer delimiter);
    ``measure``: the one whose end-of-thinking and end-of-sequence ids delimit the thinking
    when it is measured on the emitted tokens (default: ``forcing``)."""
    if samples < 1:
        raise checks.argument_error("samples", ">= 1", samples)
    sampling = sampling or Sampling()
    if samples > 1 and sampling.temperature == 0:
        raise ValueError("samples: several samples per question need a temperature > 0")
    forcing = forcing or ForcingTokens.from_tokenizer(tokenizer, wait_string=setting.wait_string,
                                                      final_answer=final_answer)
    measure = measure or forcing
    prompts = [r["question"] + ("\n" + setting.suffix if setting.suffix else "") for r in rows]
    # another engine with generate's signature and results (integrations.vllm.VLLMGenerate)
    engine = gen_kwargs.pop("engine", None) or generate
    # sample j of question i is prompt i*samples + j; its seed is seed + that index
    results = generate_sharded(model, tokenizer, [p for p in prompts for _ in range(samples)],
                               budget=_repeat(setting.budget, samples), sampling=sampling, forcing=forcing,
                               generate_fn=engine, **gen_kwargs)
    # one rule for every reader of a row (s1kernels.control.read_row): the answer scored is the
    # first one in the answer span, and what the row writes after it counts as thinking
    spans = [read_row(r.token_ids, measure, tokenizer) for r in results]
    records = []
    for k, (res, sp) in enumerate(zip(results, spans)):
        row, n_think = rows[k // samples], sp.thinking_tokens
        pred, ok = score(row.get("kind", "math"), sp.answer_text or None, row["answer"],
                         use_math_verify=use_math_verify)
        records.append({
            "setting": setting.name, "question_index": k // samples, "sample": k % samples,
            "question": row["question"], "gold": row["answer"], "prompt_suffix": setting.suffix,
            "generation": res.text, "prediction": pred, "correct": ok, "thinking_tokens": n_think,
            "late_thinking_tokens": len(sp.late_thinking_ids),
            "bounds": [setting.low, None if setting.high == UNBOUNDED else setting.high],
            "in_bounds": within(n_think, setting.low, setting.high),
            "events": {"waits_used": res.waits_used, "forced_exit": res.forced_exit,
                       "finished_reason": res.finished_reason, "decoder_thinking_tokens": res.thinking_tokens,
                       "thinking_span_tokens": sp.thinking.tokens,
                       "generated_tokens": len(res.token_ids)},
        })
    return records


def _repeat(budget: Budget, samples: int) -> Budget:
    """A budget whose per-row fields (lists) are repeated for ``samples`` samples per row."""
    if samples == 1:
        return budget
    changes = {f.name: [v for v in getattr(budget, f.name) for _ in range(samples)]
               for f in dataclasses.fields(budget) if isinstance(getattr(budget, f.name), (list, tuple))}
    return dataclasses.replace(budget, **changes) if changes else budget


def aggregate(name: str, records: list[dict], n_questions: int, **extra) -> dict:
    """A setting's point: accuracy per question, average thinking tokens per question (all of
    a question's samples counted), runs within bounds; ``extra`` is kept in the entry."""
    entry = {"name": name, "accuracy": sum(r["correct"] for r in records) / max(1, len(records)),
             "avg_thinking_tokens": sum(r["thinking_tokens"] for r in records) / max(1, n_questions),
             "in_bounds": sum(r["in_bounds"] for r in records), "runs": len(records)}
    entry.update(extra)
    return entry


def budget_forcing(model, tokenizer, rows, budgets, waits=(), cap: int = 256, **kw) -> tuple[list[dict], list[dict]]:
    """s1's sequential scaling: a max thinking budget per point (forced exit at the budget),
    then ``waits`` points that force "Wait" in place of the end of thinking that many times
    (under the ``cap``). Bounds: [0, budget] and [0, cap]."""
    settings = [Setting(f"max {b}", Budget(max_thinking_tokens=int(b), max_answer_tokens=16), high=int(b))
                for b in budgets]
    settings += [Setting(f"wait x{w}", Budget(max_thinking_tokens=cap, num_waits=int(w), max_answer_tokens=16), high=cap)
                 for w in waits]
    return _sweep(model, tokenizer, rows, settings, **kw)


def _sweep(model, tokenizer, rows, settings, samples: int = 1, **kw):
    points, records = [], []
    for s in settings:
        recs = run_setting(model, tokenizer, rows, s, samples=samples, **kw)
        records += recs
        points.append(aggregate(s.name, recs, len(rows), high=None if s.high == UNBOUNDED else s.high))
    return points, records


def majority_voting(model, tokenizer, rows, ns=(1, 2, 4, 8), temperature: float = 0.7, cap: int = 256, seed: int = 0,
                    **kw) -> tuple[list[dict], list[dict]]:
    """s1's parallel scaling: max(ns) samples per question at ``temperature`` (no forcing
    below the cap); for each N the majority answer of the first N samples. The x axis is the
    average thinking tokens per question with all N samples counted."""
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise checks.argument_error("ns", "sample counts >= 1", ns)
    setting = Setting("sampled", Budget(max_thinking_tokens=cap, max_answer_tokens=16), high=cap)
    recs = run_setting(model, tokenizer, rows, setting, samples=ns[-1],
                       sampling=Sampling(temperature=temperature, seed=seed), **kw)
    points = []
    by_q = [recs[i * ns[-1]:(i + 1) * ns[-1]] for i in range(len(rows))]
    for n in ns:
        correct, think = 0, 0
        for i, qs in enumerate(by_q):
            first = qs[:n]
            vote = majority_vote([r["prediction"] for r in first])
            # the vote is scored like a single answer: the winning sample's verdict
            winner = next((r for r in first if r["prediction"] == vote), None)
            correct += bool(winner and winner["correct"])
            think += sum(r["thinking_tokens"] for r in first)
        points.append({"name": f"majority N={n}", "samples": n, "accuracy": correct / max(1, len(rows)),
                       "avg_thinking_tokens": think / max(1, len(rows)),
                       "in_bounds": sum(r["in_bounds"] for q in by_q for r in q[:n]), "runs": n * len(rows)})
    return points, recs


def conditional(model, tokenizer, rows, kind: str, values, cap: int = 256, tokens_per_step: int = 6,
                short_max: int | None = None, **kw) -> tuple[list[dict], list[dict]]:
    """Length control by prompting alone (no forcing below the cap).

    kind "token": "Think for up to {n} tokens." per value n, bounds [0, n]; "step": "Think for
    up to {n} steps." with bounds [0, n * tokens_per_step]; "class": values among "short" /
    "long", bounds [0, short_max] / (short_max, cap]."""
    settings = []
    if kind in ("token", "step"):
        for n in values:
            high = int(n) if kind == "token" else int(n) * tokens_per_step
            settings.append(Setting(f"{kind} {n}", Budget(max_thinking_tokens=cap, max_answer_tokens=16), high=high,
                                    suffix=CONDITIONAL_PROMPTS[kind].format(n=n)))
    elif kind == "class":
        if short_max is None:
            raise ValueError("short_max: class-conditional prompting needs the longest 'short' thinking length")
        for c in values:
            if c not in CONDITIONAL_PROMPTS["class"]:
                raise checks.argument_error("values", "'short' or 'long' for class prompts", repr(c))
            low, high = (0, short_max) if c == "short" else (short_max + 1, cap)
            settings.append(Setting(f"class {c}", Budget(max_thinking_tokens=cap, max_answer_tokens=16), low=low,
                                    high=high, suffix=CONDITIONAL_PROMPTS["class"][c]))
    else:
        raise checks.argument_error("kind", "'token', 'step' or 'class'", repr(kind))
    return _sweep(model, tokenizer, rows, settings, **kw)


def rejection_sampling(model, tokenizer, rows, budgets, temperature: float = 0.7, max_attempts: int = 16,
                       cap: int = 256, seed: int = 0, **kw) -> tuple[list[dict], list[dict]]:
    """Resample (at ``temperature``, no forcing below the cap) until the measured thinking
    length is within the budget, at most ``max_attempts`` times; the last attempt counts when
    none fits. Each record's events carry ``attempts``; each point the mean attempts."""
    points, records = [], []
    for b in budgets:
        b = int(b)
        setting = Setting(f"reject >{b}", Budget(max_thinking_tokens=cap, max_answer_tokens=16), high=b)
        final: list[dict | None] = [None] * len(rows)
        attempts = [0] * len(rows)
        todo = list(range(len(rows)))
        for attempt in range(max_attempts):
            if not todo:
                break
            sampling = Sampling(temperature=temperature, seed=seed + attempt * len(rows))
            recs = run_setting(model, tokenizer, [rows[i] for i in todo], setting, sampling=sampling, **kw)
            still = []
            for i, r in zip(todo, recs):
                attempts[i] += 1
                r["question_index"] = i
                final[i] = r
                if not r["in_bounds"]:
                    still.append(i)
            todo = still
        for i, r in enumerate(final):
            r["events"]["attempts"] = attempts[i]
        records += final
        points.append(aggregate(setting.name, final, len(rows), high=b,
                                mean_attempts=sum(attempts) / max(1, len(rows)),
                                unfit=len(todo)))
    return points, records


def extension_strings(model, tokenizer, rows, strings=("Wait", "none", "Hmm", "Alternatively"), extensions=(1, 2),
                      cap: int = 256, **kw) -> tuple[list[dict], list[dict]]:
    """The end of thinking ignored ``extensions`` times, appending each string (s1, Table 4).

    "none" appends nothing: the end-of-thinking token is forbidden once, at the point where
    the model ended on its own (measured by a run without forcing), so it must continue with
    something else; it is defined for one extension only. Bounds: [0, cap]."""
    base = run_setting(model, tokenizer, rows, Setting("natural", Budget(max_thinking_tokens=cap, max_answer_tokens=16),
                                                        high=cap), **kw)
    points = [aggregate("no extension", base, len(rows), string=None, extensions=0)]
    records = list(base)
    for s in strings:
        for k in extensions:
            if s == "none":
                if k != 1:
                    continue
                mins = [min(r["thinking_tokens"] + 1, cap) for r in base]
                setting = Setting(f"none x{k}", Budget(min_thinking_tokens=mins, max_thinking_tokens=cap,
                                                       max_answer_tokens=16, mode="suppress"), high=cap)
            else:
                setting = Setting(f"{s} x{k}", Budget(max_thinking_tokens=cap, num_waits=k, max_answer_tokens=16),
                                  high=cap, wait_string=s)
            recs = run_setting(model, tokenizer, rows, setting, **kw)
            records += recs
            points.append(aggregate(setting.name, recs, len(rows), string=s, extensions=k))
    return points, records


def unknown_tokens(tokenizer, text: str) -> int:
    """How many of ``text``'s tokens are the tokenizer's unknown token (0 when it has none)."""
    unk = getattr(tokenizer, "unk_id", None)
    if unk is None and hasattr(tokenizer, "token_to_id"):
        unk = tokenizer.token_to_id("<unk>")
    return 0 if unk is None else sum(t == unk for t in tokenizer.encode(text))

