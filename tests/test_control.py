"""Control measured on the emitted tokens (s1kernels.control), and eval's Control failing when
the budget forcing is broken: a decoder whose thinking counter never counts (the budget is
never enforced), and a forced exit that does not end the thinking. In both the decoder's own
counter stays within the budget, so a Control read off that counter would say 100%."""
import sys

import pytest
import torch

from s1kernels import eval as s1eval
from s1kernels import generate as s1gen
from s1kernels.control import ThinkingSpan, control, thinking_span, thinking_tokens_of_text
from s1kernels.ops.decode import Budget, ForcingTokens, Sampling


def test_thinking_span():
    assert thinking_span([5, 6, 7, 0, 9, 1], end_think_ids=[0], eos_ids=[1]) == ThinkingSpan((5, 6, 7), "delimiter")
    assert thinking_span([5, 6, 1], 0, 1) == ThinkingSpan((5, 6), "eos")
    assert thinking_span([5, 6, 7], 0, 1) == ThinkingSpan((5, 6, 7), "open")
    assert thinking_span(torch.tensor([0, 4]), 0).tokens == 0
    assert thinking_span([], 0).ended == "open"
    with pytest.raises(ValueError, match="end_think_ids"):
        thinking_span([1, 2], [])
    with pytest.raises(TypeError, match="end_think_ids"):
        thinking_span([1, 2], ["<|im_start|>"])


def test_control():
    assert control([0, 3, 4, 5], max_tokens=4) == 0.75
    assert control([0, 3, 4, 5], max_tokens=5, min_tokens=3) == 0.75
    assert control([], 4) == 1.0
    with pytest.raises(ValueError, match="max_tokens"):
        control([1], -1)
    with pytest.raises(ValueError, match="min_tokens"):
        control([1], 4, min_tokens=5)


def test_thinking_tokens_of_text(tok):
    think = "Start at 3 .\nWait , 3 + 4 = 7"
    n = len(tok.encode(think))
    full = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n" + think
    assert thinking_tokens_of_text(full + "<|im_start|>answer\nAnswer: 7<|im_end|>", tok) == n
    assert thinking_tokens_of_text(think + "<|im_start|>answer\nAnswer: 7", tok) == n  # a generated row
    assert thinking_tokens_of_text(think + "<|im_end|>", tok) == n  # ended inside its thinking
    assert thinking_tokens_of_text(full, tok) == n  # cut by a length limit
    # the text path re-tokenizes: a non-canonical split (" 7" emitted as " " + "7") counts as one token
    ids = tok.encode("Start at 3 .") + [tok.token_to_id("Ġ"), tok.token_to_id("7")]
    assert thinking_span(ids, [tok.im_start_id]).tokens == len(ids)
    assert thinking_tokens_of_text(tok.decode(ids), tok) == len(ids) - 1


def test_generate_counts_agree_with_the_measurement(model, tok):
    """With working forcing, the emitted span and the decoder's counter agree on every row."""
    qs = ["Start at 1 .", "Start at 2 .\nA + 3 = ?", "Start at 9 ."]
    forcing = ForcingTokens.from_tokenizer(tok)
    for budget in (Budget(max_thinking_tokens=5, max_answer_tokens=3),
                   Budget(min_thinking_tokens=4, max_thinking_tokens=9, num_waits=1, max_answer_tokens=3)):
        for r in s1gen.generate(model, tok, qs, budget=budget, forcing=forcing, backend="torch",
                                sampling=Sampling(temperature=1.0, seed=3)):
            span = thinking_span(r.token_ids, forcing.end_think_ids, forcing.eos_ids)
            assert span.tokens == r.thinking_tokens
            assert tok.decode(span.ids) == r.thinking_text


def _eval(model, tok, budgets=(2, 5), min_thinking_tokens=0, num_waits=0, **kw):
    rows = s1eval.load_eval_rows(None, num_synthetic=4)
    budget = Budget(max_answer_tokens=3, min_thinking_tokens=min_thinking_tokens, num_waits=num_waits)
    return s1eval.evaluate(model, tok, rows, list(budgets), budget=budget, progress=False, backend="torch",
                           keep_rows=True, **kw)


def test_eval_control_holds_with_working_forcing(model, tok):
    report = _eval(model, tok, min_thinking_tokens=1, num_waits=1)
    for e in report["budgets"]:
        assert e["control"] == 1.0 and e["decoder_disagreements"] == 0
        assert all(r["thinking_tokens"] == r["events"]["decoder_thinking_tokens"] for r in e["rows"])


def test_eval_control_fails_when_the_budget_is_not_enforced(model, tok, monkeypatch):
    """The decoder's thinking counter is reset after every step, so the forced exit never
    comes: the model thinks until max_new_tokens while the counter reads 0 <= budget."""
    engine = sys.modules[s1gen._Decoder.__module__]  # where the decode loop looks decode_step up
    real = engine.decode_step

    def never_counts(logits, state, *args, **kwargs):
        out = real(logits, state, *args, **kwargs)
        state.thinking_tokens.zero_()
        return out

    monkeypatch.setattr(engine, "decode_step", never_counts)
    report = _eval(model, tok, max_new_tokens=12)
    for e in report["budgets"]:
        assert e["control"] < 1.0, e  # measured on the output: the budget was exceeded
        assert e["max_observed_thinking_tokens"] > e["max_thinking_tokens"]
        assert e["decoder_disagreements"] > 0
        # what a Control read off the decoder's counter would have said
        assert all(r["events"]["decoder_thinking_tokens"] <= e["max_thinking_tokens"] for r in e["rows"])


def test_eval_control_fails_when_the_forced_exit_does_not_end_thinking(model, tok):
    """A forced exit without the end-of-thinking token: the decoder moves to its answer phase
    at the budget, but the emitted text never leaves the thinking."""
    good = ForcingTokens.from_tokenizer(tok)
    broken = ForcingTokens(end_think_ids=good.end_think_ids, delimiter_completion_ids=good.delimiter_completion_ids,
                           wait_ids=good.wait_ids, forced_exit_ids=tuple(tok.encode("Final Answer:")),
                           eos_ids=good.eos_ids, pad_id=good.pad_id)
    report = _eval(model, tok, forcing=broken)
    for e in report["budgets"]:
        assert e["forced_exit_rate"] == 1.0  # an untrained model never ends its thinking itself
        assert e["control"] == 0.0
        assert all(r["events"]["decoder_thinking_tokens"] == e["max_thinking_tokens"] for r in e["rows"])
