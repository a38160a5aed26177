"""Fused decode step: sampling and budget forcing in one on-device step.

One call of `decode_step(logits, state, budget_t, sampling_t, forcing)` picks the next token
of every batch row and advances that row's budget-forcing state machine, with no host
synchronisation, so a whole decode step (model forward + this) can be captured in a CUDA
graph.

State machine (per row, every step; the same logic runs in the torch reference below and in
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
same header logic) and "torch" (the readable reference below, vectorised over the batch).
The CPU paths compute probabilities in fp64 and agree exactly; the CUDA kernel computes them
in fp32 and agrees with them except where a value sits within rounding of a set boundary.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import torch

from s1kernels import backend as _backend

# Phases, injection kinds, events, modes and error bits: the same numbers as in
# csrc/include/s1k/budget_forcing.h.
THINKING, ANSWER, DONE = 0, 1, 2
INJECT_NONE, INJECT_WAIT, INJECT_DELIMITER, INJECT_EXIT = 0, 1, 2, 3
EVENT_PAD, EVENT_SAMPLED, EVENT_WAIT, EVENT_DELIMITER, EVENT_EXIT, EVENT_ERROR = 0, 1, 2, 3, 4, 5
MODE_WAIT, MODE_SUPPRESS = 0, 1
ERROR_NONFINITE, ERROR_NO_TOKEN = 1, 2
MAX_STOP_IDS = 16  # end-of-thinking + EOS ids, kept in the kernel's shared memory

_PHASES = {"thinking": THINKING, "answer": ANSWER}
_MODES = {"wait": MODE_WAIT, "suppress": MODE_SUPPRESS}
_LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PHILOX_TAG = 0x53314B44  # counter word 3: keeps this stream apart from other Philox users


# ----------------------------------------------------------------------------- configuration

def _as_list(name: str, value, batch: int, kind) -> list:
    """A scalar or a per-row sequence/tensor as a list of `batch` Python values (setup time)."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return [kind(value.item())] * batch
        if value.dim() != 1:
            raise ValueError(f"{name}: expected a scalar or a 1-D per-row tensor, got shape {tuple(value.shape)}")
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != batch:
            raise ValueError(f"{name}: expected {batch} per-row values (the batch size), got {len(value)}")
        return [kind(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, a sequence or a tensor, got {type(value).__name__}")
    return [kind(value)] * batch


def _check_ids(name: str, ids, allow_empty=False) -> tuple[int, ...]:
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if isinstance(ids, int):
        ids = [ids]
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"{name}: expected a list of token ids, got {type(ids).__name__}")
    ids = tuple(ids)
    if not ids and not allow_empty:
        raise ValueError(f"{name}: expected at least one token id, got an empty list")
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"{name}: token ids must be ints, got {t!r}")
        if t < 0:
            raise ValueError(f"{name}: token ids must be >= 0, got {t}")
    return ids


