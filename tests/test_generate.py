"""Generation with budget forcing on a tiny random model.

The oracle is a host-side loop written from the documented rules: each step runs the model
over the whole sequence (packed forward, no KV cache), takes the greedy token and applies
budget forcing in plain Python. `generate` (static KV cache, ragged prefill, fused decode
step) must produce the same tokens, token for token.
"""
import collections
import random

import pytest
import torch

from s1kernels.data import make_rows
from s1kernels.generate import GenerationResult, format_prompt, generate
from s1kernels.model import ModelConfig, Transformer
from s1kernels.ops.decode import Budget, ForcingTokens, Sampling



def _tiny_model(tok, seed=0, std=0.3):
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=std)
    return Transformer(cfg).init_weights(seed=seed).eval()


@pytest.fixture(scope="module")
def forcing(tok):
    """Token lists where end-of-thinking and EOS are tokens this random model often emits,
    so that waits, natural ends, EOS and forced exits all happen within a few steps."""
    ids = lambda s: tuple(tok.encode(s))  # noqa: E731
    end = 31  # a token the seeded random model emits every few steps
    return ForcingTokens(end_think_ids=(end,), delimiter_completion_ids=ids("answer\n"),
                         wait_ids=ids("Wait ,"), forced_exit_ids=(end, *ids("answer\nFinal Answer:")),
                         eos_ids=(2, 37, tok.im_end_id), pad_id=tok.pad_id)


@pytest.fixture(scope="module")
def prompts():
    # ragged on purpose: row i keeps its first 3 + i lines, so every prompt length differs
    return ["\n".join(r["question"].split("\n")[: 3 + i]) for i, r in enumerate(make_rows(5, seed=11))]


# ----------------------------------------------------------------------------- the oracle

@torch.no_grad()
def reference_generate(model, prompt_ids, forcing, min_t, max_t, num_waits, max_answer, mode, max_new):
    """Greedy decoding with budget forcing, one full forward per step, rules in Python."""
    end_ids, eos_ids = set(forcing.end_think_ids), set(forcing.eos_ids)
    seq = list(prompt_ids)
    out = []
    phase, thinking, waits, answer = "thinking", 0, 0, 0
    pending, pending_kind = [], None
    forced = False
    vocab = model.config.vocab_size
    while len(out) < max_new and phase != "done":
        if phase == "thinking" and thinking >= max_t and not pending:
            # the budget is spent: the forced exit (a "Wait" is never pending here: one is only
            # started when it fits in the budget)
            pending, pending_kind, phase, forced = list(forcing.forced_exit_ids), "exit", "answer", True
        if pending:
            t = pending.pop(0)
            if pending_kind == "wait":
                thinking += 1  # injected "Wait" tokens are thinking content
        else:
            ids = torch.tensor(seq)
            hidden = model(ids, torch.arange(len(seq)), torch.tensor([0, len(seq)], dtype=torch.int32))
            logits = model.logits(hidden[-1])[:vocab].clone()
            may_end = thinking >= min_t and (mode == "suppress" or waits >= num_waits)
            if phase == "thinking" and not may_end and mode == "suppress":
                for i in end_ids | eos_ids:
                    logits[i] = float("-inf")
            t = int(torch.argmax(logits))
            if phase == "thinking":
                if t in end_ids | eos_ids and not may_end and thinking + len(forcing.wait_ids) > max_t:
                    # an early end that the whole "Wait" would not fit after: the forced exit now
                    t, phase, forced = forcing.forced_exit_ids[0], "answer", True
                    pending, pending_kind = list(forcing.forced_exit_ids[1:]), "exit"
                elif t in end_ids | eos_ids and not may_end:
                    waits += 1
                    thinking += 1
                    t = forcing.wait_ids[0]
                    pending, pending_kind = list(forcing.wait_ids[1:]), "wait"
                elif t in end_ids:
                    phase = "answer"
                    pending, pending_kind = list(forcing.delimiter_completion_ids), "delimiter"
                elif t in eos_ids:
                    phase = "done"
                else:
                    thinking += 1
            else:
                answer += 1
                if t in eos_ids or answer >= max_answer:
                    phase = "done"
        out.append(t)
        seq.append(t)
    return out, dict(thinking=thinking, waits=waits, forced=forced, done=phase == "done")


