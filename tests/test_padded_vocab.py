"""A checkpoint whose lm_head has more rows than its tokenizer has tokens (Qwen2.5: 152,064
rows for 151,665 tokens) through the recipe: train gives the padded rows no probability,
generate and eval never emit them.

The checkpoint here: the built-in 125-token tokenizer and a 128-row lm_head whose padded
rows are +M e_0, -M e_0 and 0, so one of them has the largest logit of nearly every
position (M |h_0|). Code that lets the padded rows compete samples them and pays for them
in the loss; the tests see both.
"""
import json
import os

import pytest
import torch

from s1kernels.data import real_vocab_size
from s1kernels.model import ModelConfig, Transformer, load_model, save_model
from s1kernels.train import TINY_DEFAULTS, TrainConfig, train
from s1kernels.train.__main__ import parse_args

ROWS = 128
M = 200.0


def _padded_model(tok, seed=0):
    assert tok.vocab_size < ROWS
    cfg = ModelConfig(model_type="qwen2", vocab_size=ROWS, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=False,
                      max_position_embeddings=512, initializer_range=0.3, eos_token_id=tok.eos_ids[0],
                      pad_token_id=tok.pad_id)
    model = Transformer(cfg).init_weights(seed=seed).eval()
    with torch.no_grad():
        pad = model.lm_head.weight[tok.vocab_size:]
        pad.zero_()
        pad[0, 0], pad[1, 0] = M, -M
    return model


