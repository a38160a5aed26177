"""The shared argument checks: each names the argument, what was expected and what came."""
import pytest
import torch

from s1kernels import checks


def test_each_check_names_the_argument_and_both_sides():
    t = torch.zeros(3, dtype=torch.float16)
    with pytest.raises(TypeError, match=r"^x: expected a torch.Tensor \[N\], got list$"):
        checks.check_tensor("x", [1], "[N]")
    with pytest.raises(ValueError, match=r"^x: expected 2 dimensions \[N, H\], got shape \(3,\)$"):
        checks.check_dims("x", t, 2, "[N, H]")
    with pytest.raises(TypeError, match=r"^x: expected dtype torch.float32 or torch.bfloat16, got torch.float16$"):
        checks.check_dtype("x", t, (torch.float32, torch.bfloat16))
    with pytest.raises(TypeError, match=r"^x: expected a float, got torch.float16$"):
        checks.check_dtype("x", t, torch.float32, "a float")
    with pytest.raises(ValueError, match=r"^x: expected device meta \(the device of y\), got cpu$"):
        checks.check_on_device("x", t, torch.device("meta"), "the device of y")
    with pytest.raises(ValueError, match=r"^mode: expected one of \('a', 'b'\), got 'c'$"):
        checks.check_choice("mode", "c", ("a", "b"))
    with pytest.raises(TypeError, match="^n: expected an int, got bool$"):
        checks.check_int_type("n", True)
    for bad in (0, -1, 1.0, True):
        with pytest.raises(ValueError, match="^k: expected a positive int"):
            checks.check_positive_int("k", bad)


def test_passing_values_come_back():
    t = torch.zeros(2, 3)
    assert checks.check_tensor("x", t) is t
    checks.check_dims("x", t, 2)
    checks.check_dtype("x", t, torch.float32)
    checks.check_on_device("x", t, torch.device("cpu"))
    checks.check_choice("m", "a", ("a",))
    assert checks.check_int_type("n", -3) == -3 and checks.check_positive_int("k", 4) == 4