@dataclasses.dataclass(frozen=True)
class ForcingTokens:
    """The token ids budget forcing emits or watches for (shared by every row).

    end_think_ids: ids that end thinking when sampled (s1: `<|im_start|>` opening `answer`).
    delimiter_completion_ids: injected after a sampled end-of-thinking id (s1: `answer\\n`);
      may be empty.
    wait_ids: the wait sequence injected in place of an early end (s1: "Wait").
    forced_exit_ids: injected at max_thinking_tokens (end-of-thinking + `answer\\nFinal Answer:`).
    eos_ids: ids that end a row (`<|im_end|>`, `<|endoftext|>`).
    pad_id: emitted by finished rows.
    """

    end_think_ids: tuple[int, ...]
    delimiter_completion_ids: tuple[int, ...]
    wait_ids: tuple[int, ...]
    forced_exit_ids: tuple[int, ...]
    eos_ids: tuple[int, ...]
    pad_id: int

    def __post_init__(self):
        object.__setattr__(self, "end_think_ids", _check_ids("end_think_ids", self.end_think_ids))
        object.__setattr__(self, "delimiter_completion_ids",
                           _check_ids("delimiter_completion_ids", self.delimiter_completion_ids, allow_empty=True))
        object.__setattr__(self, "wait_ids", _check_ids("wait_ids", self.wait_ids))
        object.__setattr__(self, "forced_exit_ids", _check_ids("forced_exit_ids", self.forced_exit_ids))
        object.__setattr__(self, "eos_ids", _check_ids("eos_ids", self.eos_ids))
        (pad,) = _check_ids("pad_id", self.pad_id)
        object.__setattr__(self, "pad_id", pad)
        object.__setattr__(self, "_tables", {})

    @classmethod
    def from_tokenizer(cls, tok, wait_string: str = "Wait", final_answer: str = "Final Answer:",
                       end_think: str = "<|im_start|>", delimiter_completion: str = "answer\n") -> "ForcingTokens":
        """Builds the s1 token lists from a tokenizer (`encode`, `token_to_id`, `eos_ids`, `pad_id`)."""
        end_id = tok.token_to_id(end_think)
        if end_id is None:
            raise ValueError(f"from_tokenizer: the tokenizer has no token {end_think!r} to end thinking")
        completion = list(tok.encode(delimiter_completion))
        return cls(end_think_ids=(end_id,),
                   delimiter_completion_ids=tuple(completion),
                   wait_ids=tuple(tok.encode(wait_string)),
                   forced_exit_ids=(end_id, *completion, *tok.encode(final_answer)),
                   eos_ids=tuple(tok.eos_ids),
                   pad_id=int(tok.pad_id))

    @property
    def lengths(self) -> list[int]:
        """Lengths of the five lists in table order: end, delimiter, wait, exit, eos."""
        return [len(self.end_think_ids), len(self.delimiter_completion_ids), len(self.wait_ids),
                len(self.forced_exit_ids), len(self.eos_ids)]

    def max_id(self) -> int:
        return max((*self.end_think_ids, *self.delimiter_completion_ids, *self.wait_ids,
                    *self.forced_exit_ids, *self.eos_ids, self.pad_id))

    def table(self, device) -> torch.Tensor:
        """All lists concatenated (end, delimiter, wait, exit, eos) as an int32 tensor, cached per device."""
        device = torch.device(device)
        key = str(device)
        if key not in self._tables:
            ids = (*self.end_think_ids, *self.delimiter_completion_ids, *self.wait_ids,
                   *self.forced_exit_ids, *self.eos_ids)
            self._tables[key] = torch.tensor(ids, dtype=torch.int32, device=device)
        return self._tables[key]


class BudgetTensors(NamedTuple):
    """Per-row budget configuration on the device (int32 [B] each)."""
    min_thinking_tokens: torch.Tensor
    max_thinking_tokens: torch.Tensor
    num_waits: torch.Tensor
    max_answer_tokens: torch.Tensor
    mode: torch.Tensor  # 0 = wait, 1 = suppress


class SamplingTensors(NamedTuple):
    """Per-row sampling configuration on the device."""
    temperature: torch.Tensor  # fp32 [B], 0 = greedy
    top_k: torch.Tensor  # int32 [B], 0 = off
    top_p: torch.Tensor  # fp32 [B], 1 = off
    min_p: torch.Tensor  # fp32 [B], 0 = off
    seed: torch.Tensor  # int64 [B]


_INT32_MAX = 2**31 - 1


