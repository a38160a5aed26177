"""s1's Control, measured from what a model emitted, not from the decoder's own counters.

    span = thinking_span(result.token_ids, forcing.end_think_ids, forcing.eos_ids)
    n = thinking_tokens_of_text(saved_text, tokenizer)          # outputs kept only as text
    row = read_row(result.token_ids, forcing, tokenizer)       # thinking, answer, late thinking
    control([row.thinking_tokens for ...], max_tokens=32)       # share within the budget

The thinking of a generated row is everything after the think marker (the prompt ends with
it, so a row's generated tokens start inside it) up to the first end-of-thinking token (s1:
``<|im_start|>`` opening ``answer``). Injected "Wait" tokens are in it, as they are in the
text the model reads; the end delimiter, what follows it and an end-of-sequence token are
not. Control (s1, section 3.2) is the share of runs whose thinking length a satisfies
a_min <= a <= a_max. Because every figure here is read off the emitted sequence, a budget
the decoder failed to enforce shows as Control below 100%, whatever the decoder believed.

The answer span cannot carry thinking (``read_row``, the one rule every reader of a
generated row uses: generate, eval, the evaluation suite, the transformers processor). It
starts after the end-of-thinking delimiter and ends at the first complete answer
(``answers.first_answer_end``: the line of the first closed ``\\boxed{}``, else of the first
``Answer:`` with text), or earlier at a re-opened think/answer delimiter or an
end-of-sequence token. The scored answer is read from that span only, so it is the first
answer after a forced exit. What the row writes after the span (a restarted trace, a second
delimiter and a second answer), up to its end-of-sequence token, is thinking written in the
answer span: it counts in the row's thinking length and so in Control, and a model that
keeps thinking past its budget that way fails Control instead of being scored on it.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from s1kernels import checks
from s1kernels.data.format import ANSWER_START, THINK_START

__all__ = ["ThinkingSpan", "thinking_span", "RowSpans", "read_row", "thinking_tokens_of_text", "control"]


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
        raise checks.argument_error(name, "token ids (ints)", repr(ids), TypeError)
    return frozenset(ids)


def thinking_span(token_ids: Sequence[int], end_think_ids: Iterable[int] | int,
                  eos_ids: Iterable[int] | int = ()) -> ThinkingSpan:
    """The thinking span of a row's generated ids (prompt excluded; the prompt ends with the
    think marker). ``end_think_ids``: ids that end thinking; ``eos_ids``: ids that end the row."""
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    end, eos = _id_set("end_think_ids", end_think_ids), _id_set("eos_ids", eos_ids)
    if not end:
        raise checks.argument_error("end_think_ids", "at least one end-of-thinking id", "none")
    for i, t in enumerate(token_ids):
        if t in end:
            return ThinkingSpan(tuple(token_ids[:i]), "delimiter")
        if t in eos:
            return ThinkingSpan(tuple(token_ids[:i]), "eos")
    return ThinkingSpan(tuple(token_ids), "open")


@dataclasses.dataclass(frozen=True)
class RowSpans:
    """One generated row read by the rule above (``read_row``).

    ``thinking``: the thinking span (before the first end-of-thinking id); ``answer_ids``:
    the answer span (after the delimiter and its completion, up to the end of the first
    complete answer); ``answer_ended``: "answer" (a complete answer ends it), "delimiter" (a
    re-opened delimiter came first), "eos", "open" (the row was cut inside it) or "none"
    (the row never left its thinking); ``late_thinking_ids``: thinking written in the answer
    span (what follows the span up to the end-of-sequence token, leading and all-whitespace
    text aside); ``answer_text`` decodes the span, ``answer`` is extracted from it.
    """

    thinking: ThinkingSpan
    answer_ids: tuple[int, ...]
    answer_ended: str
    late_thinking_ids: tuple[int, ...]
    answer_text: str
    answer: str | None

    @property
    def thinking_tokens(self) -> int:
        """The row's thinking length: its thinking span and the thinking in its answer span."""
        return self.thinking.tokens + len(self.late_thinking_ids)


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def read_row(token_ids: Sequence[int], forcing, tokenizer) -> RowSpans:
    """Splits a row's generated ids (prompt excluded) into thinking, answer and the thinking
    written after the answer. ``forcing``: the ``ForcingTokens`` the row was decoded with
    (its end-of-thinking, delimiter-completion and end-of-sequence ids); ``tokenizer``: its
    ``decode(ids, skip_special_tokens=True)`` finds the first complete answer in the text."""
    from s1kernels.answers import extract_answer, first_answer_end

    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    token_ids = list(token_ids)
    span = thinking_span(token_ids, forcing.end_think_ids, forcing.eos_ids)
    if span.ended != "delimiter":
        return RowSpans(span, (), "none", (), "", None)
    end, eos = frozenset(forcing.end_think_ids), frozenset(forcing.eos_ids)
    # after the end-of-thinking id come its completion ("answer\n") and the answer region
    region = token_ids[span.tokens + 1 + len(forcing.delimiter_completion_ids):]
    stop = next((i for i, t in enumerate(region) if t in eos), None)
    closed = stop is not None
    region = region if stop is None else region[:stop]
    reopen = next((i for i, t in enumerate(region) if t in end), None)
    limit = len(region) if reopen is None else reopen
    cut = first_answer_end(_decode(tokenizer, region[:limit]))
    if cut is None:
        k = limit
        how = "delimiter" if reopen is not None else ("eos" if closed else "open")
    else:
        # the fewest tokens whose text reaches the end of the answer line
        lo, hi = 0, limit
        while lo < hi:
            mid = (lo + hi) // 2
            if len(_decode(tokenizer, region[:mid])) >= cut:
                hi = mid
            else:
                lo = mid + 1
        k, how = lo, "answer"
    late = region[k:]
    while late and not tokenizer.decode([late[0]]).strip():  # the newline that ends the answer line
        late = late[1:]
    if not tokenizer.decode(late).strip():
        late = []
    text = _decode(tokenizer, region[:k])
    return RowSpans(span, tuple(region[:k]), how, tuple(late), text, extract_answer(text))


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
        raise checks.argument_error("text", "str", type(text).__name__, TypeError)
    if not answer_start:
        raise checks.argument_error("answer_start", "the text that ends thinking", "an empty string")
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
        raise checks.argument_error("max_tokens", "an int >= 0", repr(max_tokens))
    if not checks.is_int(min_tokens) or not 0 <= min_tokens <= max_tokens:
        raise checks.argument_error("min_tokens", f"an int in [0, max_tokens={max_tokens}]", repr(min_tokens))
    lengths = list(lengths)
    if not lengths:
        return 1.0
    return sum(min_tokens <= n <= max_tokens for n in lengths) / len(lengths)
