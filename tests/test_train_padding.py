"""Padding in packed rows costs nothing: a training step cuts each row before its padding
tail, so the tail is never embedded, attended or scored (on every attention backend, since
it never reaches the model); the loss and gradients are those of the padded row; the log
counts real tokens; a mostly-padded block size is named with a size to use; and a run
without a progress bar says what it does from the first step on."""
import json
import os

import pytest
import torch

import s1kernels.model.attention as attention
import s1kernels.model.transformer as transformer
import s1kernels.ops.loss as loss_ops
from s1kernels.data import build_default_tokenizer, make_rows
from s1kernels.model import ModelConfig, Transformer
from s1kernels.train import TINY_DEFAULTS, TrainConfig, _Heartbeat, read_log, train
from s1kernels.train.__main__ import main
from s1kernels.data import render_rows
from s1kernels.train.data import block_size_note, micro_batch, pack_samples, real_length

TINY = dict(TINY_DEFAULTS, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, eval_rows=0, progress=False, bf16=False, warmup_ratio=0.0)


def _packed(n_rows, block, seed=1):
    tok = build_default_tokenizer()
    return tok, pack_samples(render_rows(tok, make_rows(n_rows, seed=seed)), block, tok.pad_id)


def test_micro_batch_drops_the_padding_tail():
    tok, packed = _packed(13, 1000)  # 13 samples of ~140 tokens: two rows, both with a padding tail
    assert packed.num_rows == 2 and all(int(si[-1]) == -1 for si in packed.sample_index)
    b = micro_batch(packed, [1, -1, 0], tok.pad_id, "cpu")
    n0, n1 = real_length(packed, 0), real_length(packed, 1)
    assert n0 < 1000 and n1 < 1000 and n0 + n1 == packed.stats["tokens"]
    assert b["tokens"] == n0 + n1 and b["input_ids"].shape[0] == n1 + 2 + n0  # the filler keeps its 2 tokens
    cu = b["cu_seqlens"].tolist()
    assert cu[-1] == b["input_ids"].shape[0]
    lengths = [y - x for x, y in zip(cu, cu[1:])]
    real = [int(x) for r in (1, 0) for x, s in zip(packed.cu_seqlens[r].diff(), packed.sample_index[r]) if s >= 0]
    assert lengths == real[:len(packed.sample_index[1]) - 1] + [2] + real[len(packed.sample_index[1]) - 1:]
    assert b["max_seqlen"] == max(lengths)
    # every trained label survives, none is added
    assert int((b["labels"] != -100).sum()) == int((packed.labels != -100).sum())
    assert torch.equal(b["input_ids"][:n1], packed.input_ids[1, :n1])


def test_cut_row_gives_the_loss_and_gradients_of_the_padded_row():
    tok, packed = _packed(5, 1536, seed=4)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    model = Transformer(cfg).init_weights(seed=3)
    n = real_length(packed, 0)
    assert n < 1536

    def run(ids, labels, pos, cu):
        model.zero_grad()
        loss = model(ids, pos, cu, loss_fn=lambda h, w: loss_ops.linear_cross_entropy(h, w, labels, backend="torch"))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    full = run(packed.input_ids[0], packed.labels[0], packed.position_ids[0], packed.cu_seqlens[0])
    b = micro_batch(packed, [0], tok.pad_id, "cpu")
    cut = run(b["input_ids"], b["labels"], b["position_ids"], b["cu_seqlens"])
    torch.testing.assert_close(cut[0], full[0], rtol=1e-5, atol=1e-6)
    for g_cut, g_full in zip(cut[1], full[1]):
        torch.testing.assert_close(g_cut, g_full, rtol=1e-4, atol=1e-6)


