"""s1's Control, measured from what a model emitted, not from the decoder's own counters.

    span = thinking_span(result.token_ids, forcing.end_think_ids, forcing.eos_ids)
    n = thinking_tokens_of_text(saved_text, tokenizer)          # outputs kept only as text
    control([span.tokens for ...], max_tokens=32)               # share within the budget

The thinking of a generated row is everything after the think marker (the prompt ends with
it, so a row's generated tokens start inside it) up to the first end-of-thinking token (s1:
``<|im_start|>`` opening ``answer``). Injected "Wait" tokens are in it, as they are in the
text the model reads; the end delimiter, what follows it and an end-of-sequence token are
not. Control (s1, section 3.2) is the share of runs whose thinking length a satisfies
a_min <= a <= a_max. Because every figure here is read off the emitted sequence, a budget
the decoder failed to enforce shows as Control below 100%, whatever the decoder believed.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from s1kernels import checks
from s1kernels.data.format import ANSWER_START, THINK_START

__all__ = ["ThinkingSpan", "thinking_span", "thinking_tokens_of_text", "control"]


@dataclasses.dataclass(frozen=True)
class ThinkingSpan:
    """The thinking part of one generated row.

    ``ids``: the emitted thinking ids; ``tokens`` = len(ids); ``ended``: "delimiter" (an
    end-of-thinking token follows), "eos" (the row ended inside its thinking) or "open" (the
    row stops inside its thinking: cut by a length limit).
    """

    ids: tuple[int, ...]
    ended: str

    @property
    def tokens(self) -> int:
        return len(self.ids)


def _id_set(name: str, ids) -> frozenset:
    ids = (ids,) if isinstance(ids, int) else tuple(ids)
    if any(not checks.is_int(t) for t in ids):
        raise TypeError(f"{name}: expected token ids (ints), got {ids!r}")
    return frozenset(ids)


def thinking_span(token_ids: Sequence[int], end_think_ids: Iterable[int] | int,
                  eos_ids: Iterable[int] | int = ()) -> ThinkingSpan:
    """The thinking span of a row's generated ids (prompt excluded; the prompt ends with the
    think marker). ``end_think_ids``: ids that end thinking; ``eos_ids``: ids that end the row."""
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    end, eos = _id_set("end_think_ids", end_think_ids), _id_set("eos_ids", eos_ids)
    if not end:
        raise ValueError("end_think_ids: expected at least one end-of-thinking id, got none")
    for i, t in enumerate(token_ids):
        if t in end:
            return ThinkingSpan(tuple(token_ids[:i]), "delimiter")
        if t in eos:
            return ThinkingSpan(tuple(token_ids[:i]), "eos")
    return ThinkingSpan(tuple(token_ids), "open")


def thinking_tokens_of_text(text: str, tokenizer, think_start: str = THINK_START, answer_start: str = ANSWER_START,
                            eos_texts: Sequence[str] = ("<|im_end|>", "<|endoftext|>")) -> int:
    """Thinking length of a generated text, re-tokenized with ``tokenizer`` (its ``encode``).

    The thinking is the text after the last ``think_start`` (when the text holds the prompt;
    without one the text is taken to start inside the thinking, as a generated row does) up
    to the first ``answer_start``, or to the first end-of-sequence text when the row ended
    inside its thinking. For outputs saved as text, or written by another engine; the count
    can differ from the emitted ids when the model emitted a non-canonical split of a word.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    if not answer_start:
        raise ValueError("answer_start: expected the text that ends thinking, got an empty string")
    if think_start and think_start in text:
        text = text[text.rindex(think_start) + len(think_start):]
    cut = len(text)
    for stop in (answer_start, *eos_texts):
        at = text.find(stop) if stop else -1
        if at >= 0:
            cut = min(cut, at)
    return len(tokenizer.encode(text[:cut]))


def control(lengths: Iterable[int], max_tokens: int, min_tokens: int = 0) -> float:
    """s1's Control: the share of runs whose thinking length is within [min_tokens, max_tokens]
    (1.0 for no runs). ``lengths`` are measured thinking lengths, e.g. ``thinking_span(...).tokens``."""
    if not checks.is_int(max_tokens) or max_tokens < 0:
        raise ValueError(f"max_tokens: expected an int >= 0, got {max_tokens!r}")
    if not checks.is_int(min_tokens) or not 0 <= min_tokens <= max_tokens:
        raise ValueError(f"min_tokens: expected an int in [0, max_tokens={max_tokens}], got {min_tokens!r}")
    lengths = list(lengths)
    if not lengths:
        return 1.0
    return sum(min_tokens <= n <= max_tokens for n in lengths) / len(lengths)
