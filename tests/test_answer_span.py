"""The answer span cannot carry thinking: one rule (s1kernels.control.read_row), held by
generate, the eval CLI and its evaluate(), the evaluation suite and the transformers
processor, on a scripted model that does what a trained model was seen doing -- after a
forced exit it writes the running value as its answer, then restarts the trace inside the
answer span, writes a second delimiter and a second (right) answer.

The three properties checked everywhere: the answer span ends at the first complete answer
(or at a re-opened delimiter), the scored answer is that first one, and what the row
writes after it counts as thinking (so Control fails when it goes past the budget).
"""
import json
import types

import pytest
import torch

from s1kernels import eval as s1eval
from s1kernels.eval import __main__ as eval_cli
from s1kernels.answers import first_answer_end
from s1kernels.control import read_row
from s1kernels.data.synthetic import FORCED_ANSWER, make_rows
from s1kernels.generate import format_prompt, generate
from s1kernels.ops.decode import Budget, ForcingTokens


class _Cache:
    """The scripted model's "KV cache": the tokens of each row, so it sees its whole history.
    Same layout rules as the real cache (k, v indexed [layer, row, position]; rows() views)."""

    def __init__(self, batch, max_len, k=None, v=None):
        self.k = torch.zeros(1, batch, max_len, dtype=torch.int64) if k is None else k
        self.v = torch.zeros(1, batch, max_len, dtype=torch.int64) if v is None else v
        self.batch, self.max_len = batch, max_len

    def rows(self, start, stop):
        return _Cache(stop - start, self.max_len, self.k[:, start:stop], self.v[:, start:stop])


class ScriptedModel(torch.nn.Module):
    """A model of the built-in task whose next token is a function of the row's history.

    Left alone it writes the question's trace, ends its thinking, answers right and stops.
    After a forced exit cut its trace (``restart="trace"``) it writes the running value (the
    last one its trace reached) after the forced "Answer:", then the rest of the trace from
    the line that was cut, a second delimiter and the right answer. ``restart="think"``: it
    re-opens a think block at once (``<|im_start|>think``) and writes the whole trace there."""

    def __init__(self, tok, rows, restart="trace"):
        super().__init__()
        self.tok, self.restart = tok, restart
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # device and dtype for the engine
        self.config = types.SimpleNamespace(vocab_size=tok.vocab_size, max_position_embeddings=4096)
        self.rows = {r["question"]: r for r in rows}
        self.think_start = tok.encode("<|im_start|>think\n")
        self.forced = tok.encode("<|im_start|>answer\n" + FORCED_ANSWER)

    def new_kv_cache(self, batch, max_len, dtype=None, device=None):
        return _Cache(batch, max_len)

    def _script(self, history):
        ts = self.think_start
        cut = max(i for i in range(len(history) - len(ts) + 1) if history[i:i + len(ts)] == ts) + len(ts)
        prompt, gen = self.tok.decode(history[:cut]), history[cut:]
        row = next(r for q, r in self.rows.items() if q in prompt)
        lines = row["thinking_trajectories"]
        enc = self.tok.encode
        end = enc("<|im_start|>answer\nAnswer: " + row["answer"]) + [self.tok.im_end_id]
        whole = [enc(line + "\n") for line in lines]
        full = [t for line in whole for t in line] + end
        if gen == full[:len(gen)]:
            return full[len(gen)] if len(gen) < len(full) else self.tok.im_end_id
        f = next((i for i in range(len(gen)) if gen[i:i + len(self.forced)] == self.forced), None)
        if f is None:  # the decode step is writing the forced exit: what is chosen here is not used
            return self.tok.im_end_id
        done, n = 0, 0  # whole trace lines before the forced exit
        while done < len(whole) and n + len(whole[done]) <= f:
            n += len(whole[done])
            done += 1
        running = lines[done - 1].split()[-1][-1] if done else "0"
        rest = "".join(line + "\n" for line in lines[done:])
        if self.restart == "trace":
            after = enc(" " + running + "\n" + rest) + end
        else:
            after = enc("<|im_start|>think\n" + "".join(line + "\n" for line in lines)) + end
        k = len(gen) - f - len(self.forced)
        return after[k] if k < len(after) else self.tok.im_end_id

    def forward_cached(self, ids, start_pos, cache, pack=None, kv_len=None):
        B, T = ids.shape
        hidden = torch.zeros(B, T, self.config.vocab_size)
        for b in range(B):
            p = int(start_pos[b] if start_pos.numel() > 1 else start_pos[0])
            cache.k[0, b, p:p + T] = ids[b]
            hidden[b, -1, self._script(cache.k[0, b, :p + T].tolist())] = 1.0
        return hidden

    def logits(self, hidden, pack=None):
        return 30.0 * hidden.float()


