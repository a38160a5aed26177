"""Benchmark readers (AIME-, MATH500- and GPQA-style files) and their answer extraction."""
import csv
import json
import random
from pathlib import Path

import pytest

from s1kernels.answers import extract_choice, extract_integer, score
from s1kernels.data.readers import RowError, detect_benchmark, read_benchmark

MATH500 = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500.jsonl"


@pytest.mark.parametrize("text, expected", [
    ("so the total is \\boxed{033}.", 33),
    ("Final Answer: 1,000", 1000),
    ("Answer: 12 apples", 12),
    ("Answer: 33.0", 33),
    ("<|im_start|>answer\nFinal Answer: -4<|im_end|>", -4),
    ("\\boxed{5} ... Wait \\boxed{7}", 7),
    ("no answer here 12", None),
    ("Answer: none", None),
    ("Answer: 7.5", None),
    ("Answer: \\frac{3}{4}", None),
    (None, None),
])
def test_extract_integer(text, expected):
    assert extract_integer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{B}", "B"),
    ("\\boxed{(C)}", "C"),
    ("Answer: (D)", "D"),
    ("I first thought (A). Final Answer: B", "B"),
    ("so the answer is C.", "C"),
    ("Answer: A) 4 m/s", "A"),
    ("Answer: E", None),  # not an option
    ("Answer: a cat", None),  # lower case is a word, not a letter
    ("no letter", None),
])
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


def test_extract_choice_letters_and_score_kinds():
    assert extract_choice("Answer: E", letters="ABCDE") == "E"
    with pytest.raises(ValueError, match="letters"):
        extract_choice("Answer: A", letters="ab")
    assert score("aime", "Final Answer: 33", "033") == ("33", True)
    assert score("aime", "Final Answer: 34", "33") == ("34", False)
    assert score("aime", "\\boxed{33}", "3/4") == ("33", False)
    assert score("gpqa", "Answer: b", "B") == (None, False)
    assert score("gpqa", "Answer: B", "b") == ("B", True)
    assert score("math", "\\boxed{\\frac{1}{2}}", "0.5", use_math_verify=False) == ("\\frac{1}{2}", True)
    assert score("math", None, "1") == (None, False)
    with pytest.raises(ValueError, match="kind"):
        score("trivia", "Answer: 1", "1")


def _write_gpqa_csv(path, n):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                               "Incorrect Answer 3", "Subdomain"])
        w.writeheader()
        for i in range(n):
            w.writerow({"Question": f"Which is right in case {i}?", "Correct Answer": f"right {i}",
                        "Incorrect Answer 1": f"wrong a{i}", "Incorrect Answer 2": f"wrong b{i}",
                        "Incorrect Answer 3": f"wrong c{i}", "Subdomain": "Physics"})


def test_gpqa_csv_options_shuffled_with_seed(tmp_path):
    path = tmp_path / "gpqa.csv"
    _write_gpqa_csv(path, 40)
    rows, kind = read_benchmark(path)
    assert kind == "gpqa" and len(rows) == 40
    again, _ = read_benchmark(path)
    other, _ = read_benchmark(path, seed=1)
    assert rows == again and [r["answer"] for r in rows] != [r["answer"] for r in other]
    for i, r in enumerate(rows):
        # the letter names the correct option in the shuffled order shown in the prompt
        assert r["options"][" ABCD".index(r["answer"]) - 1] == f"right {i}"
        assert f"{r['answer']}) right {i}" in r["question"]
        assert sorted(r["options"]) == sorted([f"right {i}", f"wrong a{i}", f"wrong b{i}", f"wrong c{i}"])
        assert r["Subdomain"] == "Physics" and r["kind"] == "gpqa"
    # every letter is used: the correct option is not always first
    assert {r["answer"] for r in rows} == set("ABCD")
    # scoring a model output against a row
    r = rows[0]
    assert score("gpqa", f"Answer: ({r['answer']})", r["answer"])[1]


