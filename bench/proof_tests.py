"""The test stages of bench/gpu_proof.py: the cuda tests family by family, compute-sanitizer
on short kernel cases, and the CPU suite. Each writes one JSON line per test outcome to
tests.jsonl (through proof_pytest_plugin) as the test finishes.
"""
from __future__ import annotations

import json
import os
import sys
import time

from gpu_proof import HERE, NO_GPU, ROOT, Proof, _count_lines, _status, find_tool


def collect_cuda_tests(p: Proof) -> tuple[dict, list[str], dict]:
    """{family: [test files]} of the cuda-marked tests, the collection errors, the step."""
    r = p.step("tests: collect -m cuda", p.py("-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-ra",
                                              "-p", "no:cacheprovider", "--continue-on-collection-errors",
                                              p.args.tests_dir), p.timeout("collect"))
    families, errors = {}, []
    for line in r["out"].splitlines():
        if "::" in line and not line.startswith(("ERROR", "FAILED", " ")):
            path = line.split("::", 1)[0]
            if not os.path.exists(os.path.join(ROOT, path)):  # a test folder outside the checkout
                path = os.path.join(os.path.abspath(p.args.tests_dir), os.path.basename(path))
            fam = os.path.basename(path)[:-3].removeprefix("test_").removesuffix("_cuda")
            families.setdefault(fam, [])
            if path not in families[fam]:
                families[fam].append(path)
        elif line.startswith("ERROR ") or "ERROR collecting" in line:
            errors.append(line.strip("_ ").strip())
    if r["rc"] not in (0, 5) and not errors:
        errors.append(r["why"] or f"pytest --collect-only exited {r['rc']}")
    return families, sorted(set(errors)), r


def stage_tests(p: Proof):
    t0 = time.monotonic()
    jsonl = os.path.join(p.out, "tests.jsonl")
    open(jsonl, "a").close()
    families, errors, r = collect_cuda_tests(p)
    n_collected = sum(1 for line in r["out"].splitlines() if "::" in line and not line.startswith(("ERROR", " ")))
    if errors:
        for e in errors:
            _append(jsonl, {"family": "", "nodeid": e, "when": "collect", "outcome": "error", "seconds": 0.0,
                            "message": "collection error: see proof.log"})
    counts = {"passed": 0, "failed": len(errors), "skipped": 0}
    fam_notes = []
    if p.args.tests_workers and families:
        counts, fam_notes = _run_with_workers(p, jsonl, families, counts)
    for fam, files in sorted(families.items()) if not p.args.tests_workers else ():
        env = dict(p.env, S1K_PROOF_TESTS_JSONL=jsonl, S1K_PROOF_FAMILY=fam,
                   PYTHONPATH=os.pathsep.join(filter(None, [HERE, p.env.get("PYTHONPATH")])))
        before = _count_lines(jsonl)
        s = p.step(f"tests: {fam} ({', '.join(files)})", p.py(
            "-m", "pytest", "-m", "cuda", "-q", "-ra", "-p", "no:cacheprovider", "-p", "proof_pytest_plugin",
            *files), p.timeout("tests"), env=env)
        outcomes = [json.loads(x) for x in open(jsonl).read().splitlines()[before:]]
        c = {k: sum(1 for o in outcomes if o["outcome"] == k) for k in ("passed", "failed", "skipped")}
        broken = s["rc"] not in (0, 5) and not c["failed"]  # a crash or timeout, not a test failure
        if broken or s["rc"] is None:
            c["failed"] += 1
            why = s["why"] or f"pytest exited {s['rc']} (crashed?)"
            _append(jsonl, {"family": fam, "nodeid": f"<{fam} process>", "when": "run", "outcome": "failed",
                            "seconds": round(s["wall"], 1), "message": why})
        for k in counts:
            counts[k] += c[k]
        fam_notes.append(f"{fam} {c['passed']}/{c['failed']}/{c['skipped']}")
    note = f"{n_collected} cuda tests collected in {len(families)} families"
    if errors:
        note += f"; COLLECTION ERRORS: {'; '.join(errors)[:300]}"
    note += " (passed/failed/skipped: " + ", ".join(fam_notes) + ")"
    p.add("tests", _status(counts["passed"], counts["failed"], counts["skipped"], no_gpu=not p.gpu), **counts,
          wall=time.monotonic() - t0, note=note)


