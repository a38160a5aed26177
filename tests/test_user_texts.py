"""What a user reads: errors that name the protocol, the flag and the real column, closing
lines that say what happened, and the project's own texts (LICENSE, README, skip reasons)."""
import ast
import json
import os
import re

import pytest

from s1kernels.data.readers import iter_jsonl
from s1kernels.data.tokenizer import real_vocab_size
from s1kernels.generate.__main__ import waits_text
from s1kernels.ops.decode import Budget
from s1kernels.select import __main__ as select_cli
from s1kernels.train.__main__ import main as train_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_tokenizer_without_a_size_names_the_protocol():
    class NoSize:
        def encode(self, text):
            return [1]

    with pytest.raises(TypeError, match=r"tokenizer: expected a size \(an `id_limit` or `vocab_size` attribute, "
                                        r"or `__len__`\).*got a NoSize"):
        real_vocab_size(NoSize(), 100)

    class Sized(NoSize):
        vocab_size = 7
    assert real_vocab_size(Sized(), 100) == 7


@pytest.mark.parametrize("line,message", [
    ('{"question": "abc', "Unterminated string starting at column 14"),  # was "Invalid control character at at column 18"
    ('{"question": "q", "answer": 3 "x": 1}', "Expecting ',' delimiter at column 31"),
    ('   {"a": 1,}', "Expecting property name enclosed in double quotes at column 12"),
    ('{"a": "é", x}', "Expecting property name enclosed in double quotes at column 12"),  # characters, not bytes
])
def test_a_broken_json_line_names_its_real_column(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "fine"}\r\n' + line + "\n", encoding="utf-8")
    errors = [str(r) for _, r in iter_jsonl(str(path)) if isinstance(r, Exception)]
    assert errors == [f"{path}:line 2: invalid JSON ({message})"]


def test_waits_past_num_waits_say_where_they_came_from():
    budget = Budget(min_thinking_tokens=90, max_thinking_tokens=128, num_waits=1)
    assert waits_text(1, budget) == "waits: 1"
    assert waits_text(2, budget) == "waits: 2 (1 for --num-waits, 1 more to reach --min-thinking-tokens 90)"
    assert waits_text(0, Budget(num_waits=0)) == "waits: 0"


def test_resuming_a_finished_run_says_nothing_was_trained(tmp_path, capsys):
    flags = ["--output", str(tmp_path / "run"), "--max-steps", "2", "--save-every", "1", "--no-progress",
             "--hidden-size", "32", "--num-hidden-layers", "1", "--num-attention-heads", "4",
             "--num-key-value-heads", "2", "--intermediate-size", "64", "--block-size", "256",
             "--synthetic-rows", "20", "--eval-rows", "0"]
    assert train_main(flags) == 0
    assert capsys.readouterr().out.startswith("trained 2 steps of a ")
    assert train_main(flags + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nothing to train: the run had already trained all 2 steps of a "), out
    assert "trained 2 steps" not in out


def test_select_errors_name_the_flag(tmp_path, capsys):
    out = ["--k", "1", "--output", str(tmp_path / "o.jsonl")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "pool.json"
    bad.write_text('[{"question": "a"},, ]')
    for argv, needle in [(["--input", str(tmp_path / "missing.jsonl")], "--input: no such file"),
                         (["--input", str(empty)], f"--input: {empty} holds no rows"),
                         (["--input", str(bad)], f"--input: {bad}:line 1: invalid JSON (Expecting value at column 20)")]:
        assert select_cli.main(argv + out) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "error: input:" not in err, err


def test_license_is_the_apache_2_text():
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    for part in ("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "2. Grant of Copyright License.",
                 "9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS",
                 "APPENDIX: How to apply the Apache License to your work."):
        assert part in text, part
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        assert re.search(r'license = \{ text = "Apache-2.0" \}', f.read())


def test_user_facing_text_speaks_to_any_machine():
    for name in ["README.md"] + [os.path.join("docs", n) for n in os.listdir(os.path.join(ROOT, "docs"))]:
        if name.endswith(".md"):
            with open(os.path.join(ROOT, name), encoding="utf-8") as f:
                assert "local CPU wheel" not in f.read(), name


def _path_names(tree) -> set[str]:
    """Module-level names assigned from an expression that reads __file__ (absolute paths)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(n, ast.Name) and n.id == "__file__"
                                                for n in ast.walk(node.value)):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_skip_reasons_hold_no_absolute_paths():
    """A skip reason is read in CI logs on other machines: no path of this checkout in it."""
    tests = os.path.join(ROOT, "tests")
    bad = []
    for name in sorted(os.listdir(tests)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(tests, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        paths = _path_names(tree) | {"__file__"}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("skip", "skipif")):
                continue
            reasons = list(node.args[:1] if node.func.attr == "skip" else []) + [k.value for k in node.keywords
                                                                               if k.arg == "reason"]
            for r in reasons:
                for v in ast.walk(r):
                    if isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name) and v.value.id in paths:
                        bad.append(f"{name}:{node.lineno}")
    assert not bad, bad
