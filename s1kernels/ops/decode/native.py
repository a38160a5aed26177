"""Argument packing for the compiled decode step (s1kernels._C, python/decode.cpp): raw
pointers, sizes, a dtype code and the CUDA stream.

The three pointer lists (state, budget, sampling) are in the order of the field table
(fields.py), which also writes csrc/include/s1k/decode_fields.h, the X-macros from which
s1k::DecodeArgs and the bindings' make_args follow. The compiled module reports the fields
it was built with (`decode_fields`), and `step` refuses a module built from another table.
"""
from __future__ import annotations

import torch

from s1kernels import backend as _backend
from s1kernels.ops.decode.fields import GROUPS

_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
FIELD_NAMES = {group: [f.name for f in fields] for group, fields in GROUPS.items()}


def check_built_fields(mod) -> None:
    """RuntimeError when the compiled module's field table is not this package's (a stale build)."""
    built = {group: list(names) for group, names in getattr(mod, "decode_fields", {}).items()}
    if built != FIELD_NAMES:
        raise RuntimeError(f"decode_step: the compiled extension was built with the decode fields {built}, "
                           f"this package declares {FIELD_NAMES} (s1kernels/ops/decode/fields.py); rebuild it "
                           f"(pip install -e . or python setup.py build_ext --inplace)")


def step(fn_name, logits, state, budget, sampling, table, lengths, pad_id, vocab_size, stream):
    mod = _backend.native()
    check_built_fields(mod)
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
                                 ptrs(state), ptrs(budget), ptrs(sampling), table.data_ptr(), list(lengths), pad_id,
                                 tokens.data_ptr(), logprobs.data_ptr(), stream)
    if code != 0:
        detail = mod.cuda_last_error() if fn_name == "decode_step_cuda" else "invalid argument"
        raise RuntimeError(f"decode_step ({fn_name}) failed with code {code}: {detail}")
    return tokens, logprobs
