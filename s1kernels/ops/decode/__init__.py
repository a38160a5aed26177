"""Fused decode step: sampling and budget forcing in one on-device step.

One call of `decode_step(logits, state, budget_t, sampling_t, forcing)` picks the next token
of every batch row and advances that row's budget-forcing state machine, with no host
synchronisation, so a whole decode step (model forward + this) can be captured in a CUDA
graph.

State machine (per row, every step; the same logic runs in the torch reference (reference.py) and in
the header csrc/include/s1k/budget_forcing.h shared by the C++ CPU twin and the CUDA kernel):

  phases: THINKING -> ANSWER -> DONE. Injected sequences: WAIT (the wait string),
  DELIMITER (completion of the end-of-thinking delimiter, e.g. "answer\\n"), EXIT (the forced
  exit: end-of-thinking + "answer\\nFinal Answer:").

  0. A DONE row emits `pad_id`.
  1. A THINKING row with `thinking_tokens >= max_thinking_tokens` (and no injection pending)
     starts the EXIT injection and enters ANSWER.
  2. A pending injection emits its next token, whatever the logits say.
  3. Otherwise the row samples from its logits (ids >= vocab_size are never sampled).
     A THINKING row "may end" once `thinking_tokens >= min_thinking_tokens` and, in mode
     "wait", `waits_used >= num_waits` (s1's ignore-the-end-that-many-times). Before that,
     mode "wait" replaces a sampled end-of-thinking or EOS token with the WAIT sequence (one
     extension used) and mode "suppress" masks those ids before sampling. A WAIT is only
     started when all of it fits in the thinking budget (`thinking_tokens + len(wait_ids) <=
     max_thinking_tokens`); otherwise the early end takes the forced EXIT at once, so no
     WAIT is ever cut mid-word. Once it may end, a
     sampled end-of-thinking token is emitted, the DELIMITER completion is injected and the
     row enters ANSWER; a sampled EOS ends the row.
  4. In ANSWER, a sampled EOS or reaching `max_answer_tokens` sampled tokens ends the row.

  `thinking_tokens` counts thinking content: sampled thinking tokens and injected WAIT
  tokens, not the delimiter or the forced exit. So a thinking span (content + exit) never
  exceeds max_thinking_tokens + len(forced_exit_ids).

  A row that starts the delimiter on its own (samples the end-of-thinking token, e.g.
  `<|im_start|>`) leaves THINKING at once, so the budget never injects the exit on top of
  it: the row finishes that delimiter (`answer\n`) and no second `<|im_start|>` appears.

Sampling (per row; definitions chosen so that every backend computes the same thing):

  - greedy when temperature == 0: the first index of the maximum allowed logit.
  - otherwise z_i = (x_i - max) / T. Filters are thresholds on the logit, ties kept:
    top-k keeps x_i >= (k-th largest allowed logit); top-p keeps x_i >= t where t is the
    largest value whose mass of {x >= t} (softmax(z) over the top-k set) reaches
    top_p * total; min-p keeps z_i >= log(min_p). The token is drawn from softmax(z) over
    the kept set by the Gumbel-max rule: argmax_i z_i - log(-log(u_i)), where u_i comes from
    Philox4x32-10 keyed on the row's seed with counter (i // 4, row step), word i % 4, so a
    row's draw depends only on its seed, its step and its logits, not on its batch position.
  - logprob: log-softmax of the raw logits (temperature 1, before any filter) at the
    emitted token when it was sampled; 0 for injected and pad tokens.
  - a row whose logits contain NaN or +inf (below vocab_size), or whose allowed logits are
    all -inf, gets an error flag, emits pad_id and is DONE.

Backends: "cuda" (CUDA C++ kernel, one block per row), "cpp" (the CPU twin of that kernel,
same header logic) and "torch" (the readable reference in reference.py, vectorised over the
batch). Layout: config.py (ForcingTokens, Budget, Sampling, DecodeState), reference.py,
native.py (argument packing for s1kernels._C); this module holds the checks and the op.
The CPU paths compute probabilities in fp64 and agree exactly; the CUDA kernel computes them
in fp32 and agrees with them except where a value sits within rounding of a set boundary.
"""
from __future__ import annotations

import torch

