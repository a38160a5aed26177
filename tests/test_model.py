"""Model parity with transformers, packed vs per-sample equivalence, KV-cache decoding, checkpoints."""
import json
import os

import pytest
import torch

from s1kernels.model import ModelConfig, Transformer, load_model, save_model
from s1kernels.model import attention as attn_mod

transformers = pytest.importorskip("transformers")

QWEN = dict(model_type="qwen2", vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=True,
            rms_norm_eps=1e-6, max_position_embeddings=256)
LLAMA = dict(model_type="llama", vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0, tie_word_embeddings=False,
             rms_norm_eps=1e-5, max_position_embeddings=64,
             rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                               original_max_position_embeddings=16))



def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            # every tensor random (biases and norm scales too), norms around 1
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if name.endswith("norm.weight") else 0.0))


def _hf_folder(tmp_path, cfg, seed=0):
    kw = dict(cfg)
    kind = kw.pop("model_type")
    if kind == "qwen2":
        hf_cfg = transformers.Qwen2Config(**kw)
        model = transformers.Qwen2ForCausalLM(hf_cfg)
    else:
        hf_cfg = transformers.LlamaConfig(**kw)
        model = transformers.LlamaForCausalLM(hf_cfg)
    _randomize(model, seed)
    folder = str(tmp_path / kind)
    model.save_pretrained(folder, safe_serialization=True)
    return model.eval(), folder


def _packed(lengths, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (sum(lengths),), generator=g)
    pos = torch.cat([torch.arange(n) for n in lengths])
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)
    return ids, pos, cu


@pytest.mark.parametrize("cfg", [QWEN, LLAMA], ids=["qwen2", "llama3"])
def test_logits_match_transformers(tmp_path, cfg):
    hf, folder = _hf_folder(tmp_path, cfg)
    ours = load_model(folder)
    lengths = [7, 1, 19, 4]
    ids, pos, cu = _packed(lengths, cfg["vocab_size"])
    with torch.no_grad():
        logits = ours.logits(ours(ids, pos, cu))
        offsets = [0] + list(torch.tensor(lengths).cumsum(0))
        for a, b in zip(offsets[:-1], offsets[1:]):
            ref = hf(ids[a:b][None]).logits[0]
            torch.testing.assert_close(logits[a:b], ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", ["sdpa_mask", "sdpa_loop"])
@pytest.mark.parametrize("lengths", [[3, 0, 11, 1, 6], [7, 7, 7, 2, 0, 5, 5, 9, 1, 1]],
                         ids=["mixed", "equal-length runs"])
def test_varlen_attention_never_crosses_samples(backend, lengths):
    """Outputs and gradients per sample, against SDPA on that sample alone (the loop backend
    batches runs of equal lengths into one call: they must not see each other)."""
    torch.manual_seed(0)
    T = sum(lengths)
    q, k, v = (torch.randn(T, h, 8, requires_grad=True) for h in (4, 2, 2))
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)
    out = attn_mod.varlen_causal_attention(q, k, v, cu, backend=backend)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    a = 0
    for n in lengths:
        if n:
            qs, ks, vs = (t.detach()[a:a + n].transpose(0, 1).requires_grad_() for t in (q, k, v))
            ref = torch.nn.functional.scaled_dot_product_attention(
                qs, ks.repeat_interleave(2, 0), vs.repeat_interleave(2, 0), is_causal=True).transpose(0, 1)
            torch.testing.assert_close(out[a:a + n], ref, atol=1e-5, rtol=1e-5)
            ref.backward(grad_out[a:a + n])
            for got, want in ((q, qs), (k, ks), (v, vs)):
                torch.testing.assert_close(got.grad[a:a + n], want.grad.transpose(0, 1), atol=1e-5, rtol=1e-5)
        a += n


def test_equal_length_runs():
    assert attn_mod._equal_length_runs([0, 4, 8, 8, 12, 13, 20, 27]) == [(3, 4), (1, 1), (2, 7)]
    assert attn_mod._equal_length_runs([0, 0]) == []