ROWS = make_rows(6, seed=1, task="chain")  # one pass of 39 thinking tokens, no "Wait"
BUDGETS = [3, 13, 15, 27, 48]  # a cut after the start line, inside a line, at a line end, none


@pytest.fixture(scope="module")
def forcing(tok):
    return ForcingTokens.from_tokenizer(tok, final_answer=FORCED_ANSWER)


def _running(row, budget, tok):
    """The value the trace has reached after `budget` thinking tokens (whole lines only)."""
    n, value = 0, "0"
    for line in row["thinking_trajectories"]:
        n += len(tok.encode(line + "\n"))
        if n > budget:
            break
        value = line.split()[-1][-1]
    return value


def test_first_answer_end():
    assert first_answer_end("Answer: 6\nC + 0 = 6\nAnswer: 8") == len("Answer: 6")
    assert first_answer_end("Answer: 6") == len("Answer: 6")
    assert first_answer_end("Answer:\n\n 7 \nmore") == len("Answer:\n\n 7 ")  # content on a later line
    assert first_answer_end("Answer:") is None and first_answer_end("no marker at all") is None
    # a boxed answer wins, as in extract_answer: a written-out solution is the answer
    text = "Answer: Let x = 2.\nThen $\\boxed{4}$ is it.\nWait, let me redo this."
    assert first_answer_end(text) == text.index("\nWait")
    assert first_answer_end("\\boxed{unclosed") is None
    with pytest.raises(TypeError, match="text"):
        first_answer_end(None)


def test_read_row_splits_thinking_answer_and_late_thinking(tok, forcing):
    enc = tok.encode
    think = enc("Start 72\nA + 2 = 4\n")
    forced = list(forcing.forced_exit_ids)
    late = enc("B + 2 = 6\n") + enc("<|im_start|>answer\nAnswer: 6")
    ids = think + forced + enc(" 4\n") + late + [tok.im_end_id]
    row = read_row(ids, forcing, tok)
    assert row.thinking.ids == tuple(think) and row.answer_ended == "answer"
    assert row.answer == "4" and row.answer_text == "Answer: 4"
    assert row.late_thinking_ids == tuple(late)
    assert row.thinking_tokens == len(think) + len(late)
    # a well-behaved row: nothing after its answer but whitespace and EOS
    ok = read_row(think + forced + enc(" 4\n\n") + [tok.im_end_id], forcing, tok)
    assert ok.late_thinking_ids == () and ok.thinking_tokens == len(think) and ok.answer_ended == "answer"
    # a re-opened delimiter before any answer ends the span: no answer, the rest is thinking
    reopen = enc("<|im_start|>think\nStart 72\n")
    r = read_row(think + forced + reopen, forcing, tok)
    assert r.answer_ended == "delimiter" and r.answer is None and r.late_thinking_ids == tuple(reopen)
    # cut inside its thinking, or ended there: no answer span
    assert read_row(think, forcing, tok).answer_ended == "none"
    assert read_row(think + [tok.im_end_id], forcing, tok).answer is None
    assert read_row(think + forced, forcing, tok).answer_ended == "open"


