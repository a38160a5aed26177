"""Evaluation at several budgets, the report and plot, and the generate/eval CLIs."""
import json
from pathlib import Path

import pytest

from s1kernels import eval as s1eval
from s1kernels import runtime
from s1kernels.eval import __main__ as eval_cli
from s1kernels.generate import __main__ as gen_cli
from s1kernels.data import make_rows
from s1kernels.generate import GenerationResult
from s1kernels.ops.decode import Budget, ForcingTokens

MATH500 = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500.jsonl"



def test_default_rows_are_held_out_built_in_task(tmp_path):
    rows = s1eval.load_eval_rows(None, num_synthetic=20)
    assert len(rows) == 20 and all(set(r) == {"question", "answer"} for r in rows)
    assert len({r["question"] for r in rows}) == 20
    assert s1eval.load_eval_rows(None, limit=5)[:5] == rows[:5]
    # the training questions of a checkpoint trained on the built-in task are left out
    (tmp_path / "train_config.json").write_text(json.dumps(
        {"model": None, "seed": 42, "synthetic_rows": 500, "data": {"source": "built-in task (500 rows, seed 42)"}}))
    train_qs = s1eval.training_questions(str(tmp_path))
    assert train_qs == {r["question"] for r in make_rows(500, seed=42)}
    held_out = s1eval.load_eval_rows(None, num_synthetic=50, exclude_questions=train_qs)
    assert len(held_out) == 50 and not {r["question"] for r in held_out} & train_qs
    assert s1eval.training_questions(str(tmp_path / "elsewhere")) == set()


def test_rows_from_math500_and_aime_style_files(tmp_path):
    if MATH500.exists():
        rows = s1eval.load_eval_rows(str(MATH500), limit=7)
        assert len(rows) == 7
        assert all(r["question"] and isinstance(r["answer"], str) for r in rows)
    aime = tmp_path / "aime.jsonl"
    aime.write_text("\n".join(json.dumps({"problem": f"Problem {i}", "answer": i * 37}) for i in range(3)) + "\n")
    rows = s1eval.load_eval_rows(str(aime))
    assert [r["answer"] for r in rows] == ["0", "37", "74"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "no answer here"}) + "\n")
    with pytest.raises(ValueError, match="answer"):
        s1eval.load_eval_rows(str(bad))
    with pytest.raises(FileNotFoundError):
        s1eval.load_eval_rows(str(tmp_path / "missing.jsonl"))


def test_scaling_metrics():
    m = s1eval.scaling_metrics([(10, 0.2), (20, 0.4), (40, 0.5)])
    # pairwise slopes: 0.02, 0.0125, 0.005
    assert m["scaling_slope"] == pytest.approx((0.02 + 0.3 / 30 + 0.005) / 3)
    assert m["performance"] == 0.5
    assert s1eval.scaling_metrics([(5, 0.1)])["scaling_slope"] is None


class _TableTokenizer:
    """Decodes the fake results' ids: 10 a thinking token, 0/11/12 the delimiter, 1000 + k the k-th text."""

    def __init__(self):
        self.texts = []

    def decode(self, ids, skip_special_tokens=False):
        names = {10: "x", 0: "" if skip_special_tokens else "<|im_start|>", 11: "answer", 12: "\n"}
        return "".join(names[i] if i in names else self.texts[i - 1000] for i in ids)


_FAKE_FORCING = ForcingTokens(end_think_ids=(0,), delimiter_completion_ids=(11, 12), wait_ids=(13,),
                              forced_exit_ids=(0, 11, 12), eos_ids=(1,), pad_id=1)


def _fake_result(tok, answer_text, thinking, forced=False):
    # eval reads the emitted ids (s1kernels.control.read_row): `thinking` tokens, the delimiter, the answer
    tok.texts.append(answer_text)
    return GenerationResult(prompt="", text=answer_text, token_ids=[10] * thinking + [0, 11, 12, 999 + len(tok.texts)],
                            logprobs=[0.0] * (thinking + 4),
                            thinking_text="", thinking_tokens=thinking, answer_text=answer_text, answer=None,
                            waits_used=0, forced_exit=forced, finished_reason="eos", prompt_tokens=1)


