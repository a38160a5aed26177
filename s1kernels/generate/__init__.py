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

Results are decoded on the host at the end: the thinking span is everything before the first
end-of-thinking token, the answer span everything after the answer delimiter; the decode
state gives the number of "Wait" extensions used per row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Sequence

import torch

from s1kernels.answers import extract_answer
from s1kernels.control import thinking_span
from s1kernels.data.format import ANSWER_START, THINK_START, prompt_text
from s1kernels.data.tokenizer import real_vocab_size
from s1kernels.ops.decode import DONE, EVENT_EXIT, Budget, DecodeState, ForcingTokens, Sampling, decode_step

__all__ = ["GenerationResult", "generate", "build_forcing", "format_prompt", "main"]

FINAL_ANSWER = "Final Answer:"


@dataclasses.dataclass
class GenerationResult:
    """One generated row.

    ``token_ids`` are the generated ids (prompt excluded, nothing after the row's end);
    ``thinking_text`` decodes the ids before the first end-of-thinking token;
    ``thinking_tokens`` is the decode state's count of thinking content (sampled thinking
    tokens and injected "Wait" tokens; not the delimiter or the forced exit);
    ``answer_text`` follows the answer delimiter, ``answer`` is the final answer extracted
    from it; ``waits_used`` counts "Wait" extensions, ``forced_exit`` says whether the thinking
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def format_prompt(question: str, tokenizer=None, think_start: str = THINK_START, system: str | None = None) -> str:
    """The s1 prompt for ``question``: chat prompt + assistant header + thinking start."""
    return prompt_text(question, tokenizer, system) + think_start


def _encode_ids(tokenizer, text: str, what: str) -> list[int]:
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError(f"{what}: {text!r} encodes to no tokens")
    return list(ids)


def build_forcing(tokenizer, answer_start: str = ANSWER_START, wait_string: str = "Wait",
                  final_answer: str = FINAL_ANSWER, eos_ids: Sequence[int] | None = None) -> ForcingTokens:
    """Budget-forcing token lists for ``tokenizer`` and configurable delimiters.

    The first token of ``answer_start`` is the end-of-thinking token (s1: ``<|im_start|>``);
    the rest completes the delimiter (``answer\\n``). The forced exit is the whole delimiter
    followed by ``final_answer``; the wait sequence is ``wait_string`` as encoded (s1 appends
    "Wait" to the text as it is). With the defaults this equals
    ``ForcingTokens.from_tokenizer(tokenizer)``.
    """
    delim = _encode_ids(tokenizer, answer_start, "answer_start")
    wait = _encode_ids(tokenizer, wait_string, "wait_string")
    forced = delim + (_encode_ids(tokenizer, final_answer, "final_answer") if final_answer else [])
    eos = list(tokenizer.eos_ids if eos_ids is None else eos_ids)
    if not eos:
        raise ValueError("eos_ids: expected at least one end-of-sequence id, got none")
    return ForcingTokens(end_think_ids=(delim[0],), delimiter_completion_ids=tuple(delim[1:]), wait_ids=tuple(wait),
                         forced_exit_ids=tuple(forced), eos_ids=tuple(eos), pad_id=int(tokenizer.pad_id))


# ---------------------------------------------------------------------------------------------
# The decode loop
# ---------------------------------------------------------------------------------------------


class _StepBuffers:
    """Static tensors one decode step reads and writes (the CUDA graph's inputs/outputs)."""

    def __init__(self, batch: int, max_new: int, device: torch.device):
        self.tokens = torch.zeros(batch, dtype=torch.int64, device=device)  # last token per row
        self.pos = torch.zeros(batch, dtype=torch.int64, device=device)  # its cache position
        self.step = torch.zeros(1, batch, dtype=torch.int64, device=device)  # output column
        self.out = torch.zeros(batch, max_new, dtype=torch.int64, device=device)
        self.out_logprobs = torch.zeros(batch, max_new, dtype=torch.float32, device=device)
        self.n_tokens = torch.zeros(batch, dtype=torch.int64, device=device)  # real tokens per row
        self.forced = torch.zeros(batch, dtype=torch.bool, device=device)  # a forced exit was injected

    _FIELDS = ("tokens", "pos", "out", "out_logprobs", "n_tokens", "forced")

    def select(self, idx: torch.Tensor) -> None:
        """Keep only rows ``idx`` (fresh tensors: a captured graph must be captured again)."""
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name)[idx].contiguous())
        self.step = self.step[:, idx].contiguous()

    def record(self, tokens: torch.Tensor, logprobs: torch.Tensor, active: torch.Tensor, state: DecodeState) -> None:
        # scatter with a device-side column index: no host value enters the step
        self.n_tokens.add_(active.to(torch.int64))
        self.forced.logical_or_(state.event == EVENT_EXIT)
        col = self.step.t()
        self.out.scatter_(1, col, tokens[:, None])
        self.out_logprobs.scatter_(1, col, logprobs[:, None].float())
        self.tokens.copy_(tokens)
        self.step.add_(1)


