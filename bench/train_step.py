"""One packed SFT training step (forward, loss, backward, AdamW step): tokens/s and peak memory.

Implementations, same model size, same packed batch:
  s1kernels      our decoder + fused linear cross-entropy (no [T, V] logits)
  torch          our decoder + materialised logits and F.cross_entropy
  transformers   Qwen2ForCausalLM + its default loss (labels=...), flash-attention 2 when
                 importable, else SDPA (which then attends across packed samples: timing only)
Full size on a GPU: a Qwen2-0.5B-shaped model (hidden 896, 24 layers, 14 heads, 2 kv heads,
intermediate 4864, vocab 151936) at block size 16384, bf16 autocast over fp32 weights.
Quick mode (CPU): a tiny config.

    python bench/run_all.py --only train_step
    python bench/train_step.py            # this family alone
"""
from __future__ import annotations

import gc
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Context, measure  # noqa: E402

from s1kernels.model import ModelConfig, Transformer  # noqa: E402
from s1kernels.ops.loss import linear_cross_entropy  # noqa: E402

FULL = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)
QUICK = dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)


def packed_batch(T: int, vocab: int, mean_len: int, device, seed: int = 0) -> dict:
    """A packed row of T tokens: samples of random length around mean_len, half of each trained."""
    g = torch.Generator().manual_seed(seed)
    lengths, total = [], 0
    while total < T:
        n = min(T - total, int(torch.randint(mean_len // 2, mean_len * 3 // 2 + 1, (1,), generator=g)))
        lengths.append(n)
        total += n
    ids = torch.randint(0, vocab, (T,), generator=g)
    labels = torch.full((T,), -100)
    pos, a = [], 0
    for n in lengths:
        pos.append(torch.arange(n))
        labels[a + n // 2:a + n - 1] = ids[a + n // 2 + 1:a + n]  # shifted inside the sample
        a += n
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    return {"input_ids": ids.to(device), "labels": labels.to(device), "position_ids": torch.cat(pos).to(device),
            "cu_seqlens": cu.to(device), "max_seqlen": max(lengths)}


def _ours_step(model, opt, b, fused: bool, amp):
    def loss_fn(hidden, weight):
        if fused:
            if amp:
                hidden, weight = hidden.to(torch.bfloat16), weight.to(torch.bfloat16)
            return linear_cross_entropy(hidden, weight, b["labels"], cu_seqlens=b["cu_seqlens"])
        logits = F.linear(hidden.to(weight.dtype) if not amp else hidden, weight)  # [T, V]
        return F.cross_entropy(logits.float(), b["labels"], ignore_index=-100)

    def step():
        with torch.autocast(b["input_ids"].device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(b["input_ids"], b["position_ids"], b["cu_seqlens"], b["max_seqlen"], loss_fn=loss_fn)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _hf_step(model, opt, b, amp):
    ids, pos = b["input_ids"][None], b["position_ids"][None]
    # HF shifts labels itself: hand it unshifted targets (input ids where trained)
    labels = torch.full_like(b["labels"], -100)
    labels[1:] = torch.where(b["labels"][:-1] != -100, b["input_ids"][1:], -100)

    def step():
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(input_ids=ids, position_ids=pos, labels=labels[None]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _hf_model(cfg: dict, device):
    try:
        import transformers
    except ImportError:
        return None, None
    attn = "sdpa"
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401
            attn = "flash_attention_2"
        except ImportError:
            pass
    hf_cfg = transformers.Qwen2Config(**cfg, attn_implementation=attn)
    return transformers.Qwen2ForCausalLM(hf_cfg).to(device), attn


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run(ctx: Context):
    device = ctx.device
    cfg = QUICK if ctx.quick else FULL
    T = 512 if ctx.quick else 16384
    amp = device.type == "cuda"
    b = packed_batch(T, cfg["vocab_size"], mean_len=128 if ctx.quick else 2048, device=device)
    mc = ModelConfig(model_type="qwen2", **cfg)
    n_params = mc.num_params()
    # 6 N T for the matmuls (forward + backward) + causal attention within samples
    lens = (b["cu_seqlens"][1:] - b["cu_seqlens"][:-1]).double().cpu()
    attn_flops = 6 * 2 * mc.num_hidden_layers * mc.num_attention_heads * mc.head_dim * float((lens * lens / 2).sum())
    flops = 6 * n_params * T + attn_flops
    case = f"qwen2-{n_params / 1e6:.3g}M T={T}" + (" (quick)" if ctx.quick else "")
    rows = []
    for impl in ("s1kernels", "torch", "transformers"):
        note = ""
        if impl == "transformers":
            model, attn = _hf_model(cfg, device)
            if model is None:
                continue
            note = f"attn={attn}" + ("" if attn == "flash_attention_2" else ", attends across packed samples")
        else:
            model = Transformer(mc).init_weights(seed=0).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4,
                                fused=device.type == "cuda")
        step = _hf_step(model, opt, b, amp) if impl == "transformers" else _ours_step(model, opt, b, impl == "s1kernels", amp)
        rows.append(measure("train_step", case, impl, step, ctx, flops=flops, note=note,
                            rate=lambda ms: f"{T / (ms * 1e-3):,.0f} tok/s"))
        del model, opt, step
        _free(device)
    return rows


if __name__ == "__main__":
    from common import finish_rows, measure_ceilings
    from results import markdown_table

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = dev.type != "cuda" or "--quick" in sys.argv
    ceil = measure_ceilings(dev, quick)
    c = Context(dev, quick, ceil, warmup=1 if quick else 3, rep=3 if quick else 10)
    print(markdown_table(finish_rows(run(c), ceil)))
