"""The benchmark harness runs in its quick CPU mode and writes JSON, markdown and a PNG."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_run_all_quick_writes_results(tmp_path):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run_all.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(os.listdir(tmp_path))
    assert any(f.endswith(".json") for f in files) and any(f.endswith(".md") for f in files)
    assert any(f.endswith(".png") for f in files)
    payload = json.load(open(tmp_path / next(f for f in files if f.endswith(".json"))))
    assert payload["ceilings"]["matmul_tflops"] > 0 and payload["ceilings"]["copy_gbps"] > 0
    assert payload["rows"], "no benchmark rows were produced"
    for row in payload["rows"]:
        assert row["ms"] is None or row["ms"] > 0