def test_a_mostly_padded_block_costs_no_attention_or_loss_work(tmp_path, monkeypatch):
    """12 samples (~1,700 tokens) in a block of 8,192: before, the ~6,500-token padding tail
    was attended as one causal segment and scored by the loss; now neither sees it. Counted
    at the attention entry (any backend: the tokens and segments it gets), in CPU SDPA's
    calls, and at the loss."""
    segments, attended, scored = [], [], []
    varlen = transformer.varlen_causal_attention

    def counting_varlen(q, k, v, cu_seqlens, *a, **kw):
        segments.append((q.shape[0], cu_seqlens.diff().tolist()))
        return varlen(q, k, v, cu_seqlens, *a, **kw)

    sdpa = attention.F.scaled_dot_product_attention

    def counting_sdpa(q, k, v, *a, **kw):
        attended.append((q.shape[0], q.shape[-2]))  # [samples of equal length, heads, length, dim]
        return sdpa(q, k, v, *a, **kw)

    lce = loss_ops.linear_cross_entropy

    def counting_lce(hidden, weight, labels, **kw):
        scored.append(hidden.shape[0])
        return lce(hidden, weight, labels, **kw)

    monkeypatch.setattr(transformer, "varlen_causal_attention", counting_varlen)
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting_sdpa)
    monkeypatch.setattr(loss_ops, "linear_cross_entropy", counting_lce)
    cfg = TrainConfig(**{**TINY, "output": str(tmp_path / "run"), "block_size": 8192, "synthetic_rows": 12,
                         "max_steps": 2})
    summary = train(cfg)
    tok, packed = _packed(12, 8192, seed=cfg.seed)  # what the run packed (the same rows and seed)
    assert packed.num_rows == 1 and summary["data"]["tokens"] == packed.stats["tokens"]
    real, samples = packed.stats["tokens"], packed.cu_seqlens[0].diff()[:-1].tolist()
    assert real < 8192 // 4
    assert segments == [(real, samples)] * 4  # 2 layers x 2 steps: the samples, no padding segment
    if not torch.cuda.is_available():  # CPU: causal SDPA calls over the samples, none over padding
        assert max(n for _, n in attended) == max(samples) and sum(c * n for c, n in attended) == 4 * real
    assert scored == [real, real]
    log = read_log(os.path.join(cfg.output, "train_log.jsonl"), 10**9)
    assert [r["tokens"] for r in log] == [real, real]  # throughput counts real tokens only
    for i, r in enumerate(log):
        assert r["tokens_per_s"] == pytest.approx(sum(x["tokens"] for x in log[: i + 1]) / r["seconds"])


def test_a_small_file_at_the_default_block_size_is_named_with_a_size_to_use(tmp_path, capsys):
    tok, packed = _packed(93, 32768, seed=3)
    note = block_size_note(packed, rows_per_step=1)
    assert "93 samples" in note and "1 packed row of block size 32768" in note and "an epoch is 1 step:" in note
    fits = int(note.split("--block-size ")[1].split()[0])
    longest = int(packed.cu_seqlens[0].diff()[:-1].max())
    assert fits // 2 < longest <= fits
    assert block_size_note(_packed(93, fits, seed=3)[1], rows_per_step=1) is None  # filled: nothing to say
    shards = block_size_note(packed, rows_per_step=1, from_shards=True)
    assert f"python -m s1kernels.data --block-size {fits}" in shards
    # the CLI prints it, and without a progress bar says what it does from the start
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(20, seed=3)))
    flags = ["--data", str(data), "--output", str(tmp_path / "run"), "--max-steps", "2", "--no-progress",
             "--hidden-size", "32", "--num-hidden-layers", "1", "--num-attention-heads", "4",
             "--num-key-value-heads", "2", "--intermediate-size", "64", "--block-size", "16384", "--eval-rows", "0"]
    assert main(flags) == 0
    err = capsys.readouterr().err
    assert "fill 1 packed row of block size 16384" in err and "set --block-size" in err
    assert "training steps 1-2, 1 packed row(s) of block size 16384 a step" in err
    assert "step 1/2, loss" in err and "step 2/2, loss" in err


def test_heartbeat_speaks_at_the_first_step_then_every_30_seconds(capsys):
    now = [0.0]
    hb = _Heartbeat(total_steps=10, clock=lambda: now[0])
    said = []
    for step, t in [(1, 50.0), (2, 60.0), (3, 79.0), (4, 81.0), (5, 90.0), (10, 95.0)]:
        now[0] = t
        hb.step(step, 1000.0)
        said.append(capsys.readouterr().err.strip())
    assert [bool(s) for s in said] == [True, False, False, True, False, True]
    assert said[0] == "step 1/10, 1,000 tokens/s, 50s"
