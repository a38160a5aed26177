"""Batched generation with budget forcing: prefill, then one fused decode step per token.

    python -m s1kernels.generate --model runs/default --prompt $'Start 8\\nA + 7 = ?\\nResult mod 10 ?'

How a batch is decoded:

1. Prompts are rendered in the s1 chat format (system + user turn, assistant header, then
   the thinking start ``<|im_start|>think\\n``), so every row starts in the thinking phase.
2. One static KV cache holds ``batch x (longest prompt + max_new_tokens)`` positions. The
   prompts are right-padded and prefilled in one ``forward_cached`` call with start
   position 0; the logits of each row's last real token feed the first decode step. The
   padded tail of a short row leaves stale K/V behind it; the row's own decode steps
   overwrite those positions before any query can see them (a query at position p only
   attends to positions <= p).
3. Each decode step is: the model on the last token of every row (T=1, per-row position),
   then ``s1kernels.ops.decode.decode_step`` which samples and applies budget forcing on
   the device (min/max thinking tokens, "Wait" extensions, forced exit, answer cap, EOS).
   Tokens are written into a preallocated ``[batch, max_new_tokens]`` device buffer. On a
   GPU the step (model forward + decode step + bookkeeping) is captured once in a CUDA graph
   and replayed.
4. No host synchronisation per step. Every ``check_every`` steps the rows' done mask is
   copied to pinned host memory asynchronously and the copy made at the previous check is
   read, so finishing early costs at most two check intervals of extra steps and never
   stalls the GPU. Only streaming (one prompt, tokens printed as they come) syncs per step.
5. Finished rows emit the pad id in their slot until half the batch or more has finished;
   then they are dropped (their tokens copied out, the cache rows, state and buffers of the
   rest gathered, the graph captured again for the smaller batch). Outputs do not change.

The engine (prefill, decode step, decode until done, compaction) is in engine.py; the
command line in __main__.py (`python -m s1kernels.generate`), its flags in s1kernels.cli.

Results are decoded on the host at the end by ``s1kernels.control.read_row``: the thinking
span is everything before the first end-of-thinking token, the answer span runs from the
answer delimiter to the end of the first complete answer (or a re-opened delimiter), and
what follows it is thinking written in the answer span; the decode state gives the number of "Wait" extensions used per row.
"""
from __future__ import annotations

import dataclasses
import sys

import torch

from s1kernels.control import read_row
from s1kernels.data.format import ANSWER_START, FINAL_ANSWER, THINK_START, prompt_text
from s1kernels.data.tokenizer import real_vocab_size
from s1kernels.generate import engine
from s1kernels.generate.engine import Decoder as _Decoder  # noqa: F401  (tests patch it here)
from s1kernels.ops.decode import Budget, ForcingTokens, Sampling
from s1kernels.ops.decode.characters import CharacterGuard
from s1kernels.model.cpu_pack import AUTO_MAX_BYTES, DecodePack, why_not_pack
from s1kernels import checks

__all__ = ["GenerationResult", "generate", "format_prompt"]


@dataclasses.dataclass
class GenerationResult:
    """One generated row.

    ``token_ids`` are the generated ids (prompt excluded, nothing after the row's end);
    ``thinking_text`` decodes the ids before the first end-of-thinking token;
    ``thinking_tokens`` is the decode state's count of thinking content (sampled thinking
    tokens and injected "Wait" tokens; not the delimiter or the forced exit);
    ``answer_text`` is the answer span: after the answer delimiter, up to the end of the
    first complete answer (``s1kernels.control.read_row``); ``answer`` is the final answer
    extracted from it; ``late_thinking_tokens`` counts the tokens the model wrote after that
    answer (a restarted trace, a second answer): thinking written in the answer span, which
    the measured thinking length (``read_row(...).thinking_tokens``) includes; ``waits_used`` counts "Wait" extensions, ``forced_exit`` says whether the thinking
    budget ran out; ``finished_reason`` is "eos" (the row ended with an end-of-sequence
    token), "answer_cap" (max_answer_tokens reached), "length" (max_new_tokens reached
    first) or "error" (non-finite logits flagged by the decode step).
    """

    prompt: str
    text: str
    token_ids: list[int]
    logprobs: list[float]
    thinking_text: str
    thinking_tokens: int
    answer_text: str
    answer: str | None
    waits_used: int
    forced_exit: bool
    finished_reason: str
    prompt_tokens: int
    late_thinking_tokens: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def format_prompt(question: str, tokenizer=None, think_start: str = THINK_START, system: str | None = None) -> str:
    """The s1 prompt for ``question``: chat prompt + assistant header + thinking start."""
    return prompt_text(question, tokenizer, system) + think_start


