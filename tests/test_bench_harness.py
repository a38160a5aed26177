"""The benchmark harness runs in its quick CPU mode and writes JSONL, markdown and a PNG.

The whole bench (every family, each in its own process) runs in CI through the rehearsal of
bench/gpu_proof.py in .ci/run; here one family, straight through run_all.py.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_all_quick_writes_results(tmp_path):
    jsonl = tmp_path / "bench.jsonl"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run_all.py"), "--quick", "--only", "loss",
                           "--jsonl", str(jsonl)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "bench.md").exists() and (tmp_path / "bench.png").exists()
    rows = [json.loads(x) for x in open(jsonl)]
    assert rows, "no benchmark rows were produced"
    for row in rows:
        assert row["kind"] == "row" and row["bench"] == "loss" and row["device"] and row["versions"]["torch"]
        assert row["ceilings"]["matmul_tflops"] > 0 and row["ceilings"]["copy_gbps"] > 0
        assert (row["status"] == "ok") == (row["ms"] is not None and row["ms"] > 0), row
    timed = {r["impl"] for r in rows if r["status"] == "ok"}
    assert {"s1kernels", "torch"} <= timed  # on a GPU, missing baselines add skipped rows