@dataclasses.dataclass
class Budget:
    """Thinking budget. Each field is an int or a per-row sequence/tensor; mode "wait" or "suppress".

    The default imposes nothing: no minimum, no extension, thinking and answer capped only
    at 2**31-1 tokens.
    """

    min_thinking_tokens: object = 0
    max_thinking_tokens: object = _INT32_MAX
    num_waits: object = 0
    max_answer_tokens: object = _INT32_MAX
    mode: object = "wait"

    def tensors(self, batch: int, device) -> BudgetTensors:
        """Validates the budget for `batch` rows and returns it as device tensors (setup time)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"Budget.tensors: batch must be a positive int, got {batch!r}")
        mn = _as_list("min_thinking_tokens", self.min_thinking_tokens, batch, int)
        mx = _as_list("max_thinking_tokens", self.max_thinking_tokens, batch, int)
        nw = _as_list("num_waits", self.num_waits, batch, int)
        ma = _as_list("max_answer_tokens", self.max_answer_tokens, batch, int)
        modes = self.mode if isinstance(self.mode, (list, tuple)) else [self.mode] * batch
        if len(modes) != batch:
            raise ValueError(f"mode: expected {batch} per-row values (the batch size), got {len(modes)}")
        for m in modes:
            if m not in _MODES:
                raise ValueError(f"mode: expected 'wait' or 'suppress', got {m!r}")
        for r in range(batch):
            if not 0 <= mn[r] <= mx[r] <= _INT32_MAX:
                raise ValueError(f"Budget: need 0 <= min_thinking_tokens <= max_thinking_tokens <= 2**31-1, "
                                 f"got min={mn[r]}, max={mx[r]} (row {r})")
            if not 0 <= nw[r] <= _INT32_MAX:
                raise ValueError(f"num_waits: expected >= 0, got {nw[r]} (row {r})")
            if not 1 <= ma[r] <= _INT32_MAX:
                raise ValueError(f"max_answer_tokens: expected >= 1, got {ma[r]} (row {r})")
        i32 = dict(dtype=torch.int32, device=device)
        return BudgetTensors(torch.tensor(mn, **i32), torch.tensor(mx, **i32), torch.tensor(nw, **i32),
                             torch.tensor(ma, **i32), torch.tensor([_MODES[m] for m in modes], **i32))


@dataclasses.dataclass
class Sampling:
    """Sampling parameters; each an scalar or per-row sequence/tensor. temperature 0 = greedy.

    A scalar seed gives every row the same seed (rows with the same logits then draw the same
    token); pass per-row seeds for independent rows.
    """

    temperature: object = 0.0
    top_k: object = 0
    top_p: object = 1.0
    min_p: object = 0.0
    seed: object = 0

    def tensors(self, batch: int, device) -> SamplingTensors:
        """Validates the parameters for `batch` rows and returns them as device tensors (setup time)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"Sampling.tensors: batch must be a positive int, got {batch!r}")
        t = _as_list("temperature", self.temperature, batch, float)
        k = _as_list("top_k", self.top_k, batch, int)
        p = _as_list("top_p", self.top_p, batch, float)
        mp = _as_list("min_p", self.min_p, batch, float)
        s = _as_list("seed", self.seed, batch, int)
        for r in range(batch):
            if not (math.isfinite(t[r]) and t[r] >= 0):
                raise ValueError(f"temperature: expected a finite value >= 0, got {t[r]} (row {r})")
            if 0 < t[r] < _FP32_TINY:  # an fp32 subnormal: the GPU kernel (fast math) flushes it to 0
                raise ValueError(f"temperature: expected 0 (greedy) or at least {_FP32_TINY:.4g} (the smallest "
                                 f"normal fp32), got {t[r]} (row {r})")
            if not 0 <= k[r] <= _INT32_MAX:
                raise ValueError(f"top_k: expected 0 (off) or a positive int, got {k[r]} (row {r})")
            if not 0 < p[r] <= 1:
                raise ValueError(f"top_p: expected a value in (0, 1], got {p[r]} (row {r})")
            if not 0 <= mp[r] <= 1:
                raise ValueError(f"min_p: expected a value in [0, 1], got {mp[r]} (row {r})")
            if not -2**63 <= s[r] < 2**64:
                raise ValueError(f"seed: expected a 64-bit integer, got {s[r]} (row {r})")
        s = [v - 2**64 if v >= 2**63 else v for v in s]  # same bits as uint64
        return SamplingTensors(torch.tensor(t, dtype=torch.float32, device=device),
                               torch.tensor(k, dtype=torch.int32, device=device),
                               torch.tensor(p, dtype=torch.float32, device=device),
                               torch.tensor(mp, dtype=torch.float32, device=device),
                               torch.tensor(s, dtype=torch.int64, device=device))


_FP32_TINY = torch.finfo(torch.float32).tiny

_STATE_FIELDS = ("phase", "thinking_tokens", "waits_used", "inject_kind", "inject_pos", "answer_tokens",
                 "error", "event", "step")


