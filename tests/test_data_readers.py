"""Reading JSONL/Parquet rows: column names, aliases, malformed rows."""
import json
import os

import pytest

from s1kernels.data import make_rows
from s1kernels.data.readers import read_rows, write_jsonl

MATH500 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "math500.jsonl")
if not os.path.isfile(MATH500):
    MATH500 = "/work/shared/data/math500.jsonl"


def _write(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


@pytest.mark.skipif(not os.path.isfile(MATH500), reason="shared data/math500.jsonl not present")
def test_math500_aliases():
    rows, stats = read_rows(MATH500)
    assert stats["rows"] == len(rows) == 500 and stats["skipped"] == 0
    with open(MATH500) as f:
        first = json.loads(f.readline())
    assert rows[0] == {"question": first["problem"], "thinking": [first["solution"]], "answer": first["answer"]}
    assert all(r["question"] and r["thinking"] and isinstance(r["answer"], str) for r in rows)


def test_s1k_columns_and_string_trace(tmp_path):
    p = _write(tmp_path / "a.jsonl", [
        {"question": "q1", "thinking_trajectories": ["t1", "t2"], "attempt": "a1", "cot_type": "math"},
        {"question": "q2", "thinking_trajectories": "t", "attempt": "a2"},
        "",
        {"problem": "q3", "thinking": ["x"], "answer": 42},
    ])
    rows, stats = read_rows(p)
    assert rows == [
        {"question": "q1", "thinking": ["t1", "t2"], "answer": "a1"},
        {"question": "q2", "thinking": ["t"], "answer": "a2"},
        {"question": "q3", "thinking": ["x"], "answer": "42"},
    ]
    assert stats["blank"] == 1 and stats["rows"] == 3


def test_synthetic_round_trip_through_jsonl(tmp_path):
    src = make_rows(20, seed=4)
    write_jsonl(src, tmp_path / "syn.jsonl")
    rows, _ = read_rows(tmp_path / "syn.jsonl")
    assert [r["thinking"] for r in rows] == [s["thinking_trajectories"] for s in src]
    assert [r["answer"] for r in rows] == [s["attempt"] for s in src]


@pytest.mark.parametrize("bad, field", [
    ('{"question": "q", "attempt": "a"', "invalid JSON"),
    ({"question": "q", "attempt": "a"}, "field 'thinking' missing"),
    ({"thinking_trajectories": ["t"], "attempt": "a"}, "field 'question' missing"),
    ({"question": "", "thinking_trajectories": ["t"], "attempt": "a"}, "field 'question'"),
    ({"question": "q", "thinking_trajectories": ["t", 3], "attempt": "a"}, "field 'thinking_trajectories'"),
    ({"question": "q", "thinking_trajectories": ["t"], "attempt": ["a"]}, "field 'attempt'"),
    ({"question": "q", "solution": "t"}, "field 'answer' missing"),
    ([1, 2], "expected a JSON object"),
])
def test_malformed_row_names_file_line_field(tmp_path, bad, field):
    good = {"question": "q", "thinking_trajectories": ["t"], "attempt": "a"}
    p = _write(tmp_path / "bad.jsonl", [good, good, bad, good])
    with pytest.raises(ValueError) as e:
        read_rows(p)
    assert str(p) in str(e.value) and "line 3" in str(e.value) and field in str(e.value)
    rows, stats = read_rows(p, skip_bad=True)
    assert len(rows) == 3 and stats["skipped"] == 1 and "line 3" in stats["errors"][0]


def test_prompts_only(tmp_path):
    p = _write(tmp_path / "q.jsonl", [{"question_hash": "h", "question": "What is 2+2?"}])
    with pytest.raises(ValueError, match="thinking"):
        read_rows(p)
    rows, _ = read_rows(p, require=("question",))
    assert rows == [{"question": "What is 2+2?", "thinking": [], "answer": None}]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({
        "question": ["q1", "q2", None],
        "thinking_trajectories": [["t1"], ["t2", "t3"], ["t4"]],
        "attempt": ["a1", "a2", "a3"],
    })
    path = tmp_path / "s1k.parquet"
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=r"s1k\.parquet:row 3: field 'question' missing"):
        read_rows(path)
    rows, stats = read_rows(path, skip_bad=True)
    assert rows == [{"question": "q1", "thinking": ["t1"], "answer": "a1"},
                    {"question": "q2", "thinking": ["t2", "t3"], "answer": "a2"}]
    assert stats["skipped"] == 1


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="path"):
        read_rows(tmp_path / "nope.jsonl")


def test_json_array(tmp_path):
    p = tmp_path / "rows.json"
    p.write_text(json.dumps([{"problem": "q", "solution": "s", "answer": "a"}, {"problem": "q2"}], indent=1))
    with pytest.raises(ValueError, match=r"rows\.json:item 1: field 'thinking' missing"):
        read_rows(p)
    rows, stats = read_rows(p, skip_bad=True)
    assert rows == [{"question": "q", "thinking": ["s"], "answer": "a"}] and stats["skipped"] == 1