def _as_int_max(x) -> int | None:
    if x is None:
        return None
    if torch.is_tensor(x):
        return int(x.max().item()) if x.numel() else None
    if isinstance(x, (list, tuple)):
        return max(int(v) for v in x) if x else None
    return int(x)


def _slice_rows(obj, rows: list[int], n_total: int):
    """A copy of a Budget/Sampling whose per-row fields (length n_total) keep only ``rows``."""
    if not dataclasses.is_dataclass(obj):
        return obj
    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if torch.is_tensor(v) and v.dim() == 1 and v.numel() == n_total and n_total > 1:
            changes[f.name] = v[torch.as_tensor(rows, device=v.device)]
        elif isinstance(v, (list, tuple)) and len(v) == n_total and n_total > 1:
            changes[f.name] = [v[r] for r in rows]
    return dataclasses.replace(obj, **changes) if changes else obj


_UNLIMITED = 2**31 - 1  # Budget's "no cap" value


def _default_max_new(budget: Budget, forcing: ForcingTokens, max_answer_default: int = 256) -> int:
    """Enough steps for the longest thinking span, the forced exit and the answer cap."""
    max_think = _as_int_max(budget.max_thinking_tokens)
    max_answer = _as_int_max(budget.max_answer_tokens)
    if max_think is None or max_think >= _UNLIMITED:
        raise ValueError("max_new_tokens: needed when the budget sets no max_thinking_tokens")
    if max_answer is None or max_answer >= _UNLIMITED:
        max_answer = max_answer_default
    # WAIT tokens are counted in max_think; the answer cap counts sampled tokens
    return max_think + len(forcing.forced_exit_ids) + len(forcing.delimiter_completion_ids) + max_answer + 1


