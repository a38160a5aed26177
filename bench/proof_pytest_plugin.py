"""pytest plugin for bench/gpu_proof.py: one JSON line per test outcome, written at once.

Loaded with `-p proof_pytest_plugin` (bench/ on PYTHONPATH); the file is named by
S1K_PROOF_TESTS_JSONL. The family is S1K_PROOF_FAMILY when set, else read from the node id
(tests/test_decode_cuda.py::... -> decode), so one pytest over every family still sorts its
outcomes. Each result is flushed when the test finishes, so a run that hangs (killed at its
timeout) or crashes the interpreter (an illegal memory access) leaves every earlier outcome.

Under pytest-xdist the hooks fire twice for each test: in the worker that ran it and again in
the controller that received its report. Only the controller writes (it also sees a worker
that crashed, which writes nothing), and a collection error that every worker reports is
written once.
"""
import json
import os

_seen_collect_errors = set()
_is_worker = False


def family_of(nodeid: str) -> str:
    name = os.path.basename(nodeid.split("::", 1)[0])
    name = name[:-3] if name.endswith(".py") else name
    return name.removeprefix("test_").removesuffix("_cuda")


def _family(nodeid: str) -> str:
    return os.environ.get("S1K_PROOF_FAMILY") or family_of(nodeid)


def _write(record: dict) -> None:
    path = os.environ.get("S1K_PROOF_TESTS_JSONL")
    if not path or _is_worker:
        return
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def pytest_configure(config):
    global _is_worker
    _is_worker = hasattr(config, "workerinput")  # set by xdist in its workers only


def pytest_runtest_logreport(report):
    # one record per test: the call phase, or the setup/teardown phase that failed or skipped
    if report.when == "call" or (report.when in ("setup", "teardown") and not report.passed):
        message = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])
        elif report.failed:
            message = str(report.longreprtext)[-3000:]
        _write({"family": _family(report.nodeid), "nodeid": report.nodeid, "when": report.when,
                "outcome": report.outcome, "seconds": round(report.duration, 3), "message": message})


def pytest_collectreport(report):
    if report.failed and report.nodeid not in _seen_collect_errors:
        _seen_collect_errors.add(report.nodeid)
        _write({"family": _family(report.nodeid), "nodeid": report.nodeid, "when": "collect",
                "outcome": "error", "seconds": 0.0, "message": str(report.longreprtext)[-3000:]})
