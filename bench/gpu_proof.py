"""One command that proves every kernel on a GPU machine with no network, stage by stage.

    python bench/gpu_proof.py --out DIR                      # every default stage
    python bench/gpu_proof.py --out DIR --triton-cache .device/triton-cache.tar.gz --tests-workers 8 \
        --sanitizer memcheck-combined --bench-smoke            # the one device call (bench/README.md)
    python bench/gpu_proof.py --out DIR --stages build,bench --bench-families loss,decode,similarity
    python bench/gpu_proof.py --out DIR --wheels .whl        # optional baselines, installed offline

Stages (env always runs first; it finds the GPU):
  env        python, torch, CUDA, Triton (libtriton hash, the variables in its cache keys),
             nvcc, compute-sanitizer, the GPU, its driver and clocks, the measured ceilings
             (copy bandwidth, bf16 matmul)
  cache      with --triton-cache ARCHIVE (from bench/prebuild_device.py): refuses a missing
             archive, a prebuild older than the sources (StalePrebuild, naming the files) and
             a TRITON_* variable that changes the cache keys; unpacks the cache at the fixed
             path it was compiled for; every later step counts its hits and misses
  wheels     installs the wheels of --wheels DIR (no index, no deps) into a folder put on
             PYTHONPATH for every later step; skipped without --wheels
  build      uses the prebuilt extension beside the archive when it is for this Python (a
             rebuild only when it fails to load), else builds s1kernels._C with no network
             and no build isolation (in place by default, or `--build editable`); skipped
             when the extension already present was built from these sources
  info       python -m s1kernels.info: the extension loads, and on a GPU the cuda and triton
             backends are usable
  tests      collects the cuda-marked tests (a collection error fails the stage), then runs
             them family by family in their own processes, or with --tests-workers N all in
             one pytest over N xdist workers (families read from the node ids)
  sanitizer  compute-sanitizer on the short decode, loss and similarity cases
             (bench/sanitize_cases.py): by default memcheck of each case in its own process
             and racecheck of decode; --sanitizer memcheck-combined|racecheck runs that one
             tool over all the cases in one process. Without a GPU the cases run on CPU
  bench      each bench family (bench/run_all.py --only FAMILY) in its own process with its own
             timeout, rows appended to bench.jsonl as they are timed, bench.md and bench.png
             regenerated after each family; --bench-smoke runs the smoke family alone (one
             case per kernel family against eager torch, bench/smoke.py)
  suite      pytest tests -m "not cuda" (the CPU suite; on a GPU machine the interpreter tests
             skip with their reason); not a default stage without a GPU, where CI runs it

Every step runs with the same Triton environment (TRITON_DEFAULT_FP_FUSION=1, as the tests'
conftest sets it, and with --triton-cache the cache's TRITON_CACHE_DIR). Without a GPU every
GPU step reports "skipped: no GPU" and the rest really runs (the CI rehearsal in .ci/run).
No step outlives --deadline (default 540 s, inside one 10-minute device call): each step's
timeout is cut to the time left, and a step that cannot start in time is reported as
skipped. DIR receives at most 7 files (the device tool returns 8): summary.md, summary.json,
proof.log, tests.jsonl, bench.jsonl, bench.md, bench.png. The exit status is 1 when a stage
failed or a result file is missing.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
STAGES = ("env", "cache", "wheels", "build", "info", "tests", "sanitizer", "bench", "suite")
DEFAULT_STAGES = ("env", "cache", "wheels", "build", "info", "tests", "sanitizer", "bench")
BENCH_FAMILIES = ("loss", "decode", "similarity", "train_step", "generate")
# per-step timeouts (s) on a GPU; each is also cut to the time left before --deadline
TIMEOUTS = {"build": 300, "collect": 120, "tests": 240, "tests_workers": 300, "sanitizer": 180,
            "sanitizer_combined": 240, "bench": 300, "suite": 420, "cpu": 300}
RESERVE_S = 15  # kept back for the summary and the result files
LOG_CAP = 200_000  # characters of one step's output kept in proof.log (head and tail)
NO_GPU = "skipped: no GPU"
# The Triton environment of every step: the cache keys depend on these (tests/conftest.py sets
# TRITON_DEFAULT_FP_FUSION=1; a bench or sanitizer process without it would miss every key).
TRITON_ENV = {"TRITON_DEFAULT_FP_FUSION": "1"}
PROOF_SITE = os.path.join(HERE, "proof_site")  # sitecustomize: counts Triton cache hits and misses


class Proof:
    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="s1k-proof-")
        self.log_path = os.path.join(self.out, "proof.log")
        self.t_end = time.monotonic() + args.deadline
        self.gpu = None  # filled by the env stage
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        self.env.pop("TRITON_INTERPRET", None)  # the tests' conftest decides
        self.env.update(TRITON_ENV)
        self.events = os.path.join(self.work, "triton_events.jsonl")
        self.env["S1K_TRITON_EVENTS"] = self.events
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [PROOF_SITE, self.env.get("PYTHONPATH")]))
        self.results, self.facts = [], {}
        self.cache_dir = None  # set by the cache stage
        self.manifest = None  # the prebuild's manifest, set by the cache stage
        self.cache_steps = []  # per step: Triton lookups that hit, kernels compiled, launchers built
        self._cache_seen = (self._cache_files(), 0)

    # ------------------------------------------------------------------ running one step
    def left(self) -> float:
        return self.t_end - time.monotonic() - RESERVE_S

    def step(self, title: str, cmd: list[str], timeout: float, env: dict | None = None) -> dict:
        """Runs cmd in its own process group; kills the group at the timeout (cut to the time
        left). Returns rc (None: timed out or not started), output and wall seconds."""
        timeout = min(timeout, self.left())
        if timeout < 10:
            self._log(f"\n### {title}: not started, {max(0, self.left()):.0f} s left before the deadline\n")
            return {"rc": None, "out": "", "wall": 0.0, "why": f"skipped: out of time ({self.args.deadline} s deadline)"}
        self._log(f"\n### {title}\n$ {' '.join(cmd)}  (timeout {timeout:.0f} s)\n")
        t0 = time.monotonic()
        with tempfile.TemporaryFile(mode="w+") as buf:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=buf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc, why = proc.wait(timeout=timeout), ""
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # pytest -n and compilers leave children
                proc.wait()
                rc, why = None, f"timed out after {timeout:.0f} s"
            buf.seek(0)
            out = buf.read()
        wall = time.monotonic() - t0
        self._count_cache(title)
        kept = out if len(out) <= LOG_CAP else out[:LOG_CAP // 4] + "\n[... cut ...]\n" + out[-3 * LOG_CAP // 4:]
        self._log(kept + f"\n[rc={rc} {why} {wall:.1f} s]\n")
        if rc != 0:
            tail = "\n".join(out.strip().splitlines()[-25:])
            print(f"  {title}: {'rc=' + str(rc) if rc is not None else why}\n" + _indent(tail), flush=True)
        return {"rc": rc, "out": out, "wall": wall, "why": why}

    def _cache_files(self) -> set[str]:
        d = self.env.get("TRITON_CACHE_DIR") or os.path.expanduser("~/.triton/cache")
        return {os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs
                if f.startswith("__grp__") or f.endswith(".so")} if os.path.isdir(d) else set()

    def _count_cache(self, title: str):
        """Kernels compiled and launchers built during the step (new files in the cache) and
        lookups that hit (the events the proof_site listener wrote)."""
        files = self._cache_files()
        seen, n_events = self._cache_seen
        new = files - seen
        events = []
        if os.path.exists(self.events):
            with open(self.events) as f:
                events = [json.loads(x) for x in f.read().splitlines() if x.strip()]
        step_events = events[n_events:]
        self._cache_seen = (files, len(events))
        hits = sum(1 for e in step_events if e["hit"])
        compiled = sum(1 for f in new if os.path.basename(f).startswith("__grp__"))
        launchers = sum(1 for f in new if f.endswith(".so"))
        if step_events or new:
            self.cache_steps.append({"step": title, "hits": hits, "misses": len(step_events) - hits,
                                     "kernels_compiled": compiled, "launchers_built": launchers})

    def _log(self, text: str):
        with open(self.log_path, "a") as f:
            f.write(text)

    def add(self, stage, status, passed=0, failed=0, skipped=0, wall=0.0, note=""):
        self.results.append(dict(stage=stage, status=status, passed=passed, failed=failed, skipped=skipped,
                                 wall_s=round(wall, 1), note=note))
        print(f"[{stage}] {status}  passed {passed} failed {failed} skipped {skipped}  {wall:.0f} s  {note}",
              flush=True)

    def timeout(self, kind: str) -> float:
        return min(TIMEOUTS[kind], self.args.step_timeout or TIMEOUTS[kind])

    def py(self, *args) -> list[str]:
        return [sys.executable, *args]


def _count_lines(path) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _status(passed, failed, skipped, no_gpu=False) -> str:
    if failed:
        return "failed"
    if passed == 0 and (skipped or no_gpu):
        return NO_GPU if no_gpu else "skipped"
    return "passed"


# ---------------------------------------------------------------------- stages
ENV_PROBE = r"""
import json, platform, sys
r = {"python": platform.python_version(), "executable": sys.executable}
try:
    import torch
    r.update(torch=torch.__version__, torch_cuda=torch.version.cuda, gpu=torch.cuda.is_available())
    if r["gpu"]:
        p = torch.cuda.get_device_properties(0)
        r.update(device=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                 memory_gb=round(p.total_memory / 1e9, 1))