class _Decoder:
    """Runs decode steps eagerly or through a captured CUDA graph."""

    def __init__(self, model, cache, state, budget_t, sampling_t, forcing, bufs: _StepBuffers,
                 vocab_size: int, backend: str):
        self.model, self.cache, self.state = model, cache, state
        self.budget_t, self.sampling_t, self.forcing = budget_t, sampling_t, forcing
        self.bufs, self.vocab_size, self.backend = bufs, vocab_size, backend
        self.graph = None

    def first(self, logits: torch.Tensor) -> None:
        """The first generated token, from the prefill's last-position logits."""
        active = ~_row_done_mask(self.state)
        tokens, logprobs = decode_step(logits, self.state, self.budget_t, self.sampling_t, self.forcing,
                                       vocab_size=self.vocab_size, backend=self.backend)
        self.bufs.record(tokens, logprobs, active, self.state)

    def _step(self) -> None:
        b = self.bufs
        hidden = self.model.forward_cached(b.tokens[:, None], b.pos, self.cache)
        logits = self.model.logits(hidden[:, 0])
        active = ~_row_done_mask(self.state)
        tokens, logprobs = decode_step(logits, self.state, self.budget_t, self.sampling_t, self.forcing,
                                       vocab_size=self.vocab_size, backend=self.backend)
        b.pos.add_(1)
        b.record(tokens, logprobs, active, self.state)

    def capture(self, warmup: int = 2) -> int:
        """Captures one step in a CUDA graph. The warm-up steps are real decode steps (run on
        a side stream, as graph capture requires); returns how many were taken."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()  # recorded only: capture does not execute the kernels
        return warmup

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()

    def select(self, idx: torch.Tensor) -> None:
        """Drop finished rows: keep rows ``idx`` of the state, the configuration, the buffers
        and the cache (moved to the cache's first rows; forward_cached uses the first B)."""
        n = idx.numel()
        for t in (self.cache.k, self.cache.v):
            t[:, :n] = t[:, idx]
        self.state = DecodeState(*[t[idx].contiguous() for t in self.state.tensors()])
        self.budget_t = type(self.budget_t)(*[t[idx].contiguous() for t in self.budget_t])
        self.sampling_t = type(self.sampling_t)(*[t[idx].contiguous() for t in self.sampling_t])
        self.bufs.select(idx)
        self.graph = None


def _row_done_mask(state: DecodeState) -> torch.Tensor:
    """[B] bool device tensor: rows that finished (an error also finishes a row)."""
    return state.phase == DONE


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
    raise TypeError(f"stream: expected None, a bool or a callable taking text, got {type(stream).__name__}")


class _Harvest:
    """Host copies of finished rows, indexed by their row in the batch as given."""

    def __init__(self, batch: int):
        self.ids: list = [None] * batch
        self.logprobs: list = [None] * batch
        self.done, self.error = [False] * batch, [False] * batch
        self.thinking, self.waits, self.forced = [0] * batch, [0] * batch, [False] * batch

    def take(self, dec: _Decoder, local: list[int], rows: list[int]) -> None:
        """Copies rows ``local`` of the decoder (original rows ``rows``) to the host."""
        if not local:
            return
        st, b = dec.state, dec.bufs
        idx = torch.as_tensor(local, device=b.out.device)
        n_tok = b.n_tokens[idx].cpu().tolist()
        out, lp = b.out[idx].cpu().tolist(), b.out_logprobs[idx].cpu().tolist()
        done, err = _row_done_mask(st)[idx].cpu().tolist(), (st.error[idx] != 0).cpu().tolist()
        think, waits = st.thinking_tokens[idx].cpu().tolist(), st.waits_used[idx].cpu().tolist()
        forced = b.forced[idx].cpu().tolist()
        for j, r in enumerate(rows):
            self.ids[r], self.logprobs[r] = out[j][: n_tok[j]], lp[j][: n_tok[j]]
            self.done[r], self.error[r] = done[j], err[j]
            self.thinking[r], self.waits[r], self.forced[r] = think[j], waits[j], forced[j]


@torch.inference_mode()
def _generate_batch(model, tokenizer, prompt_ids: list[list[int]], budget, sampling, forcing,
                    max_new: int, emit, cuda_graph: bool, check_every: int, backend: str,
                    vocab_size: int, compact: bool = True) -> _Harvest:
    """Prefills and decodes one batch; returns the rows' tokens and events on the host."""
    device = next(model.parameters()).device
    B = len(prompt_ids)
    lengths = [len(p) for p in prompt_ids]
    L = max(lengths)
    cache = model.new_kv_cache(B, L + max_new, device=device)
    ids = torch.full((B, L), int(tokenizer.pad_id), dtype=torch.int64)
    for b, p in enumerate(prompt_ids):
        ids[b, : len(p)] = torch.as_tensor(p, dtype=torch.int64)
    ids = ids.to(device)
    len_t = torch.as_tensor(lengths, dtype=torch.int64, device=device)

    hidden = model.forward_cached(ids, torch.zeros(B, dtype=torch.int64, device=device), cache)
    last = hidden[torch.arange(B, device=device), len_t - 1]  # [B, H]: only these need logits
    logits = model.logits(last)
    del hidden

    state = DecodeState.new(B, device, start_phase="thinking")
    bufs = _StepBuffers(B, max_new, device)
    bufs.pos.copy_(len_t)
    dec = _Decoder(model, cache, state, budget.tensors(B, device), sampling.tensors(B, device), forcing, bufs,
                   vocab_size, backend)
    dec.first(logits)
    steps = 1
    harvest = _Harvest(B)
    rows = list(range(B))  # decoder row -> row of the batch as given
    if emit is not None:
        # one prompt printed as it is generated: one host sync per step, by nature
        shown: list[int] = []
        prev = ""
        while True:
            if int(dec.bufs.n_tokens[0].item()) > len(shown):
                shown.append(int(dec.bufs.tokens[0].item()))
                text = tokenizer.decode(shown)
                if text.startswith(prev):  # a multi-byte character may need more tokens
                    emit(text[len(prev):])
                    prev = text
            if bool(_row_done_mask(dec.state).all().item()) or steps >= max_new:
                break
            dec.step()
            steps += 1
        emit("\n")
        harvest.take(dec, [0], rows)
        return harvest

    use_graph = cuda_graph and device.type == "cuda"
    if use_graph and max_new - steps > 2:
        steps += dec.capture(warmup=2)
    pinned = device.type == "cuda"
    mask_host = event = None
    while steps < max_new:
        dec.step()
        steps += 1
        if steps % check_every:
            continue
        if pinned:
            # read the done mask copied at the previous check (finished long ago, or nearly),
            # then queue a fresh copy: the GPU never waits for the host
            done_then = None
            if event is not None:
                event.synchronize()
                done_then = mask_host.tolist()
            if mask_host is None or mask_host.numel() != len(rows):
                mask_host = torch.zeros(len(rows), dtype=torch.bool, pin_memory=True)
            mask_host.copy_(_row_done_mask(dec.state), non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            if done_then is None:
                continue
        else:
            done_then = _row_done_mask(dec.state).tolist()
        keep = [i for i, d in enumerate(done_then) if not d]
        if not keep:
            break
        if compact and len(keep) <= len(rows) // 2:
            # half the rows or more have finished: stop spending work on them (done is final,
            # so a mask read one interval late is still right)
            gone = [i for i, d in enumerate(done_then) if d]
            harvest.take(dec, gone, [rows[i] for i in gone])
            dec.select(torch.as_tensor(keep, device=device))
            rows = [rows[i] for i in keep]
            event = None
            if use_graph and max_new - steps > 2:
                steps += dec.capture(warmup=2)
    harvest.take(dec, list(range(len(rows))), rows)
    return harvest


def _build_result(tokenizer, forcing: ForcingTokens, prompt: str, n_prompt: int, ids: list[int],
                  logprobs: list[float], done: bool, error: bool, thinking_tokens: int, waits: int,
                  forced: bool) -> GenerationResult:
    eos = set(forcing.eos_ids)
    span = thinking_span(ids, forcing.end_think_ids, forcing.eos_ids)
    thinking_ids = list(span.ids)
    rest = ids[len(thinking_ids):] if span.ended == "delimiter" else []
    delim_len = 1 + len(forcing.delimiter_completion_ids)
    answer_ids = rest[delim_len:]
    if error:
        reason = "error"
    elif not done:
        reason = "length"
    elif ids and ids[-1] in eos:
        reason = "eos"
    else:
        reason = "answer_cap"
    answer_text = tokenizer.decode([t for t in answer_ids if t not in eos], skip_special_tokens=True)
    return GenerationResult(
        prompt=prompt,
        text=tokenizer.decode(ids),
        token_ids=list(ids),
        logprobs=[float(x) for x in logprobs],
        thinking_text=tokenizer.decode(thinking_ids),
        thinking_tokens=int(thinking_tokens),
        answer_text=answer_text,
        answer=extract_answer(answer_text) if rest else None,
        waits_used=int(waits),
        forced_exit=bool(forced),
        finished_reason=reason,
        prompt_tokens=n_prompt,
    )


def generate(model, tokenizer, prompts, budget=None, sampling=None, max_new_tokens: int | None = None,
             stream=None, *, forcing=None, chat: bool = True, think_start: str = THINK_START,
             answer_start: str = ANSWER_START, wait_string: str = "Wait", final_answer: str = FINAL_ANSWER,
             system: str | None = None, batch_size: int | None = None, cuda_graph: bool | str = "auto",
             check_every: int = 16, compact: bool = True, backend: str = "auto",
             vocab_size: int | None = None, progress: bool = False) -> list[GenerationResult]:
    """Generate with budget forcing for a list of prompts; one ``GenerationResult`` per prompt.

    Args:
        model: an ``s1kernels.model.Transformer`` (anything with ``new_kv_cache``,
            ``forward_cached`` and ``logits``), already on its device and dtype.
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
        check_every: steps between checks of which rows have finished.
        compact: when half the rows or more have finished, drop them from the batch (KV cache
            rows, state and buffers gathered; on CUDA the graph is captured again).
        backend: ``decode_step`` backend ("auto", "cuda", "cpp", "torch").
        vocab_size: logit rows that are real tokens (default: the tokenizer's size); the
            padded rows of a larger lm_head (Qwen2.5: 152,064 rows, 151,665 tokens) are never
            sampled.
    """
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts: expected a list of prompts, got a single string (wrap it in a list)")
    prompts = list(prompts)
    if not prompts:
        return []
    if check_every < 1:
        raise ValueError(f"check_every: expected >= 1, got {check_every}")
    budget = Budget() if budget is None else budget
    sampling = Sampling() if sampling is None else sampling
    emit = _emit_fn(stream)
    if emit is not None and len(prompts) != 1:
        raise ValueError(f"stream: streams one prompt, got {len(prompts)} prompts")
    device = next(model.parameters()).device
    if forcing is None:
        forcing = build_forcing(tokenizer, answer_start=answer_start, wait_string=wait_string,
                                final_answer=final_answer)
    rows = getattr(getattr(model, "config", None), "vocab_size", None)
    vocab_size = real_vocab_size(tokenizer, rows, vocab_size) if rows is not None else vocab_size
    if max_new_tokens is None:
        max_new_tokens = _default_max_new(budget, forcing)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected >= 1, got {max_new_tokens}")

    texts, prompt_ids = [], []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            text = format_prompt(p, tokenizer, think_start, system) if chat else p
            ids = tokenizer.encode(text)
        elif isinstance(p, (list, tuple)) and all(isinstance(t, int) for t in p):
            text, ids = tokenizer.decode(p), list(p)
        else:
            raise TypeError(f"prompts[{i}]: expected str or list[int], got {type(p).__name__}")
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
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
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
        h = _generate_batch(model, tokenizer, [prompt_ids[i] for i in rows], b_budget, b_sampling, forcing,
                            max_new_tokens, emit, use_graph, check_every, backend, vocab_size, compact)
        for j, i in enumerate(rows):
            results[i] = _build_result(tokenizer, forcing, texts[i], len(prompt_ids[i]), h.ids[j], h.logprobs[j],
                                       h.done[j], h.error[j], h.thinking[j], h.waits[j], h.forced[j])
    return results


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """CLI defaults: CUDA when available; bf16 on CUDA, fp32 on CPU."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None or dtype == "auto":
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elif dtype in _DTYPES:
        dt = _DTYPES[dtype]
    else:
        raise ValueError(f"--dtype: expected one of auto, {', '.join(_DTYPES)}, got {dtype!r}")
    return dev, dt


def load_model_and_tokenizer(folder: str, device=None, dtype=None):
    """Model and tokenizer from a checkpoint folder (config.json, safetensors, tokenizer files)."""
    from s1kernels.data.tokenizer import S1Tokenizer
    from s1kernels.model import load_model

    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"--model: {folder!r} is not a folder; train one first (python -m s1kernels.train) or pass "
            "a Hugging Face model folder")
    dev, dt = resolve_device_dtype(device, dtype)
    model = load_model(folder, dtype=dt, device=dev)
    model.eval()
    return model, S1Tokenizer.from_folder(folder)


def add_budget_sampling_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by generate and eval (budget forcing, sampling, delimiters, runtime)."""
    g = p.add_argument_group("budget forcing")
    g.add_argument("--min-thinking-tokens", type=int, default=0,
                   help="thinking may not end before this many tokens (default 0)")
    g.add_argument("--num-waits", type=int, default=0,
                   help="ignore the end of thinking this many times (s1's NUM_IGNORE; default 0)")
    g.add_argument("--wait-string", default="Wait", help='text injected instead of the end of thinking ("Wait")')
    g.add_argument("--mode", choices=("wait", "suppress"), default="wait",
                   help="before the minimum/waits are met: replace the end of thinking with the wait "
                        "string (wait) or forbid it (suppress)")
    g.add_argument("--max-answer-tokens", type=int, default=64, help="answer tokens before the row is cut (64)")
    g.add_argument("--think-start", default=THINK_START.replace("\n", "\\n"),
                   help="text that opens the thinking block, ends every prompt (\\n = newline)")
    g.add_argument("--answer-start", default=ANSWER_START.replace("\n", "\\n"),
                   help="text that closes thinking and opens the answer; its first token is the "
                        "end-of-thinking token, the rest is injected after it")
    g.add_argument("--final-answer", default=FINAL_ANSWER, help="text appended after a forced exit")
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--min-p", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0, help="row i samples with seed + i")
    r = p.add_argument_group("runtime")
    r.add_argument("--max-new-tokens", type=int, default=None,
                   help="cap on generated tokens per row (default: thinking budget + forced exit + answer cap)")
    r.add_argument("--batch-size", type=int, default=None, help="rows decoded together (default: all)")
    r.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    r.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    r.add_argument("--backend", default="auto", choices=("auto", "cuda", "cpp", "torch"),
                   help="decode step backend")
    r.add_argument("--no-cuda-graph", action="store_true", help="run the decode step eagerly on CUDA")
    r.add_argument("--vocab-size", type=int, default=None,
                   help="logit rows that are real tokens; padded lm_head rows past it are never sampled "
                        "(default: the tokenizer's size)")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: 1 for models under 20M parameters on CPU, whose ops "
                        "are too small to split, else torch's default)")


def set_cpu_threads(model, threads: int | None) -> None:
    """Applies --threads: small CPU models run fastest on one thread (and do not stall when
    other processes share the cores)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads: expected >= 1, got {threads}")
        torch.set_num_threads(threads)
        return
    params = sum(p.numel() for p in model.parameters())
    if next(model.parameters()).device.type == "cpu" and params < 20_000_000:
        torch.set_num_threads(1)


def _unescape(text: str) -> str:
    """Delimiters typed on a command line: "\\n" and "\\t" stand for a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def delimiters_from_args(args) -> dict:
    """The delimiter keyword arguments of ``generate`` from parsed CLI flags."""
    return dict(think_start=_unescape(args.think_start), answer_start=_unescape(args.answer_start),
                wait_string=_unescape(args.wait_string), final_answer=_unescape(args.final_answer))


def budget_sampling_from_args(args, max_thinking_tokens: int):
    budget = Budget(min_thinking_tokens=args.min_thinking_tokens, max_thinking_tokens=max_thinking_tokens,
                    num_waits=args.num_waits, max_answer_tokens=args.max_answer_tokens, mode=args.mode)
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                        seed=args.seed)
    return budget, sampling


