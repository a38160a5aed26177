"""The decode step's per-row fields, declared once: the state the step updates in place, the
budget and the sampling parameters, each an array of one value per batch row.

Everything else follows this table, in its order:
- Python: `DecodeState`, `Budget`/`BudgetTensors` and `Sampling`/`SamplingTensors` (their
  fields, defaults and range checks, contract.py), the custom op's three tensor lists and
  the pointer lists handed to the compiled step (native.py);
- C++: `csrc/include/s1k/decode_fields.h`, which `header_text()` writes (setup.py writes it
  again before every build, and tests/test_decode_native.py fails when the committed copy
  differs), holds one X-macro per group; `s1k::DecodeArgs` declares its pointers and
  python/decode.cpp fills them from those macros, so no list is written by position.

Adding a sampling option: a row in SAMPLING, the flag in s1kernels/cli.py, and its use in
the reference (reference.py) and the two kernels (csrc/decode_cpu.cpp, csrc/decode.cu).

This module imports nothing but the standard library: setup.py loads it by path.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

INT32_MAX = 2**31 - 1


class Field(NamedTuple):
    name: str
    dtype: str  # "int32" | "int64" | "float32": the tensor dtype and the C++ element type
    doc: str
    default: object = 0  # the value Budget / Sampling take when not given (state: unused)
    lo: Optional[float] = None  # allowed range of a Budget / Sampling value (None: unbounded)
    hi: Optional[float] = None
    lo_open: bool = False  # lo itself excluded
    choices: Optional[dict] = None  # names a value may be given by, and the numbers they stand for


STATE = (
    Field("phase", "int32", "THINKING / ANSWER / DONE"),
    Field("thinking_tokens", "int32", "thinking tokens emitted so far"),
    Field("waits_used", "int32", "wait sequences injected so far"),
    Field("inject_kind", "int32", "the sequence being injected: NONE / WAIT / DELIMITER / EXIT"),
    Field("inject_pos", "int32", "cursor into that sequence"),
    Field("answer_tokens", "int32", "answer tokens sampled so far"),
    Field("error", "int32", "bit 1: non-finite logits, bit 2: no allowed token"),
    Field("event", "int32", "what the last step did: EVENT_*"),
    Field("step", "int64", "the row's RNG counter, +1 per step"),
)

BUDGET = (
    Field("min_thinking_tokens", "int32", "thinking may not end before this many tokens", 0, 0, INT32_MAX),
    Field("max_thinking_tokens", "int32", "the forced exit comes at this many thinking tokens", INT32_MAX, 0,
          INT32_MAX),
    Field("num_waits", "int32", "ends of thinking replaced by the wait sequence (s1's NUM_IGNORE)", 0, 0, INT32_MAX),
    Field("max_answer_tokens", "int32", "answer tokens before the row is cut", INT32_MAX, 1, INT32_MAX),
    Field("mode", "int32", "before the minimum is met: 'wait' injects the wait sequence, 'suppress' forbids the end",
          "wait", choices={"wait": 0, "suppress": 1}),
)

SAMPLING = (
    Field("temperature", "float32", "0 = greedy", 0.0, 0.0, None),
    Field("top_k", "int32", "keep the k most likely tokens; 0 = off", 0, 0, INT32_MAX),
    Field("top_p", "float32", "nucleus mass; 1 = off", 1.0, 0.0, 1.0, lo_open=True),
    Field("min_p", "float32", "keep p >= min_p * p_max; 0 = off", 0.0, 0.0, 1.0),
    Field("seed", "int64", "the row's RNG seed (any 64-bit integer; read as uint64)", 0, -(2**63), 2**64 - 1),
)

GROUPS = {"state": STATE, "budget": BUDGET, "sampling": SAMPLING}

C_TYPES = {"int32": "int32_t", "int64": "int64_t", "float32": "float"}
HEADER = "csrc/include/s1k/decode_fields.h"


def header_text() -> str:
    """csrc/include/s1k/decode_fields.h: one X-macro per group, X(name, c_type) per field."""
    lines = [
        "// The decode step's per-row fields, one X-macro per group: X(name, element type).",
        "// Written from s1kernels/ops/decode/fields.py (the one table) by setup.py; do not edit.",
        "#pragma once",
        "",
    ]
    for group, fields in GROUPS.items():
        macro = f"#define S1K_DECODE_{group.upper()}_FIELDS(X)"
        rows = [f"  X({f.name}, {C_TYPES[f.dtype]})  /* {f.doc} */" for f in fields]
        lines.append(" \\\n".join([macro] + rows))
        lines.append("")
    return "\n".join(lines)
