"""The torch reference of the fused decode step (backend "torch", and the oracle in tests):
Philox4x32-10 uniforms, the sampling definitions and the budget-forcing state machine,
vectorised over the batch, in fp64 for the probabilities. The semantics are written out in
the docstring of s1kernels.ops.decode.
"""
from __future__ import annotations

import torch

from s1kernels.ops.decode.contract import (
    ANSWER, DONE, ERROR_NO_TOKEN, ERROR_NONFINITE, EVENT_DELIMITER, EVENT_ERROR, EVENT_EXIT, EVENT_PAD,
    EVENT_SAMPLED, EVENT_WAIT, INJECT_DELIMITER, INJECT_EXIT, INJECT_NONE, INJECT_WAIT, MODE_SUPPRESS, PHILOX_TAG,
    THINKING, BudgetTensors, DecodeState, ForcingTokens, SamplingTensors)

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def _mulhilo(a: torch.Tensor, b: int):
    """(hi, lo) 32-bit halves of a * b for uint32 values held in int64, without overflow."""
    a_lo, a_hi = a & 0xFFFF, a >> 16
    p_lo, p_hi = a_lo * b, a_hi * b  # each < 2**48
    s = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2**49
    return (p_hi >> 16) + (s >> 32), s & _MASK32


def philox4x32(c0, c1, c2, c3, k0, k1, rounds: int = 10):
    """Philox4x32-10 on int64 tensors holding uint32 values (broadcast); returns four words."""
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def philox_uniforms(seed: torch.Tensor, step: torch.Tensor, n: int) -> torch.Tensor:
    """fp64 [B, n] uniforms in (0, 1): element i of row b from word i % 4 of
    Philox(key = seed[b], counter = (i // 4, step[b] lo, step[b] hi, PHILOX_TAG)),
    u = ((word >> 9) + 0.5) / 2**23 (exact in fp32 and fp64)."""
    seed = seed.to(torch.int64)[:, None]
    step = step.to(torch.int64)[:, None]
    groups = (n + 3) // 4
    c0 = torch.arange(groups, dtype=torch.int64, device=seed.device)[None, :]
    words = philox4x32(c0, step & _MASK32, (step >> 32) & _MASK32, torch.full_like(c0, PHILOX_TAG),
                       seed & _MASK32, (seed >> 32) & _MASK32)
    w = torch.stack(torch.broadcast_tensors(*words), dim=-1).reshape(seed.shape[0], groups * 4)[:, :n]
    return ((w >> 9).to(torch.float64) + 0.5) * 2.0**-23


def _isin(tok: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return (tok[:, None] == ids[None, :]).any(-1)


def reference_sample(x: torch.Tensor, allowed: torch.Tensor, sampling_t: SamplingTensors,
                     step: torch.Tensor):
    """Samples one token per row from fp32 logits x [B, V'] restricted to `allowed` [B, V'].

    Returns (token int64 [B], error int32 [B]). Follows the definitions in the module
    docstring, in fp64 for the probabilities.
    """
    B, n = x.shape
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    bad = (torch.isnan(x) | (x == float("inf"))).any(-1)
    xa = torch.where(allowed, x, neg_inf)
    m = xa.amax(-1)
    no_token = ~bad & (m == float("-inf"))
    greedy_tok = xa.argmax(-1)  # first index of the maximum

    t = sampling_t.temperature.to(torch.float64)[:, None]
    t_safe = torch.where(t > 0, t, torch.ones_like(t))
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).to(torch.float64)[:, None]
    z = (xa.to(torch.float64) - m_safe) / t_safe  # -inf outside the allowed set

    # top-k: keep x >= the k-th largest allowed logit (ties kept)
    xs = xa.sort(-1, descending=True).values
    n_allowed = allowed.sum(-1)
    k = sampling_t.top_k.to(torch.int64)
    use_k = (k > 0) & (k < n_allowed)
    t_k = torch.where(use_k, xs.gather(1, (k.clamp(1, n) - 1)[:, None])[:, 0], neg_inf)

    # top-p over the top-k set: the largest value whose {x >= value} mass reaches top_p * total
    ps = torch.exp((xs.to(torch.float64) - m_safe) / t_safe) * (xs >= t_k[:, None])
    cum = ps.cumsum(-1)  # sequential left-to-right, like the C++ twin
    target = sampling_t.top_p.to(torch.float64) * cum[:, -1]
    j = (cum < target[:, None]).sum(-1).clamp(max=n - 1)
    t_p = torch.where(sampling_t.top_p < 1, xs.gather(1, j[:, None])[:, 0], neg_inf)

    log_min_p = torch.log(sampling_t.min_p.to(torch.float64))[:, None]
    keep = allowed & (xa >= torch.maximum(t_k, t_p)[:, None])
    keep &= (sampling_t.min_p[:, None] <= 0) | (z >= log_min_p)

    u = philox_uniforms(sampling_t.seed, step, n)
    score = torch.where(keep, z - torch.log(-torch.log(u)), torch.tensor(float("-inf"), dtype=torch.float64,
                                                                        device=x.device))
    sampled_tok = score.argmax(-1)

    tok = torch.where(sampling_t.temperature > 0, sampled_tok, greedy_tok)
    error = bad.to(torch.int32) * ERROR_NONFINITE + no_token.to(torch.int32) * ERROR_NO_TOKEN
    return tok, error