def _read_prompts_file(path: str) -> list[str]:
    prompts = []
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl") or path.endswith(".json"):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                q = row.get("question", row.get("problem", row.get("prompt"))) if isinstance(row, dict) else row
                if not isinstance(q, str):
                    raise ValueError(f"--prompts-file: line {n} has no question/problem/prompt text")
                prompts.append(q)
        else:
            prompts = [ln.rstrip("\n") for ln in f if ln.strip()]
    return prompts


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m s1kernels.generate",
                                description="Generate with s1 budget forcing from a model folder.")
    p.add_argument("--model", default="runs/default", help="checkpoint folder (default runs/default)")
    p.add_argument("--prompt", action="append", default=[], help="a question (repeatable)")
    p.add_argument("--prompts-file", default=None, help="questions: .jsonl (question/problem field) or text lines")
    p.add_argument("--raw", action="store_true", help="use prompts as they are (no chat format, no think start)")
    p.add_argument("--max-thinking-tokens", type=int, default=256, help="thinking budget (default 256)")
    add_budget_sampling_args(p)
    p.add_argument("--output", default=None, help="write results as JSON lines here")
    p.add_argument("--no-stream", action="store_true", help="do not stream a single prompt to the terminal")
    args = p.parse_args(argv)

    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += _read_prompts_file(args.prompts_file)
    if not prompts:
        p.error("give --prompt or --prompts-file")
    model, tokenizer = load_model_and_tokenizer(args.model, args.device, args.dtype)
    set_cpu_threads(model, args.threads)
    budget, sampling = budget_sampling_from_args(args, args.max_thinking_tokens)
    stream = len(prompts) == 1 and not args.no_stream and args.output is None
    delims = delimiters_from_args(args)
    if stream:
        sys.stdout.write(delims["think_start"] if not args.raw else "")
    results = generate(model, tokenizer, prompts, budget=budget, sampling=sampling,
                       max_new_tokens=args.max_new_tokens, stream=stream, chat=not args.raw, **delims,
                       batch_size=args.batch_size, cuda_graph=not args.no_cuda_graph, backend=args.backend,
                       vocab_size=args.vocab_size, progress=len(prompts) > 1)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    for i, r in enumerate(results):
        if not stream:
            print(f"=== prompt {i}: {prompts[i]}")
            print(delims["think_start"] + r.text if not args.raw else r.text)
        print(f"[thinking tokens: {r.thinking_tokens}, waits: {r.waits_used}, forced exit: "
              f"{'yes' if r.forced_exit else 'no'}, finished: {r.finished_reason}, answer: {r.answer}]")
    return 0