def test_packed_forward_equals_per_sample(monkeypatch):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**QWEN)).init_weights(seed=1).eval()
    lengths = [5, 12, 1, 9]
    ids, pos, cu = _packed(lengths, QWEN["vocab_size"], seed=3)
    with torch.no_grad():
        packed = model(ids, pos, cu)
        monkeypatch.setattr(attn_mod, "packed_attention_backend", lambda q: "sdpa_mask")
        looped = model(ids, pos, cu)
        a = 0
        for n in lengths:
            single = model(ids[a:a + n], pos[a:a + n], torch.tensor([0, n], dtype=torch.int32))
            torch.testing.assert_close(packed[a:a + n], single, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(looped[a:a + n], single, atol=1e-5, rtol=1e-5)
            a += n


@pytest.mark.parametrize("cfg", [QWEN, LLAMA], ids=["qwen2", "llama3"])
def test_forward_cached_matches_full_forward(cfg):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**cfg)).init_weights(seed=2).eval()
    B, max_len, steps = 3, 40, 5
    prompt_lens = torch.tensor([6, 2, 9])
    seqs = torch.randint(0, cfg["vocab_size"], (B, int(prompt_lens.max()) + steps))
    cache = model.new_kv_cache(B, max_len)
    with torch.no_grad():
        # ragged prefill: one padded [B, 9] call; the tails of short rows are stale and get overwritten
        prefill = model.forward_cached(seqs[:, :9], torch.zeros(B, dtype=torch.int64), cache)
        outs = []
        start = prompt_lens.clone()
        for s in range(steps):
            tok = seqs[torch.arange(B), start][:, None]
            outs.append(model.forward_cached(tok, start, cache)[:, 0])
            start = start + 1
        for b in range(B):
            n = int(prompt_lens[b]) + steps
            full = model(seqs[b, :n], torch.arange(n), torch.tensor([0, n], dtype=torch.int32))
            p = int(prompt_lens[b])
            torch.testing.assert_close(prefill[b, :p], full[:p], atol=1e-5, rtol=1e-5)
            got = torch.stack([o[b] for o in outs])
            torch.testing.assert_close(got, full[p:n], atol=1e-5, rtol=1e-5)


def test_forward_cached_chunked_prefill():
    model = Transformer(ModelConfig(**QWEN)).init_weights(seed=4).eval()
    seq = torch.randint(0, QWEN["vocab_size"], (1, 14))
    cache = model.new_kv_cache(1, 16)
    with torch.no_grad():
        a = model.forward_cached(seq[:, :5], torch.tensor([0]), cache)
        b = model.forward_cached(seq[:, 5:], torch.tensor([5]), cache)
        full = model(seq[0], torch.arange(14), torch.tensor([0, 14], dtype=torch.int32))
    torch.testing.assert_close(torch.cat([a, b], 1)[0], full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shard", [False, True])
def test_save_model_loads_in_transformers(tmp_path, shard):
    model = Transformer(ModelConfig(**LLAMA)).init_weights(seed=5).eval()
    folder = str(tmp_path / "saved")
    save_model(model, folder, max_shard_bytes=20_000 if shard else None)
    names = os.listdir(folder)
    assert ("model.safetensors.index.json" in names) == shard
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    again = load_model(folder)
    ids, pos, cu = _packed([11], LLAMA["vocab_size"])
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
        mine = model.logits(model(ids, pos, cu))
        torch.testing.assert_close(mine, ref, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(again.logits(again(ids, pos, cu)), mine, atol=0, rtol=0)


def test_tied_qwen_roundtrip_and_bf16_rope(tmp_path):
    model = Transformer(ModelConfig(**QWEN)).init_weights(seed=6)
    assert model.lm_head_weight is model.embed_tokens.weight
    save_model(model, str(tmp_path / "q"))
    loaded = load_model(str(tmp_path / "q"), dtype=torch.bfloat16)
    assert loaded.embed_tokens.weight.dtype == torch.bfloat16
    assert loaded.inv_freq.dtype == torch.float32  # RoPE frequencies are never rounded
    torch.testing.assert_close(loaded.inv_freq, model.inv_freq)


def test_gradient_checkpointing_same_grads():
    model = Transformer(ModelConfig(**QWEN)).init_weights(seed=7).train()
    ids, pos, cu = _packed([6, 10], QWEN["vocab_size"])
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        model(ids, pos, cu).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(empty))
    (empty / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(str(empty))
    (empty / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 3}))
    with pytest.raises(ValueError, match="model_type"):
        load_model(str(empty))
    ModelConfig(**QWEN).save(str(empty))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(str(empty))
    # weights of another shape
    other = dict(QWEN, hidden_size=24, num_attention_heads=6)
    save_model(Transformer(ModelConfig(**other)), str(tmp_path / "other"))
    ModelConfig(**QWEN).save(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="shape"):
        load_model(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="num_key_value_heads"):
        ModelConfig(**dict(QWEN, num_key_value_heads=4))


def test_missing_tensor_is_reported(tmp_path):
    from safetensors.torch import load_file, save_file

    model = Transformer(ModelConfig(**LLAMA))
    save_model(model, str(tmp_path / "m"))
    path = str(tmp_path / "m" / "model.safetensors")
    tensors = load_file(path)
    del tensors["lm_head.weight"]
    save_file(tensors, path)
    with pytest.raises(ValueError, match="missing.*lm_head.weight"):
        load_model(str(tmp_path / "m"))