def _budgets():
    # (min, max, num_waits, max_answer, mode): no forcing, minimums, waits, suppress, tiny caps
    return [
        (0, 30, 0, 6, "wait"),
        (6, 30, 0, 6, "wait"),
        (0, 30, 2, 6, "wait"),
        (5, 12, 1, 4, "wait"),
        (8, 30, 0, 6, "suppress"),
        (0, 3, 0, 3, "wait"),
        (0, 0, 0, 2, "wait"),
    ]


def test_generate_matches_host_reference(model, tok, forcing, prompts):
    seen = collections.Counter()
    for min_t, max_t, num_waits, max_answer, mode in _budgets():
        budget = Budget(min_thinking_tokens=min_t, max_thinking_tokens=max_t, num_waits=num_waits,
                        max_answer_tokens=max_answer, mode=mode)
        max_new = max_t + max_answer + 12
        res = generate(model, tok, prompts, budget=budget, max_new_tokens=max_new, forcing=forcing, backend="torch",
                       check_every=3)
        for p, r in zip(prompts, res):
            want, ev = reference_generate(model, tok.encode(format_prompt(p, tok)), forcing, min_t, max_t, num_waits,
                                          max_answer, mode, max_new)
            case = (min_t, max_t, num_waits, max_answer, mode, p)
            assert r.token_ids == want, (case, r.token_ids, want)
            assert r.thinking_tokens == ev["thinking"], case
            assert r.waits_used == ev["waits"], case
            assert r.forced_exit == ev["forced"], case
            assert (r.finished_reason != "length") == ev["done"], case
            ended = forcing.end_think_ids[0] in r.token_ids
            seen["wait"] += r.waits_used > 0
            seen["forced"] += r.forced_exit
            seen["natural_end"] += ended and not r.forced_exit
            seen["eos_in_thinking"] += r.finished_reason == "eos" and not ended
            seen["eos_in_answer"] += r.finished_reason == "eos" and ended
            seen["answer_cap"] += r.finished_reason == "answer_cap"
    # the comparison only means something if the cases exercise every rule
    assert all(seen[k] > 0 for k in ("wait", "forced", "natural_end", "eos_in_thinking", "eos_in_answer",
                                     "answer_cap")), seen


def test_default_forcing_matches_reference(model, tok, prompts):
    # The s1 delimiters of the default tokenizer: a random model never ends thinking itself,
    # so every row runs into the forced exit "<|im_start|>answer\nFinal Answer:".
    forcing = ForcingTokens.from_tokenizer(tok)
    assert tok.decode(list(forcing.forced_exit_ids)) == "<|im_start|>answer\nFinal Answer:"
    budget = Budget(min_thinking_tokens=2, max_thinking_tokens=9, max_answer_tokens=4)
    res = generate(model, tok, prompts[:2], budget=budget, backend="torch")
    for p, r in zip(prompts, res):
        want, ev = reference_generate(model, tok.encode(format_prompt(p, tok)), forcing, 2, 9, 0, 4, "wait", 10**6)
        assert r.token_ids == want
        assert r.forced_exit and r.thinking_tokens == 9
        assert "<|im_start|>answer\nFinal Answer:" in r.text
        assert r.answer_text.startswith("Final Answer:")


@pytest.mark.parametrize("batch_size", [None, 2])
def test_batched_equals_one_at_a_time_greedy(model, tok, forcing, prompts, batch_size):
    lens = [len(tok.encode(format_prompt(p, tok))) for p in prompts]
    assert len(set(lens)) > 1  # ragged prompts
    budget = Budget(min_thinking_tokens=4, max_thinking_tokens=20, num_waits=1, max_answer_tokens=5)
    together = generate(model, tok, prompts, budget=budget, forcing=forcing, backend="torch", batch_size=batch_size)
    for p, r in zip(prompts, together):
        (alone,) = generate(model, tok, [p], budget=budget, forcing=forcing, backend="torch")
        assert r.token_ids == alone.token_ids
        assert (r.thinking_tokens, r.waits_used, r.forced_exit, r.finished_reason) == \
               (alone.thinking_tokens, alone.waits_used, alone.forced_exit, alone.finished_reason)


def test_batched_equals_one_at_a_time_sampled(model, tok, forcing, prompts):
    # A scalar seed s gives prompt i the seed s + i, so a row's draws do not depend on batching.
    budget = Budget(max_thinking_tokens=15, max_answer_tokens=4)
    sampling = Sampling(temperature=1.0, top_p=0.9, seed=7)
    together = generate(model, tok, prompts, budget=budget, sampling=sampling, forcing=forcing, backend="torch")
    for i, (p, r) in enumerate(zip(prompts, together)):
        (alone,) = generate(model, tok, [p], budget=budget, sampling=Sampling(temperature=1.0, top_p=0.9, seed=7 + i),
                            forcing=forcing, backend="torch")
        assert r.token_ids == alone.token_ids
    greedy = generate(model, tok, prompts, budget=budget, forcing=forcing, backend="torch")
    assert any(a.token_ids != b.token_ids for a, b in zip(together, greedy))