def _run_with_workers(p: Proof, jsonl: str, families: dict, counts: dict) -> tuple[dict, list[str]]:
    """Every cuda test file in one pytest with N xdist workers. The plugin writes each outcome
    once (from the controller) with the family read from its node id."""
    n = p.args.tests_workers
    files = [f for fam in sorted(families) for f in families[fam]]
    env = dict(p.env, S1K_PROOF_TESTS_JSONL=jsonl,
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, p.env.get("PYTHONPATH")])))
    env.pop("S1K_PROOF_FAMILY", None)
    before = _count_lines(jsonl)
    s = p.step(f"tests: {len(families)} families, pytest -n {n}", p.py(
        "-m", "pytest", "-m", "cuda", "-q", "-ra", "-n", str(n), "-p", "no:cacheprovider", "-p", "proof_pytest_plugin",
        *files), p.timeout("tests_workers"), env=env)
    outcomes = [json.loads(x) for x in open(jsonl).read().splitlines()[before:]]
    per_fam = {}
    for o in outcomes:
        c = per_fam.setdefault(o["family"], {"passed": 0, "failed": 0, "skipped": 0})
        if o["outcome"] in c:
            c[o["outcome"]] += 1
    for c in per_fam.values():
        for k in counts:
            counts[k] += c[k]
    if s["rc"] is None or (s["rc"] not in (0, 5) and not counts["failed"]):
        counts["failed"] += 1
        why = s["why"] or f"pytest exited {s['rc']} (crashed?)"
        _append(jsonl, {"family": "", "nodeid": "<pytest -n process>", "when": "run", "outcome": "failed",
                        "seconds": round(s["wall"], 1), "message": why})
    notes = [f"{fam} {c['passed']}/{c['failed']}/{c['skipped']}" for fam, c in sorted(per_fam.items())]
    return counts, notes + [f"{n} workers"]


def _append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def sanitizer_runs(mode: str | None) -> list[tuple[str, tuple[str, ...]]]:
    """(tool, cases) of each compute-sanitizer process: by default memcheck per case and
    racecheck of decode; a combined mode runs its tool once over every case (one start-up,
    one CUDA context, one Triton load instead of three)."""
    if mode == "memcheck-combined":
        return [("memcheck", CASES)]
    if mode == "racecheck":
        return [("racecheck", CASES)]
    return [("memcheck", (c,)) for c in CASES] + [("racecheck", ("decode",))]


CASES = ("decode", "loss", "similarity")


def stage_sanitizer(p: Proof):
    t0 = time.monotonic()
    cases = os.path.join(HERE, "sanitize_cases.py")
    if not p.gpu:  # the cases themselves still run (on CPU), so the script cannot rot
        r = p.step("sanitizer: cases on CPU (no sanitizer)", p.py(cases, "all", "--device", "cpu"), p.timeout("cpu"))
        ok = sum(1 for line in r["out"].splitlines() if line.startswith("ok "))
        bad = sum(1 for line in r["out"].splitlines() if line.startswith("FAILED ")) + (r["rc"] not in (0, 1))
        status = "failed" if bad or r["rc"] != 0 else NO_GPU
        n = len(sanitizer_runs(p.args.sanitizer_mode))
        return p.add("sanitizer", status, passed=ok, failed=bad, skipped=n, wall=time.monotonic() - t0,
                     note=f"{n} sanitizer run(s) need a GPU; their cases ran on CPU")
    tool = find_tool("compute-sanitizer")
    if tool is None:
        return p.add("sanitizer", "failed", failed=1, note="compute-sanitizer not found (CUDA_HOME/bin, PATH)")
    # no caching allocator: each tensor is its own allocation, so an overrun leaves it
    env = dict(p.env, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    runs = sanitizer_runs(p.args.sanitizer_mode)
    passed, failed, notes = 0, 0, []
    for tool_name, case in runs:
        r = p.step(f"sanitizer: {tool_name} {' '.join(case)}", [
            tool, "--tool", tool_name, "--error-exitcode", "99", "--print-limit", "30", sys.executable, cases, *case],
            p.timeout("sanitizer_combined" if len(case) > 1 else "sanitizer"), env=env)
        summary = next((x for x in reversed(r["out"].splitlines()) if "ERROR SUMMARY" in x or "RACECHECK SUMMARY" in x),
                       "")
        if r["rc"] == 0:
            passed += 1
        else:
            failed += 1
            notes.append(f"{tool_name} {case}: {r['why'] or 'rc=' + str(r['rc'])} {summary.strip()}")
    p.add("sanitizer", "failed" if failed else "passed", passed, failed, wall=time.monotonic() - t0,
          note="; ".join(notes)[:400])


def stage_suite(p: Proof):
    t0 = time.monotonic()
    jsonl = os.path.join(p.out, "tests.jsonl")
    env = dict(p.env, S1K_PROOF_TESTS_JSONL=jsonl, S1K_PROOF_FAMILY="suite (not cuda)",
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, p.env.get("PYTHONPATH")])))
    before = _count_lines(jsonl)
    workers = str(max(1, min(8, (os.cpu_count() or 2))))
    r = p.step("suite: pytest tests -m 'not cuda'", p.py(
        "-m", "pytest", p.args.tests_dir, "-m", "not cuda", "-q", "-ra", "-n", workers, "-p", "no:cacheprovider",
        "-p", "proof_pytest_plugin"), p.timeout("suite"), env=env)
    outcomes = [json.loads(x) for x in open(jsonl).read().splitlines()[before:]] if os.path.exists(jsonl) else []
    c = {k: sum(1 for o in outcomes if o["outcome"] == k) for k in ("passed", "failed", "skipped")}
    if r["rc"] != 0 and not c["failed"]:
        c["failed"] += 1
    p.add("suite", _status(**c), **c, wall=time.monotonic() - t0, note=r["why"] or f"pytest -n {workers}")