from s1kernels import backend as _backend
from s1kernels.ops.decode import native as _native
from s1kernels.ops.decode.contract import (  # noqa: F401  (public names of the family)
    _STATE_FIELDS, validate, ANSWER, DONE, ERROR_NO_TOKEN, ERROR_NONFINITE, EVENT_DELIMITER, EVENT_ERROR,
    EVENT_EXIT, EVENT_PAD, EVENT_SAMPLED, EVENT_WAIT, INJECT_DELIMITER, INJECT_EXIT, INJECT_NONE, INJECT_WAIT,
    MAX_STOP_IDS, MODE_SUPPRESS, MODE_WAIT, PHILOX_TAG, THINKING, Budget, BudgetTensors, DecodeState, ForcingTokens,
    Sampling, SamplingTensors)
from s1kernels.ops.decode.reference import (  # noqa: F401
    _reference_step, philox4x32, philox_uniforms, reference_decode_step, reference_sample)


# ----------------------------------------------------------------------------- dispatch

@torch.library.custom_op("s1kernels::decode_step", mutates_args=("state",))
def _decode_step_op(logits: torch.Tensor, state: list[torch.Tensor], budget: list[torch.Tensor],
                    sampling: list[torch.Tensor], forcing_table: torch.Tensor, forcing_lengths: list[int],
                    pad_id: int, vocab_size: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The step on checked arguments. state, budget and sampling are the tensors of
    DecodeState, BudgetTensors and SamplingTensors in the order of the field table (fields.py)."""
    # resolved here too because a traced call (torch.compile) passes the requested backend
    backend = _backend.resolve("decode", backend, logits, op="decode_step")
    if backend == "torch":
        return _reference_step(logits, DecodeState(*state), BudgetTensors(*budget), SamplingTensors(*sampling),
                               forcing_table, forcing_lengths, pad_id, vocab_size)
    if backend == "cuda":
        # the kernel launches on the current device, which must be the one owning the stream
        with torch.cuda.device(logits.device):
            stream = torch.cuda.current_stream(logits.device).cuda_stream
            return _native.step("decode_step_cuda", logits, state, budget, sampling, forcing_table,
                                forcing_lengths, pad_id, vocab_size, stream)
    if backend == "cpp":
        return _native.step("decode_step_cpu", logits, state, budget, sampling, forcing_table,
                            forcing_lengths, pad_id, vocab_size, 0)
    raise AssertionError(f"unreachable backend {backend!r}")


@_decode_step_op.register_fake
def _decode_step_fake(logits, *args, **kwargs):
    B = logits.shape[0]
    return (logits.new_empty(B, dtype=torch.int64), logits.new_empty(B, dtype=torch.float32))


def decode_step(logits: torch.Tensor, state: DecodeState, budget_t: BudgetTensors, sampling_t: SamplingTensors,
                forcing: ForcingTokens, vocab_size: int | None = None, backend: str = "auto"):
    """One fused decode step for every row: budget forcing + sampling.

    logits: [B, V] float32/float16/bfloat16 (vocabulary dimension contiguous); columns at or
    past `vocab_size` (default V) are never read. Updates `state` in place (step included)
    and returns (tokens int64 [B], logprobs fp32 [B]). See the module docstring for the
    semantics. No host synchronisation: safe inside a CUDA graph (backend "cuda").

    Example:
        forcing = ForcingTokens.from_tokenizer(tok)
        budget_t = Budget(min_thinking_tokens=64, max_thinking_tokens=512, num_waits=1).tensors(B, dev)
        sampling_t = Sampling(temperature=0.7, top_p=0.95, seed=list(range(B))).tensors(B, dev)
        state = DecodeState.new(B, dev)
        tokens, logprobs = decode_step(model_logits, state, budget_t, sampling_t, forcing)
    """
    vocab_size = validate(logits, state, budget_t, sampling_t, forcing, vocab_size)
    if backend == "torch":
        return reference_decode_step(logits, state, budget_t, sampling_t, forcing, vocab_size)
    # the custom op resolves "auto" itself (opaque to torch.compile); eager calls fail early here
    which = backend if torch.compiler.is_compiling() else _backend.resolve(
        "decode", backend, logits, op="decode_step")
    return _decode_step_op(logits, state.tensors(), list(budget_t), list(sampling_t), forcing.table(logits.device),
                           forcing.lengths, forcing.pad_id, vocab_size, which)


__all__ = ["ForcingTokens", "Budget", "Sampling", "DecodeState", "BudgetTensors", "SamplingTensors", "decode_step",
           "reference_decode_step", "reference_sample", "philox4x32", "philox_uniforms", "THINKING", "ANSWER", "DONE",
           "EVENT_PAD", "EVENT_SAMPLED", "EVENT_WAIT", "EVENT_DELIMITER", "EVENT_EXIT", "EVENT_ERROR"]