def test_dropping_finished_rows_changes_nothing(model, tok, forcing, monkeypatch):
    import s1kernels.generate as gen

    calls = []
    select = gen._Decoder.select
    monkeypatch.setattr(gen._Decoder, "select", lambda self, idx: (calls.append(idx.numel()), select(self, idx))[1])
    qs = [r["question"] for r in make_rows(8, seed=21)]
    budget = Budget(min_thinking_tokens=0, max_thinking_tokens=40, max_answer_tokens=3)
    for sampling in (Sampling(), Sampling(temperature=1.0, seed=5)):
        kept = generate(model, tok, qs, budget=budget, sampling=sampling, forcing=forcing, backend="torch",
                        compact=False, check_every=2)
        dropped = generate(model, tok, qs, budget=budget, sampling=sampling, forcing=forcing, backend="torch",
                           compact=True, check_every=2)
        for a, b in zip(kept, dropped):
            assert a.token_ids == b.token_ids
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)  # smaller matmuls round differently
            assert (a.thinking_tokens, a.waits_used, a.forced_exit, a.finished_reason) == \
                   (b.thinking_tokens, b.waits_used, b.forced_exit, b.finished_reason)
        assert len({len(r.token_ids) for r in kept}) > 2  # rows really finish at different steps
    assert calls, "no finished rows were dropped"


def test_auto_backend_matches_torch_reference(model, tok, forcing, prompts):
    # "auto" is the C++ CPU twin when the extension is built (else the torch reference itself)
    budget = Budget(min_thinking_tokens=3, max_thinking_tokens=18, num_waits=1, max_answer_tokens=4)
    for sampling in (Sampling(), Sampling(temperature=0.8, top_k=20, top_p=0.9, seed=1)):
        a = generate(model, tok, prompts, budget=budget, sampling=sampling, forcing=forcing, backend="auto")
        b = generate(model, tok, prompts, budget=budget, sampling=sampling, forcing=forcing, backend="torch")
        assert [r.token_ids for r in a] == [r.token_ids for r in b]


def test_per_row_budgets(model, tok, forcing, prompts):
    maxes = [3, 7, 12, 5, 9]
    budget = Budget(max_thinking_tokens=maxes, max_answer_tokens=3)
    res = generate(model, tok, prompts, budget=budget, forcing=forcing, backend="torch", batch_size=2)
    for p, r, m in zip(prompts, res, maxes):
        (alone,) = generate(model, tok, [p], budget=Budget(max_thinking_tokens=m, max_answer_tokens=3),
                            forcing=forcing, backend="torch")
        assert r.token_ids == alone.token_ids
        assert r.thinking_tokens <= m


def test_control_is_100_percent(model, tok, forcing):
    """Thinking never exceeds the budget; it ends early only after the minimum and the waits."""
    rng = random.Random(0)
    qs = [r["question"] for r in make_rows(6, seed=3, task="chain")]
    for trial in range(6):
        max_t = rng.randint(0, 25)
        min_t = rng.randint(0, max_t)
        num_waits = rng.randint(0, 2)
        mode = rng.choice(["wait", "suppress"])
        budget = Budget(min_thinking_tokens=min_t, max_thinking_tokens=max_t, num_waits=num_waits,
                        max_answer_tokens=4, mode=mode)
        for r in generate(model, tok, qs, budget=budget, forcing=forcing, backend="torch",
                          sampling=Sampling(temperature=0.8, seed=trial)):
            assert r.finished_reason in ("eos", "answer_cap"), r.finished_reason  # default max_new suffices
            assert r.thinking_tokens <= max_t
            thinking_ended = forcing.end_think_ids[0] in r.token_ids or r.forced_exit
            if not r.forced_exit:
                assert r.thinking_tokens >= min_t
                if mode == "wait":
                    assert r.waits_used == num_waits
            else:  # at the budget, or earlier: an early end the whole "Wait" did not fit after
                assert max_t - len(forcing.wait_ids) < r.thinking_tokens <= max_t
            assert thinking_ended or r.token_ids[-1] in forcing.eos_ids


