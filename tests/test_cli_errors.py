"""Every CLI answers a bad argument or input with exit status 2 and one line naming it, before
any long work starts (in process: main(argv) as `python -m` runs it)."""
import json
import os

import pytest
import torch

from s1kernels.eval import __main__ as eval_cli
from s1kernels.select import __main__ as select_cli
from s1kernels.data import __main__ as data_cli


def _run(main, argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(code, err, *needles):
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"question": f"question {i}?", "thinking": "t", "answer": str(i)}) + "\n"
                            for i in range(5)))
    return str(path)


NO_GPU = not torch.cuda.is_available()


@pytest.mark.parametrize("argv,needles", [
    (["--num-synthetic", "-5"], ["--num-synthetic", "expected an integer in [1, 1000000], got -5"]),
    (["--limit", "-2"], ["--limit", "got -2"]),
    (["--limit", "two"], ["--limit", "'two'"]),
    (["--budgets", "8", "-1"], ["--budgets"]),
    (["--plot", "{tmp}"], ["--plot", "is a folder"]),
    (["--plot", "{tmp}/curve.txt"], ["--plot", ".png"]),
    (["--output", "/proc/report.json"], ["--output", "cannot write into '/proc'"]),
    (["--data", "{tmp}/latin1.jsonl"], ["latin1.jsonl:line 2: not UTF-8"]),
    (["--data", "{tmp}/missing.jsonl"], ["--data", "missing.jsonl"]),
] + ([(["--device", "cuda"], ["--device", "no CUDA device"])] if NO_GPU else []))
def test_eval_arguments(tmp_path, capsys, argv, needles):
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "a?", "answer": "1"}\n{"question": "caf\xe9?"}\n')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    _one_line(*_run(eval_cli.main, ["--model", str(tmp_path / "no-model"), *argv], capsys), *needles)
    assert not os.path.exists(str(tmp_path) + ".png")  # nothing written beside a folder


@pytest.mark.parametrize("argv,needles", [
    (["--k", "0"], ["--k", "got 0"]),
    (["--dedup-threshold", "2"], ["--dedup-threshold"]),
    (["--mmr-lambda", "nan"], ["--mmr-lambda"]),
    (["--output", "{tmp}"], ["--output", "is a folder"]),
    (["--plot", "{tmp}/x.pdf"], ["--plot", ".png"]),
] + ([(["--device", "cuda"], ["--device", "no CUDA device"])] if NO_GPU else []))
def test_select_arguments(tmp_path, capsys, rows_file, argv, needles):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["--input", rows_file, "--k", "2", "--output", str(tmp_path / "out.jsonl")]
    _one_line(*_run(select_cli.main, base + argv, capsys), *needles)


def test_select_json_input_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "pool.json"
    bad.write_bytes(b"[" * 50_000 + b"]" * 50_000)
    _one_line(*_run(select_cli.main, ["--input", str(bad), "--k", "1", "--output", str(tmp_path / "o.jsonl")],
                    capsys), "pool.json", "nested too deeply")


@pytest.mark.parametrize("argv,needles", [
    (["--block-size", "1"], ["--block-size"]),
    (["--rows-per-shard", "0"], ["--rows-per-shard"]),
    (["--tokenizer", "{tmp}"], ["tokenizer.json"]),
    (["--tokenizer", "{tmp}/badtok"], ["badtok/tokenizer.json", "not a readable tokenizer.json"]),
    (["--tokenizer", "{tmp}/badcfg"], ["tokenizer_config.json", "not valid JSON"]),
    (["--output", "{tmp}/file.txt"], ["--output", "not a folder"]),
])
def test_data_arguments(tmp_path, capsys, rows_file, argv, needles):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "badtok").mkdir()
    (tmp_path / "badtok" / "tokenizer.json").write_text("{not a tokenizer")
    from s1kernels.data import build_default_tokenizer

    build_default_tokenizer().save(str(tmp_path / "badcfg"))
    (tmp_path / "badcfg" / "tokenizer_config.json").write_bytes(b"{\xff")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["--input", rows_file, "--output", str(tmp_path / "packed"), "--quiet"]
    _one_line(*_run(data_cli.main, base + argv, capsys), *needles)


