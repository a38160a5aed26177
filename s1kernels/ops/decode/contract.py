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
from s1kernels.ops.decode.fields import BUDGET, SAMPLING, STATE, Field

# Phases, injection kinds, events, modes and error bits: the same numbers as in
# csrc/include/s1k/budget_forcing.h.
THINKING, ANSWER, DONE = 0, 1, 2
INJECT_NONE, INJECT_WAIT, INJECT_DELIMITER, INJECT_EXIT = 0, 1, 2, 3
EVENT_PAD, EVENT_SAMPLED, EVENT_WAIT, EVENT_DELIMITER, EVENT_EXIT, EVENT_ERROR = 0, 1, 2, 3, 4, 5
MODE_WAIT, MODE_SUPPRESS = 0, 1
ERROR_NONFINITE, ERROR_NO_TOKEN = 1, 2
MAX_STOP_IDS = 16  # end-of-thinking + EOS ids, kept in the kernel's shared memory

_PHASES = {"thinking": THINKING, "answer": ANSWER}
_LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PHILOX_TAG = 0x53314B44  # counter word 3: keeps this stream apart from other Philox users


def _as_list(name: str, value, batch: int, kind) -> list:
    """A scalar or a per-row sequence/tensor as a list of `batch` Python values (setup time)."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return [_convert(name, value.item(), kind)] * batch
        if value.dim() != 1:
            raise checks.argument_error(name, "a scalar or a 1-D per-row tensor", f"shape {tuple(value.shape)}")
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != batch:
            raise checks.argument_error(name, f"{batch} per-row values (the batch size)", len(value))
        return [_convert(name, v, kind) for v in value]
    if not checks.is_real(value):
        raise checks.argument_error(name, "a number, a sequence or a tensor", type(value).__name__, TypeError)
    return [_convert(name, value, kind)] * batch


def _convert(name: str, v, kind):
    """One value as `kind`: an int field takes integral numbers only (2.5, inf and NaN are
    errors, not truncated or an OverflowError)."""
    if not checks.is_real(v):
        raise checks.argument_error(name, "a number", repr(v), TypeError)
    if kind is int and not isinstance(v, numbers.Integral):
        if not (math.isfinite(v) and float(v).is_integer()):
            raise checks.argument_error(name, "an integer", repr(v))
    return kind(v)


def _check_ids(name: str, ids, allow_empty=False) -> tuple[int, ...]:
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if isinstance(ids, int):
        ids = [ids]
    if not isinstance(ids, (list, tuple)):
        raise checks.argument_error(name, "a list of token ids", type(ids).__name__, TypeError)
    ids = tuple(ids)
    if not ids and not allow_empty:
        raise checks.argument_error(name, "at least one token id", "an empty list")
    for t in ids:
        if not checks.is_int(t):
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
            raise checks.argument_error("eos_ids", "at least one end-of-sequence id", "none")
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


# ----------------------------------------------------------------------------- the per-row fields
# Budget, Sampling, their tensor tuples and DecodeState take their fields, defaults, dtypes
# and ranges from the one table in fields.py.

_TORCH_DTYPES = {"int32": torch.int32, "int64": torch.int64, "float32": torch.float32}
_FP32_TINY = torch.finfo(torch.float32).tiny
_FP32_MAX = torch.finfo(torch.float32).max


def _fp32(v: float) -> float:
    """`v` rounded to float32 as the kernels will hold it."""
    return struct.unpack("f", struct.pack("f", v))[0] if abs(v) <= 3.5e38 else math.copysign(math.inf, v)


def _range(f: Field) -> str:
    lo = "" if f.lo is None else f"{f.lo} {'<' if f.lo_open else '<='} "
    hi = "" if f.hi is None else f" <= {f.hi}"
    return f"{lo}{f.name}{hi}"


def _check_value(f: Field, v, row: int):
    """One row's value of field `f` as the kernels will hold it; ValueError naming the field,
    the row, what is allowed and what was given."""
    if f.dtype == "float32" and not math.isfinite(v):
        raise checks.argument_error(f.name, f"a finite value ({_range(f)})", f"{v} (row {row})")
    if (f.lo is not None and (v <= f.lo if f.lo_open else v < f.lo)) or (f.hi is not None and v > f.hi):
        raise checks.argument_error(f.name, _range(f), f"{v} (row {row})")
    if f.dtype == "float32":
        if not math.isfinite(_fp32(v)):
            raise ValueError(f"{f.name}: {v} is beyond float32 (at most {_FP32_MAX:.4g}) (row {row})")
        if 0 < abs(v) < _FP32_TINY:  # an fp32 subnormal or 0: the GPU kernel (fast math) reads it as 0
            raise ValueError(f"{f.name}: {v} is below the smallest normal float32 ({_FP32_TINY:.4g}), which the "
                             f"kernels read as 0 (row {row}); pass 0 or at least the smallest normal fp32")
    if f.dtype == "int64" and v >= 2**63:
        v -= 2**64  # the same bits as uint64
    return v


def _rows(f: Field, value, batch: int) -> list:
    """The field's per-row values, checked, from a scalar or a per-row sequence/tensor."""
    if f.choices is not None:
        names = value if isinstance(value, (list, tuple)) else [value] * batch
        if len(names) != batch:
            raise checks.argument_error(f.name, f"{batch} per-row values (the batch size)", len(names))
        for v in names:
            if v not in f.choices:
                raise checks.argument_error(f.name, ' or '.join(map(repr, f.choices)), repr(v))
        return [f.choices[v] for v in names]
    values = _as_list(f.name, value, batch, float if f.dtype == "float32" else int)
    return [_check_value(f, v, r) for r, v in enumerate(values)]


