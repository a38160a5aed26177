"""The CPU decode path: prepacked projections (DecodePack), attention over the filled prefix
(kv_len) and row-by-row prefill agree with the plain forward; generate's options are checked.

bf16 packing needs avx_ne_convert or avx512bw+vl+dq: the tests ask the CPU as the code does,
and the path of the other kind of CPU is run by forcing `cpu_supports` to answer False (on
an AVX-512 machine) or is the one taken anyway (on an AVX2-only one, or under
ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)."""
import dataclasses

import pytest
import torch

from s1kernels.data.tokenizer import build_default_tokenizer
from s1kernels.generate import engine, generate
from s1kernels.model import ModelConfig, Transformer
from s1kernels.model import cpu_pack
from s1kernels.model.cpu_pack import DecodePack, can_pack, cpu_supports

QWEN = ModelConfig(model_type="qwen2", vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                   num_attention_heads=6, num_key_value_heads=2, attention_bias=True, tie_word_embeddings=True,
                   max_position_embeddings=128)
# Llama with attention_bias has an o_proj bias as well; untied output head
LLAMA = dataclasses.replace(QWEN, model_type="llama", vocab_size=101, hidden_size=64, intermediate_size=96,
                            num_attention_heads=4, tie_word_embeddings=False)


def _model(cfg, seed, dtype=torch.float32):
    model = Transformer(cfg).init_weights(seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # non-zero biases and norms, so each is exercised
            if name.endswith(".bias") or name.endswith("norm.weight"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.to(dtype).eval()


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("cfg", [QWEN, LLAMA], ids=["qwen2", "llama"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_packed_forward_matches_plain(cfg, dtype):
    seed = int(torch.randint(0, 2**16, ()).item())
    model = _model(cfg, seed, dtype)
    if not cpu_supports(dtype):  # bf16 on an AVX2-only CPU: a named error, not oneDNN's
        assert not can_pack(model)
        with pytest.raises(ValueError, match="model: cannot prepack: .*avx512bw"):
            DecodePack(model, batch_hint=3)
        return
    assert can_pack(model)
    pack = DecodePack(model, batch_hint=3)
    B, T = 3, 5  # prefill-like (T > 1) then a step, awkward sizes
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    start = torch.tensor([0, 2, 7])
    with torch.inference_mode():
        c1, c2 = model.new_kv_cache(B, 16), model.new_kv_cache(B, 16)
        ref = model.forward_cached(ids, start, c1)
        got = model.forward_cached(ids, start, c2, pack=pack)
        torch.testing.assert_close(got, ref, **_tol(dtype))
        torch.testing.assert_close(c2.k, c1.k, **_tol(dtype))
        torch.testing.assert_close(model.logits(got[:, -1], pack=pack), model.logits(ref[:, -1]), **_tol(dtype))
        # a decode step attending over the filled prefix only (kv_len = last position + 1)
        nxt, pos = torch.randint(0, cfg.vocab_size, (B, 1)), start + T
        ref = model.forward_cached(nxt, pos, c1)
        got = model.forward_cached(nxt, pos, c2, pack=pack, kv_len=int(pos.max()) + 1)
        torch.testing.assert_close(got, ref, **_tol(dtype))


def test_pack_is_a_copy_taken_when_built():
    model = _model(QWEN, 3)
    pack = DecodePack(model)
    x = torch.randn(2, QWEN.hidden_size)
    before = model.logits(x, pack=pack)
    with torch.no_grad():
        model.embed_tokens.weight.mul_(2.0)
    torch.testing.assert_close(model.logits(x, pack=pack), before)  # stale by design: rebuild after training
    torch.testing.assert_close(model.logits(x, pack=DecodePack(model)), model.logits(x), rtol=1e-4, atol=1e-4)


def test_kv_len_slice_equals_full_cache():
    model = _model(QWEN, 5)
    B = 4
    lens = [3, 9, 1, 6]
    with torch.inference_mode():
        cache = model.new_kv_cache(B, 32)
        for b, n in enumerate(lens):
            model.forward_cached(torch.randint(0, 97, (1, n)), torch.zeros(1, dtype=torch.long), cache.rows(b, b + 1))
        pos = torch.tensor(lens)
        tok = torch.randint(0, 97, (B, 1))
        full = model.forward_cached(tok, pos, cache)
        part = model.forward_cached(tok, pos, cache, kv_len=max(lens) + 1)
    torch.testing.assert_close(part, full, rtol=1e-5, atol=1e-6)


def test_row_by_row_prefill_matches_padded_batch():
    """The CPU prefill (one row at a time, no padding) gives the logits and cache of the
    padded one-call prefill a GPU runs (forced here by calling it on a 'cuda'-typed path)."""
    model = _model(LLAMA, 11)
    prompts = [[int(t) for t in torch.randint(1, 101, (n,))] for n in (6, 1, 13, 4)]
    with torch.inference_mode():
        cache, logits, lens = engine.prefill(model, prompts, pad_id=0, max_new=5)
        ids = torch.zeros(4, 13, dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, : len(p)] = torch.tensor(p)
        ref_cache = model.new_kv_cache(4, 18)
        hidden = model.forward_cached(ids, torch.zeros(4, dtype=torch.long), ref_cache)
        ref = model.logits(hidden[torch.arange(4), lens - 1])
    assert lens.tolist() == [6, 1, 13, 4]
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    for b, p in enumerate(prompts):  # positions past a prompt hold padding's K/V in the batched call
        torch.testing.assert_close(cache.k[:, b, :, : len(p)], ref_cache.k[:, b, :, : len(p)], rtol=1e-5, atol=1e-6)


def test_generate_prepacked_equals_plain():
    tok = build_default_tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = _model(cfg, 2)
    prompts = ["Start 12\nA + 3 = ?", "Start 7", "Start 45\nA + 1 = ?\nB + 2 = ?\nC + 3 = ?"]
    a = generate(model, tok, prompts, max_new_tokens=20, cpu_prepack=False)
    b = generate(model, tok, prompts, max_new_tokens=20, cpu_prepack=True)
    for x, y in zip(a, b):
        # same tokens unless two logits tie within the packed matmul's rounding
        assert x.token_ids == y.token_ids
        torch.testing.assert_close(torch.tensor(y.logprobs), torch.tensor(x.logprobs), rtol=1e-3, atol=1e-3)


def test_generate_option_errors():
    tok = build_default_tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)
    model = _model(cfg, 0)
    with pytest.raises(ValueError, match="cpu_prepack"):
        generate(model, tok, ["x"], max_new_tokens=2, cpu_prepack="yes")
    with pytest.raises(ValueError, match="check_every"):
        generate(model, tok, ["x"], max_new_tokens=2, check_every=0)
    with pytest.raises(ValueError, match="model"):
        DecodePack(torch.nn.Linear(2, 2))


def test_cpu_supports_agrees_with_the_op():
    """The query can_pack asks gives the answer the reorder op itself gives on this CPU."""
    for dtype in (torch.float32, torch.bfloat16):
        try:
            torch.ops.mkldnn._reorder_linear_weight(torch.randn(16, 8).to(dtype), 2)
            runs = True
        except RuntimeError:
            runs = False
        assert cpu_supports(dtype) == runs, dtype
    assert cpu_supports(torch.float32)  # fp32 packs on every x86-64 CPU with oneDNN
    assert not cpu_supports(torch.float16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_generate_on_a_cpu_that_cannot_pack(monkeypatch, dtype):
    """What an AVX2-only CPU does with a bf16 model, forced on any CPU: "auto" decodes with
    F.linear (the same tokens as cpu_prepack=False), True is a named ValueError."""
    tok = build_default_tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = _model(cfg, 4, dtype)
    prompts = ["Start 12\nA + 3 = ?", "Start 7"]
    plain = generate(model, tok, prompts, max_new_tokens=12, cpu_prepack=False)
    monkeypatch.setattr(cpu_pack, "cpu_supports", lambda dt: False)
    assert not can_pack(model) and "avx512bw" in cpu_pack.why_not_pack(model)
    auto = generate(model, tok, prompts, max_new_tokens=12)
    assert [r.token_ids for r in auto] == [r.token_ids for r in plain]
    with pytest.raises(ValueError, match=r"cpu_prepack=True: expected a CPU .*avx512bw.*cpu_prepack='auto'"):
        generate(model, tok, prompts, max_new_tokens=2, cpu_prepack=True)
    with pytest.raises(ValueError, match="model: cannot prepack"):
        DecodePack(model)
