"""pytest plugin for bench/gpu_proof.py: one JSON line per test outcome, written at once.

Loaded with `-p proof_pytest_plugin` (bench/ on PYTHONPATH); the file is named by
S1K_PROOF_TESTS_JSONL and the family by S1K_PROOF_FAMILY. Each result is flushed when the
test finishes, so a family that hangs (killed at its timeout) or crashes the interpreter
(an illegal memory access) still leaves every earlier outcome behind.
"""
import json
import os


def _write(record: dict) -> None:
    path = os.environ.get("S1K_PROOF_TESTS_JSONL")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def pytest_runtest_logreport(report):
    # one record per test: the call phase, or the setup/teardown phase that failed or skipped
    if report.when == "call" or (report.when in ("setup", "teardown") and not report.passed):
        message = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])
        elif report.failed:
            message = str(report.longreprtext)[-3000:]
        _write({"family": os.environ.get("S1K_PROOF_FAMILY", ""), "nodeid": report.nodeid, "when": report.when,
                "outcome": report.outcome, "seconds": round(report.duration, 3), "message": message})


def pytest_collectreport(report):
    if report.failed:
        _write({"family": os.environ.get("S1K_PROOF_FAMILY", ""), "nodeid": report.nodeid, "when": "collect",
                "outcome": "error", "seconds": 0.0, "message": str(report.longreprtext)[-3000:]})
