"""Generation benchmarks: budget-forced decoding throughput (generated tokens per second).

GPU sizes: a Qwen2-0.5B-shaped model (hidden 896, 24 layers, 14 heads, 2 kv heads,
intermediate 4864, vocab 151,936, bf16, random weights) at batch 1, 8 and 64, prompts of
96-128 tokens, a thinking budget of 256 tokens (minimum 32, one "Wait" extension allowed)
and a 32-token answer cap. Implementations:

- s1kernels: `s1kernels.generate.generate` (static KV cache, CUDA-graph-captured step of
  model forward + fused decode step with budget forcing on device);
- transformers: Hugging Face `generate` of the same weights (Qwen2ForCausalLM) with a
  thinking-budget LogitsProcessor (end-of-thinking/EOS masked below the minimum, the forced
  exit written token by token at the maximum), greedy;
- reprompt: s1's own evaluation loop, written with our model but without the fused step: a
  fresh prefill + greedy decode that stops at end-of-thinking, append "Wait" and generate
  again (NUM_IGNORE times), then append the forced exit and generate the answer in another
  call; stop checks read a flag back to the host every step, as stop strings do.

Random weights never close their thinking on their own, so every implementation writes the
whole thinking budget, the forced exit and the answer cap: the same number of tokens, so
the times compare directly. The note holds tokens/s. `bytes` counts one read of the weights
per decode step (the floor of a memory-bound decode), for the fraction of copy bandwidth.
Quick mode (CPU): a 2-layer toy model, batch 1 and 4, budget 12, one thread.
"""
from __future__ import annotations

import dataclasses
import tempfile

import torch

import common
from s1kernels.generate import generate
from s1kernels.model import ModelConfig, Transformer, save_model
from s1kernels.ops.decode import Budget, ForcingTokens

BENCH = "generate"

# Qwen2.5 ids of the s1 delimiters (only their positions in the vocabulary matter here).
QWEN_IDS = dict(im_start=151644, im_end=151645, endoftext=151643, answer=9217, newline=198,
                wait=14190, final_answer=(19357, 21806, 25))


class IdTokenizer:
    """The tokenizer surface `generate` needs when prompts are given as token ids."""

    def __init__(self, pad_id: int, eos_ids: tuple[int, ...], vocab_size: int):
        self.pad_id, self.eos_ids = pad_id, list(eos_ids)
        self.vocab_size = vocab_size  # every id of the random-weight model is a token

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(int(i)) for i in ids)

    def encode(self, text):
        return [int(t) for t in text.split()]


def qwen_forcing() -> ForcingTokens:
    q = QWEN_IDS
    return ForcingTokens(end_think_ids=(q["im_start"],), delimiter_completion_ids=(q["answer"], q["newline"]),
                         wait_ids=(q["wait"],),
                         forced_exit_ids=(q["im_start"], q["answer"], q["newline"], *q["final_answer"]),
                         eos_ids=(q["im_end"], q["endoftext"]), pad_id=q["endoftext"])


def _config(quick: bool) -> ModelConfig:
    if quick:
        return ModelConfig(vocab_size=1024, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=1024, tie_word_embeddings=True)
    return ModelConfig(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                       tie_word_embeddings=True, rope_theta=1_000_000.0)


def _forcing_for(vocab: int) -> ForcingTokens:
    if vocab > max(QWEN_IDS["im_start"], QWEN_IDS["im_end"]):
        return qwen_forcing()
    # toy vocabulary: the same structure on small ids
    return ForcingTokens(end_think_ids=(1,), delimiter_completion_ids=(2, 3), wait_ids=(4,),
                         forced_exit_ids=(1, 2, 3, 5, 6, 7), eos_ids=(8, 9), pad_id=9)


def _prompts(batch: int, lo: int, hi: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi + 1, (batch,), generator=g).tolist()
    # ids above the forcing ids, so a prompt never holds a delimiter
    return [torch.randint(16, min(vocab, 150000), (n,), generator=g).tolist() for n in lens]


