"""Inputs that used to give a quiet wrong answer now give the right one or a named error.

Each test names the class of input it covers; each failed on the code before its fix.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from s1kernels.ops.similarity import k_center, threshold_dedup, topk_similarity


# ---- similarity: the underflow twin of the 1e19 overflow -----------------------------------

@pytest.mark.parametrize("scale", [1e-30, 1e-40])
def test_tiny_embeddings_give_the_answers_of_their_rescaled_rows(scale):
    torch.manual_seed(0)
    base = torch.randn(9, 7)
    base[5] = base[1]  # a duplicate, which dedup must drop
    x = base * scale  # 1e-40 is an fp32 subnormal (~17 bits left)
    scores, idx = topk_similarity(x, x, k=3)
    ref_scores, ref_idx = topk_similarity(base, base, k=3)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=0)
    assert threshold_dedup(x, 0.999).kept.tolist() == threshold_dedup(base, 0.999).kept.tolist()
    picks = k_center(x, 5).tolist()
    assert len(set(picks)) == 5 and picks == k_center(base, 5).tolist()


# ---- the loss: a denominator that is not a count, a chunk size that is not a size ---------

def _loss_inputs():
    torch.manual_seed(0)
    hidden, weight = torch.randn(11, 8), torch.randn(37, 8)
    labels = torch.randint(0, 37, (11,))
    labels[3] = -100
    return hidden, weight, labels


@pytest.mark.parametrize("num_items", [0.0, -10.0, float("nan"), float("inf")])
def test_loss_refuses_num_items_that_is_not_a_positive_count(num_items):
    from s1kernels.ops.loss import linear_cross_entropy

    hidden, weight, labels = _loss_inputs()
    with pytest.raises(ValueError, match="num_items: expected a finite count > 0"):
        linear_cross_entropy(hidden, weight, labels, num_items=torch.tensor(num_items))
    with pytest.raises(TypeError, match="num_items: expected a real number tensor"):
        linear_cross_entropy(hidden, weight, labels, num_items=torch.tensor(True))
    ok = linear_cross_entropy(hidden, weight, labels, num_items=torch.tensor(10.0))
    torch.testing.assert_close(ok, linear_cross_entropy(hidden, weight, labels))


@pytest.mark.parametrize("chunk_tokens", [-1, 0, 2.5, True])
def test_loss_refuses_a_chunk_size_that_is_not_a_size(chunk_tokens):
    from s1kernels.ops.loss import linear_cross_entropy

    hidden, weight, labels = _loss_inputs()
    with pytest.raises((ValueError, TypeError), match="chunk_tokens: expected an integer"):
        linear_cross_entropy(hidden, weight, labels, backend="torch", chunk_tokens=chunk_tokens)


# ---- model configs: values that were quietly misread ----------------------------------------

@pytest.mark.parametrize("field,value,why", [
    ("tie_word_embeddings", "no", "tie_word_embeddings: expected true or false"),
    ("attention_bias", "false", "attention_bias: expected true or false"),
    ("mlp_bias", 1, "mlp_bias: expected true or false"),
    ("rope_scaling", {"rope_type": "linear", "factor": -2.0}, "factor must be a finite number > 0"),
    ("rope_scaling", {"rope_type": "linear", "factor": 0}, "factor must be a finite number > 0"),
    ("rope_scaling", {"rope_type": "linear"}, "needs factor; missing factor"),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0}, "missing original_max_position_embeddings"),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                      "low_freq_factor": -1.0}, "low_freq_factor must be"),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                      "low_freq_factor": 4.0, "high_freq_factor": 1.0}, "high_freq_factor must exceed"),
])
def test_config_values_that_were_misread_are_refused(field, value, why):
    from s1kernels.model import ModelConfig

    d = {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
         "num_hidden_layers": 1, "num_attention_heads": 2, field: value}
    with pytest.raises(ValueError, match=why):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize("how", ["f32 bytes labelled I32", "bool norm"])
def test_weights_stored_with_a_non_float_dtype_are_refused(tmp_path, how):
    from safetensors.torch import load_file, save_file

    from s1kernels.model import ModelConfig, Transformer, load_model, save_model

    cfg = ModelConfig(model_type="llama", vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=32)
    save_model(Transformer(cfg).init_weights(seed=0), str(tmp_path))
    path = str(tmp_path / "model.safetensors")
    tensors = load_file(path)
    if how == "bool norm":
        tensors["model.norm.weight"] = tensors["model.norm.weight"] != 0
    else:
        name = "model.layers.0.mlp.down_proj.weight"
        tensors[name] = tensors[name].float().view(torch.int32)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="is stored as (I32|BOOL).*floating point"):
        load_model(str(tmp_path))


# ---- packing: an input with no usable row is an error, not zero shards ---------------------

@pytest.mark.parametrize("content,flags,why", [
    ("", [], "holds no rows"),
    ("\n\n", [], "holds no rows"),
    ('{"question": 1}\n{"nope": 2}\n', ["--skip-bad"], "all 2 rows were skipped"),
])
def test_packing_nothing_exits_non_zero(tmp_path, content, flags, why):
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    out = tmp_path / "packed"
    proc = subprocess.run([sys.executable, "-m", "s1kernels.data", "--input", str(src), "--output", str(out), *flags],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), timeout=120)
    assert proc.returncode != 0 and why in proc.stderr, proc.stderr
    assert not list(out.glob("shard-*"))


# ---- decoding: hand-built sampling tensors are checked like Sampling's own ----------------

@pytest.mark.parametrize("field,value", [("min_p", float("nan")), ("top_p", float("nan")), ("top_p", 0.0),
                                         ("top_p", 1.5), ("min_p", -0.1), ("temperature", float("nan")),
                                         ("temperature", -1.0), ("temperature", float("inf")), ("top_k", -3)])
def test_hand_built_sampling_tensors_are_validated(field, value):
    from s1kernels.ops.decode import (Budget, DecodeState, ForcingTokens, Sampling, SamplingTensors,
                                      decode_step)

    B, V = 3, 50
    logits = torch.randn(B, V)
    good = Sampling(temperature=0.7, top_p=0.9, seed=[1, 2, 3]).tensors(B, "cpu")
    col = getattr(good, field).clone()
    col[1] = value
    bad = SamplingTensors(**{**good._asdict(), field: col})
    forcing = ForcingTokens(end_think_ids=(40,), delimiter_completion_ids=(44,), wait_ids=(42,), forced_exit_ids=(43,),
                            eos_ids=(41,), pad_id=0)
    with pytest.raises(ValueError, match=f"sampling_t.{field}: expected .*row 1"):
        decode_step(logits, DecodeState.new(B, "cpu"), Budget().tensors(B, "cpu"), bad, forcing, backend="torch")
    decode_step(logits, DecodeState.new(B, "cpu"), Budget().tensors(B, "cpu"), good, forcing, backend="torch")


# ---- Parquet: garbage and decompression bombs are named errors -----------------------------

def test_garbage_parquet_is_a_named_error(tmp_path):
    from s1kernels.data.readers import read_rows

    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1" + os.urandom(3000) + b"PAR1")
    with pytest.raises(ValueError, match="is not a readable Parquet file"):
        read_rows(path, skip_bad=True)


def test_parquet_decompression_bomb_is_refused(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from s1kernels.data import readers

    rows = 200_000
    table = pa.table({"question": pa.array(["q" * 500] * rows).dictionary_encode(),
                      "answer": ["1"] * rows, "thinking": ["t"] * rows})
    path = tmp_path / "bomb.parquet"
    pq.write_table(table, path, compression="zstd", compression_level=19)
    assert os.path.getsize(path) < 200_000  # ~100 MB of text
    monkeypatch.setattr(readers, "PARQUET_FLOOR_BYTES", 4 << 20)
    with pytest.raises(ValueError, match=f"{path}.*(decodes to|claims) more than"):
        readers.read_rows(path)


# ---- meta tensors: a named error where an op needs values, shapes where it does not ------

def test_ops_on_meta_tensors():
    from s1kernels.ops.loss import linear_cross_entropy
    from s1kernels.ops.similarity import k_center, mmr, threshold_dedup, topk_similarity

    meta = torch.device("meta")
    x = torch.empty(5, 8, device=meta)
    for call in (lambda: topk_similarity(x, x, k=2), lambda: threshold_dedup(x, 0.9), lambda: k_center(x, 2),
                 lambda: mmr(x, torch.empty(5, device=meta), 2)):
        with pytest.raises(ValueError, match="x: expected a tensor with values .* got a meta tensor"):
            call()
    loss = linear_cross_entropy(x, torch.empty(11, 8, device=meta), torch.zeros(5, dtype=torch.long, device=meta))
    assert loss.device.type == "meta" and loss.shape == ()  # shape inference works, as for torch.compile
