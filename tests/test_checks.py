"""The shared argument checks: each names the argument, what was expected and what came."""
import ast
import pathlib
import re

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


def test_argument_error_words_it_like_every_check():
    e = checks.argument_error("k", "an int >= 1", 0)
    assert type(e) is ValueError and str(e) == "k: expected an int >= 1, got 0"
    e = checks.argument_error("x", "a str", "list", TypeError)
    assert type(e) is TypeError and str(e) == "x: expected a str, got list"
    assert str(checks.argument_error("t", "a contiguous tensor")) == "t: expected a contiguous tensor"
    with pytest.raises(ValueError, match=r"^n: expected >= 1, got -2$"):
        raise checks.argument_error("n", ">= 1", -2)


# ---- the rule: argument errors are worded in checks.py only ----------------------------------

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "s1kernels"
_EXPECTED = re.compile(r"\bexpected\b")


def _message_text(node: ast.expr) -> str:
    """The literal text of a str or f-string message (the parts between the braces)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):  # "..." + "..." or "..." % (...)
        return _message_text(node.left) + " " + _message_text(node.right)
    return ""


def hand_written_argument_errors(source: str) -> list[int]:
    """Lines of `raise SomeError("... expected ...")` (ValueError, TypeError and their
    subclasses such as RowError) and of `parser.error("... expected ...")` in `source`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        call = node.exc if isinstance(node, ast.Raise) else node if isinstance(node, ast.Expr) else None
        call = call.value if isinstance(call, ast.Expr) else call
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        wording = any(_EXPECTED.search(_message_text(a)) for a in call.args)
        if wording and (isinstance(node, ast.Raise) and name.endswith("Error")
                        or isinstance(node, ast.Expr) and isinstance(func, ast.Attribute) and name == "error"):
            lines.append(node.lineno)
    return lines


def test_the_rule_catches_what_it_is_for():
    assert hand_written_argument_errors('raise ValueError(f"k: expected >= 1, got {k}")') == [1]
    assert hand_written_argument_errors('if x:\n    raise TypeError("x: expected " + "a str")') == [2]
    assert hand_written_argument_errors('raise builtins.ValueError(f"a {b}, expected c")') == [1]
    assert hand_written_argument_errors('raise RowError(f"{where}: expected an object, got {t}")') == [1]
    assert hand_written_argument_errors('parser.error(f"--n: expected N >= 0, got {n}")') == [1]
    assert hand_written_argument_errors('raise ValueError(f"missing {a}, unexpected {b}")') == []
    assert hand_written_argument_errors('log.info("as expected")') == []
    assert hand_written_argument_errors('raise checks.argument_error("k", ">= 1", k)') == []


def test_argument_errors_go_through_checks():
    """Every "name: expected ..., got ..." in the package comes from checks.py, so all of them
    read alike and a new check reuses the words instead of writing them again."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "checks.py" and path.parent == PACKAGE:
            continue
        rel = path.relative_to(PACKAGE.parent).as_posix()
        found += [f"{rel}:{n}" for n in hand_written_argument_errors(path.read_text(encoding="utf-8"))]
    assert not found, ("raise checks.argument_error(name, expected, got[, TypeError]) instead of a "
                       "hand-written message at:\n  " + "\n  ".join(found))
