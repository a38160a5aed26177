"""Tokenizer, s1 chat format and the built-in synthetic task."""
import json

import pytest

from s1kernels.data import (ANSWER_START, THINK_START, S1Tokenizer, check_answer, extract_answer, make_rows,
                            prompt_text, render_sample)
from s1kernels.data import synthetic
from s1kernels.data.format import QWEN_DEFAULT_SYSTEM


def test_default_tokenizer_specials(tok):
    assert 64 <= tok.vocab_size <= 160
    for s in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tok.encode(s) == [tok.token_to_id(s)]
    assert tok.pad_id == tok.token_to_id("<|endoftext|>")
    assert tok.eos_ids == [tok.im_end_id, tok.token_to_id("<|endoftext|>")]
    assert tok.im_start_id == tok.token_to_id("<|im_start|>")
    for w in ("think", "answer", "Wait", "Final", "Answer", ":"):
        assert tok.token_to_id(w) is not None, w
    # digits are single tokens, also inside numbers
    assert len(tok.encode("1234")) == 4
    assert tok.encode("Final Answer:") == [tok.token_to_id("Final"), tok.token_to_id("ĠAnswer"), tok.token_to_id(":")]


def test_default_tokenizer_round_trip_task_texts(tok):
    unk = tok.token_to_id("<unk>")
    for row in make_rows(50, seed=3):
        ids, _ = render_sample(tok, row["question"], row["thinking_trajectories"], row["attempt"])
        assert unk not in ids
        text = prompt_text(row["question"], tok) + "<|im_start|>think\n" + "\n".join(row["thinking_trajectories"])
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("Wait, 3 + 4 = 7?\n\nFinal Answer: 7")) == "Wait, 3 + 4 = 7?\n\nFinal Answer: 7"
    # unknown words decode as <unk>; skip_special_tokens drops the ChatML markers
    assert tok.decode(tok.encode("zebra")) == "<unk>"
    assert tok.decode(tok.encode("<|im_start|>think\n1"), skip_special_tokens=True) == "think\n1"