def _tensor_tuple(name: str, group: tuple[Field, ...], doc: str):
    cls = NamedTuple(name, [(f.name, torch.Tensor) for f in group])
    cls.__doc__ = doc + "\n\n" + "\n".join(f"{f.name}: {f.dtype} [B], {f.doc}" for f in group)
    return cls


BudgetTensors = _tensor_tuple("BudgetTensors", BUDGET, "Per-row budget configuration on the device.")
SamplingTensors = _tensor_tuple("SamplingTensors", SAMPLING, "Per-row sampling configuration on the device.")


class _Config:
    """What Budget and Sampling share: `rows` checks every field for a batch, `tensors` puts
    them on the device (once, at setup time)."""

    _group: tuple[Field, ...] = ()
    _tensors: type = tuple

    def rows(self, batch: int) -> dict[str, list]:
        """Every field's per-row values for `batch` rows, checked as the kernels will read them."""
        if not checks.is_int(batch) or batch < 1:
            raise ValueError(f"{type(self).__name__}.tensors: batch must be a positive int, got {batch!r}")
        values = {f.name: _rows(f, getattr(self, f.name), batch) for f in self._group}
        self._check_rows(values, batch)
        return values

    def _check_rows(self, values: dict[str, list], batch: int) -> None:
        """Rules between fields (none by default)."""

    def tensors(self, batch: int, device) -> tuple:
        """Validates the configuration for `batch` rows and returns it as device tensors."""
        values = self.rows(batch)
        return self._tensors(*[torch.tensor(values[f.name], dtype=_TORCH_DTYPES[f.dtype], device=device)
                               for f in self._group])


def _config_class(name: str, group: tuple[Field, ...], tensors: type, doc: str, check=None):
    fields = [(f.name, object, dataclasses.field(default=f.default)) for f in group]
    namespace = {"_group": group, "_tensors": tensors, "__module__": __name__,
                 "__doc__": doc + "\n\n" + "\n".join(f"{f.name} (default {f.default!r}): {f.doc}" for f in group)}
    if check is not None:
        namespace["_check_rows"] = check
    return dataclasses.make_dataclass(name, fields, bases=(_Config,), namespace=namespace)


def _check_budget(self, values, batch):
    for r, (mn, mx) in enumerate(zip(values["min_thinking_tokens"], values["max_thinking_tokens"])):
        if mn > mx:
            raise ValueError(f"Budget: need 0 <= min_thinking_tokens <= max_thinking_tokens <= 2**31-1, "
                             f"got min={mn}, max={mx} (row {r})")


Budget = _config_class(
    "Budget", BUDGET, BudgetTensors, check=_check_budget,
    doc="Thinking budget. Each field is an int (mode: a name) or a per-row sequence/tensor. The default "
        "imposes nothing: no minimum, no extension, thinking and answer capped only at 2**31-1 tokens.")
Sampling = _config_class(
    "Sampling", SAMPLING, SamplingTensors,
    doc="Sampling parameters; each a scalar or a per-row sequence/tensor. temperature 0 = greedy. A scalar "
        "seed gives every row the same seed (rows with the same logits then draw the same token); pass "
        "per-row seeds for independent rows.")

_STATE_FIELDS = tuple(f.name for f in STATE)


class _StateMethods:
    @classmethod
    def new(cls, batch: int, device="cpu", start_phase: str = "thinking") -> "DecodeState":
        """Fresh state for `batch` rows starting in `start_phase` ("thinking" or "answer")."""
        if not checks.is_int(batch) or batch < 1:
            raise ValueError(f"DecodeState.new: batch must be a positive int, got {batch!r}")
        if start_phase not in _PHASES:
            raise ValueError(f"DecodeState.new: start_phase must be 'thinking' or 'answer', got {start_phase!r}")
        state = cls(*[torch.zeros(batch, dtype=_TORCH_DTYPES[f.dtype], device=device) for f in STATE])
        state.phase.fill_(_PHASES[start_phase])
        return state

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f) for f in _STATE_FIELDS]

    def clone(self) -> "DecodeState":
        return type(self)(*[t.clone() for t in self.tensors()])

    @property
    def done(self) -> torch.Tensor:
        """Bool [B]: rows that finished (device tensor, no sync)."""
        return self.phase == DONE