def test_evaluate_scores_answers(monkeypatch, model):
    rows = [{"question": "q1", "answer": "7"}, {"question": "q2", "answer": "\\frac{1}{2}"},
            {"question": "q3", "answer": "033"}, {"question": "q4", "answer": "5"}]
    tok = _TableTokenizer()

    def fake_generate(model, tokenizer, questions, budget, sampling=None, **kw):
        b = budget.max_thinking_tokens
        texts = ["Final Answer: 7", "Answer: $0.5$", "\\boxed{33}", "Answer: 6"] if b > 4 else \
                ["Answer: 1", "nothing", "Final Answer: 33", "Answer: 6"]
        return [_fake_result(tok, t, min(b, 3 + i)) for i, t in enumerate(texts)]

    monkeypatch.setattr(s1eval.runs, "generate", fake_generate)
    report = s1eval.evaluate(model, tok, rows, [4, 8], progress=False, keep_rows=True, forcing=_FAKE_FORCING)
    e4, e8 = report["budgets"]
    assert e4["accuracy"] == 0.25 and e8["accuracy"] == 0.75
    assert e4["control"] == 1.0
    assert [r["correct"] for r in e8["rows"]] == [True, True, True, False]
    assert e8["avg_thinking_tokens"] == pytest.approx((3 + 4 + 5 + 6) / 4)
    assert report["summary"]["performance"] == 0.75


def test_evaluate_on_a_model_control_is_100_percent(model, tok):
    rows = s1eval.load_eval_rows(None, num_synthetic=6)
    report = s1eval.evaluate(model, tok, rows, [1, 3, 6], budget=Budget(num_waits=1, min_thinking_tokens=2,
                                                                        max_answer_tokens=4),
                             progress=False, backend="torch")
    assert [e["max_thinking_tokens"] for e in report["budgets"]] == [1, 3, 6]
    for e in report["budgets"]:
        assert e["control"] == 1.0
        assert e["max_observed_thinking_tokens"] <= e["max_thinking_tokens"]
        assert 0.0 <= e["accuracy"] <= 1.0
        assert sum(e["finished"].values()) == 6
    # an untrained model never closes its thinking: every row hits the cap
    assert report["budgets"][0]["avg_thinking_tokens"] == 1.0
    assert report["budgets"][0]["forced_exit_rate"] == 1.0
    with pytest.raises(ValueError, match="budgets"):
        s1eval.evaluate(model, tok, rows, [], progress=False)