def test_save_and_from_folder(tok, tmp_path):
    tok.save(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["chat_template"]
    tok2 = S1Tokenizer.from_folder(tmp_path)
    text = prompt_text("Start 1\nA + 2 = ?\nResult mod 10 ?", tok)
    assert tok2.encode(text) == tok.encode(text)
    assert (tok2.vocab_size, tok2.pad_id, tok2.eos_ids) == (tok.vocab_size, tok.pad_id, tok.eos_ids)
    with pytest.raises(ValueError, match="tokenizer.json"):
        S1Tokenizer.from_folder(tmp_path / "missing")


QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_hf_folder_with_chat_template(tok, tmp_path):
    # A Qwen2.5-style folder: the chat template (with its default system turn) is used.
    tok.save(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = QWEN_TEMPLATE
    cfg["pad_token"] = {"content": "<|endoftext|>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    qtok = S1Tokenizer.from_folder(tmp_path)
    q = "Start 2"
    assert prompt_text(q, qtok) == prompt_text(q, None)  # same as the ChatML fallback
    assert prompt_text(q, qtok, system="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert qtok.pad_id == tok.pad_id
    # folder without tokenizer_config.json: ChatML fallback with Qwen's default system
    (tmp_path / "tokenizer_config.json").unlink()
    plain = S1Tokenizer.from_folder(tmp_path)
    assert plain.chat_template is None
    assert prompt_text(q, plain) == (f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
                                     f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")


def test_render_sample_mask_and_text(tok):
    q, thinking, ans = "Start 4\nA + 5 = ?\nResult mod 10 ?", ["Start 4", "A + 5 = 9"], "9"
    ids, mask = render_sample(tok, q, thinking, ans)
    assert len(ids) == len(mask)
    prompt = prompt_text(q, tok)
    assert prompt.endswith("<|im_start|>assistant\n")
    n_prompt = len(tok.encode(prompt))
    assert mask == [False] * n_prompt + [True] * (len(ids) - n_prompt)
    reply = tok.decode(ids[n_prompt:])
    assert reply == THINK_START + "Start 4\nA + 5 = 9\n" + ANSWER_START + "Answer: 9<|im_end|>"
    assert ids[-1] == tok.im_end_id
    # a string trace is used as is
    assert render_sample(tok, q, "Start 4\nA + 5 = 9", ans) == (ids, mask)
    with pytest.raises(TypeError, match="thinking"):
        render_sample(tok, q, [1, 2], ans)
    with pytest.raises(TypeError, match="question"):
        render_sample(tok, 3, thinking, ans)


def test_synthetic_rows_are_consistent():
    rows = make_rows(400, seed=7, task="chain")
    assert rows == make_rows(400, seed=7, task="chain") and rows != make_rows(400, seed=8, task="chain")
    counts = {}
    for r in rows:
        assert set(r) >= {"question", "thinking_trajectories", "attempt", "answer"}
        trace = r["thinking_trajectories"]
        q_lines = r["question"].split("\n")
        assert len(trace) - 1 == 6 and trace[0] == q_lines[0]
        assert synthetic.solve(r["question"]) == r["answer"] == r["attempt"]
        value = int(trace[0].split()[1])
        for q_line, line in zip(q_lines[1:], trace[1:]):
            # a trace line restates its question line, then gives the running result mod 10
            label, op, x, eq, result = line.split()
            assert f"{label} {op} {x} = ?" == q_line and eq == "="
            value = (value + int(x)) % 10 if op == "+" else (value - int(x)) % 10
            assert result == str(value)
        assert str(value) == r["answer"]
        counts[r["answer"]] = counts.get(r["answer"], 0) + 1
    # answers are spread over the 10 digits: a guess is right ~10% of the time
    assert len(counts) == 10 and max(counts.values()) < 0.2 * len(rows)
    mixed = make_rows(50, seed=1, task="chain", ops="+-", min_steps=4, max_steps=8)
    assert all(synthetic.solve(r["question"]) == r["answer"] for r in mixed)
    assert any(" - " in r["question"] for r in mixed)
    assert {len(r["thinking_trajectories"]) - 1 for r in mixed} == {4, 5, 6, 7, 8}
    with pytest.raises(ValueError, match="ops"):
        make_rows(1, ops="/")
    with pytest.raises(ValueError, match="min_steps"):
        make_rows(1, min_steps=5, max_steps=4)
    with pytest.raises(ValueError, match="first line"):
        synthetic.solve("What is 2 + 2?")


def test_sequences_are_short(tok):
    lens = [len(render_sample(tok, r["question"], r["thinking_trajectories"], r["attempt"])[0])
            for r in make_rows(200, seed=0, task="chain")]
    assert set(lens) == {101}  # 6 steps: every trace line sits at the same distance from its question line


def test_check_answer():
    row = {"answer": "7"}
    assert check_answer("...\n<|im_start|>answer\nAnswer: 7<|im_end|>", row)
    assert check_answer("A: 1 + 2 = 3\nFinal Answer: 7", row)
    assert check_answer("Answer: 3 ... Wait Answer: 7", row)  # the last answer counts
    assert not check_answer("Answer: 3", row)
    assert not check_answer("no answer here 7", row)
    assert extract_answer("Final Answer:12") == "12" and extract_answer("") is None


def test_render_rows_accepts_both_row_shapes(tok):
    from s1kernels.data import render_rows

    rows = make_rows(5, seed=1)
    normalised = [{"question": r["question"], "thinking": r["thinking_trajectories"], "answer": r["attempt"]} for r in rows]
    expect = [render_sample(tok, r["question"], r["thinking_trajectories"], r["attempt"]) for r in rows]
    assert render_rows(tok, rows) == render_rows(tok, normalised) == expect
    with pytest.raises(ValueError, match=r"rows\[0\]"):
        render_rows(tok, [{"question": "q"}])


def test_matches_transformers_chat_rendering(tok, tmp_path):
    # Parity with transformers' apply_chat_template and tokenization on the same folder.
    transformers = pytest.importorskip("transformers")
    from s1kernels.data.format import assistant_text

    tok.save(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = QWEN_TEMPLATE
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    ours = S1Tokenizer.from_folder(tmp_path)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    row = make_rows(1, seed=11)[0]
    for system in (None, "Be brief."):
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": row["question"]}]
        prompt = prompt_text(row["question"], ours, system=system)
        assert prompt == hf.apply_chat_template(msgs, chat_template=QWEN_TEMPLATE, tokenize=False,
                                                add_generation_prompt=True)
        reply = assistant_text(row["thinking_trajectories"], row["attempt"])
        full = hf.apply_chat_template(msgs + [{"role": "assistant", "content": reply[:-len("<|im_end|>")]}],
                                      chat_template=QWEN_TEMPLATE, tokenize=False)
        assert full == prompt + reply + "\n"
        ids, _ = render_sample(ours, row["question"], row["thinking_trajectories"], row["attempt"], system=system)
        assert ids == hf(prompt + reply, add_special_tokens=False)["input_ids"]
        assert ours.decode(ids) == hf.decode(ids)


def test_trace_lines_copy_their_question_line_at_one_distance(tok):
    # The property that makes the task quick to learn: with a fixed step count, every trace
    # token except the results equals the token one fixed distance earlier in the question.
    distances = set()
    for r in make_rows(30, seed=2, task="chain"):
        ids, mask = render_sample(tok, r["question"], r["thinking_trajectories"], r["attempt"])
        start = tok.token_to_id("Start")
        q0, t0 = [i for i, t in enumerate(ids) if t == start]
        d = t0 - q0
        distances.add(d)
        n_trace = sum(len(tok.encode(line + "\n")) for line in r["thinking_trajectories"])
        for t in range(t0, t0 + n_trace):
            if tok.id_to_token(ids[t - 1]) != "Ġ=":  # result tokens are computed, not copied
                assert ids[t] == ids[t - d]
    assert len(distances) == 1


def test_operand_range():
    rows = make_rows(200, seed=3, task="chain")
    xs = {int(line.split()[2]) for r in rows for line in r["thinking_trajectories"][1:]}
    assert xs == {1, 2, 3}
    wide = make_rows(200, seed=3, task="chain", max_operand=9)
    assert {int(line.split()[2]) for r in wide for line in r["thinking_trajectories"][1:]} == set(range(1, 10))
    with pytest.raises(ValueError, match="max_operand"):
        make_rows(1, max_operand=10)
    with pytest.raises(ValueError, match="task"):
        make_rows(1, task="parity")


def test_recheck_task_traces():
    # the default task: a quick first pass that slips on steps passing 10, sometimes "Wait"
    # and a careful second pass; the answer field is always the correct result
    rows = make_rows(600, seed=9)
    assert rows == make_rows(600, seed=9, task="recheck")
    kinds = {"clean": 0, "slipped": 0, "checked": 0}
    for r in rows:
        trace, q_lines = r["thinking_trajectories"], r["question"].split("\n")
        assert synthetic.solve(r["question"]) == r["answer"] and len(q_lines) == 8
        start = int(q_lines[0].split()[1])
        assert 0 <= start <= 99 and trace[0] == q_lines[0]
        passes = [trace[i:i + 7] for i in range(0, len(trace), 8)]
        assert len(trace) in (7, 15, 23, 31, 39) and all(trace[i] == "Wait" for i in range(7, len(trace), 8))
        for p, lines in enumerate(passes):
            assert lines[0] == q_lines[0]
            value = start % 10
            for q_line, line in zip(q_lines[1:7], lines[1:]):
                label, op, x, _, result = line.split()
                assert f"{label} {op} {x} = ?" == q_line
                value = synthetic.quick_step(value, op, int(x)) if p == 0 else (value + int(x)) % 10
                assert result == str(value)
        assert r["attempt"] == passes[-1][-1].split()[-1]
        if len(passes) > 1:
            kinds["checked"] += 1
            assert r["attempt"] == r["answer"]
        else:
            kinds["clean" if r["attempt"] == r["answer"] else "slipped"] += 1
    # a checked trace checks again at recheck_rate, up to max_checks: every later "Wait" is a
    # trained case (a forced second Wait follows a careful pass)
    opts = synthetic.TASKS["recheck"]
    checks = [(len(r["thinking_trajectories"]) - 7) // 8 for r in rows]
    at_least = [sum(c >= k for c in checks) for k in range(opts["max_checks"] + 1)]
    assert at_least[1] / at_least[0] == pytest.approx(opts["check_rate"], abs=0.06)
    assert at_least[2] / at_least[1] == pytest.approx(opts["recheck_rate"], abs=0.1)
    assert at_least[2] > 40 and max(checks) == opts["max_checks"]
    assert all(len(r["thinking_trajectories"]) == 7 for r in make_rows(100, seed=9, task="chain"))
    with pytest.raises(ValueError, match="recheck_rate"):
        make_rows(1, recheck_rate=1.5)
    with pytest.raises(ValueError, match="max_checks"):
        make_rows(1, max_checks=-1)
    assert kinds["checked"] > 100 and kinds["slipped"] > 50 and kinds["clean"] > kinds["slipped"]
    assert synthetic.quick_step(8, "+", 3) == 0 and synthetic.quick_step(8, "+", 2) == 0
    assert synthetic.quick_step(9, "+", 3) == 1 and synthetic.quick_step(5, "+", 3) == 8


def test_recheck_partial_answers_improve_line_by_line():
    # a trace cut after k step lines is right when every later step adds 0: more often as k grows
    rows = make_rows(2000, seed=4)
    share = [sum(all(line.split()[2] == "0" for line in r["thinking_trajectories"][1 + k:7]) for r in rows) / len(rows)
             for k in range(7)]
    assert share[0] < 0.02 and share[6] == 1.0
    assert all(b > a + 0.03 for a, b in zip(share, share[1:]))
    # what a forced exit after k lines answers (the last value written, as trained) is right
    # for a share that rises at every line, up to the first pass's accuracy (slips included)
    right = [sum((r["thinking_trajectories"][k].split()[-1] if k else str(int(r["question"].split()[1]) % 10))
                 == r["answer"] for r in rows) / len(rows) for k in range(7)]
    assert all(b > a + 0.03 for a, b in zip(right[1:], right[2:])) and 0.55 < right[6] < 0.85
    # the two-digit start keeps the question space large: few repeats in 2,000 rows
    assert len({r["question"] for r in rows}) > 1900


def test_recheck_copies_sit_at_fixed_distances(tok):
    # first-pass lines copy their question line, second-pass lines their first-pass line,
    # each at one distance for every row
    d_question, d_pass = set(), set()
    for r in make_rows(60, seed=6):
        ids, _ = render_sample(tok, r["question"], r["thinking_trajectories"], r["attempt"])
        start = tok.token_to_id("Start")
        at = [i for i, t in enumerate(ids) if t == start]
        d_question.add(at[1] - at[0])
        d_pass.update(b - a for a, b in zip(at[1:], at[2:]))
    assert len(d_question) == 1 and len(d_pass) == 1
