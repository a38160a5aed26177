"""Budget forcing with multi-token strings on real BPE tokenizers (SmolLM2's and Qwen's).

The forcing tokens are derived from the tokenizers (documented in docs/real-model.md), then
the decode step is driven with scripted logits (each row's argmax is the token the script
names) on every backend and checked two ways: against the torch reference, state for
state, and on the decoded text: one end tag, whole "Wait"s, clean text.
"""
import pytest
import torch

from real_models import qwen_tokenizer_folder, smollm2_folder
from s1kernels import backend as _backend
from s1kernels.data.tokenizer import S1Tokenizer
from s1kernels.ops import decode as D
from s1kernels.ops.decode import Budget, DecodeState, ForcingTokens, Sampling, decode_step

BACKENDS = ["torch"] + (["cpp"] if _backend.native() is not None else []) + (
    ["cuda"] if torch.cuda.is_available() else [])

# What the derivation gives (docs/real-model.md lists the same ids with their pieces).
EXPECTED = {
    "smollm2": dict(end_think_ids=(1,), delimiter_completion_ids=(11247, 198), wait_ids=(33359,),
                    forced_exit_ids=(1, 11247, 198, 29288, 19842, 42), eos_ids=(2, 0), pad_id=2),
    "qwen": dict(end_think_ids=(151644,), delimiter_completion_ids=(9217, 198), wait_ids=(14190,),
                 forced_exit_ids=(151644, 9217, 198, 19357, 21806, 25), eos_ids=(151645, 151643), pad_id=151643),
}
FOLDERS = {"smollm2": smollm2_folder, "qwen": qwen_tokenizer_folder}


@pytest.fixture(scope="module", params=sorted(FOLDERS))
def tok(request):
    return request.param, S1Tokenizer.from_folder(FOLDERS[request.param]())


def test_derived_forcing_tokens(tok):
    name, t = tok
    f = ForcingTokens.from_tokenizer(t)
    assert f == ForcingTokens(**EXPECTED[name])
    assert f == ForcingTokens.from_tokenizer(t)
    assert t.decode(f.forced_exit_ids) == "<|im_start|>answer\nFinal Answer:"
    assert t.decode(f.wait_ids) == "Wait"
    # the multi-token strings: three tokens each, their pieces as the vocabulary spells them
    assert [t.id_to_token(i) for i in f.forced_exit_ids[3:]] == ["Final", "ĠAnswer", ":"]


def _compact(forcing: ForcingTokens, scripts):
    """The real ids in play renumbered 0..n-1 (the state machine only compares ids, and a
    151k-column step in the fp64 reference is slow): the remapped forcing, scripts, and the
    map back."""
    real = sorted({*forcing.end_think_ids, *forcing.delimiter_completion_ids, *forcing.wait_ids,
                   *forcing.forced_exit_ids, *forcing.eos_ids, forcing.pad_id, *(i for sc in scripts for i in sc)})
    to = {r: i for i, r in enumerate(real)}
    m = lambda ids: tuple(to[i] for i in ids)  # noqa: E731
    small = ForcingTokens(m(forcing.end_think_ids), m(forcing.delimiter_completion_ids), m(forcing.wait_ids),
                          m(forcing.forced_exit_ids), m(forcing.eos_ids), to[forcing.pad_id])
    return small, [list(m(sc)) for sc in scripts], real