@dataclasses.dataclass
class DecodeState:
    """Per-row decode state on the device, updated in place by `decode_step`.

    phase (THINKING/ANSWER/DONE), thinking_tokens, waits_used, inject_kind (NONE/WAIT/
    DELIMITER/EXIT), inject_pos (cursor into the pending sequence), answer_tokens (sampled
    answer tokens), error (bit 1: non-finite logits, bit 2: no allowed token), event (what the
    last step did: EVENT_*) are int32 [B]; step (the row's RNG counter, +1 per call) is int64 [B].
    """

    phase: torch.Tensor
    thinking_tokens: torch.Tensor
    waits_used: torch.Tensor
    inject_kind: torch.Tensor
    inject_pos: torch.Tensor
    answer_tokens: torch.Tensor
    error: torch.Tensor
    event: torch.Tensor
    step: torch.Tensor

    @classmethod
    def new(cls, batch: int, device="cpu", start_phase: str = "thinking") -> "DecodeState":
        """Fresh state for `batch` rows starting in `start_phase` ("thinking" or "answer")."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"DecodeState.new: batch must be a positive int, got {batch!r}")
        if start_phase not in _PHASES:
            raise ValueError(f"DecodeState.new: start_phase must be 'thinking' or 'answer', got {start_phase!r}")
        z = lambda: torch.zeros(batch, dtype=torch.int32, device=device)  # noqa: E731
        return cls(torch.full((batch,), _PHASES[start_phase], dtype=torch.int32, device=device),
                   z(), z(), z(), z(), z(), z(), z(), torch.zeros(batch, dtype=torch.int64, device=device))

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f) for f in _STATE_FIELDS]

    def clone(self) -> "DecodeState":
        return DecodeState(*[t.clone() for t in self.tensors()])

    @property
    def done(self) -> torch.Tensor:
        """Bool [B]: rows that finished (device tensor, no sync)."""
        return self.phase == DONE


# ----------------------------------------------------------------------------- Philox4x32-10

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


# ----------------------------------------------------------------------------- torch reference

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


# ----------------------------------------------------------------------------- dispatch

def _check_tensor(name, t, dtype, batch, device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if t.shape != (batch,):
        raise ValueError(f"{name}: expected shape ({batch},) (one value per batch row), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the logits' device), got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor")


def _validate(logits, state, budget_t, sampling_t, forcing, vocab_size):
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits: expected a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] < 1 or logits.shape[1] < 1:
        raise ValueError(f"logits: expected a non-empty [B, V] tensor, got shape {tuple(logits.shape)}")
    if logits.dtype not in _LOGIT_DTYPES:
        raise TypeError(f"logits: expected dtype float32, float16 or bfloat16, got {logits.dtype}")
    if logits.stride(1) != 1:
        raise ValueError(f"logits: the vocabulary dimension must be contiguous (stride 1), got strides {logits.stride()}")
    B, V = logits.shape
    if vocab_size is None:
        vocab_size = V
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size: expected an int or None, got {type(vocab_size).__name__}")
    if not 1 <= vocab_size <= V:
        raise ValueError(f"vocab_size: expected 1 <= vocab_size <= logits.shape[1] = {V}, got {vocab_size}")
    if not isinstance(state, DecodeState):
        raise TypeError(f"state: expected a DecodeState, got {type(state).__name__}")
    if not isinstance(budget_t, BudgetTensors):
        raise TypeError(f"budget_t: expected BudgetTensors (Budget(...).tensors(batch, device)), got {type(budget_t).__name__}")
    if not isinstance(sampling_t, SamplingTensors):
        raise TypeError(f"sampling_t: expected SamplingTensors (Sampling(...).tensors(batch, device)), got {type(sampling_t).__name__}")
    if not isinstance(forcing, ForcingTokens):
        raise TypeError(f"forcing: expected ForcingTokens, got {type(forcing).__name__}")
    dev = logits.device
    for f in _STATE_FIELDS:
        _check_tensor(f"state.{f}", getattr(state, f), torch.int64 if f == "step" else torch.int32, B, dev)
    for f in BudgetTensors._fields:
        _check_tensor(f"budget_t.{f}", getattr(budget_t, f), torch.int32, B, dev)
    dtypes = dict(temperature=torch.float32, top_k=torch.int32, top_p=torch.float32, min_p=torch.float32,
                  seed=torch.int64)
    for f in SamplingTensors._fields:
        _check_tensor(f"sampling_t.{f}", getattr(sampling_t, f), dtypes[f], B, dev)
    n_stop = len(forcing.end_think_ids) + len(forcing.eos_ids)
    if n_stop > MAX_STOP_IDS:
        raise ValueError(f"forcing: at most {MAX_STOP_IDS} end-of-thinking + EOS ids in all, got {n_stop}")
    if forcing.max_id() >= vocab_size:
        raise ValueError(f"forcing: every token id must be < vocab_size = {vocab_size}, got id {forcing.max_id()}")
    return vocab_size


_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _native_step(fn_name, logits, state_tensors, budget_tensors, sampling_tensors, table, lengths, pad_id,
                 vocab_size, stream):
    mod = _backend.native()
    B, V = logits.shape
    tokens = torch.empty(B, dtype=torch.int64, device=logits.device)
    logprobs = torch.empty(B, dtype=torch.float32, device=logits.device)
    ptrs = lambda ts: [t.data_ptr() for t in ts]  # noqa: E731
    # a single row's stride(0) is arbitrary (e.g. a transposed [V, 1]) and never used; the native
    # step takes non-overlapping rows, so an expanded tensor (stride 0) is copied as the reference accepts it
    if B > 1 and logits.stride(0) < vocab_size:
        logits = logits.contiguous()
    row_stride = logits.stride(0) if B > 1 else V
    code = getattr(mod, fn_name)(logits.data_ptr(), _DTYPE_CODE[logits.dtype], B, V, row_stride, vocab_size,
                                 ptrs(state_tensors), ptrs(budget_tensors), ptrs(sampling_tensors),
                                 table.data_ptr(), list(lengths), pad_id, tokens.data_ptr(), logprobs.data_ptr(),
                                 stream)
    if code != 0:
        detail = mod.cuda_last_error() if fn_name == "decode_step_cuda" else "invalid argument"
        raise RuntimeError(f"decode_step ({fn_name}) failed with code {code}: {detail}")
    return tokens, logprobs


@torch.library.custom_op("s1kernels::decode_step",
                         mutates_args=("phase", "thinking_tokens", "waits_used", "inject_kind", "inject_pos",
                                       "answer_tokens", "error", "event", "step"))
def _decode_step_op(logits: torch.Tensor, phase: torch.Tensor, thinking_tokens: torch.Tensor,
                    waits_used: torch.Tensor, inject_kind: torch.Tensor, inject_pos: torch.Tensor,
                    answer_tokens: torch.Tensor, error: torch.Tensor, event: torch.Tensor, step: torch.Tensor,
                    min_thinking_tokens: torch.Tensor, max_thinking_tokens: torch.Tensor, num_waits: torch.Tensor,
                    max_answer_tokens: torch.Tensor, budget_mode: torch.Tensor, temperature: torch.Tensor,
                    top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor, seed: torch.Tensor,
                    forcing_table: torch.Tensor, forcing_lengths: list[int], pad_id: int, vocab_size: int,
                    backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    state_t = [phase, thinking_tokens, waits_used, inject_kind, inject_pos, answer_tokens, error, event, step]
    # (not named `mode`: that name collides with an argument of torch's mode dispatch)
    budget_t = [min_thinking_tokens, max_thinking_tokens, num_waits, max_answer_tokens, budget_mode]
    sampling_t = [temperature, top_k, top_p, min_p, seed]
    # resolved here too because a traced call (torch.compile) passes the requested backend
    backend = _backend.resolve(backend, logits.device, available=("cuda", "cpp", "torch"), op="decode_step")
    if backend == "torch":
        return _reference_step(logits, DecodeState(*state_t), BudgetTensors(*budget_t), SamplingTensors(*sampling_t),
                               forcing_table, forcing_lengths, pad_id, vocab_size)
    if backend == "cuda":
        # the kernel launches on the current device, which must be the one owning the stream
        with torch.cuda.device(logits.device):
            stream = torch.cuda.current_stream(logits.device).cuda_stream
            return _native_step("decode_step_cuda", logits, state_t, budget_t, sampling_t, forcing_table,
                                forcing_lengths, pad_id, vocab_size, stream)
    if backend == "cpp":
        return _native_step("decode_step_cpu", logits, state_t, budget_t, sampling_t, forcing_table,
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
    vocab_size = _validate(logits, state, budget_t, sampling_t, forcing, vocab_size)
    if backend == "torch":
        return reference_decode_step(logits, state, budget_t, sampling_t, forcing, vocab_size)
    # the custom op resolves "auto" itself (opaque to torch.compile); eager calls fail early here
    which = backend if torch.compiler.is_compiling() else _backend.resolve(
        backend, logits.device, available=("cuda", "cpp", "torch"), op="decode_step")
    return _decode_step_op(logits, *state.tensors(), *budget_t, *sampling_t, forcing.table(logits.device),
                           forcing.lengths, forcing.pad_id, vocab_size, which)


__all__ = ["ForcingTokens", "Budget", "Sampling", "DecodeState", "BudgetTensors", "SamplingTensors", "decode_step",
           "reference_decode_step", "reference_sample", "philox4x32", "philox_uniforms", "THINKING", "ANSWER", "DONE",
           "EVENT_PAD", "EVENT_SAMPLED", "EVENT_WAIT", "EVENT_DELIMITER", "EVENT_EXIT", "EVENT_ERROR"]