def test_generate_reads_the_first_answer_and_counts_late_thinking(tok, forcing):
    model = ScriptedModel(tok, ROWS)
    qs = [r["question"] for r in ROWS]
    for budget in BUDGETS:
        res = generate(model, tok, qs, budget=Budget(max_thinking_tokens=budget, max_answer_tokens=64),
                       forcing=forcing, backend="torch")
        for row, r in zip(ROWS, res):
            if budget >= 39:  # the whole trace fits: the model ends and answers on its own
                assert not r.forced_exit and r.answer == row["answer"] and r.late_thinking_tokens == 0
                continue
            assert r.forced_exit and r.thinking_tokens == budget
            # the answer span ends at the first complete answer: the running value, not the
            # second answer the restarted trace wrote (the old reading scored that one)
            assert r.answer == _running(row, budget, tok)
            assert r.answer_text == "Answer: " + r.answer
            assert "<|im_start|>answer\nAnswer: " + row["answer"] in r.text  # it did write it
            assert r.late_thinking_tokens > 0
            assert read_row(r.token_ids, forcing, tok).thinking_tokens == budget + r.late_thinking_tokens


def _evaluate(model, tok, forcing, **kw):
    rows = [{"question": r["question"], "answer": r["answer"]} for r in ROWS]
    return s1eval.evaluate(model, tok, rows, BUDGETS, budget=Budget(max_answer_tokens=64), progress=False, backend="torch",
                           keep_rows=True, forcing=forcing, **kw)


def test_evaluate_scores_the_first_answer_and_control_sees_late_thinking(tok, forcing):
    report = _evaluate(ScriptedModel(tok, ROWS), tok, forcing)
    for e in report["budgets"]:
        b = e["max_thinking_tokens"]
        want = sum(_running(r, b, tok) == r["answer"] for r in ROWS) / len(ROWS) if b < 39 else 1.0
        assert e["accuracy"] == pytest.approx(want)
        assert e["decoder_disagreements"] == 0  # the forcing itself works
        if b < 39:
            # every row restarted its trace after the forced exit: all go past the budget
            assert e["late_thinking_rows"] == len(ROWS) and e["control"] == 0.0
            assert e["avg_thinking_tokens"] > b
            for r in e["rows"]:
                assert r["thinking_tokens"] == b + r["late_thinking_tokens"] > b
        else:
            assert e["control"] == 1.0 and e["late_thinking_rows"] == 0
    # before the rule, the last "Answer:" of the answer span was scored: 100% at every budget
    assert report["budgets"][0]["accuracy"] < 0.5


def test_a_reopened_think_block_is_thinking_and_no_answer(tok, forcing):
    report = _evaluate(ScriptedModel(tok, ROWS, restart="think"), tok, forcing)
    for e in report["budgets"][:-1]:
        assert e["accuracy"] == 0.0 and e["control"] == 0.0
        assert all(r["prediction"] is None for r in e["rows"])
    assert report["budgets"][-1]["accuracy"] == 1.0 and report["budgets"][-1]["control"] == 1.0