DecodeState = dataclasses.make_dataclass(
    "DecodeState", [(f.name, torch.Tensor) for f in STATE], bases=(_StateMethods,),
    namespace={"__module__": __name__,
               "__doc__": "Per-row decode state on the device, updated in place by `decode_step`.\n\n"
                          + "\n".join(f"{f.name}: {f.dtype} [B], {f.doc}" for f in STATE)})


# ----------------------------------------------------------------------------- the step's arguments

def _check_tensor(name, t, dtype, batch, device):
    checks.check_tensor(name, t)
    checks.check_dtype(name, t, dtype)
    if t.shape != (batch,):
        raise checks.argument_error(name, f"shape ({batch},) (one value per batch row)", tuple(t.shape))
    if t.device != device:
        raise checks.argument_error(name, f"a tensor on {device} (the logits' device)", t.device)
    if not t.is_contiguous():
        raise checks.argument_error(name, "a contiguous tensor")


def validate(logits, state, budget_t, sampling_t, forcing, vocab_size):
    if not isinstance(logits, torch.Tensor):
        raise checks.argument_error("logits", "a torch.Tensor", type(logits).__name__, TypeError)
    if logits.dim() != 2 or logits.shape[0] < 1 or logits.shape[1] < 1:
        raise checks.argument_error("logits", "a non-empty [B, V] tensor", f"shape {tuple(logits.shape)}")
    if logits.dtype not in _LOGIT_DTYPES:
        raise checks.argument_error("logits", "dtype float32, float16 or bfloat16", logits.dtype, TypeError)
    if logits.stride(1) != 1:
        raise ValueError(f"logits: the vocabulary dimension must be contiguous (stride 1), got strides {logits.stride()}")
    B, V = logits.shape
    if vocab_size is None:
        vocab_size = V
    if not checks.is_int(vocab_size):
        raise checks.argument_error("vocab_size", "an int or None", type(vocab_size).__name__, TypeError)
    if not 1 <= vocab_size <= V:
        raise checks.argument_error("vocab_size", f"1 <= vocab_size <= logits.shape[1] = {V}", vocab_size)
    if not isinstance(state, DecodeState):
        raise checks.argument_error("state", "a DecodeState", type(state).__name__, TypeError)
    if not isinstance(budget_t, BudgetTensors):
        raise checks.argument_error("budget_t", "BudgetTensors (Budget(...).tensors(batch, device))",
                                    type(budget_t).__name__, TypeError)
    if not isinstance(sampling_t, SamplingTensors):
        raise checks.argument_error("sampling_t", "SamplingTensors (Sampling(...).tensors(batch, device))",
                                    type(sampling_t).__name__, TypeError)
    if not isinstance(forcing, ForcingTokens):
        raise checks.argument_error("forcing", "ForcingTokens", type(forcing).__name__, TypeError)
    dev = logits.device
    for prefix, value, group in (("state", state, STATE), ("budget_t", budget_t, BUDGET),
                                 ("sampling_t", sampling_t, SAMPLING)):
        for f in group:
            _check_tensor(f"{prefix}.{f.name}", getattr(value, f.name), _TORCH_DTYPES[f.dtype], B, dev)
    n_stop = len(forcing.end_think_ids) + len(forcing.eos_ids)
    if n_stop > MAX_STOP_IDS:
        raise ValueError(f"forcing: at most {MAX_STOP_IDS} end-of-thinking + EOS ids in all, got {n_stop}")
    if forcing.max_id() >= vocab_size:
        raise ValueError(f"forcing: every token id must be < vocab_size = {vocab_size}, got id {forcing.max_id()}")
    if dev.type == "cpu" and not torch.compiler.is_compiling():  # reading values costs no device sync here
        _check_state_values(state)
        _check_sampling_values(sampling_t)
    return vocab_size


def _check_sampling_values(sampling_t: SamplingTensors) -> None:
    """Hand-built sampling tensors obey the rules `Sampling.tensors` enforces (NaN, negative
    or out-of-range values make the backends disagree: min_p=nan picks different tokens on
    the torch and C++ paths). CPU only, as for the state."""
    tiny = torch.finfo(torch.float32).tiny
    t, k, p, mp = sampling_t.temperature, sampling_t.top_k, sampling_t.top_p, sampling_t.min_p
    rules = (
        ("temperature", ~(torch.isfinite(t) & ((t == 0) | (t >= tiny))), "0 (greedy) or a finite value >= 1.2e-38"),
        ("top_k", k < 0, "0 (off) or a positive int"),
        ("top_p", ~((p >= tiny) & (p <= 1)), "a value in (0, 1]"),
        ("min_p", ~(((mp == 0) | (mp >= tiny)) & (mp <= 1)), "0 or a value in [1.2e-38, 1]"),
    )
    for name, mask, expected in rules:
        rows = mask.nonzero()[:, 0]
        if rows.numel():
            r = int(rows[0])
            raise checks.argument_error(f"sampling_t.{name}", expected,
                                        f"{getattr(sampling_t, name)[r].item()} (row {r}); "
                                        "build it with Sampling(...).tensors(batch, device)")


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
