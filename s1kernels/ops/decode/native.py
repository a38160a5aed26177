"""Argument packing for the compiled decode step (s1kernels._C, python/decode.cpp):
raw pointers, sizes, a dtype code and the CUDA stream, in the order of the C++ struct
s1k::DecodeArgs (csrc/include/s1k/decode.h).

The pointer order has one source on the Python side, POINTER_GROUPS (the fields of
DecodeState, BudgetTensors and SamplingTensors); the custom op's signature follows it, and
`cpp_pointer_order` reads the C++ side (the bindings' make_args and the struct) so that the
tests hold all of them to that one list.
"""
from __future__ import annotations

import os
import re

import torch

from s1kernels import backend as _backend
from s1kernels.ops.decode.contract import _STATE_FIELDS, BudgetTensors, SamplingTensors

POINTER_GROUPS = {"state": _STATE_FIELDS, "budget": BudgetTensors._fields, "sampling": SamplingTensors._fields}

_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def step(fn_name, logits, state_tensors, budget_tensors, sampling_tensors, table, lengths, pad_id,
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


def cpp_pointer_order(root: str) -> dict[str, list[str]]:
    """What the C++ sources of a checkout at `root` do with the pointer lists: for each group,
    the DecodeArgs member that entry i of the list fills (python/decode.cpp), and under
    "struct" the pointer members of DecodeArgs in declaration order (csrc/include/s1k/decode.h)."""
    with open(os.path.join(root, "python", "decode.cpp")) as f:
        bindings = f.read()
    out: dict[str, list[str]] = {g: [] for g in POINTER_GROUPS}
    for member, group, index in re.findall(r"a\.(\w+) = ptr<[^>]*>\((state|budget|sampling)\[(\d+)\]\);", bindings):
        slots = out[group]
        slots.extend([""] * (int(index) + 1 - len(slots)))
        slots[int(index)] = member
    with open(os.path.join(root, "csrc", "include", "s1k", "decode.h")) as f:
        header = f.read()
    body = header[header.index("struct DecodeArgs {"):]
    body = body[:body.index("};")]
    members = []
    for line in body.splitlines()[1:]:
        code = line.split("//")[0]
        if "*" in code:  # pointer declarations: `T *a, *b;` or `T* a;`
            members += re.findall(r"\*\s*(\w+)", code)
    out["struct"] = members
    return out