except Exception as e:
    r.update(torch_error=f"{type(e).__name__}: {e}", gpu=False)
try:
    import triton
    r["triton"] = triton.__version__
except Exception as e:
    r["triton_error"] = f"{type(e).__name__}: {e}"
import importlib.util
r["optional"] = {m: importlib.util.find_spec(m) is not None for m in
                 ("liger_kernel", "cut_cross_entropy", "faiss", "flashinfer", "flash_attn", "transformers")}
sys.path.insert(0, "bench")
try:  # what Triton's cache keys depend on here: the wheel's hashes, ptxas, the TRITON_* variables
    import device_compile
    r["triton_keys"] = device_compile.triton_facts()
except Exception as e:
    r["triton_keys"] = {"error": f"{type(e).__name__}: {e}"}
try:  # the ceilings every bench row is measured against, measured now (quick without a GPU)
    import common
    gpu = bool(r.get("gpu"))
    r["ceilings"] = common.measure_ceilings(torch.device("cuda" if gpu else "cpu"), quick=not gpu)
except Exception as e:
    r["ceilings"] = {"error": f"{type(e).__name__}: {e}"}
print("ENV " + json.dumps(r))
"""


def stage_env(p: Proof):
    t0 = time.monotonic()
    r = p.step("env: python, torch, triton, GPU, ceilings", p.py("-c", ENV_PROBE), 180)
    line = next((x for x in r["out"].splitlines() if x.startswith("ENV ")), None)
    facts = json.loads(line[4:]) if line else {}
    p.gpu = bool(facts.get("gpu")) and not p.args.no_gpu
    tools = {"nvcc": ["--version"], "compute-sanitizer": ["--version"], "nvidia-smi": [
        "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,"
        "temperature.gpu,power.draw", "--format=csv,noheader"]}
    for tool, args in tools.items():
        path = find_tool(tool)
        facts[tool] = None
        if path:
            t = p.step(f"env: {tool}", [path, *args], 30)
            facts[tool] = (t["out"].strip().splitlines() or [""])[-1] if t["rc"] == 0 else f"failed rc={t['rc']}"
    p.facts = facts
    ok = "torch" in facts
    p.add("env", "passed" if ok else "failed", passed=int(ok), failed=int(not ok), wall=time.monotonic() - t0,
          note=f"GPU: {facts.get('device', 'none')}; torch {facts.get('torch')}, triton {facts.get('triton')}, "
               f"python {facts.get('python')}")


def find_tool(name: str) -> str | None:
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", name)):
            return os.path.join(home, "bin", name)
    return shutil.which(name)


def stage_cache(p: Proof):
    """Checks the prebuild beside --triton-cache and unpacks its Triton cache at the fixed path."""
    import prebuild_device as pre

    if not p.args.triton_cache:
        return p.add("cache", "skipped", note="no --triton-cache ARCHIVE given: Triton compiles on first use")
    t0 = time.monotonic()
    archive = os.path.abspath(p.args.triton_cache)
    if not os.path.isfile(archive):
        return p.add("cache", "failed", failed=1, wall=time.monotonic() - t0,
                     note=f"missing archive: {p.args.triton_cache} does not exist (make it with "
                          f"`python bench/prebuild_device.py`, carry .device)")
    try:
        manifest = pre.load_manifest(os.path.dirname(archive))
        pre.check_current(manifest, ROOT)
    except pre.StalePrebuild as e:
        return p.add("cache", "failed", failed=1, wall=time.monotonic() - t0, note=f"StalePrebuild: {e}")
    p.manifest = manifest
    built = manifest["triton"]
    here = p.facts.get("triton_keys") or {}
    if "key_env" not in here:
        return p.add("cache", "failed", failed=1, wall=time.monotonic() - t0,
                     note=f"cannot read this Triton's key inputs: {here.get('error')}")
    # a variable in Triton's keys that differs from the build's makes every lookup miss
    diff = sorted(set(here["key_env"].items()) ^ set(built["key_env"].items()))
    if diff:
        names = sorted({k for k, _ in diff})
        now = {k: p.env.get(k) for k in names}
        return p.add("cache", "failed", failed=1, wall=time.monotonic() - t0,
                     note=f"TRITON variable changes the cache keys: {', '.join(f'{k}={v!r}' for k, v in now.items())} "
                          f"here, the cache was compiled with {built['key_env']}; unset or match it")
    notes = []
    if here.get("libtriton_sha256") != built.get("libtriton_sha256"):
        notes.append(f"WARNING this Triton ({here.get('triton')}, Python {here.get('python')}, libtriton "
                     f"{str(here.get('libtriton_sha256'))[:12]}) is not the wheel the cache was compiled by "
                     f"({built.get('triton')}, Python {built.get('python')}, {built.get('libtriton_sha256', '')[:12]}): "
                     "its keys differ, every variant will compile")
    elif here.get("ptxas") != built.get("ptxas"):
        notes.append("WARNING ptxas differs from the build's: every variant will compile")
    cache_dir = manifest["cache"]["dir"]
    n_files = pre.unpack(archive, cache_dir)
    p.cache_dir = cache_dir
    p.env["TRITON_CACHE_DIR"] = cache_dir
    p._cache_seen = (p._cache_files(), p._cache_seen[1])
    p.facts["triton_cache"] = {"archive": archive, "dir": cache_dir, "files": n_files,
                               "variants": manifest["cache"]["variants"], "built": manifest["created"],
                               "same_wheel": not notes}
    p.add("cache", "passed", passed=1, wall=time.monotonic() - t0,
          note=f"{manifest['cache']['variants']} variants ({n_files} files) unpacked at {cache_dir}, built "
               f"{manifest['created']}; keys made with {built['key_env']}" + ("; " + "; ".join(notes) if notes else ""))


def stage_wheels(p: Proof):
    if not p.args.wheels:
        return p.add("wheels", "skipped", note="no --wheels DIR given")
    t0 = time.monotonic()
    wheels = sorted(glob.glob(os.path.join(p.args.wheels, "*.whl")))
    if not wheels:
        return p.add("wheels", "failed", failed=1, note=f"no .whl files in {p.args.wheels}")
    site = os.path.join(p.work, "site")
    r = p.step("wheels: pip install (offline, no deps)", p.py(
        "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--target",
        site, *wheels), 180)
    if r["rc"] != 0:
        return p.add("wheels", "failed", failed=len(wheels), wall=time.monotonic() - t0, note=r["why"] or "pip failed")
    p.env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, p.env.get("PYTHONPATH")]))
    tops = sorted({d for d in os.listdir(site) if not d.endswith((".dist-info", ".data")) and not d.startswith(("_", "."))
                   and (os.path.isdir(os.path.join(site, d)) or d.endswith(".py"))})
    passed, failed = 0, []
    for mod in tops:
        mod = mod[:-3] if mod.endswith(".py") else mod
        if p.step(f"wheels: import {mod}", p.py("-c", f"import {mod}"), 120)["rc"] == 0:
            passed += 1
        else:
            failed.append(mod)
    p.add("wheels", "failed" if failed else "passed", passed, len(failed), wall=time.monotonic() - t0,
          note=f"{len(wheels)} wheels into {site}" + (f"; import failed: {', '.join(failed)}" if failed else ""))


BUILT_PROBE = r"""
import json, os, sys
from s1kernels.native_sources import source_digest
import s1kernels._C as C
from s1kernels.backend import info
i = info()
print("BUILT " + json.dumps({"same_sources": getattr(C, "source_digest", None) == source_digest(sys.argv[1]),
                             "cuda": bool(i.get("extension_cuda_compiled"))}))