def test_gpqa_options_list_and_errors(tmp_path):
    path = tmp_path / "mc.jsonl"
    rows = [{"question": "2 + 2?", "options": ["3", "4", "5", "6"], "correct_index": 1},
            {"question": "3 + 3?", "choices": ["6", "7", "8", "9"], "answer": "A"},
            {"question": "1 + 1?", "options": ["1", "2", "3", "4"], "answer": "2"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got, kind = read_benchmark(path, seed=3)
    assert kind == "gpqa"
    assert [g["options"][ord(g["answer"]) - 65] for g in got] == ["4", "6", "2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "options": ["1", "2", "3"], "correct_index": 0}) + "\n")
    with pytest.raises(RowError, match="4 options"):
        read_benchmark(bad)
    bad.write_text(json.dumps({"question": "q", "options": ["1", "2", "3", "4"], "correct_index": 7}) + "\n")
    with pytest.raises(RowError, match="correct option"):
        read_benchmark(bad)
    bad.write_text(json.dumps({"Question": "q", "Correct Answer": "x", "Incorrect Answer 1": "y"}) + "\n")
    with pytest.raises(RowError, match="Incorrect Answer"):
        read_benchmark(bad)


def test_aime_and_math_detection(tmp_path):
    aime = tmp_path / "aime.jsonl"
    aime.write_text("\n".join(json.dumps({"ID": f"2024-I-{i}", "Problem": f"Problem {i}", "Answer": a})
                              for i, a in enumerate([33, "025", 204])) + "\n")
    rows, kind = read_benchmark(aime)
    assert kind == "aime" and [r["answer"] for r in rows] == ["33", "025", "204"]
    assert rows[0]["question"] == "Problem 0" and rows[0]["ID"] == "2024-I-0"
    assert score("aime", "\\boxed{25}", rows[1]["answer"])[1]
    bad = tmp_path / "bad_aime.jsonl"
    bad.write_text(json.dumps({"problem": "p", "answer": "\\frac12"}) + "\n")
    with pytest.raises(RowError, match="integer"):
        read_benchmark(bad, kind="aime")
    mixed = tmp_path / "math.jsonl"
    mixed.write_text("\n".join(json.dumps({"problem": f"p{i}", "answer": a})
                               for i, a in enumerate(["3", "\\frac{1}{2}"])) + "\n")
    assert read_benchmark(mixed)[1] == "math"
    assert read_benchmark(mixed, kind="math", limit=1)[0] == [{"problem": "p0", "answer": "3", "question": "p0",
                                                               "kind": "math"}]
    assert detect_benchmark([{"question": "q", "options": ["a", "b", "c", "d"]}]) == "gpqa"
    with pytest.raises(ValueError, match="kind"):
        read_benchmark(mixed, kind="trivia")
    with pytest.raises(ValueError, match="path"):
        read_benchmark(tmp_path / "missing.jsonl")
    noq = tmp_path / "noq.jsonl"
    noq.write_text(json.dumps({"answer": "1"}) + "\n")
    with pytest.raises(RowError, match="question"):
        read_benchmark(noq)


def test_math500_file_reads_as_math_and_scores_its_solutions():
    if not MATH500.exists():
        pytest.skip(f"shared data file {MATH500.name} is not present (../shared/data)")
    rows, kind = read_benchmark(MATH500, limit=60)
    assert kind == "math" and len(rows) == 60
    ok = [score("math", r["solution"], r["answer"], use_math_verify=False)[1] for r in rows]
    assert sum(ok) >= 58
    wrong = random.Random(0).sample(rows, 20)
    assert not any(score("math", f"\\boxed{{{w['answer']}}}", r["answer"], use_math_verify=False)[1]
                   for w, r in zip(wrong, wrong[1:]) if w["answer"] != r["answer"])


def test_eval_reads_and_scores_each_benchmark_kind(tmp_path, monkeypatch):
    from s1kernels import eval as s1eval

    gpqa = tmp_path / "gpqa.csv"
    _write_gpqa_csv(gpqa, 3)
    g_rows = s1eval.load_eval_rows(str(gpqa), seed=2)
    assert [r["kind"] for r in g_rows] == ["gpqa"] * 3 and g_rows == read_benchmark(gpqa, seed=2)[0]
    aime = tmp_path / "aime.jsonl"
    aime.write_text("\n".join(json.dumps({"problem": f"p{i}", "answer": a}) for i, a in enumerate(["033", 7])) + "\n")
    a_rows = s1eval.load_eval_rows(str(aime))
    assert [r["kind"] for r in a_rows] == ["aime", "aime"]
    assert s1eval.load_eval_rows(str(aime), benchmark="math")[0]["kind"] == "math"
    rows = g_rows + a_rows
    letters = [r["answer"] for r in g_rows]
    other = {"A": "B", "B": "C", "C": "D", "D": "A"}
    texts = [f"Answer: ({letters[0]})", f"\\boxed{{{letters[1]}}}", f"Answer: {other[letters[2]]}",
             "Final Answer: 33", "Answer: 7.5"]

    # eval scores the answer span it reads from the emitted ids: test_eval's decodable fake results
    from test_eval import _FAKE_FORCING, _TableTokenizer, _fake_result

    tok = _TableTokenizer()

    def fake_generate(model, tokenizer, questions, budget, sampling=None, **kw):
        return [_fake_result(tok, t, 1) for t in texts]

    monkeypatch.setattr(s1eval.runs, "generate", fake_generate)
    report = s1eval.evaluate(None, tok, rows, [4], progress=False, keep_rows=True, forcing=_FAKE_FORCING)
    assert [r["correct"] for r in report["budgets"][0]["rows"]] == [True, True, False, True, False]
    assert [r["prediction"] for r in report["budgets"][0]["rows"]][3:] == ["33", None]
