"""Greedy decoding with the static KV cache, for a quick accuracy check after training.

Unconstrained thinking (no budget forcing): the model writes its trace and answer until it
emits an end-of-turn token or reaches `max_new_tokens`. The full budget-forcing decoder
lives in s1kernels.generate.
"""
from __future__ import annotations

import torch

from s1kernels.data import prompt_text, real_vocab_size
from s1kernels.data.synthetic import check_answer


@torch.no_grad()
def greedy_generate(model, tok, prompts: list[str], max_new_tokens: int = 160,
                    vocab_size: int | None = None) -> list[list[int]]:
    """Greedy continuations (token ids, stopping at an EOS id) of each prompt, batched.

    Only the first `vocab_size` logits compete (default: the tokenizer's size), so the padded
    rows of an lm_head larger than the tokenizer are never picked.
    """
    vocab_size = real_vocab_size(tok, model.config.vocab_size, vocab_size)
    device = model.embed_tokens.weight.device
    enc = [tok.encode(p) for p in prompts]
    B, P = len(enc), max(len(e) for e in enc)
    ids = torch.full((B, P), tok.pad_id, dtype=torch.int64)
    for b, e in enumerate(enc):
        ids[b, :len(e)] = torch.tensor(e)
    lengths = torch.tensor([len(e) for e in enc], device=device)
    cache = model.new_kv_cache(B, P + max_new_tokens)
    hidden = model.forward_cached(ids.to(device), torch.zeros(B, dtype=torch.int64, device=device), cache)
    last = hidden[torch.arange(B, device=device), lengths - 1]
    eos = torch.tensor(tok.eos_ids, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out = []
    pos = lengths.clone()
    for _ in range(max_new_tokens):
        nxt = model.logits(last)[:, :vocab_size].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, tok.pad_id), nxt)
        out.append(nxt)
        done = done | torch.isin(nxt, eos)
        if bool(done.all()):
            break
        last = model.forward_cached(nxt[:, None], pos, cache)[:, 0]
        pos = pos + 1
    gen = torch.stack(out, 1).tolist()
    result = []
    for row in gen:
        cut = next((i + 1 for i, t in enumerate(row) if t in tok.eos_ids), len(row))
        result.append(row[:cut])
    return result


def task_accuracy(model, tok, rows: list[dict], max_new_tokens: int = 160, batch: int = 64,
                  vocab_size: int | None = None) -> tuple[float, list[str]]:
    """Fraction of built-in task rows answered correctly by greedy decoding, and the texts."""
    was_training = model.training
    model.eval()
    texts = []
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        gens = greedy_generate(model, tok, [prompt_text(r["question"], tok) for r in chunk], max_new_tokens,
                               vocab_size)
        texts += [tok.decode(g) for g in gens]
    model.train(was_training)
    correct = sum(check_answer(t, r) for t, r in zip(texts, rows))
    return correct / max(1, len(rows)), texts