def test_plot_scaling_writes_png(tmp_path):
    report = {"rows": 3, "budgets": [
        {"max_thinking_tokens": 4, "avg_thinking_tokens": 4.0, "accuracy": 0.1},
        {"max_thinking_tokens": 16, "avg_thinking_tokens": 15.0, "accuracy": 0.6}]}
    path = tmp_path / "scaling.png"
    s1eval.plot_scaling(report, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_cli(model_dir, tmp_path, capsys):
    out, plot = tmp_path / "report.json", tmp_path / "scaling.png"
    rc = eval_cli.main(["--model", model_dir, "--budgets", "2", "5", "--num-synthetic", "4", "--max-answer-tokens", "3",
                      "--output", str(out), "--plot", str(plot), "--backend", "torch", "--save-rows"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["rows"] == 4 and len(report["budgets"]) == 2
    assert all(e["control"] == 1.0 for e in report["budgets"])
    assert len(report["budgets"][1]["rows"]) == 4
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "control 100.0%" in capsys.readouterr().out


def test_eval_cli_on_a_jsonl_file(model_dir, tmp_path):
    data = tmp_path / "aime.jsonl"
    data.write_text("\n".join(json.dumps({"problem": f"Start at {i} .", "answer": i}) for i in range(3)) + "\n")
    out = tmp_path / "r.json"
    assert eval_cli.main(["--model", model_dir, "--data", str(data), "--budgets", "3", "--output", str(out),
                        "--max-answer-tokens", "2", "--backend", "torch"]) == 0
    assert json.loads(out.read_text())["rows"] == 3


def test_generate_cli_streams_one_prompt(model_dir, capsys):
    rc = gen_cli.main(["--model", model_dir, "--prompt", "Start at 3 .\nA + 4\nResult mod 10 ?",
                     "--max-thinking-tokens", "6", "--num-waits", "1", "--max-answer-tokens", "3", "--backend", "torch"])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("<|im_start|>think\n")
    assert "Final Answer:" in text and "[thinking tokens: 6" in text and "forced exit: yes" in text


def test_generate_cli_prompts_file_to_jsonl(model_dir, tmp_path, capsys):
    prompts = tmp_path / "q.jsonl"
    prompts.write_text("\n".join(json.dumps({"question": r["question"]}) for r in make_rows(3, seed=1)) + "\n")
    out = tmp_path / "out.jsonl"
    rc = gen_cli.main(["--model", model_dir, "--prompts-file", str(prompts), "--max-thinking-tokens", "4",
                     "--max-answer-tokens", "2", "--temperature", "0.7", "--top-p", "0.9", "--top-k", "20",
                     "--min-p", "0.01", "--seed", "3", "--batch-size", "2", "--mode", "suppress",
                     "--min-thinking-tokens", "2", "--output", str(out), "--backend", "torch"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["thinking_tokens"] <= 4 for r in rows)
    assert capsys.readouterr().out.count("=== prompt") == 3


def test_generate_cli_errors(tmp_path, capsys):
    # the CLI prints a named error as one line and exits 2 (the loader raises FileNotFoundError)
    assert gen_cli.main(["--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "--model" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--model"):
        runtime.load_model_and_tokenizer(str(tmp_path / "nope"))
    with pytest.raises(SystemExit):
        gen_cli.main(["--model", str(tmp_path)])  # no prompt
    with pytest.raises(ValueError, match="--dtype"):
        runtime.resolve_device_dtype("cpu", "float8")


def test_train_then_eval_end_to_end(tmp_path):
    # A few optimizer steps only (the README shows the full run): checks that the trainer's
    # checkpoint folder (model + tokenizer) is what generate/eval load.
    from s1kernels.train import __main__ as train_cli

    out = tmp_path / "run"
    assert train_cli.main(["--output", str(out), "--max-steps", "2", "--hidden-size", "32", "--num-hidden-layers", "1",
                       "--intermediate-size", "64", "--synthetic-rows", "24", "--block-size", "256",
                       "--no-progress", "--eval-rows", "0"]) == 0
    report_path = tmp_path / "report.json"
    assert eval_cli.main(["--model", str(out), "--budgets", "2", "6", "--num-synthetic", "3", "--min-thinking-tokens",
                        "1", "--num-waits", "1", "--output", str(report_path), "--max-answer-tokens", "4"]) == 0
    report = json.loads(report_path.read_text())
    assert [e["control"] for e in report["budgets"]] == [1.0, 1.0]


def test_generate_cli_custom_delimiters(model_dir, capsys):
    rc = gen_cli.main(["--model", model_dir, "--prompt", "Start at 1 .", "--max-thinking-tokens", "3",
                     "--answer-start", "<|im_start|>answer\\n", "--final-answer", "Answer:", "--wait-string", "Wait",
                     "--max-answer-tokens", "2", "--backend", "torch", "--no-stream"])
    assert rc == 0
    assert "<|im_start|>answer\nAnswer:" in capsys.readouterr().out


def test_eval_cli_forced_exit_text_follows_the_data(model_dir, tmp_path):
    # the built-in task: the trained "Answer:"; a benchmark file: s1's "Final Answer:";
    # --final-answer overrides either
    def texts(*extra):
        out = tmp_path / "r.json"
        assert eval_cli.main(["--model", model_dir, "--budgets", "3", "--output", str(out), "--save-rows",
                            "--max-answer-tokens", "2", "--backend", "torch", *extra]) == 0
        rows = json.loads(out.read_text())["budgets"][0]["rows"]
        return [r["generation"] for r in rows if r["events"]["forced_exit"]]

    builtin = texts("--num-synthetic", "3")
    assert builtin and all("<|im_start|>answer\nAnswer:" in t and "answer\nFinal Answer:" not in t for t in builtin)
    data = tmp_path / "aime.jsonl"
    data.write_text("\n".join(json.dumps({"problem": f"Start at {i} .", "answer": i}) for i in range(3)) + "\n")
    files = texts("--data", str(data))
    assert files and all("<|im_start|>answer\nFinal Answer:" in t for t in files)
    chosen = texts("--num-synthetic", "3", "--final-answer", "Final Answer:")
    assert chosen and all("<|im_start|>answer\nFinal Answer:" in t for t in chosen)
