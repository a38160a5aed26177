"""Greedy decoding for a quick accuracy check after training.

Unconstrained thinking (no budget forcing): the model writes its trace and answer until it
emits an end-of-turn token or reaches `max_new_tokens`. It runs on the generation engine
(s1kernels.generate.engine) with the rows starting in the answer phase, where the fused
decode step only samples (greedy here) and stops a row at EOS or at its answer cap.
"""
from __future__ import annotations

from s1kernels.data import prompt_text, real_vocab_size
from s1kernels.data.synthetic import check_answer


def greedy_generate(model, tok, prompts: list[str], max_new_tokens: int = 160,
                    vocab_size: int | None = None) -> list[list[int]]:
    """Greedy continuations (token ids, up to and including an EOS id) of each prompt, batched.

    Only the first `vocab_size` logits compete (default: the tokenizer's size), so the padded
    rows of an lm_head larger than the tokenizer are never picked.
    """
    from s1kernels.generate import engine
    from s1kernels.ops.decode import Budget, ForcingTokens, Sampling

    vocab_size = real_vocab_size(tok, model.config.vocab_size, vocab_size)
    enc = [tok.encode(p) for p in prompts]
    harvest = engine.run_batch(model, tok, enc, Budget(max_answer_tokens=max_new_tokens), Sampling(),
                               ForcingTokens.from_tokenizer(tok), max_new_tokens, emit=None, cuda_graph=True,
                               check_every=16, backend="auto", start_phase="answer", vocab_size=vocab_size)
    return [list(ids) for ids in harvest.ids]


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