@pytest.fixture(scope="module")
def padded_dir(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp("padded")
    save_model(_padded_model(tok), str(folder))
    tok.save(str(folder))
    return str(folder)


def test_the_padded_rows_win_without_the_vocabulary_limit(padded_dir, tok):
    """The premise of the tests below: unmasked, a padded row is the argmax almost everywhere."""
    model = load_model(padded_dir)
    ids = torch.tensor(tok.encode("<|im_start|>user\nStart 3\nA + 4 = ?<|im_end|>\n"))
    with torch.no_grad():
        logits = model.logits(model(ids, torch.arange(len(ids)), torch.tensor([0, len(ids)], dtype=torch.int32)))
    assert (logits.argmax(-1) >= tok.vocab_size).float().mean() > 0.9


def test_real_vocab_size(tok):
    assert real_vocab_size(tok, ROWS) == tok.vocab_size == tok.id_limit == 125
    assert real_vocab_size(tok, ROWS, 128) == 128
    with pytest.raises(ValueError, match=r"--vocab-size: expected 1 <= vocab size <= 128.*got 129"):
        real_vocab_size(tok, ROWS, 129)
    with pytest.raises(ValueError, match="--vocab-size"):
        real_vocab_size(tok, ROWS, 0)
    with pytest.raises(TypeError, match="--vocab-size: expected an int"):
        real_vocab_size(tok, ROWS, 12.5)
    with pytest.raises(ValueError, match="tokenizer has 125 ids but the model has only 100"):
        real_vocab_size(tok, 100)


# ------------------------------------------------------------------------------------ train

TINY = dict(TINY_DEFAULTS, block_size=256, synthetic_rows=24, lr=1e-2, warmup_ratio=0.0, eval_rows=0,
            progress=False, bf16=False, weight_decay=0.0, max_steps=2)


def _train(padded_dir, out, **kw):
    summary = train(TrainConfig(**{**TINY, "model": padded_dir, "output": str(out), **kw}))
    with open(os.path.join(out, "train_log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    return summary, log


def test_train_gives_padded_rows_no_probability(padded_dir, tok, tmp_path):
    before = load_model(padded_dir).lm_head.weight.detach().clone()
    _, log = _train(padded_dir, tmp_path / "run")
    after = load_model(str(tmp_path / "run")).lm_head.weight.detach()
    n = tok.vocab_size
    # no probability -> no gradient -> AdamW (no weight decay) leaves the padded rows exactly as they were
    assert torch.equal(after[n:], before[n:])
    assert not torch.equal(after[:n], before[:n])  # the real rows did train
    # a loss over the real tokens: the padded rows' huge logits are not in its logsumexp
    assert log[0]["loss"] < 10.0
    cfg = json.load(open(tmp_path / "run" / "train_config.json"))
    assert cfg["real_vocab_size"] == n


def test_train_vocab_size_flag(padded_dir, tmp_path):
    assert parse_args(["--model", padded_dir, "--vocab-size", "128"]).vocab_size == 128
    before = load_model(padded_dir).lm_head.weight.detach().clone()
    _, log = _train(padded_dir, tmp_path / "all", vocab_size=ROWS)  # every row counts: the padded ones train
    after = load_model(str(tmp_path / "all")).lm_head.weight.detach()
    assert not torch.equal(after[125:], before[125:])
    assert log[0]["loss"] > 10.0
    with pytest.raises(ValueError, match="--vocab-size: expected 1 <= vocab size <= 128"):
        _train(padded_dir, tmp_path / "bad", vocab_size=ROWS + 1)


def test_train_builtin_eval_never_picks_padded_rows(padded_dir, tok):
    from s1kernels.data import make_rows
    from s1kernels.train.evaluate import greedy_generate

    model = load_model(padded_dir)
    rows = make_rows(3, seed=1)
    from s1kernels.data import prompt_text

    gens = greedy_generate(model, tok, [prompt_text(r["question"], tok) for r in rows], max_new_tokens=12)
    assert all(t < tok.vocab_size for g in gens for t in g)
    unmasked = greedy_generate(model, tok, [prompt_text(r["question"], tok) for r in rows], max_new_tokens=12,
                               vocab_size=ROWS)
    assert any(t >= tok.vocab_size for g in unmasked for t in g)


# --------------------------------------------------------------------------- generate / eval

def _ids(results):
    return [t for r in results for t in r.token_ids]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generate_never_samples_padded_rows(padded_dir, tok, temperature):
    from s1kernels.generate import generate
    from s1kernels.ops.decode import Budget, Sampling

    model = load_model(padded_dir)
    qs = ["Start at 1 .", "Start at 4 .\nA + 2 = ?"]
    kw = dict(budget=Budget(max_thinking_tokens=8, max_answer_tokens=4), backend="torch",
              sampling=Sampling(temperature=temperature, seed=5))
    assert max(_ids(generate(model, tok, qs, **kw))) < tok.vocab_size
    # asked to treat every row as real, it samples the padded ones: the model is as the premise says
    assert max(_ids(generate(model, tok, qs, vocab_size=ROWS, **kw))) >= tok.vocab_size
    with pytest.raises(ValueError, match="--vocab-size: expected 1 <= vocab size <= 128"):
        generate(model, tok, qs, vocab_size=ROWS + 1, **kw)


def test_generate_cli_vocab_size(padded_dir, tmp_path):
    from s1kernels.generate import __main__ as gen_cli

    out = tmp_path / "gen.jsonl"
    args = ["--model", padded_dir, "--prompt", "Start at 3 .", "--prompt", "Start at 5 .", "--max-thinking-tokens",
            "6", "--max-answer-tokens", "3", "--backend", "torch", "--temperature", "1.0", "--output", str(out)]
    assert gen_cli.main(args) == 0
    assert max(t for line in out.read_text().splitlines() for t in json.loads(line)["token_ids"]) < 125
    assert gen_cli.main(args + ["--vocab-size", "128"]) == 0
    assert max(t for line in out.read_text().splitlines() for t in json.loads(line)["token_ids"]) >= 125


def test_eval_never_samples_padded_rows(padded_dir, tok, tmp_path, monkeypatch):
    from s1kernels import eval as s1eval
    from s1kernels.eval import __main__ as eval_cli

    seen = []
    real = s1eval.runs.generate

    def recording(*args, **kwargs):
        results = real(*args, **kwargs)
        seen.extend(results)
        return results

    monkeypatch.setattr(s1eval.runs, "generate", recording)
    report = tmp_path / "report.json"
    argv = ["--model", padded_dir, "--budgets", "3", "6", "--num-synthetic", "3", "--max-answer-tokens", "3",
            "--backend", "torch", "--temperature", "1.0", "--output", str(report)]
    assert eval_cli.main(argv) == 0
    assert len(seen) == 6 and max(_ids(seen)) < tok.vocab_size
    seen.clear()
    assert eval_cli.main(argv + ["--vocab-size", "128"]) == 0
    assert max(_ids(seen)) >= tok.vocab_size