def reference_decode_step(logits: torch.Tensor, state: DecodeState, budget_t: BudgetTensors,
                          sampling_t: SamplingTensors, forcing: ForcingTokens, vocab_size: int):
    """The torch reference of one decode step; updates `state` in place, returns (tokens, logprobs)."""
    return _reference_step(logits, state, budget_t, sampling_t, forcing.table(logits.device), forcing.lengths,
                           forcing.pad_id, vocab_size)


def _reference_step(logits, state, budget_t, sampling_t, table, lengths, pad_id, vocab_size):
    dev = logits.device
    B = logits.shape[0]
    table = table.to(torch.int64)
    n_end, n_delim, n_wait, n_exit, n_eos = lengths
    o = [0, n_end, n_end + n_delim, n_end + n_delim + n_wait, n_end + n_delim + n_wait + n_exit]
    end_ids, eos_ids = table[o[0]:o[1]], table[o[4]:o[4] + n_eos]
    # injection kind -> (offset, length) in the table; kind 0 (none) maps to an empty slot
    kind_off = torch.tensor([0, o[2], o[1], o[3]], dtype=torch.int64, device=dev)
    kind_len = torch.tensor([0, n_wait, n_delim, n_exit], dtype=torch.int32, device=dev)
    pad = torch.full((B,), pad_id, dtype=torch.int64, device=dev)
    i32 = lambda v: torch.full((B,), v, dtype=torch.int32, device=dev)  # noqa: E731

    phase, thinking, waits = state.phase.clone(), state.thinking_tokens.clone(), state.waits_used.clone()
    kind, pos, answer = state.inject_kind.clone(), state.inject_pos.clone(), state.answer_tokens.clone()
    error = state.error.clone()
    is_done = phase == DONE

    # rule 1: at the thinking cap start the forced exit (never inside a pending injection: a
    # WAIT is only started when it fits, a DELIMITER means the row already left thinking)
    exit_now = (phase == THINKING) & (thinking >= budget_t.max_thinking_tokens) & (kind == INJECT_NONE)
    kind = torch.where(exit_now, i32(INJECT_EXIT), kind)
    pos = torch.where(exit_now, i32(0), pos)
    phase = torch.where(exit_now, i32(ANSWER), phase)

    # rule 2: a pending injection emits its next token
    injecting = ~is_done & (kind != INJECT_NONE)
    kl = kind.long()
    inj_tok = table[(kind_off[kl] + pos.long()).clamp(0, table.numel() - 1)]
    inj_event = torch.where(kind == INJECT_WAIT, i32(EVENT_WAIT),
                            torch.where(kind == INJECT_DELIMITER, i32(EVENT_DELIMITER), i32(EVENT_EXIT)))
    inj_thinking = injecting & (phase == THINKING)  # WAIT tokens are thinking content
    inj_pos = pos + 1
    inj_finished = inj_pos >= kind_len[kl]

    # rule 3: sample (computed for every row, used where the row samples)
    sampling_row = ~is_done & ~injecting
    thinking_row = phase == THINKING
    may_end = (thinking >= budget_t.min_thinking_tokens) & (
        (budget_t.mode == MODE_SUPPRESS) | (waits >= budget_t.num_waits))
    suppress = thinking_row & ~may_end & (budget_t.mode == MODE_SUPPRESS)
    x = logits[:, :vocab_size].to(torch.float32)
    ids = torch.arange(vocab_size, device=dev)
    stop_ids = torch.cat([end_ids, eos_ids])
    is_stop_col = (ids[:, None] == stop_ids[None, :]).any(-1)
    allowed = ~(suppress[:, None] & is_stop_col[None, :])
    tok, err = reference_sample(x, allowed, sampling_t, state.step)
    err = torch.where(sampling_row, err, torch.zeros_like(err))
    failed = err != 0
    lse = torch.logsumexp(x.to(torch.float64), -1)
    logprob = (x.to(torch.float64).gather(1, tok[:, None])[:, 0] - lse).to(torch.float32)

    is_end, is_eos = _isin(tok, end_ids), _isin(tok, eos_ids)
    stop = is_end | is_eos
    ok = sampling_row & ~failed
    # thinking, early end: replace with the WAIT sequence, or take the forced exit now when
    # the whole WAIT does not fit in the budget (no WAIT is ever cut mid-word)
    early = ok & thinking_row & stop & ~may_end
    fits = thinking.long() + n_wait <= budget_t.max_thinking_tokens.long()
    wait_now = early & fits
    exit_early = early & ~fits
    # thinking, allowed end-of-thinking: enter ANSWER, inject the delimiter completion
    end_now = ok & thinking_row & is_end & may_end
    # thinking, allowed EOS: the row ends
    eos_think = ok & thinking_row & ~is_end & is_eos & may_end
    plain_think = ok & thinking_row & ~stop
    answer_row = ok & (phase == ANSWER)
    answer_after = answer + answer_row.to(torch.int32)
    answer_end = answer_row & (is_eos | (answer_after >= budget_t.max_answer_tokens))

    # outputs
    out_tok = torch.where(ok, tok, pad)
    out_tok = torch.where(wait_now, table[o[2]].expand(B), out_tok)
    out_tok = torch.where(exit_early, table[o[3]].expand(B), out_tok)
    out_tok = torch.where(injecting, inj_tok, out_tok)
    out_lp = torch.where(ok & ~early, logprob, torch.zeros_like(logprob))
    event = torch.where(injecting, inj_event, i32(EVENT_PAD))
    event = torch.where(ok, i32(EVENT_SAMPLED), event)
    event = torch.where(wait_now, i32(EVENT_WAIT), event)
    event = torch.where(exit_early, i32(EVENT_EXIT), event)
    event = torch.where(failed, i32(EVENT_ERROR), event)

    # new state
    new_thinking = thinking + (inj_thinking | plain_think | wait_now).to(torch.int32)
    new_waits = waits + wait_now.to(torch.int32)
    new_kind = torch.where(injecting & inj_finished, i32(INJECT_NONE), kind)
    new_pos = torch.where(injecting, torch.where(inj_finished, i32(0), inj_pos), pos)
    wait_more = wait_now & (n_wait > 1)
    new_kind = torch.where(wait_more, i32(INJECT_WAIT), new_kind)
    new_pos = torch.where(wait_more, i32(1), new_pos)
    delim_more = end_now & (n_delim > 0)
    new_kind = torch.where(delim_more, i32(INJECT_DELIMITER), new_kind)
    new_pos = torch.where(delim_more, i32(0), new_pos)
    exit_more = exit_early & (n_exit > 1)
    new_kind = torch.where(exit_more, i32(INJECT_EXIT), new_kind)
    new_pos = torch.where(exit_more, i32(1), new_pos)
    new_phase = torch.where(end_now | exit_early, i32(ANSWER), phase)
    new_phase = torch.where(eos_think | answer_end | failed, i32(DONE), new_phase)

    state.phase.copy_(new_phase)
    state.thinking_tokens.copy_(new_thinking)
    state.waits_used.copy_(new_waits)
    state.inject_kind.copy_(new_kind)
    state.inject_pos.copy_(new_pos)
    state.answer_tokens.copy_(answer_after)
    state.error.copy_(error | err)
    state.event.copy_(event)
    state.step.add_(1)
    return out_tok, out_lp
