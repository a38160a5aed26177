"""The s1 evaluation suite: metrics, methods, Control from emitted tokens, the command."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest

from s1kernels.data import make_rows
from s1kernels.eval import metrics, runs
from s1kernels.eval.__main__ import suite_main as main
from s1kernels.eval.suite import baselines_table, extensions_table, run_suite
from s1kernels.model import save_model
from s1kernels.ops.decode import Budget, ForcingTokens, Sampling


@pytest.fixture(scope="module")
def rows():
    return [{"question": r["question"], "answer": r["answer"], "kind": "aime"} for r in make_rows(4, seed=5)]


def test_scaling_performance_and_votes():
    pts = [(10, 0.2), (20, 0.4), (40, 0.5)]
    # pairwise slopes 0.02, 0.01, 0.005
    assert metrics.scaling(pts) == pytest.approx((0.02 + 0.01 + 0.005) / 3)
    assert metrics.scaling([(10, 0.2), (10, 0.9)]) is None and metrics.performance(pts) == 0.5
    assert metrics.majority_vote(["3", None, "4", "4", "3"]) == "3"  # tie: first seen wins
    assert metrics.majority_vote(["1", "2", "2"]) == "2" and metrics.majority_vote([None, None]) is None
    s = metrics.summarize([{"accuracy": 0.5, "avg_thinking_tokens": 10, "in_bounds": 3, "runs": 4},
                           {"accuracy": 0.7, "avg_thinking_tokens": 30, "in_bounds": 4, "runs": 4}])
    assert s == {"control": 7 / 8, "scaling": pytest.approx(0.01), "performance": 0.7}
    with pytest.raises(ValueError, match="settings"):
        metrics.summarize([])


def test_control_is_measured_on_emitted_tokens_and_fails_when_forcing_is_wrong(model, tok, rows):
    right = ForcingTokens.from_tokenizer(tok)
    setting = runs.Setting("max 3", Budget(max_thinking_tokens=3, max_answer_tokens=2), high=3)
    good = runs.run_setting(model, tok, rows, setting, forcing=right)
    assert all(r["in_bounds"] for r in good)
    assert all(r["thinking_tokens"] <= 3 for r in good)
    # a forced exit that does not emit the end-of-thinking token: the decoder believes the
    # thinking stopped at 3 tokens, the emitted sequence says otherwise
    broken = dataclasses.replace(right, forced_exit_ids=right.forced_exit_ids[1:])
    bad = runs.run_setting(model, tok, rows, setting, forcing=broken)
    assert all(r["events"]["decoder_thinking_tokens"] <= 3 for r in bad)
    entry = runs.aggregate("max 3", bad, len(rows))
    assert metrics.summarize([entry])["control"] < 0.5


def test_records_keep_generation_answer_length_and_events(model, tok, rows):
    recs = runs.run_setting(model, tok, rows, runs.Setting("wait", Budget(max_thinking_tokens=6, num_waits=1,
                                                                            max_answer_tokens=3), high=6),
                            samples=2, sampling=Sampling(temperature=1.0, seed=3))
    assert len(recs) == 2 * len(rows)
    assert [r["question_index"] for r in recs] == [i // 2 for i in range(2 * len(rows))]
    for r in recs:
        assert set(r) >= {"generation", "prediction", "correct", "thinking_tokens", "events", "bounds"}
        assert set(r["events"]) >= {"waits_used", "forced_exit", "finished_reason", "decoder_thinking_tokens"}
    with pytest.raises(ValueError, match="temperature"):
        runs.run_setting(model, tok, rows, runs.Setting("x", Budget(max_thinking_tokens=4)), samples=2)


def test_majority_voting_counts_every_sample(model, tok, rows):
    points, recs = runs.majority_voting(model, tok, rows, ns=(1, 3), temperature=1.0, cap=8)
    assert [p["samples"] for p in points] == [1, 3] and len(recs) == 3 * len(rows)
    per_q = [sum(r["thinking_tokens"] for r in recs[3 * i:3 * i + 3]) for i in range(len(rows))]
    assert points[1]["avg_thinking_tokens"] == pytest.approx(sum(per_q) / len(rows))


def test_rejection_sampling_counts_attempts(model, tok, rows):
    points, recs = runs.rejection_sampling(model, tok, rows, budgets=[2, 8], temperature=1.0, max_attempts=3, cap=8)
    for p, b in zip(points, [2, 8]):
        mine = [r for r in recs if r["setting"] == f"reject >{b}"]
        assert len(mine) == len(rows) and all(1 <= r["events"]["attempts"] <= 3 for r in mine)
        assert p["mean_attempts"] == pytest.approx(sum(r["events"]["attempts"] for r in mine) / len(rows))
        # a row is kept as soon as it fits, so only the last attempt may miss the bounds
        assert all(r["in_bounds"] or r["events"]["attempts"] == 3 for r in mine)


def test_suite_command_writes_figure_tables_and_rows(model, tok, tmp_path):
    folder = tmp_path / "m"
    save_model(model, str(folder))
    tok.save(str(folder))
    out = tmp_path / "suite"
    assert main(["--model", str(folder), "--num-synthetic", "3", "--out", str(out), "--budgets", "2", "4",
                 "--waits", "1", "--steps", "1", "--reject", "4", "--cap", "8", "--samples", "1", "2",
                 "--max-attempts", "2", "--strings", "Wait", "none", "Hmm"]) == 0
    for name in ("sequential_vs_parallel.png", "baselines.md", "extensions.md", "report.json", "rows.jsonl"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    methods = report["methods"]
    assert set(methods) == {"budget forcing", "majority voting", "token-conditional", "step-conditional",
                            "class-conditional", "rejection sampling"}
    assert methods["budget forcing"]["metrics"]["control"] == 1.0
    assert methods["majority voting"]["metrics"]["control"] is None
    table = baselines_table(report)
    assert table.count("\n") == 2 + 6 and "rejection sampling" in table
    assert table == (out / "baselines.md").read_text()
    ext = extensions_table(report["extensions"])
    assert '"Hmm"' in ext and "none (end suppressed)" in ext
    assert any("Hmm" in n for n in report["notes"])  # not in the built-in vocabulary
    lines = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert {r["method"] for r in lines} >= {"budget forcing", "majority voting", "extension strings"}
    assert all({"generation", "prediction", "thinking_tokens", "events"} <= set(r) for r in lines)
    # the built-in task: a forced exit writes the trained "Answer:", not s1's "Final Answer:"
    assert report["settings"]["final_answer"] == "Answer:"
    forced = [r["generation"] for r in lines if r["events"]["forced_exit"]]
    assert forced and all("<|im_start|>answer\nAnswer:" in g and "answer\nFinal Answer:" not in g for g in forced)
    with pytest.raises(ValueError, match="methods"):
        run_suite(model, tok, [], methods=["vibes"], budgets=[2], waits=[], steps=[], cap=4, tokens_per_step=1,
                  reject=[])


def test_task_figures_reuse_trained_models(model, tok, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import task_figures  # bench/task_figures.py: it trains models across seeds, so it is no library module

    for s in (0, 1):
        folder = tmp_path / "runs" / f"seed{s}"
        save_model(model, str(folder))
        tok.save(str(folder))
    out = tmp_path / "docs"
    assert task_figures.main(["--reuse", "--runs", str(tmp_path / "runs"), "--out", str(out), "--num-synthetic", "2",
                              "--budgets", "2", "4", "--waits", "1", "--cap", "8", "--seeds", "0", "1"]) == 0
    for name in ("builtin-scaling.png", "builtin-wait.png", "builtin-seeds.md", "builtin-seeds.json"):
        assert (out / name).stat().st_size > 0
    table = (out / "builtin-seeds.md").read_text()
    # one row per setting (no forcing, 2 budgets, 1 wait) with a column per seed and the mean
    assert table.count("\n") == 2 + 4 and "seed 1" in table and "| wait x1 |" in table
    numbers = json.loads((out / "builtin-seeds.json").read_text())
    assert set(numbers) == {"0", "1"} and [p["name"] for p in numbers["0"]["waits"]] == ["no forcing", "wait x1"]


def test_builtin_forced_exit_writes_the_trained_answer_prefix(tok):
    # a forced exit on the built-in task writes exactly the tokens training puts after a trace
    # ("\n" ends the last line, then <|im_start|>answer\nAnswer:); s1's "Final Answer:" starts
    # with a token the task never trains
    from s1kernels.data import render_sample
    from s1kernels.data.format import FINAL_ANSWER
    from s1kernels.data.synthetic import FORCED_ANSWER
    from s1kernels.eval.suite import BUILTIN, FILES

    assert BUILTIN["final_answer"] == FORCED_ANSWER and FILES["final_answer"] == FINAL_ANSWER
    forced = list(ForcingTokens.from_tokenizer(tok, final_answer=FORCED_ANSWER).forced_exit_ids)
    s1_exit = ForcingTokens.from_tokenizer(tok).forced_exit_ids
    trained = set()
    for r in make_rows(200, seed=3):
        ids, mask = render_sample(tok, r["question"], r["thinking_trajectories"], r["attempt"])
        trained.update(i for i, m in zip(ids, mask) if m)
        end = len(ids) - len(tok.encode(" " + r["attempt"] + "<|im_end|>"))
        assert ids[end - len(forced):end] == forced
        assert tok.decode(ids[end - len(forced) - 1:end - len(forced)]) == "\n"
    assert tok.token_to_id("Final") in s1_exit and tok.token_to_id("Final") not in trained


def test_builtin_budgets_cut_at_line_ends(tok):
    # each budget point ends a first-pass line, its "\n" included: the forced exit then follows
    # a whole line, as the trained answer does
    from s1kernels.eval.suite import BUILTIN

    for r in make_rows(20, seed=8):
        lines = r["thinking_trajectories"][:7]
        ends = [sum(len(tok.encode(line + "\n")) for line in lines[:k + 1]) for k in range(7)]
        assert ends == BUILTIN["budgets"]


def test_run_setting_forced_exit_text(model, tok, rows):
    setting = runs.Setting("max 3", Budget(max_thinking_tokens=3, max_answer_tokens=2), high=3)
    s1 = runs.run_setting(model, tok, rows, setting)
    task = runs.run_setting(model, tok, rows, setting, final_answer="Answer:")
    forced = [(a, b) for a, b in zip(s1, task) if a["events"]["forced_exit"]]
    assert forced
    for a, b in forced:
        assert "<|im_start|>answer\nFinal Answer:" in a["generation"]
        assert "<|im_start|>answer\nAnswer:" in b["generation"] and "answer\nFinal Answer:" not in b["generation"]