# ----------------------------------------------------------------------------- baselines

@torch.inference_mode()
def plain_generate(model, seqs: list[list[int]], max_new: int, stop_ids: set[int], pad_id: int) -> list[list[int]]:
    """A plain greedy generate call: fresh cache, ragged prefill, argmax decode; a row stops
    at a stop id (kept out of its output); the loop ends when every row stopped."""
    dev = model.embed_tokens.weight.device
    B = len(seqs)
    lens = torch.tensor([len(s) for s in seqs], device=dev)
    L = max(len(s) for s in seqs)
    cache = model.new_kv_cache(B, L + max_new)
    ids = torch.full((B, L), pad_id, dtype=torch.int64)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
    hidden = model.forward_cached(ids.to(dev), torch.zeros(B, dtype=torch.int64, device=dev), cache)
    logits = model.logits(hidden[torch.arange(B, device=dev), lens - 1])
    stop = torch.tensor(sorted(stop_ids), device=dev)
    alive = torch.ones(B, dtype=torch.bool, device=dev)
    out = torch.full((B, max_new), -1, dtype=torch.int64, device=dev)
    pos = lens.clone()
    for t in range(max_new):
        tok = logits.argmax(-1)
        alive &= ~torch.isin(tok, stop)
        out[:, t] = torch.where(alive, tok, torch.full_like(tok, -1))
        if not bool(alive.any()):  # the per-step host check a stop condition needs
            break
        hidden = model.forward_cached(tok[:, None], pos, cache)
        logits = model.logits(hidden[:, 0])
        pos += 1
    rows = out.cpu().tolist()
    return [[t for t in r if t >= 0] for r in rows]


def reprompt_generate(model, prompts, forcing: ForcingTokens, max_think: int, num_waits: int, answer_cap: int):
    """s1's budget forcing by re-prompting: stop at end-of-thinking, append "Wait", generate
    again with a new prefill; at the budget append the forced exit and generate the answer."""
    end_stop = set(forcing.end_think_ids) | set(forcing.eos_ids)
    seqs = [list(p) for p in prompts]
    used = [0] * len(seqs)
    for round_ in range(num_waits + 1):
        todo = [i for i in range(len(seqs)) if used[i] < max_think]
        if not todo:
            break
        outs = plain_generate(model, [seqs[i] for i in todo], max_think - min(used[i] for i in todo), end_stop,
                              forcing.pad_id)
        stopped_early = False
        for i, o in zip(todo, outs):
            o = o[: max_think - used[i]]
            seqs[i] += o
            used[i] += len(o)
            if used[i] < max_think and round_ < num_waits:
                seqs[i] += list(forcing.wait_ids)
                used[i] += len(forcing.wait_ids)
                stopped_early = True
        if not stopped_early:
            break
    seqs = [s + list(forcing.forced_exit_ids) for s in seqs]
    answers = plain_generate(model, seqs, answer_cap, set(forcing.eos_ids), forcing.pad_id)
    return [s + a for s, a in zip(seqs, answers)]


def hf_budget_processor(prompt_len: int, forcing: ForcingTokens, min_think: int, max_think: int):
    """A thinking-budget LogitsProcessor for transformers' generate (left-padded batch):
    masks end-of-thinking and EOS before `min_think` new tokens and writes the forced exit
    token by token from `max_think` on. Greedy rows otherwise."""
    from transformers import LogitsProcessor

    exit_ids = list(forcing.forced_exit_ids)
    stop_ids = list(forcing.end_think_ids) + list(forcing.eos_ids)

    class ThinkingBudget(LogitsProcessor):
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - prompt_len  # same for every row: python int, no sync
            if step < min_think:
                scores[:, stop_ids] = float("-inf")
            elif max_think <= step < max_think + len(exit_ids):
                forced = torch.full_like(scores, float("-inf"))
                forced[:, exit_ids[step - max_think]] = 0.0
                scores = forced
            return scores

    return ThinkingBudget()


