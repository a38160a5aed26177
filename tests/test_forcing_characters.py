"""Forcing never lands inside a byte-level character (s1kernels/ops/decode/characters.py).

On both real tokenizers (SmolLM2 spells `≤` as `âī` + `¤`; Qwen spells rarer characters
over two or three tokens), a scripted model tries to (a) open a split character one token
before its thinking budget runs out, and (b) end its thinking early in the middle of one.
Without the rule the forced exit or the Wait lands between the character's tokens and the
thinking text holds U+FFFD; with it the text is clean, the budget still holds, and the rule
is the same in s1kernels.generate and the transformers processor (the vLLM processor is
checked on the same scripts in test_vllm_processor.py).
"""
import types

import pytest
import torch

from real_models import qwen_tokenizer_folder, smollm2_folder
from s1kernels.control import thinking_span
from s1kernels.data.tokenizer import S1Tokenizer
from s1kernels.ops.decode import Budget, DecodeState, ForcingTokens, Sampling, decode_step
from s1kernels.ops.decode.characters import CharacterGuard, missing_after, token_bytes

FOLDERS = {"smollm2": smollm2_folder, "qwen": qwen_tokenizer_folder}
# candidates for a character the tokenizer spells over several tokens
CANDIDATES = "≤≥∑𝔸🜁ꙮ𓀀😀"


@pytest.fixture(scope="module", params=sorted(FOLDERS))
def tok(request):
    return request.param, S1Tokenizer.from_folder(FOLDERS[request.param]())


def split_char(t, guard):
    """A character spelled over several tokens whose first token leaves bytes missing."""
    for c in CANDIDATES:
        ids = t.encode(c)
        if len(ids) > 1 and int(guard.table[0, ids[0]]) > 0:
            return c, ids
    raise AssertionError("no split character among the candidates")


def test_missing_bytes_follow_utf8():
    assert missing_after("≤".encode()[:1], 0) == 2 and missing_after("≤".encode()[:2], 0) == 1
    assert missing_after("≤".encode(), 0) == 0 and missing_after(b"\xa4", 1) == 0
    assert missing_after("😀".encode()[:1], 0) == 3 and missing_after(b"a", 2) == 0
    assert token_bytes("âī", True) == "≤".encode()[:2] and token_bytes("<0xE2>", False) == b"\xe2"
    assert token_bytes("<|im_start|>", True) == b"<|im_start|>"


def test_table_on_real_tokenizers(tok):
    name, t = tok
    f = ForcingTokens.from_tokenizer(t)
    g = CharacterGuard.from_tokenizer(t, f)
    assert g.active and g.table.shape == (4, t.id_limit)
    c, ids = split_char(t, g)
    need = 0
    for i in ids[:-1]:
        need = int(g.table[need, i])
        assert need > 0
    assert int(g.table[need, ids[-1]]) == 0
    # every forcing id is ASCII: after it a row is between characters
    for i in (*f.forced_exit_ids, *f.wait_ids, *f.eos_ids):
        assert int(g.table[:, i].abs().sum()) == 0


def _scores(V, first, second):
    x = torch.zeros(1, V)
    x[0, second] = 5.0
    x[0, first] = 10.0
    return x


def scripted_cases(t, f, guard):
    """(name, budget, plan): plan[j] = (first choice, second choice) of the model at step j."""
    c, ids = split_char(t, guard)
    x = t.encode(" x")[0]
    eos = f.eos_ids[0]
    n = len(ids)
    cases = []
    # (a) the model wants to start the character at thinking = max - k for k = 1..n-1 (and
    # keeps wanting to): there is no room to finish it
    for k in range(1, n):
        max_t = 6
        plan = [(x, x)] * (max_t - k) + [(ids[0], x)] * k + [(eos, eos)] * 12
        cases.append((f"budget-{k}", Budget(max_thinking_tokens=max_t, max_answer_tokens=3), plan))
    # (b) the model ends early (EOS before its minimum) right after the first byte token; its
    # second choice completes the character
    plan = [(x, x), (ids[0], x)] + [(eos, i) for i in ids[1:]] + [(eos, x)] * 20
    cases.append(("early-end", Budget(min_thinking_tokens=8, max_thinking_tokens=12, num_waits=1,
                                      max_answer_tokens=3), plan))
    return c, cases


