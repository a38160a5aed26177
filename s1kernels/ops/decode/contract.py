"""The decode step's contract: the forcing token lists, the budget, the sampling parameters
(each validated on the host at setup time and turned into device tensors), the per-row
state the step updates in place, and `validate`, the checks of a step's arguments. The
numbers mirror csrc/include/s1k/budget_forcing.h.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import struct
from typing import NamedTuple, Sequence

import torch

from s1kernels import checks

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


def _as_list(name: str, value, batch: int, kind) -> list:
    """A scalar or a per-row sequence/tensor as a list of `batch` Python values (setup time)."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return [_convert(name, value.item(), kind)] * batch
        if value.dim() != 1:
            raise ValueError(f"{name}: expected a scalar or a 1-D per-row tensor, got shape {tuple(value.shape)}")
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != batch:
            raise ValueError(f"{name}: expected {batch} per-row values (the batch size), got {len(value)}")
        return [_convert(name, v, kind) for v in value]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, a sequence or a tensor, got {type(value).__name__}")
    return [_convert(name, value, kind)] * batch


def _convert(name: str, v, kind):
    """One value as `kind`: an int field takes integral numbers only (2.5, inf and NaN are
    errors, not truncated or an OverflowError)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {v!r}")
    if kind is int and not isinstance(v, numbers.Integral):
        if not (math.isfinite(v) and float(v).is_integer()):
            raise ValueError(f"{name}: expected an integer, got {v!r}")
    return kind(v)


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


def _encode_ids(tok, text: str, what: str) -> list[int]:
    ids = tok.encode(text)
    if not ids:
        raise ValueError(f"{what}: {text!r} encodes to no tokens")
    return list(ids)


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
    def from_tokenizer(cls, tok, answer_start: str = "<|im_start|>answer\n", wait_string: str = "Wait",
                       final_answer: str = "Final Answer:", eos_ids: Sequence[int] | None = None) -> "ForcingTokens":
        """The one constructor from a tokenizer (`encode`, `token_to_id`, `eos_ids`, `pad_id`).

        The first token of `answer_start` is the end-of-thinking token (s1: `<|im_start|>`);
        the rest completes the delimiter (`answer\\n`). The forced exit is the whole delimiter
        followed by `final_answer` (none when empty); the wait sequence is `wait_string` as
        encoded (s1 appends "Wait" to the text as it is). `eos_ids` default: the tokenizer's.
        """
        special = "<|im_start|>"
        if answer_start.startswith(special) and tok.token_to_id(special) is None:
            raise ValueError(f"from_tokenizer: the tokenizer has no token {special!r} to end thinking")
        delim = _encode_ids(tok, answer_start, "answer_start")
        wait = _encode_ids(tok, wait_string, "wait_string")
        forced = delim + (_encode_ids(tok, final_answer, "final_answer") if final_answer else [])
        eos = list(tok.eos_ids if eos_ids is None else eos_ids)
        if not eos:
            raise ValueError("eos_ids: expected at least one end-of-sequence id, got none")
        return cls(end_think_ids=(delim[0],), delimiter_completion_ids=tuple(delim[1:]), wait_ids=tuple(wait),
                   forced_exit_ids=tuple(forced), eos_ids=tuple(eos), pad_id=int(tok.pad_id))

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
            if not math.isfinite(_fp32(t[r])):  # the kernels hold it in fp32
                raise ValueError(f"temperature: {t[r]} is beyond float32 (at most {_FP32_MAX:.4g}) (row {r})")
            if 0 < t[r] < _FP32_TINY:  # an fp32 subnormal: the GPU kernel (fast math) flushes it to 0
                raise ValueError(f"temperature: expected 0 (greedy) or at least {_FP32_TINY:.4g} (the smallest "
                                 f"normal fp32), got {t[r]} (row {r})")
            for pname, pv in (("top_p", p[r]), ("min_p", mp[r])):
                if 0 < pv < _FP32_TINY:  # fp32 would hold 0 (or a subnormal the GPU flushes to 0)
                    raise ValueError(f"{pname}: {pv} is below the smallest normal float32 ({_FP32_TINY:.4g}), "
                                     f"which the kernels would read as 0 (row {r})")
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
_FP32_MAX = torch.finfo(torch.float32).max


def _fp32(v: float) -> float:
    """`v` rounded to float32 as the kernels will hold it."""
    return struct.unpack("f", struct.pack("f", v))[0] if abs(v) <= 3.5e38 else math.copysign(math.inf, v)

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


# ----------------------------------------------------------------------------- the step's arguments

def _check_tensor(name, t, dtype, batch, device):
    checks.check_tensor(name, t)
    checks.check_dtype(name, t, dtype)
    if t.shape != (batch,):
        raise ValueError(f"{name}: expected shape ({batch},) (one value per batch row), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the logits' device), got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor")


def validate(logits, state, budget_t, sampling_t, forcing, vocab_size):
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
    if dev.type == "cpu" and not torch.compiler.is_compiling():  # reading values costs no device sync here
        _check_state_values(state)
    return vocab_size


def _check_state_values(state: DecodeState) -> None:
    """A hand-built state the step cannot interpret is refused (the torch and C++ paths would
    otherwise disagree: one indexes out of range, the other clamps). CPU only: on a GPU the
    step never reads state back to the host."""
    def bad(name, mask):
        rows = mask.nonzero()[:, 0]
        if rows.numel():
            r = int(rows[0])
            raise ValueError(f"state.{name}: row {r} holds {int(getattr(state, name)[r])}, which no decode step "
                             f"produces ({len(rows)} such row(s)); start from DecodeState.new")

    bad("phase", (state.phase < THINKING) | (state.phase > DONE))
    bad("inject_kind", (state.inject_kind < INJECT_NONE) | (state.inject_kind > INJECT_EXIT))
    # (an inject_pos past its sequence is clamped into the token table alike by every backend)