"""


def use_prebuilt(p: Proof) -> str:
    """Copies the prebuilt extension beside --triton-cache into s1kernels/ when it is for this
    Python and its sources are current; returns what happened (for the stage's note)."""
    ext = (p.manifest or {}).get("extension")
    if not ext:
        return ""
    src = os.path.join(os.path.dirname(os.path.abspath(p.args.triton_cache)), ext["file"])
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ""
    if not ext["file"].endswith(suffix):
        return f"prebuilt {ext['file']} is not for this Python ({suffix}); "
    if not os.path.exists(src):
        return f"prebuilt {ext['file']} missing beside the archive; "
    shutil.copy2(src, os.path.join(ROOT, "s1kernels", ext["file"]))
    return f"prebuilt {ext['file']} ({ext['bytes'] / 2**20:.1f} MiB) "


def stage_build(p: Proof):
    t0 = time.monotonic()
    prebuilt = use_prebuilt(p)
    probe = p.step("build: is the extension current?", p.py("-c", BUILT_PROBE, ROOT), 120)
    line = next((x for x in probe["out"].splitlines() if x.startswith("BUILT ")), None)
    built = json.loads(line[6:]) if line else {}
    if built.get("same_sources") and (built.get("cuda") or not p.gpu) and p.args.build != "editable":
        return p.add("build", "passed", passed=1, wall=time.monotonic() - t0,
                     note=(prebuilt + "used: " if prebuilt.endswith(") ") else prebuilt) +
                     "extension built from these sources" + (" with CUDA" if built.get("cuda") else ""))
    if prebuilt.endswith(") "):  # copied, but it did not load (or lacks CUDA): rebuild, and say why
        tail = "\n".join(probe["out"].strip().splitlines()[-3:])
        prebuilt += f"did not load or lacks CUDA ({tail[-300:]}); rebuilt: "
    env = dict(p.env, CUDA_HOME=p.env.get("CUDA_HOME", "/usr/local/cuda"))
    if p.gpu:
        env["S1K_CUDA"] = "1"  # on the GPU machine a build without the CUDA kernels is a failure
    if p.args.build == "editable":
        cmd = p.py("-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", ".")
    else:
        cmd = p.py("setup.py", "build_ext", "--inplace")
    r = p.step(f"build: {' '.join(cmd[1:])}", cmd, p.timeout("build"), env=env)
    ok = r["rc"] == 0
    p.add("build", "passed" if ok else "failed", passed=int(ok), failed=int(not ok), wall=time.monotonic() - t0,
          note=prebuilt + ("S1K_CUDA=1, " if p.gpu else "") + (p.args.build if ok else (r["why"] or f"rc={r['rc']}")))


def stage_info(p: Proof):
    t0 = time.monotonic()
    r = p.step("info: python -m s1kernels.info", p.py("-m", "s1kernels.info"), 120)
    j = p.step("info: --json", p.py("-m", "s1kernels.info", "--json"), 120)
    try:
        report = json.loads(j["out"][j["out"].index("{"):])
    except ValueError:
        report = {}
    p.facts["info"] = report
    problems = [] if r["rc"] == 0 and report else ["s1kernels.info failed"]
    if report and not report.get("extension"):
        problems.append("extension not loaded")
    if p.gpu and report:
        for name in ("cuda", "triton"):
            b = report.get("backends", {}).get(name, {})
            if not b.get("usable"):
                problems.append(f"{name} backend not usable: {b.get('why')}")
    print(_indent(r["out"].strip()), flush=True)
    p.add("info", "failed" if problems else "passed", passed=int(not problems), failed=len(problems),
          wall=time.monotonic() - t0, note="; ".join(problems))


def stage_bench(p: Proof):
    import results  # noqa: E402  (imports torch: only now, so the other stages never wait for it)

    t0 = time.monotonic()
    jsonl = os.path.join(p.out, "bench.jsonl")
    named = p.args.bench_families.split(",") if p.args.bench_families else []
    # --bench-smoke: the smoke rows first, then only the families named with it
    fams = ["smoke"] + [f for f in named if f != "smoke"] if p.args.bench_smoke else (named or list(BENCH_FAMILIES))
    quick = p.args.quick or not p.gpu
    passed = failed = skipped = 0
    notes = []
    for fam in fams:
        before = _count_lines(jsonl)
        cmd = p.py(os.path.join(HERE, "run_all.py"), "--only", fam, "--jsonl", jsonl) + (["--quick"] if quick else [])
        r = p.step(f"bench: {fam}", cmd, p.timeout("bench" if p.gpu else "cpu"))
        if r["rc"] is None:  # killed or never started: say so in the results file
            results.append(jsonl, {"kind": "family", "bench": fam, "status": "failed" if r["wall"] else "skipped",
                                   "reason": (r["why"] + "; rows timed before that are kept"), "wall_s": r["wall"]})
        elif r["rc"] not in (0, 1):
            results.append(jsonl, {"kind": "family", "bench": fam, "status": "failed", "wall_s": r["wall"],
                                   "reason": f"process died (rc={r['rc']}); rows timed before that are kept"})
        new = [json.loads(x) for x in open(jsonl).read().splitlines()[before:] if x.strip()] if os.path.exists(jsonl) else []
        rows = [x for x in new if x.get("kind") == "row"]
        fam_failed = [x for x in new if x.get("kind") == "family" and x.get("status") == "failed"]
        c_ok = sum(1 for x in rows if x.get("status") == "ok")
        c_bad = sum(1 for x in rows if x.get("status") == "failed") + len(fam_failed)
        c_skip = sum(1 for x in rows if x.get("status") == "skipped") + (1 if r["rc"] is None and not r["wall"] else 0)
        if r["rc"] == 0 and not rows:
            c_bad += 1  # a family that ran and wrote nothing proves nothing
        passed, failed, skipped = passed + c_ok, failed + c_bad, skipped + c_skip
        notes.append(f"{fam} {c_ok}/{c_bad}/{c_skip} in {r['wall']:.0f} s")
        if os.path.exists(jsonl):
            results.render(jsonl)
    p.add("bench", _status(passed, failed, skipped), passed, failed, skipped, wall=time.monotonic() - t0,
          note=("quick CPU config; " if quick else "") + "rows ok/failed/skipped: " + ", ".join(notes))


# ---------------------------------------------------------------------- summary and checks
def expected_files(stages) -> list[str]:
    files = ["summary.md", "summary.json", "proof.log"]
    if "tests" in stages:
        files.append("tests.jsonl")
    if "bench" in stages:
        files += ["bench.jsonl", "bench.md"]
    return files


def finish(p: Proof, stages) -> int:
    missing = [f for f in expected_files(stages) if f not in ("summary.md", "summary.json")
               and not os.path.exists(os.path.join(p.out, f))]
    if missing:
        p.add("results", "failed", failed=len(missing), note=f"missing result files: {', '.join(missing)}")
    lines = ["| stage | status | passed | failed | skipped | wall s | note |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in p.results:
        note = r["note"].replace("|", "/")
        lines.append(f"| {r['stage']} | {r['status']} | {r['passed']} | {r['failed']} | {r['skipped']} "
                     f"| {r['wall_s']:.0f} | {note} |")
    if p.cache_steps:
        hits = sum(c["hits"] for c in p.cache_steps)
        misses = sum(c["misses"] for c in p.cache_steps)
        built = sum(c["launchers_built"] for c in p.cache_steps)
        lines += ["", f"Triton cache: {hits} hits, {misses} misses, {built} launchers built"
                      f"{' (' + p.cache_dir + ')' if p.cache_dir else ''}", "",
                  "| step | hits | misses | kernels compiled | launchers built |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {c['step']} | {c['hits']} | {c['misses']} | {c['kernels_compiled']} | {c['launchers_built']} |"
                  for c in p.cache_steps]
    table = "\n".join(lines)
    device = p.facts.get("device") or "no GPU"
    head = (f"gpu_proof on {device} (torch {p.facts.get('torch')}, triton {p.facts.get('triton')}, python "
            f"{p.facts.get('python')}, driver/GPU {p.facts.get('nvidia-smi')}, nvcc {p.facts.get('nvcc')}), "
            f"stages {','.join(stages)}")
    with open(os.path.join(p.out, "summary.md"), "w") as f:
        f.write(head + "\n\n" + table + "\n")
    with open(os.path.join(p.out, "summary.json"), "w") as f:
        json.dump({"stages": p.results, "facts": p.facts, "triton_cache": p.cache_steps,
                   "triton_env": {k: v for k, v in sorted(p.env.items()) if k.startswith("TRITON_")},
                   "argv": sys.argv}, f, indent=1, default=str)
    out_files = sorted(os.listdir(p.out))
    extra = [f for f in out_files if f not in expected_files(STAGES) + ["bench.png"]]
    if len(out_files) > 8 or extra:
        print(f"warning: {p.out} holds {len(out_files)} files ({', '.join(extra)} unexpected); "
              "the device tool returns 8 at most", flush=True)
    shutil.rmtree(p.work, ignore_errors=True)
    print("\n" + head + "\n\n" + table, flush=True)
    failed = [r["stage"] for r in p.results if r["status"] == "failed"]
    print(f"\n{'FAILED: ' + ', '.join(failed) if failed else 'all stages passed or skipped'}; results in {p.out}")
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for every result (at most 7 files)")
    ap.add_argument("--stages", help=f"comma-separated, of {','.join(STAGES)} (default: "
                                     f"{','.join(DEFAULT_STAGES)}, plus suite on a GPU)")
    ap.add_argument("--bench-families", help=f"comma-separated, of {','.join(BENCH_FAMILIES)} (default all)")
    ap.add_argument("--wheels", help="folder of .whl files to install offline (no deps) for the baselines")
    ap.add_argument("--build", choices=("inplace", "editable"), default="inplace",
                    help="inplace: setup.py build_ext --inplace; editable: pip install --no-build-isolation "
                         "--no-deps --no-index -e .")
    ap.add_argument("--deadline", type=float, default=540, help="seconds the whole run may take (default 540)")
    ap.add_argument("--quick", action="store_true", help="the quick bench configuration even on a GPU")
    ap.add_argument("--no-gpu", action="store_true", help="act as if no GPU were present")
    ap.add_argument("--tests-dir", default="tests", help="test folder (default tests)")
    ap.add_argument("--step-timeout", type=float, help="cap on every step's timeout in seconds")
    ap.add_argument("--triton-cache", metavar="ARCHIVE",
                    help="the Triton cache of bench/prebuild_device.py (.device/triton-cache.tar.gz; its "
                         "manifest and prebuilt extension beside it): checked, unpacked at its fixed path")
    ap.add_argument("--tests-workers", type=int, metavar="N",
                    help="run every cuda test in one pytest with N xdist workers (default: a process per family)")
    ap.add_argument("--bench-smoke", action="store_true",
                    help="bench the smoke rows (bench/smoke.py: one case per family vs eager torch), then only "
                         "the --bench-families named with it")
    ap.add_argument("--sanitizer", choices=("memcheck-combined", "racecheck"), dest="sanitizer_mode",
                    help="one compute-sanitizer process over every short case (default: memcheck per case "
                         "and racecheck of decode)")
    args = ap.parse_args(argv)
    stages = args.stages.split(",") if args.stages else None
    if stages is not None and args.triton_cache and "cache" not in stages:
        stages.append("cache")  # the archive is checked and unpacked whenever it is named
    unknown = [s for s in stages or () if s not in STAGES]
    if unknown:
        ap.error(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    import proof_tests  # the test stages (they use Proof and the helpers above)

    p = Proof(args)
    stage_env(p)
    if stages is None:
        stages = list(DEFAULT_STAGES) + (["suite"] if p.gpu else [])
    if args.tests_workers is not None and args.tests_workers < 1:
        ap.error(f"--tests-workers: expected a positive number of workers, got {args.tests_workers}")
    runners = {"cache": stage_cache, "wheels": stage_wheels, "build": stage_build, "info": stage_info, "tests": proof_tests.stage_tests,
               "sanitizer": proof_tests.stage_sanitizer, "bench": stage_bench, "suite": proof_tests.stage_suite}
    for name in STAGES[1:]:
        if name not in stages:
            continue
        try:
            runners[name](p)
        except Exception as e:  # a bug here must not cost the other stages their results
            import traceback

            p._log(traceback.format_exc())
            p.add(name, "failed", failed=1, note=f"gpu_proof error: {type(e).__name__}: {e}")
    return finish(p, ["env"] + [s for s in stages if s != "env"])


if __name__ == "__main__":
    sys.exit(main())