def test_data_cli_skips_a_lone_surrogate_with_skip_bad(tmp_path, capsys, rows_file):
    with open(rows_file, "a") as f:
        f.write('{"question": "\\ud800", "thinking": "t", "answer": "1"}\n')
    out = str(tmp_path / "packed")
    _one_line(*_run(data_cli.main, ["--input", rows_file, "--output", out, "--quiet"], capsys),
              "rows.jsonl:line 6", "lone surrogate")
    code, _ = _run(data_cli.main, ["--input", rows_file, "--output", out, "--quiet", "--skip-bad"], capsys)
    assert code == 0 and json.load(open(os.path.join(out, "summary.json")))["skipped_rows"] == 1


@pytest.mark.parametrize("argv,needles", [
    (["--prompt", "q", "--output", "{tmp}"], ["--output", "is a folder"]),
    (["--prompt", "q", "--output", "/proc/gen.jsonl"], ["--output", "cannot write into '/proc'"]),
    (["--prompts-file", "{tmp}/bad.jsonl"], ["--prompts-file", "bad.jsonl:line 2: invalid JSON"]),
    (["--prompts-file", "{tmp}/nums.jsonl"], ["--prompts-file", "nums.jsonl:line 1", "got int"]),
    (["--prompts-file", "{tmp}/latin1.txt"], ["--prompts-file", "latin1.txt:line 2: not UTF-8"]),
    (["--prompts-file", "{tmp}/missing.txt"], ["--prompts-file", "missing.txt"]),
    (["--prompt", "q", "--temperature", "1e39"], ["temperature", "beyond float32"]),
    (["--prompt", "q", "--top-p", "1e-50"], ["top_p", "smallest normal float32"]),
    (["--prompt", "q", "--top-p", "0"], ["--top-p"]),
    (["--prompt", "q", "--max-thinking-tokens", "-1"], ["--max-thinking-tokens"]),
    (["--prompt", "q", "--batch-size", "0"], ["--batch-size"]),
    (["--prompt", "q", "--threads", "-1"], ["--threads"]),
] + ([(["--prompt", "q", "--device", "cuda"], ["--device", "no CUDA device"])] if NO_GPU else []))
def test_generate_arguments_fail_before_loading_or_generating(tmp_path, capsys, argv, needles):
    from s1kernels.generate.__main__ import main

    (tmp_path / "bad.jsonl").write_text('{"question": "a"}\n{"question": \n')
    (tmp_path / "nums.jsonl").write_text("5\n")
    (tmp_path / "latin1.txt").write_bytes(b"first\ncaf\xe9\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    # the model folder does not exist: every error here must come before the model is loaded
    _one_line(*_run(main, ["--model", str(tmp_path / "no-model"), *argv], capsys), *needles)


@pytest.mark.parametrize("body,needle", [("{oops", "not valid JSON"), ("[1]", "JSON object"),
                                         ('{"data": {"source": "built-in task"}, "synthetic_rows": 1e12, "seed": 1}',
                                          "synthetic_rows")])
def test_eval_names_a_bad_train_config(tmp_path, capsys, body, needle):
    model = tmp_path / "m"
    model.mkdir()
    (model / "train_config.json").write_text(body)
    _one_line(*_run(eval_cli.main, ["--model", str(model)], capsys), "train_config.json", needle)


@pytest.mark.parametrize("argv, needles", [
    (["--checkpoint", "{tmp}/no-such-step"], ("no-such-step",)),
    (["--gguf", "{tmp}/m.gguf", "--max-shard-gb", "1"], ("--max-shard-gb", "--checkpoint only")),
    (["--checkpoint", "{tmp}/step", "--max-shard-gb", "0"], ("--max-shard-gb", "(0, 1e6)")),
    (["--gguf", "{tmp}/m.gguf", "--checkpoint", "{tmp}/step"], ("--checkpoint", "not allowed with")),
])
def test_convert_bad_arguments(tmp_path, capsys, argv, needles):
    from s1kernels import convert

    argv = [a.format(tmp=tmp_path) for a in argv] + ["--output", str(tmp_path / "out")]
    _one_line(*_run(convert.main, argv, capsys), *needles)