def _hf_model(model: Transformer, dtype, device):
    """transformers' Qwen2 with the same weights (saved by save_model, loaded by HF)."""
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as d:
        save_model(model, d)
        hf = AutoModelForCausalLM.from_pretrained(d, torch_dtype=dtype)
    return hf.to(device).eval()


def _hf_generate_fn(hf, prompts, forcing, min_think, max_think, answer_cap, device):
    from transformers import LogitsProcessorList

    B = len(prompts)
    L = max(len(p) for p in prompts)
    ids = torch.full((B, L), forcing.pad_id, dtype=torch.int64)
    mask = torch.zeros(B, L, dtype=torch.int64)
    for b, p in enumerate(prompts):  # left padding, as HF decoder-only generation wants
        ids[b, L - len(p):] = torch.tensor(p)
        mask[b, L - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    procs = LogitsProcessorList([hf_budget_processor(L, forcing, min_think, max_think)])
    max_new = max_think + len(forcing.forced_exit_ids) + answer_cap

    def run():
        with torch.inference_mode():
            return hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                               logits_processor=procs, eos_token_id=list(forcing.eos_ids), pad_token_id=forcing.pad_id)
    return run


# ----------------------------------------------------------------------------- run

def run(ctx: common.Context) -> list[common.Row]:
    threads = torch.get_num_threads()
    if ctx.quick:
        torch.set_num_threads(1)  # a toy model: thread wake-ups cost more than the ops
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: common.Context) -> list[common.Row]:
    dev = ctx.device
    quick = ctx.quick
    cfg = _config(quick)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = Transformer(cfg).init_weights(seed=0).to(device=dev, dtype=dtype).eval()
    forcing = _forcing_for(cfg.vocab_size)
    tok = IdTokenizer(forcing.pad_id, forcing.eos_ids, cfg.vocab_size)
    if quick:
        batches, plen, max_think, min_think, answer_cap = (1, 4), (12, 20), 12, 4, 3
    else:
        batches, plen, max_think, min_think, answer_cap = (1, 8, 64), (96, 128), 256, 32, 32
    num_waits = 1
    gctx = dataclasses.replace(ctx, warmup=1, rep=2 if quick else 3)  # each call is a whole generation
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        hf = _hf_model(model, dtype, dev)
    except Exception as e:  # transformers missing or too old: that baseline is reported as skipped
        hf, hf_reason = None, f"transformers unavailable: {type(e).__name__}: {str(e)[:150]}"
    rows = []
    for B in batches:
        prompts = _prompts(B, *plen, cfg.vocab_size, seed=B)
        budget = Budget(min_thinking_tokens=min_think, max_thinking_tokens=max_think, num_waits=num_waits,
                        max_answer_tokens=answer_cap)
        steps = max_think + len(forcing.forced_exit_ids) + answer_cap
        tokens = B * steps
        case = f"B={B} think<={max_think} answer<={answer_cap} {'toy' if quick else 'Qwen2-0.5B'}"

        def ours():
            return generate(model, tok, prompts, budget=budget, forcing=forcing, max_new_tokens=steps + 1)

        impls = [("s1kernels", ours),
                 ("reprompt", lambda: reprompt_generate(model, prompts, forcing, max_think, num_waits, answer_cap))]
        if hf is not None:
            impls.append(("transformers", _hf_generate_fn(hf, prompts, forcing, min_think, max_think, answer_cap, dev)))
        else:
            rows.append(common.skipped(BENCH, case, "transformers", hf_reason, gctx))
        for impl, fn in impls:
            rows.append(common.measure(BENCH, case, impl, fn, gctx, bytes=steps * weight_bytes,
                                       rate=lambda ms: f"{tokens / (ms * 1e-3):,.0f} tok/s"))
    return rows


if __name__ == "__main__":
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ctx = common.Context(dev, dev.type != "cuda", common.measure_ceilings(dev, dev.type != "cuda"))
    for r in common.finish_rows(run(ctx), ctx.ceilings):
        print(r.case, r.impl, r.ms, r.note, {k: round(v, 2) for k, v in r.ratios.items()})
