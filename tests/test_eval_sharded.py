"""`torchrun --nproc-per-node 2 -m s1kernels.eval`: questions sharded over ranks (gloo on CPU),
one report written by rank 0, equal to the single-process report row for row."""
import json
import os
import subprocess
import sys

import pytest

from s1kernels.generate.sharded import generate_sharded
from s1kernels.ops.decode import Budget, Sampling

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


def _eval(model_dir, out, *, ranks: int):
    flags = ["--model", model_dir, "--num-synthetic", "11", "--budgets", "4", "12", "--save-rows", "--output", out,
             "--temperature", "0.7", "--seed", "3", "--min-thinking-tokens", "2", "--num-waits", "1"]
    if ranks == 1:
        cmd = [sys.executable, "-m", "s1kernels.eval", *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
               "-m", "s1kernels.eval", *flags]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _comparable(report):
    for e in report["budgets"]:
        e.pop("seconds")
    report.pop("model", None)
    return report


@pytest.mark.slow
def test_two_ranks_write_the_single_process_report(model_dir, tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    _eval(model_dir, str(one), ranks=1)
    proc = _eval(model_dir, str(two), ranks=2)
    assert proc.stdout.count("report:") == 1  # rank 0 alone prints and writes
    a, b = _comparable(json.loads(one.read_text())), _comparable(json.loads(two.read_text()))
    assert len(a["budgets"][0]["rows"]) == 11
    assert a == b


def test_one_process_is_plain_generate(model_dir):
    from s1kernels.runtime import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer(model_dir, "cpu", "float32")
    prompts = ["Start 3\nA + 4 = ?", "Start 5\nA * 2 = ?", "Start 1\nA - 7 = ?"]
    kw = dict(budget=Budget(max_thinking_tokens=6, max_answer_tokens=3), sampling=Sampling(temperature=0.9, seed=4))
    from s1kernels.generate import generate
    assert [r.token_ids for r in generate_sharded(model, tok, prompts, **kw)] == \
        [r.token_ids for r in generate(model, tok, prompts, **kw)]