def test_result_fields_and_texts(model, tok, forcing, prompts):
    (r,) = generate(model, tok, prompts[:1], budget=Budget(max_thinking_tokens=10, max_answer_tokens=3),
                    forcing=forcing, backend="torch")
    assert isinstance(r, GenerationResult)
    assert r.text == tok.decode(r.token_ids)
    assert len(r.logprobs) == len(r.token_ids)
    assert all(lp <= 0 for lp in r.logprobs)
    assert r.prompt.endswith("<|im_start|>think\n")
    assert r.prompt_tokens == len(tok.encode(r.prompt))
    d = r.to_dict()
    assert d["token_ids"] == r.token_ids


def test_raw_prompts_and_token_ids(model, tok, forcing, prompts):
    budget = Budget(max_thinking_tokens=8, max_answer_tokens=3)
    text = format_prompt(prompts[0], tok)
    a = generate(model, tok, [prompts[0]], budget=budget, forcing=forcing, backend="torch")[0]
    b = generate(model, tok, [text], budget=budget, forcing=forcing, backend="torch", chat=False)[0]
    c = generate(model, tok, [tok.encode(text)], budget=budget, forcing=forcing, backend="torch")[0]
    assert a.token_ids == b.token_ids == c.token_ids


def test_max_new_tokens_cuts_rows(model, tok, forcing, prompts):
    res = generate(model, tok, prompts, budget=Budget(max_thinking_tokens=50, num_waits=5, min_thinking_tokens=40),
                   max_new_tokens=7, forcing=forcing, backend="torch")
    assert all(len(r.token_ids) <= 7 for r in res)
    assert all(r.finished_reason == "length" for r in res)


def test_streaming_prints_the_tokens(model, tok, forcing, prompts):
    pieces = []
    (r,) = generate(model, tok, prompts[:1], budget=Budget(max_thinking_tokens=10, max_answer_tokens=3),
                    forcing=forcing, backend="torch", stream=pieces.append)
    assert "".join(pieces).rstrip("\n") == r.text
    with pytest.raises(ValueError, match="stream"):
        generate(model, tok, prompts[:2], budget=Budget(max_thinking_tokens=4), stream=True, backend="torch")


def test_bad_arguments(model, tok, prompts):
    with pytest.raises(TypeError, match="prompts"):
        generate(model, tok, "a single string", budget=Budget(max_thinking_tokens=4))
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tok, prompts, budget=Budget())  # no thinking cap and no max_new_tokens
    with pytest.raises(ValueError, match="max_position_embeddings"):
        generate(model, tok, prompts, budget=Budget(max_thinking_tokens=4), max_new_tokens=10_000)
    with pytest.raises(ValueError, match="batch_size"):
        generate(model, tok, prompts, budget=Budget(max_thinking_tokens=4), batch_size=0)
    with pytest.raises(ValueError, match="min_thinking_tokens"):
        generate(model, tok, prompts, budget=Budget(min_thinking_tokens=5, max_thinking_tokens=4))
    assert generate(model, tok, [], budget=Budget(max_thinking_tokens=4)) == []


@pytest.mark.cuda
def test_cuda_graph_matches_eager_on_gpu(tok, forcing, prompts):
    model = _tiny_model(tok).cuda()
    budget = Budget(min_thinking_tokens=4, max_thinking_tokens=24, num_waits=1, max_answer_tokens=6)
    for sampling in (Sampling(), Sampling(temperature=0.9, top_p=0.95, seed=3)):
        eager = generate(model, tok, prompts, budget=budget, sampling=sampling, forcing=forcing, cuda_graph=False,
                         compact=False)
        for compact in (False, True):  # dropping finished rows captures the graph again
            graphed = generate(model, tok, prompts, budget=budget, sampling=sampling, forcing=forcing,
                               cuda_graph=True, compact=compact, check_every=2)
            for a, b in zip(eager, graphed):
                assert a.token_ids == b.token_ids
                assert (a.thinking_tokens, a.waits_used, a.forced_exit) == \
                       (b.thinking_tokens, b.waits_used, b.forced_exit)
    cpu = generate(_tiny_model(tok), tok, prompts, budget=budget, forcing=forcing, backend="torch")
    gpu = generate(model, tok, prompts, budget=budget, forcing=forcing, cuda_graph=True)
    same = sum(a.token_ids == b.token_ids for a, b in zip(cpu, gpu))
    assert same >= len(prompts) - 1  # fp32 on both; allow one near-tie to flip