def _emit_fn(stream):
    if stream is None or stream is False:
        return None
    if stream is True:
        def emit(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()
        return emit
    if callable(stream):
        return stream
    raise checks.argument_error("stream", "None, a bool or a callable taking text", type(stream).__name__, TypeError)


def _build_result(tokenizer, forcing: ForcingTokens, prompt: str, n_prompt: int, ids: list[int],
                  logprobs: list[float], done: bool, error: bool, thinking_tokens: int, waits: int,
                  forced: bool) -> GenerationResult:
    eos = set(forcing.eos_ids)
    row = read_row(ids, forcing, tokenizer)  # the one rule: the answer span cannot carry thinking
    if error:
        reason = "error"
    elif not done:
        reason = "length"
    elif ids and ids[-1] in eos:
        reason = "eos"
    else:
        reason = "answer_cap"
    return GenerationResult(
        prompt=prompt,
        text=tokenizer.decode(ids),
        token_ids=list(ids),
        logprobs=[float(x) for x in logprobs],
        thinking_text=tokenizer.decode(list(row.thinking.ids)),
        thinking_tokens=int(thinking_tokens),
        answer_text=row.answer_text,
        answer=row.answer,
        waits_used=int(waits),
        forced_exit=bool(forced),
        finished_reason=reason,
        prompt_tokens=n_prompt,
        late_thinking_tokens=len(row.late_thinking_ids),
    )


def _decode_pack(model, cpu_prepack):
    """The DecodePack `cpu_prepack` asks for, or None."""
    if cpu_prepack is False:
        return None
    reason = why_not_pack(model)
    if reason is not None:
        if cpu_prepack is True:
            raise ValueError(f"cpu_prepack=True: {reason}; pass cpu_prepack='auto' to decode with F.linear "
                             "where packing is not possible")
        return None
    if cpu_prepack == "auto" and DecodePack.weight_bytes(model) > AUTO_MAX_BYTES:
        return None
    try:
        pack = DecodePack(model)
        pack.lm_head(model.lm_head_weight.new_zeros(1, model.lm_head_weight.shape[1]))  # runs here at all?
    except RuntimeError:
        if cpu_prepack is True:
            raise
        return None  # "auto": a oneDNN build without these ops decodes with F.linear
    return pack


def generate(model, tokenizer, prompts, budget=None, sampling=None, max_new_tokens: int | None = None,
             stream=None, *, forcing=None, chat: bool = True, think_start: str = THINK_START,
             answer_start: str = ANSWER_START, wait_string: str = "Wait", final_answer: str = FINAL_ANSWER,
             system: str | None = None, batch_size: int | None = None, cuda_graph: bool | str = "auto",
             check_every: int | None = None, compact: bool = True, backend: str = "auto",
             vocab_size: int | None = None, progress: bool = False,
             cpu_prepack: bool | str = "auto") -> list[GenerationResult]:
    """Generate with budget forcing for a list of prompts; one ``GenerationResult`` per prompt.

    Args:
        model: an ``s1kernels.model.Transformer`` (anything with ``new_kv_cache``,
            ``forward_cached(ids, start_pos, cache, pack=, kv_len=)`` and ``logits(hidden, pack=)``),
            already on its device and dtype.
        tokenizer: an ``S1Tokenizer`` (``encode``/``decode``/``pad_id``/``eos_ids``).
        prompts: questions (``chat=True``: rendered as the s1 prompt ending with the
            thinking start) or full prompt texts (``chat=False``: used as they are; end them
            with the thinking start so rows start in the thinking phase), or lists of ids.
        budget: ``Budget`` (min/max thinking tokens, number of "Wait" extensions, answer cap,
            mode); ints apply to every row, per-row tensors/lists have one entry per prompt.
        sampling: ``Sampling`` (greedy by default). A scalar seed ``s`` becomes ``s + i`` for
            prompt ``i``, so a row's output does not depend on batching.
        max_new_tokens: generated-token cap per row (default: enough for the max thinking
            budget, the forced exit and the answer cap).
        stream: True (print to stdout) or a callable receiving text pieces, for one prompt.
        forcing: a ready ``ForcingTokens``; else built from the tokenizer and the delimiters
            ``answer_start``, ``wait_string`` and ``final_answer``.
        batch_size: rows decoded together (default: all). Prompts are grouped by length.
        cuda_graph: capture the decode step in a CUDA graph ("auto": on CUDA, not streaming).
        check_every: steps between checks of which rows have finished (default: 16 on a
            GPU, where a check is a copy to the host; 1 on the CPU, where it is free).
        compact: when half the rows or more have finished, drop them from the batch (KV cache
            rows, state and buffers gathered; on CUDA the graph is captured again).
        backend: ``decode_step`` backend ("auto", "cuda", "cpp", "torch").
        vocab_size: logit rows that are real tokens (default: the tokenizer's size); the
            padded rows of a larger lm_head (Qwen2.5: 152,064 rows, 151,665 tokens) are never
            sampled.
        cpu_prepack: on the CPU, decode with the projection weights reordered once for oneDNN
            (``s1kernels.model.cpu_pack``: about 1.4x faster steps, an extra copy of the
            weights while generating). "auto": on x86-64, when the projections are at most 2 GiB.
    """
    if isinstance(prompts, (str, bytes)):
        raise checks.argument_error("prompts", "a list of prompts", "a single string (wrap it in a list)", TypeError)
    prompts = list(prompts)
    if not prompts:
        return []
    if check_every is not None and (not isinstance(check_every, int) or check_every < 1):
        raise checks.argument_error("check_every", "an int >= 1", repr(check_every))
    if cpu_prepack not in (True, False, "auto"):
        raise checks.argument_error("cpu_prepack", "True, False or 'auto'", repr(cpu_prepack))
    budget = Budget() if budget is None else budget
    sampling = Sampling() if sampling is None else sampling
    emit = _emit_fn(stream)
    if emit is not None and len(prompts) != 1:
        raise ValueError(f"stream: streams one prompt, got {len(prompts)} prompts")
    device = next(model.parameters()).device
    if check_every is None:
        check_every = 1 if device.type == "cpu" else 16
    pack = _decode_pack(model, cpu_prepack)
    if forcing is None:
        forcing = ForcingTokens.from_tokenizer(tokenizer, answer_start=answer_start, wait_string=wait_string,
                                               final_answer=final_answer)
    rows = getattr(getattr(model, "config", None), "vocab_size", None)
    vocab_size = real_vocab_size(tokenizer, rows, vocab_size) if rows is not None else vocab_size
    # forcing never lands inside a byte-level character (ops/decode/characters.py)
    guard = CharacterGuard.for_generation(tokenizer, forcing, vocab_size)
    if max_new_tokens is None:
        max_new_tokens = _default_max_new(budget, forcing)
    if max_new_tokens < 1:
        raise checks.argument_error("max_new_tokens", ">= 1", max_new_tokens)

    texts, prompt_ids = [], []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            text = format_prompt(p, tokenizer, think_start, system) if chat else p
            ids = tokenizer.encode(text)
        elif isinstance(p, (list, tuple)) and all(isinstance(t, int) for t in p):
            text, ids = tokenizer.decode(p), list(p)
        else:
            raise checks.argument_error(f"prompts[{i}]", "str or list[int]", type(p).__name__, TypeError)
        if not ids:
            raise ValueError(f"prompts[{i}]: encodes to no tokens")
        texts.append(text)
        prompt_ids.append(ids)
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = max(len(p) for p in prompt_ids)
    if max_pos is not None and longest + max_new_tokens > max_pos:
        raise ValueError(f"max_new_tokens: prompt ({longest} tokens) + {max_new_tokens} new tokens exceeds the "
                         f"model's max_position_embeddings={max_pos}")

    n = len(prompts)
    seed = sampling.seed
    if isinstance(seed, int) or (torch.is_tensor(seed) and seed.dim() == 0):
        sampling = dataclasses.replace(sampling, seed=[int(seed) + i for i in range(n)])
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise checks.argument_error("batch_size", ">= 1", batch_size)
    order = sorted(range(n), key=lambda i: -len(prompt_ids[i]))  # similar lengths share a batch
    chunks = [order[i : i + bs] for i in range(0, n, bs)]
    use_graph = (cuda_graph is True or cuda_graph == "auto") and device.type == "cuda" and emit is None
    results: list[GenerationResult | None] = [None] * n
    iterator = chunks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(chunks, desc="generate", unit="batch", leave=False)
    for rows in iterator:
        b_budget = _slice_rows(budget, rows, n)
        b_sampling = _slice_rows(sampling, rows, n)
        h = engine.run_batch(model, tokenizer, [prompt_ids[i] for i in rows], b_budget, b_sampling, forcing,
                             max_new_tokens, emit, use_graph, check_every, backend, compact_rows=compact,
                             vocab_size=vocab_size, pack=pack, guard=guard)
        for j, i in enumerate(rows):
            results[i] = _build_result(tokenizer, forcing, texts[i], len(prompt_ids[i]), h.ids[j], h.logprobs[j],
                                       h.done[j], h.error[j], h.thinking[j], h.waits[j], h.forced[j])
    return results