def test_eval_cli_table(tok, monkeypatch, tmp_path, capsys):
    model = ScriptedModel(tok, ROWS)
    monkeypatch.setattr(eval_cli, "load_model_and_tokenizer", lambda *a, **k: (model, tok))
    monkeypatch.setattr(eval_cli, "load_eval_rows", lambda *a, **k: [dict(r) for r in ROWS])
    out = tmp_path / "report.json"
    assert eval_cli.main(["--model", str(tmp_path), "--budgets", "16", "48", "--backend", "torch",
                        "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    b16, b48 = report["budgets"]
    assert b16["control"] == 0.0 and b16["late_thinking_rows"] == len(ROWS)
    assert b16["accuracy"] == pytest.approx(sum(_running(r, 16, tok) == r["answer"] for r in ROWS) / len(ROWS))
    assert b48["control"] == 1.0 and b48["accuracy"] == 1.0
    table = capsys.readouterr().out
    assert "late" in table and "control 0.0%" in table


def test_evaluation_suite_scores_the_first_answer(tok, forcing):
    from s1kernels.eval.runs import aggregate, budget_forcing

    points, records = budget_forcing(ScriptedModel(tok, ROWS), tok, [dict(r) for r in ROWS], [16, 48],
                                     final_answer=FORCED_ANSWER, backend="torch")
    by = {p["name"]: p for p in points}
    assert by["max 16"]["in_bounds"] == 0 and by["max 48"]["in_bounds"] == len(ROWS)
    for rec in records:
        if rec["setting"] == "max 16":
            row = ROWS[rec["question_index"]]
            assert rec["prediction"] == _running(row, 16, tok) and rec["thinking_tokens"] > 16
    assert aggregate("x", records[:len(ROWS)], len(ROWS))["in_bounds"] == 0


def test_transformers_processor_reads_rows_by_the_same_rule(tok, forcing):
    """A fake logits source (the scripted model's choices as scores) driven the way
    transformers' generate drives a logits processor and its stopping criteria."""
    pytest.importorskip("transformers")
    from s1kernels.integrations.transformers import BudgetForcingProcessor

    model = ScriptedModel(tok, ROWS)
    prompts = [tok.encode(format_prompt(r["question"], tok)) for r in ROWS]
    width = max(len(p) for p in prompts)
    seqs = torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in prompts])  # left padded
    proc = BudgetForcingProcessor(forcing, Budget(max_thinking_tokens=16, max_answer_tokens=64),
                                  vocab_size=tok.vocab_size, backend="torch")
    stop = proc.stopping_criteria()
    with pytest.raises(ValueError, match="read_outputs"):
        proc.read_outputs(seqs, tok)
    finished = torch.zeros(len(ROWS), dtype=torch.bool)
    for _ in range(160):
        scores = torch.full((len(ROWS), tok.vocab_size), -1e4)
        for b in range(len(ROWS)):
            hist = seqs[b].tolist()[width - len(prompts[b]):]
            scores[b, model._script(hist)] = 0.0
        nxt = proc(seqs, scores).argmax(-1)
        nxt = torch.where(finished, torch.tensor(tok.pad_id), nxt)
        seqs = torch.cat([seqs, nxt[:, None]], 1)
        finished |= stop(seqs, scores)
        if finished.all():
            break
    assert finished.all()
    rows = proc.read_outputs(seqs, tok)
    want = generate(model, tok, [r["question"] for r in ROWS],
                    budget=Budget(max_thinking_tokens=16, max_answer_tokens=64), forcing=forcing, backend="torch")
    for row, got, ref in zip(ROWS, rows, want):
        assert got.answer == ref.answer == _running(row, 16, tok)
        assert len(got.late_thinking_ids) == ref.late_thinking_tokens > 0
        assert got.thinking_tokens == 16 + ref.late_thinking_tokens
    with pytest.raises(ValueError, match="sequences"):
        proc.read_outputs(seqs[:2], tok)


def test_eval_cli_clips_the_minimum_to_each_budget(tok, monkeypatch, tmp_path):
    """docs/real-model.md: --min-thinking-tokens above the budgets holds every row to its whole budget."""
    model = ScriptedModel(tok, ROWS)
    monkeypatch.setattr(eval_cli, "load_model_and_tokenizer", lambda *a, **k: (model, tok))
    monkeypatch.setattr(eval_cli, "load_eval_rows", lambda *a, **k: [dict(r) for r in ROWS[:2]])
    out = tmp_path / "report.json"
    assert eval_cli.main(["--model", str(tmp_path), "--budgets", "3", "15", "--min-thinking-tokens", "100000",
                        "--mode", "suppress", "--backend", "torch", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [e["forced_exit_rate"] for e in report["budgets"]] == [1.0, 1.0]
    assert report["settings"]["min_thinking_tokens"] == 15  # the largest budget: each is thought in full
