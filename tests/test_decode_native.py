"""The decode step's pointer order: one list on the Python side (native.POINTER_GROUPS), and
the custom op, the C++ bindings and the C++ struct all follow it."""
import os

import torch

from s1kernels.ops import decode as D
from s1kernels.ops.decode import native as N

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bindings_fill_the_struct_in_the_python_order():
    cpp = N.cpp_pointer_order(ROOT)
    for group, fields in N.POINTER_GROUPS.items():
        assert cpp[group] == list(fields), group


def test_struct_declares_the_pointers_in_the_python_order():
    cpp = N.cpp_pointer_order(ROOT)
    ordered = [f for fields in N.POINTER_GROUPS.values() for f in fields]
    assert [m for m in cpp["struct"] if m in ordered] == ordered


def test_custom_op_takes_the_tensors_in_the_python_order():
    names = [a.name for a in torch.ops.s1kernels.decode_step.default._schema.arguments]
    # `mode` is spelt budget_mode in the op: `mode` collides with an argument of torch's mode dispatch
    ordered = [f if f != "mode" else "budget_mode" for fields in N.POINTER_GROUPS.values() for f in fields]
    assert names[1:1 + len(ordered)] == ordered
    assert list(D.DecodeState.new(1).__dataclass_fields__) == list(N.POINTER_GROUPS["state"])
