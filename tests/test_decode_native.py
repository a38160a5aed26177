"""The decode step's fields are declared once (s1kernels/ops/decode/fields.py) and every other
place follows that table: the C++ header the struct and the bindings are built from, the
compiled module, the custom op's arguments, and the Python classes."""
import dataclasses
import os
import types

import pytest
import torch

from s1kernels import backend
from s1kernels.ops import decode as D
from s1kernels.ops.decode import fields as F
from s1kernels.ops.decode import native as N

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_committed_header_is_written_from_the_table():
    with open(os.path.join(ROOT, F.HEADER), encoding="utf-8") as f:
        assert f.read() == F.header_text(), "run python setup.py build_ext (it writes the header) and commit it"


def test_the_header_declares_every_field_in_table_order():
    text = F.header_text()
    for group, fields in F.GROUPS.items():
        macro = text[text.index(f"#define S1K_DECODE_{group.upper()}_FIELDS(X)"):]
        macro = macro[:macro.index("\n\n")] if "\n\n" in macro else macro
        at = [macro.index(f"X({f.name}, {F.C_TYPES[f.dtype]})") for f in fields]
        assert at == sorted(at) and len(fields) == macro.count("\n  X("), group


def test_the_compiled_module_was_built_from_this_table():
    mod = backend.native()
    if mod is None:
        pytest.skip("the extension is not built")
    assert {g: list(v) for g, v in mod.decode_fields.items()} == N.FIELD_NAMES
    N.check_built_fields(mod)


def test_a_build_from_another_table_is_refused():
    stale = types.SimpleNamespace(decode_fields={**N.FIELD_NAMES, "sampling": N.FIELD_NAMES["sampling"][:-1]})
    with pytest.raises(RuntimeError, match="rebuild"):
        N.check_built_fields(stale)


def test_the_custom_op_takes_one_list_per_group():
    args = torch.ops.s1kernels.decode_step.default._schema.arguments
    assert [a.name for a in args[:4]] == ["logits", "state", "budget", "sampling"]
    assert args[1].alias_info is not None and args[1].alias_info.is_write  # the state is updated in place
    assert not any(a.alias_info is not None and a.alias_info.is_write for a in args[2:])


def test_the_python_classes_follow_the_table():
    names = lambda group: [f.name for f in group]  # noqa: E731
    assert [f.name for f in dataclasses.fields(D.DecodeState)] == names(F.STATE)
    assert list(D.BudgetTensors._fields) == names(F.BUDGET)
    assert list(D.SamplingTensors._fields) == names(F.SAMPLING)
    for cls, group in ((D.Budget, F.BUDGET), (D.Sampling, F.SAMPLING)):
        assert [(f.name, f.default) for f in dataclasses.fields(cls)] == [(f.name, f.default) for f in group]
    dtypes = {"int32": torch.int32, "int64": torch.int64, "float32": torch.float32}
    state = D.DecodeState.new(3)
    assert [t.dtype for t in state.tensors()] == [dtypes[f.dtype] for f in F.STATE]
    st = D.Sampling(temperature=0.5, seed=[1, 2, 2**64 - 1]).tensors(3, "cpu")
    assert [t.dtype for t in st] == [dtypes[f.dtype] for f in F.SAMPLING]
    assert st.seed.tolist() == [1, 2, -1]  # read as uint64 by the kernels: the same bits
    bt = D.Budget(max_thinking_tokens=[4, 5, 6], mode=["wait", "suppress", "wait"]).tensors(3, "cpu")
    assert bt.mode.tolist() == [D.MODE_WAIT, D.MODE_SUPPRESS, D.MODE_WAIT]
    assert F.BUDGET[-1].choices == {"wait": D.MODE_WAIT, "suppress": D.MODE_SUPPRESS}


def test_rows_checks_without_making_tensors():
    assert D.Sampling(top_k=[0, 5]).rows(2)["top_k"] == [0, 5]
    with pytest.raises(ValueError, match="top_p: expected 0.0 < top_p <= 1.0, got 0.0"):
        D.Sampling(top_p=0.0).rows(1)
    with pytest.raises(ValueError, match="min_thinking_tokens <= max_thinking_tokens"):
        D.Budget(min_thinking_tokens=9, max_thinking_tokens=3).rows(1)