def drive(forcing, scripts, budget, backend, steps):
    """Runs decode_step `steps` times; row b's argmax at step i is scripts[b][i] (or the
    script's last token after its end). Returns the emitted real ids per row (a finished row's pads left out),
    and checks the backend against the torch reference (tokens and every state field) at
    every step."""
    small, scripts, real = _compact(forcing, scripts)
    B, V = len(scripts), len(real)
    dev = "cuda" if backend == "cuda" else "cpu"
    bt, st = budget.tensors(B, dev), Sampling().tensors(B, dev)
    s, s_ref = DecodeState.new(B, dev), DecodeState.new(B, dev)
    out = [[] for _ in range(B)]
    for i in range(steps):
        x = torch.zeros(B, V, device=dev)
        for b, sc in enumerate(scripts):
            x[b, sc[min(i, len(sc) - 1)]] = 10.0
        tk, _ = decode_step(x, s, bt, st, small, backend=backend)
        tr, _ = decode_step(x.cpu(), s_ref, budget.tensors(B, "cpu"), Sampling().tensors(B, "cpu"), small,
                            backend="torch")
        assert torch.equal(tk.cpu(), tr), (backend, i)
        for f, a, r in zip(D._STATE_FIELDS, s.tensors(), s_ref.tensors()):
            assert torch.equal(a.cpu(), r), (backend, i, f)
        for b in range(B):
            if int(s.event[b]) != D.EVENT_PAD:  # a finished row's pad (SmolLM2 pads with <|im_end|>)
                out[b].append(real[int(tk[b])])
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_row_that_started_the_delimiter_finishes_it(tok, backend):
    """Rows that emit <|im_start|> themselves one step before, at, or after reaching their
    budget get exactly one "<|im_start|>answer\\n" and no "Final Answer:" on top of it."""
    name, t = tok
    f = ForcingTokens.from_tokenizer(t)
    words = t.encode(" so the sum is 5")  # ordinary thinking tokens
    max_t = 4
    scripts = []
    for k in (max_t - 1, max_t - 2, 0):  # thinking tokens before the model's own <|im_start|>
        scripts.append(words[:k] + [f.end_think_ids[0]] + t.encode("Answer: 5") + [f.eos_ids[0]])
    # and one that never ends: the budget closes its thinking with the forced exit
    scripts.append(words * 4)
    rows = drive(f, scripts, Budget(max_thinking_tokens=max_t, max_answer_tokens=6), backend, 16)
    for b, ids in enumerate(rows[:3]):
        text = t.decode(ids)
        assert text.count("<|im_start|>") == 1 and "<|im_start|>answer\n" in text, text
        assert "Final Answer:" not in text, text
        assert text.startswith(t.decode(scripts[b][: scripts[b].index(f.end_think_ids[0])]) + "<|im_start|>answer\n")
    text = t.decode(rows[3])
    assert text.count("<|im_start|>") == 1 and "<|im_start|>answer\nFinal Answer:" in text


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wait_string", ["\nWait", "Wait, let me check again."])
def test_a_multi_token_wait_is_never_cut(tok, backend, wait_string):
    """The model tries to end early at every distance from its budget; the injected wait is
    always whole (or the row takes the forced exit), so the text never holds "Wa" + exit."""
    name, t = tok
    f = ForcingTokens.from_tokenizer(t, wait_string=wait_string)
    n_wait = len(f.wait_ids)
    assert n_wait > 1
    max_t = 12
    filler = t.encode(" x" * 40)
    scripts = [filler[:k] + [f.end_think_ids[0]] * 40 for k in range(max_t)]  # ends early after k tokens
    rows = drive(f, scripts, Budget(min_thinking_tokens=max_t, max_thinking_tokens=max_t, max_answer_tokens=2),
                 backend, max_t + 12)
    for k, ids in enumerate(rows):
        text = t.decode(ids)
        thinking, _, rest = text.partition("<|im_start|>answer\n")
        assert rest.startswith("Final Answer:"), text  # min == max: every row exits by force
        body = thinking
        waits = 0
        while body.endswith(wait_string):
            body = body[: -len(wait_string)]
            waits += 1
        assert body == t.decode(filler[:k]), (k, text)  # nothing but whole waits after the filler
        assert k + waits * n_wait <= max_t < k + (waits + 1) * n_wait  # as many as fit, and the budget holds
        assert "\ufffd" not in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wait_injected_after_a_word_piece_decodes_cleanly(tok, backend):
    """The model ends early in the middle of a word (" hypotenuse" is three pieces in both): the
    Wait goes in after the piece and the text reads piece + "Wait", with nothing lost or
    garbled, and the model's next tokens follow it."""
    name, t = tok
    f = ForcingTokens.from_tokenizer(t, wait_string=" Wait")
    word = t.encode(" hypotenuse")
    assert len(word) > 1, [t.id_to_token(i) for i in word]
    piece = word[:1]
    scripts = [piece + [f.end_think_ids[0]] + word[1:] + [f.end_think_ids[0]] + t.encode("5") + [f.eos_ids[0]]]
    rows = drive(f, scripts, Budget(min_thinking_tokens=2, max_thinking_tokens=20, max_answer_tokens=4),
                 backend, 12)
    text = t.decode(rows[0])
    assert text.startswith(t.decode(piece) + " Wait" + t.decode(word[1:]) + "<|im_start|>answer\n"), text
    assert "\ufffd" not in text
