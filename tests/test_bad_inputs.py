"""Inputs that used to crash or pass silently, each now a named error (regression tests)."""
import json

import pytest

from s1kernels.data.readers import MAX_ROW_BYTES, RowError, read_rows

ROW = {"question": "q", "thinking": "t", "answer": "1"}


def _jsonl(tmp_path, lines: list[bytes], name="rows.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return str(path)


def test_lone_surrogate_is_a_row_error_and_skippable(tmp_path):
    good = json.dumps(ROW).encode()
    bad = b'{"question": "\\ud800", "thinking": "t", "answer": "1"}'
    path = _jsonl(tmp_path, [good, bad, good])
    with pytest.raises(RowError, match=r"rows.jsonl:line 2: field 'question' holds a lone surrogate"):
        read_rows(path)
    rows, stats = read_rows(path, skip_bad=True)
    assert len(rows) == 2 and stats["skipped"] == 1


def test_deeply_nested_json_is_a_row_error(tmp_path):
    deep = b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = _jsonl(tmp_path, [json.dumps(ROW).encode(), deep])
    with pytest.raises(RowError, match=r"line 2: invalid JSON \(nested too deeply\)"):
        read_rows(path)
    arr = tmp_path / "rows.json"
    arr.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(RowError, match="nested too deeply"):
        read_rows(str(arr))


def test_non_utf8_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path, [json.dumps(ROW).encode(), b'{"question": "caf\xe9"}'])
    with pytest.raises(RowError, match=r"rows.jsonl:line 2: not UTF-8 text \(byte 0xe9 at column 18\)"):
        read_rows(path)
    arr = tmp_path / "rows.json"
    arr.write_bytes(b'[\n{"question": "a"},\n{"question": "\xff"}]')
    with pytest.raises(RowError, match=r"rows.json:line 3: not UTF-8"):
        read_rows(str(arr))


def test_a_huge_line_is_refused_without_reading_it_whole(tmp_path):
    huge = json.dumps(dict(ROW, thinking="x" * (MAX_ROW_BYTES + 10))).encode()
    path = _jsonl(tmp_path, [json.dumps(ROW).encode(), huge, json.dumps(ROW).encode()])
    with pytest.raises(RowError, match=rf"line 2: the line is {len(huge) + 1} bytes, more than the {MAX_ROW_BYTES}"):
        read_rows(path)
    rows, stats = read_rows(path, skip_bad=True)
    assert len(rows) == 2 and stats["skipped"] == 1

