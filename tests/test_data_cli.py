"""`python -m s1kernels.data`: synthetic JSONL, packing into shards, errors."""
import json
import runpy
import sys

import pytest

from s1kernels.data import Packed, S1Tokenizer, build_default_tokenizer
from s1kernels.data.__main__ import main
from s1kernels.data.readers import read_rows


def test_make_synthetic_then_pack(tmp_path, capsys):
    src = tmp_path / "syn.jsonl"
    assert main(["--make-synthetic", "120", "--seed", "3", "--output", str(src)]) == 0
    rows, _ = read_rows(src)
    assert len(rows) == 120
    out = tmp_path / "packed"
    assert main(["--input", str(src), "--tokenizer", "default", "--block-size", "256", "--output", str(out),
                 "--rows-per-shard", "10"]) == 0
    captured = capsys.readouterr()
    line = captured.out.strip().splitlines()[-1]
    assert "samples 120" in line and "fill rate" in line and "trained tokens" in line
    assert "tokenizing" in captured.err  # progress bar
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == summary["packed"] == 120 and summary["block_size"] == 256
    shards = [Packed.load(out / name) for name in summary["shards"]]
    assert len(shards) > 1 and sum(s.num_rows for s in shards) == summary["rows"]
    assert sum(int((s.labels != -100).sum()) for s in shards) == summary["trained_tokens"]
    assert all(s.input_ids.shape[1] == 256 for s in shards)
    tok = S1Tokenizer.from_folder(out)
    assert tok.encode("A: 1 + 2 = 3") == build_default_tokenizer().encode("A: 1 + 2 = 3")
    # every sample comes back, in order of its input index
    got = sorted((si, ids) for s in shards for si, ids, _ in s.unpack())
    assert [si for si, _ in got] == list(range(120))
    assert tok.decode(got[0][1]).endswith("Answer: " + rows[0]["answer"] + "<|im_end|>")


def test_policy_and_skip_bad(tmp_path, capsys):
    src = tmp_path / "rows.jsonl"
    good = {"question": "Start at 1 .", "thinking_trajectories": ["A: 1 + 1 = 2"], "attempt": "2"}
    long = {"question": "Start at 1 .", "thinking_trajectories": ["A: 1 + 1 = 2"] * 40, "attempt": "2"}
    src.write_text("\n".join(json.dumps(x) for x in [good, long, {"question": "q"}, good]) + "\n")
    out = tmp_path / "out"
    assert main(["--input", str(src), "--block-size", "64", "--output", str(out), "--quiet"]) == 2
    assert "line 3" in capsys.readouterr().err
    assert main(["--input", str(src), "--block-size", "64", "--output", str(out), "--skip-bad",
                 "--policy", "drop", "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["samples"], s["packed"], s["dropped"], s["skipped_rows"]) == (3, 2, 1, 1)
    assert main(["--input", str(src), "--block-size", "64", "--output", str(out), "--skip-bad", "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["packed"], s["truncated"]) == (3, 1)
    packed = Packed.load(out / s["shards"][0])
    lengths = sorted(int(n) for cu, si in zip(packed.cu_seqlens, packed.sample_index)
                     for n, i in zip(cu.diff(), si) if i >= 0)
    assert lengths == [30, 30, 64]  # the long sample, truncated to the block


def test_help_runs_as_module(monkeypatch, capsys):
    # runpy executes the package's __main__ as `python -m s1kernels.data --help` would
    monkeypatch.setattr(sys, "argv", ["python -m s1kernels.data", "--help"])
    monkeypatch.delitem(sys.modules, "s1kernels.data.__main__", raising=False)
    with pytest.raises(SystemExit) as e:
        runpy.run_module("s1kernels.data", run_name="__main__")
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--block-size" in out and "--make-synthetic" in out and "--policy" in out


def test_make_synthetic_options(tmp_path, capsys):
    out = tmp_path / "mixed.jsonl"
    assert main(["--make-synthetic", "40", "--output", str(out), "--min-steps", "4", "--max-steps", "8",
                 "--max-operand", "9", "--ops", "+-", "--task", "chain"]) == 0
    rows, _ = read_rows(out)
    assert {len(r["thinking"]) - 1 for r in rows} <= set(range(4, 9)) and len(rows) == 40
    with pytest.raises(SystemExit):
        main(["--make-synthetic", "4", "--output", str(out), "--ops", "/"])
    assert "ops" in capsys.readouterr().err