def run_rule(f, guard, budget, plan, V):
    """The rule with decode_step, one row (what each engine does per step)."""
    st, bt, sp = DecodeState.new(1), budget.tensors(1, "cpu"), Sampling().tensors(1, "cpu")
    need = torch.zeros(1, dtype=torch.int32)
    out = []
    for first, second in plan:
        x = _scores(V, first, second)
        if guard is not None:
            guard.mask_(x, need, st, bt)
        tk, _ = decode_step(x, st, bt, sp, f, vocab_size=V)
        if guard is not None:
            need = guard.advance(need, tk)
        if int(st.event[0]) == 0:  # pad: the row had finished
            break
        out.append(int(tk[0]))
    return out


class ScriptedModel(torch.nn.Module):
    """A stand-in for the model in s1kernels.generate: the logits at a position follow a plan."""

    def __init__(self, V, prompt_len, plan):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.V, self.prompt_len, self.plan = V, prompt_len, plan
        self.config = types.SimpleNamespace(vocab_size=V, max_position_embeddings=4096)

    def new_kv_cache(self, batch, max_len, dtype=None, device=None):
        from s1kernels.model.transformer import KVCache

        cache = KVCache.__new__(KVCache)
        cache.k = cache.v = torch.zeros(1, batch, 1, max_len, 1)
        cache.batch, cache.max_len = batch, max_len
        return cache

    def forward_cached(self, ids, start, cache, pack=None, kv_len=None):
        pos = start[:, None] + torch.arange(ids.shape[1])[None, :]
        return pos[..., None].float()

    def logits(self, hidden, pack=None):
        j = int(hidden[0, 0]) - (self.prompt_len - 1)  # the step this position's logits feed
        first, second = self.plan[min(j, len(self.plan) - 1)]
        return _scores(self.V, first, second)


def run_generate(t, f, budget, plan, V):
    from s1kernels.generate import generate

    prompt = t.encode("<|im_start|>think\n")
    model = ScriptedModel(V, len(prompt), plan)
    r = generate(model, t, [prompt], budget=budget, forcing=f, max_new_tokens=len(plan), cpu_prepack=False)[0]
    return r.token_ids


def run_transformers(t, f, budget, plan, V):
    pytest.importorskip("transformers")
    from s1kernels.integrations.transformers import BudgetForcingProcessor

    proc = BudgetForcingProcessor(f, budget, vocab_size=V, tokenizer=t)
    ids = torch.tensor([t.encode("<|im_start|>think\n")])
    out = []
    for first, second in plan:
        x = proc(ids, _scores(V, first, second))
        tok = int(x.argmax(-1)[0])
        if bool(proc.done[0]) and out and out[-1] in f.eos_ids:
            break
        out.append(tok)
        ids = torch.cat([ids, torch.tensor([[tok]])], 1)
        if bool(proc.done[0]):
            break
    return out


ENGINES = {"rule": None, "generate": run_generate, "transformers": run_transformers}


def check_clean(t, f, budget, ids):
    span = thinking_span(ids, f.end_think_ids, f.eos_ids)
    text = t.decode(list(span.ids))
    assert "\ufffd" not in text, text
    assert span.tokens <= budget.max_thinking_tokens
    return text


def _scripted(tok):
    """(tokenizer, its forcing tokens, its character guard, id limit, the multi-byte character,
    the scripted cases) for a `tok` fixture value."""
    _, t = tok
    f = ForcingTokens.from_tokenizer(t)
    guard = CharacterGuard.from_tokenizer(t, f)
    c, cases = scripted_cases(t, f, guard)
    return t, f, guard, t.id_limit, c, cases


def test_without_the_rule_the_text_breaks(tok):
    """The scripts do cut a character when the rule is off (so the test below tests something)."""
    t, f, _, V, _, cases = _scripted(tok)
    for case, budget, plan in cases:
        ids = run_rule(f, None, budget, plan, V)
        text = t.decode(list(thinking_span(ids, f.end_think_ids, f.eos_ids).ids))
        assert "\ufffd" in text, (case, text)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_forcing_never_cuts_a_character(tok, engine):
    t, f, guard, V, c, cases = _scripted(tok)
    for case, budget, plan in cases:
        want = run_rule(f, guard, budget, plan, V)
        got = want if engine == "rule" else ENGINES[engine](t, f, budget, plan, V)
        assert got[: len(want)] == want, (case, got, want)
        text = check_clean(t, f, budget, got)
        if case == "early-end":  # the character is finished, then the Wait comes
            assert c + "Wait" in text, text
        else:  # the character was not started; the forced exit follows whole characters
            assert c not in text and t.decode(got).count("<|im_start|>answer\nFinal Answer:") == 1
