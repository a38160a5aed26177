"""Prepares, on a CPU machine, what one GPU proof call needs so that no device time goes to
building: the extension for the GPU machine's Python and a warm Triton cache.

    python bench/prebuild_device.py                 # writes .device/ (git-ignored), ~5-10 min on 2 cores
    python bench/prebuild_device.py --quick         # two small variants (the CI rehearsal)
    python bench/prebuild_device.py --verify        # is .device/ still current for this checkout?

Run it with a Python that has torch and triton==3.6.0 (CI's GPU-image venv, or any venv with
`pip install triton==3.6.0 "numpy<2.4"` beside torch): that Python traces the variants. It
writes into `.device/`:

  _C.cpython-312-x86_64-linux-gnu.so   s1kernels._C for CPython 3.12 (the GPU machine's
                                       Python), CUDA kernels for sm_90a, built with
                                       `S1K_CUDA=1 setup.py build_ext` by the 3.12 venv
  triton-cache.tar.gz                  every Triton variant bench/gpu_proof.py launches (cuda
                                       tests, sanitizer cases, smoke rows, benchmark sizes),
                                       compiled for GPUTarget("cuda", 90, 32) by the cp312
                                       triton==3.6.0 wheel, launchers included, trimmed to
                                       what a cache hit reads (metadata and cubin)
  variants.json                        what was traced (bench/device_variants.py)
  manifest.json                        the source digests, the Triton wheel's hashes and key
                                       variables, the fixed cache path, variant counts, sizes

The Python 3.12 side lives in its own venv (--venv312, default build/venv312 in the checkout: pybind11,
the cp312 triton==3.6.0 wheel, numpy<2.4, no torch), made from --python312 (pyenv's 3.12)
when missing. The cache is compiled into --cache-dir, an absolute path fixed in Triton's group
files; gpu_proof.py --triton-cache unpacks it at the same path. `--verify` (and gpu_proof)
refuse with StalePrebuild, naming the files, when the sources changed after the build.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEVICE_DIR = os.path.join(ROOT, ".device")
CACHE_DIR = "/tmp/s1k-triton-cache"  # the same absolute path here and on the GPU machine
ARCHIVE = "triton-cache.tar.gz"
MANIFEST = "manifest.json"
EXT_312 = "_C.cpython-312-x86_64-linux-gnu.so"
MAX_BYTES = 16 * 2**20  # what .device/ may weigh: it travels with every device call
# The environment every step of the proof runs with (gpu_proof.py exports it); the keys are
# made with it. TRITON_DEFAULT_FP_FUSION=1 is what tests/conftest.py sets.
PROOF_TRITON_ENV = {"TRITON_DEFAULT_FP_FUSION": "1"}
# What the extension and the Triton kernels are built from: a change to any of these after
# the build makes .device/ stale.
SOURCE_PATTERNS = ("setup.py", "csrc/**/*", "python/**/*", "s1kernels/native_sources.py", "s1kernels/backend.py",
                   "s1kernels/ops/**/*.py")


class StalePrebuild(RuntimeError):
    """.device/ was built from other sources, or is missing."""


# ---------------------------------------------------------------------- sources and manifest
def source_files(root: str = ROOT) -> dict[str, str]:
    """{relative path: sha256} of every file the prebuild depends on."""
    files = {}
    for pattern in SOURCE_PATTERNS:
        for path in glob.glob(os.path.join(root, pattern), recursive=True):
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if os.path.isfile(path) and "__pycache__" not in rel and not rel.endswith((".so", ".pyc", ".o")):
                with open(path, "rb") as f:
                    files[rel] = hashlib.sha256(f.read()).hexdigest()
    return dict(sorted(files.items()))


def digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def load_manifest(device_dir: str) -> dict:
    path = os.path.join(device_dir, MANIFEST)
    if not os.path.exists(path):
        raise StalePrebuild(f"no prebuild: {path} is missing (make it with `python bench/prebuild_device.py`)")
    with open(path) as f:
        return json.load(f)


def check_current(manifest: dict, root: str = ROOT) -> None:
    """Raises StalePrebuild naming every file added, removed or changed since the prebuild."""
    now, then = source_files(root), manifest["sources"]["files"]
    changed = sorted(f for f in set(now) | set(then) if now.get(f) != then.get(f))
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise StalePrebuild(f"stale prebuild: {len(changed)} source file(s) changed since .device/ was built "
                            f"({manifest.get('created')}): {shown}; run `python bench/prebuild_device.py` again")


# ---------------------------------------------------------------------- the steps
def run(cmd, env=None, cwd=ROOT, what="") -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = round(time.monotonic() - t0, 1)
    if proc.returncode != 0:
        raise SystemExit(f"prebuild_device: {what or cmd[0]} failed (rc={proc.returncode}):\n"
                         f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout, wall


def pyenv_python312() -> str:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "3.12.*", "bin", "python")))
    return found[-1] if found else shutil.which("python3.12") or ""


def ensure_venv312(venv: str, python312: str) -> str:
    """The 3.12 venv's python, made (pybind11, the cp312 triton==3.6.0 wheel, numpy<2.4) when missing."""
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        if not python312 or not os.path.exists(python312):
            raise SystemExit(f"prebuild_device: no Python 3.12 interpreter (--python312, got {python312!r}); "
                             "pyenv's is $(pyenv root)/versions/3.12.*/bin/python")
        run([python312, "-m", "venv", venv], what="python3.12 -m venv")
        run([py, "-m", "pip", "install", "-q", "triton==3.6.0", "numpy<2.4", "pybind11", "setuptools", "wheel"],
            what="pip install into the 3.12 venv")
    out, _ = run([py, "-c", "import sys, triton; print(sys.version_info[:2], triton.__version__)"],
                 what="the 3.12 venv")
    if "(3, 12)" not in out or "3.6.0" not in out:
        raise SystemExit(f"prebuild_device: {py} must be Python 3.12 with triton==3.6.0, it says {out.strip()}")
    return py


def start_build_312(py: str, work: str) -> tuple[subprocess.Popen, str]:
    """Starts `S1K_CUDA=1 setup.py build_ext` for 3.12 in the background (it overlaps the
    Triton work); the module lands in work/lib."""
    env = dict(os.environ, S1K_CUDA=os.environ.get("S1K_CUDA", "1"))
    log = open(os.path.join(work, "build312.log"), "w")
    proc = subprocess.Popen([py, "setup.py", "-q", "build_ext", "--build-lib", os.path.join(work, "lib"),
                             "--build-temp", os.path.join(work, "tmp")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, log.name


LOAD_PROBE = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("s1kernels._C", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(mod.source_digest, bool(mod.cuda_compiled))
"""


def check_extension(py312: str, path: str) -> None:
    """The 3.12 module loads in 3.12 (no torch needed: it does not link libtorch), was built
    from these native sources and has the CUDA kernels."""
    spec = importlib.util.spec_from_file_location("_s1k_sources", os.path.join(ROOT, "s1kernels", "native_sources.py"))
    sources = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sources)
    out, _ = run([py312, "-c", LOAD_PROBE, path], what="loading the 3.12 extension")
    got_digest, cuda = out.split()
    if got_digest != sources.source_digest(ROOT) or cuda != "True":
        raise SystemExit(f"prebuild_device: the 3.12 extension reports digest {got_digest} (sources: "
                         f"{sources.source_digest(ROOT)}) and CUDA compiled {cuda}; set CUDA_HOME so nvcc is found")


def triton_env(cache_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
    env.update(PROOF_TRITON_ENV, TRITON_CACHE_DIR=cache_dir)
    return env


def trim(cache_dir: str) -> int:
    """Keeps what a cache hit reads: each group's metadata .json and .cubin (group files
    rewritten to list only those) and the launcher modules. Returns the bytes removed."""
    removed = 0
    for group in glob.glob(os.path.join(cache_dir, "*", "__grp__*.json")):
        with open(group) as f:
            children = json.load(f)["child_paths"]
        kept = {c: p for c, p in children.items() if c.endswith((".json", ".cubin"))}
        for c, p in children.items():
            if c not in kept and os.path.exists(p):
                removed += os.path.getsize(p)
                os.remove(p)
        with open(group, "w") as f:
            json.dump({"child_paths": kept}, f)
    return removed


def pack(cache_dir: str, archive: str) -> None:
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        for name in sorted(os.listdir(cache_dir)):
            tar.add(os.path.join(cache_dir, name), arcname=name)


def unpack(archive: str, cache_dir: str) -> int:
    """Replaces cache_dir by the archive's content; returns the number of files."""
    if os.path.exists(cache_dir):
        shutil.rmtree(cache_dir)
    os.makedirs(cache_dir)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            if m.name.startswith(("/", "..")) or ".." in m.name.split("/") or not (m.isfile() or m.isdir()):
                raise StalePrebuild(f"{archive}: unexpected member {m.name!r}")
        tar.extractall(cache_dir)
    return sum(1 for m in members if m.isfile())


def tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def prebuild(args) -> dict:
    t_all = time.monotonic()
    out = os.path.abspath(args.out)
    times = {}
    import triton

    if not triton.__version__.startswith("3.6"):
        raise SystemExit(f"prebuild_device: run with a Python that has torch and triton==3.6.0 (this one has "
                         f"Triton {triton.__version__}); it traces the variants with the GPU machine's binder")
    t0 = time.monotonic()
    py312 = ensure_venv312(args.venv312, args.python312)
    times["venv312_s"] = round(time.monotonic() - t0, 1)
    work = tempfile.mkdtemp(prefix="s1k-prebuild-")
    try:
        build = None
        if not args.no_extension:
            build, build_log = start_build_312(py312, work)
            t_build = time.monotonic()
        variants = os.path.join(work, "variants.json")
        env = triton_env(args.cache_dir)
        trace_cmd = [sys.executable, os.path.join(HERE, "device_variants.py"), "--out", variants]
        _, times["trace_s"] = run(trace_cmd + (["--quick"] if args.quick else []), env=env, what="tracing the variants")
        if os.path.exists(args.cache_dir):
            shutil.rmtree(args.cache_dir)
        compile_cmd = [py312, os.path.join(HERE, "device_compile.py"), "compile", "--variants", variants,
                       "--cache-dir", args.cache_dir, "--jobs", str(args.jobs)]
        stdout, times["compile_s"] = run(compile_cmd, env=env, what="compiling with the cp312 Triton")
        report = json.loads(stdout.split("DEVICE_COMPILE ", 1)[1])
        untrimmed = tree_bytes(args.cache_dir)
        trim(args.cache_dir)
        # a fresh process, as the GPU machine's will be: every variant and launcher must hit
        stdout, times["check_s"] = run([py312, os.path.join(HERE, "device_compile.py"), "check", "--variants",
                                        variants, "--cache-dir", args.cache_dir], env=env,
                                       what="the cache check (a variant missed)")
        check = json.loads(stdout.split("DEVICE_COMPILE ", 1)[1])
        ext_bytes = 0
        if build is not None:
            rc = build.wait()
            times["build_312_s"] = round(time.monotonic() - t_build, 1)
            built = glob.glob(os.path.join(work, "lib", "s1kernels", "_C.cpython-312*.so"))
            if rc != 0 or not built:
                raise SystemExit(f"prebuild_device: the 3.12 build failed (rc={rc}):\n{open(build_log).read()[-4000:]}")
        if build is not None:
            check_extension(py312, built[0])
        os.makedirs(out, exist_ok=True)
        for stale in (EXT_312, ARCHIVE, MANIFEST, "variants.json"):
            if os.path.exists(os.path.join(out, stale)):
                os.remove(os.path.join(out, stale))
        if build is not None:
            shutil.copy2(built[0], os.path.join(out, EXT_312))
            ext_bytes = os.path.getsize(os.path.join(out, EXT_312))
        t0 = time.monotonic()
        pack(args.cache_dir, os.path.join(out, ARCHIVE))
        times["pack_s"] = round(time.monotonic() - t0, 1)
        shutil.copy2(variants, os.path.join(out, "variants.json"))
        files = source_files()
        manifest = {
            "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "quick": bool(args.quick),
            "sources": {"digest": digest(files), "files": files},
            "extension": {"file": EXT_312, "bytes": ext_bytes, "python": "3.12", "cuda": "sm_90a"}
            if build is not None else None,
            "triton": {**check["facts"], "proof_env": PROOF_TRITON_ENV},
            "cache": {"dir": args.cache_dir, "archive": ARCHIVE, "variants": check["variants"],
                      "kernels": sorted({v["kernel"] for v in json.load(open(variants))["variants"]}),
                      "launchers": len(glob.glob(os.path.join(args.cache_dir, "*", "__triton_launcher*.so"))),
                      "bytes_untrimmed": untrimmed, "bytes_trimmed": tree_bytes(args.cache_dir),
                      "archive_bytes": os.path.getsize(os.path.join(out, ARCHIVE)),
                      "check": {k: check[k] for k in ("hits", "misses", "launcher_misses")},
                      "compile_cpu_s": report["cpu_s"]},
            "times_s": times,
        }
        with open(os.path.join(out, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
        total = tree_bytes(out)
        manifest["device_dir_bytes"] = total
        manifest["times_s"]["total_s"] = round(time.monotonic() - t_all, 1)
        with open(os.path.join(out, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
        if total > MAX_BYTES:
            raise SystemExit(f"prebuild_device: {out} holds {total / 2**20:.1f} MiB, over the "
                             f"{MAX_BYTES / 2**20:.0f} MiB it may carry")
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEVICE_DIR, help="output folder (default .device/, git-ignored)")
    ap.add_argument("--cache-dir", default=CACHE_DIR, help=f"absolute Triton cache path, here and on the GPU "
                                                           f"(default {CACHE_DIR})")
    ap.add_argument("--venv312", default=os.path.join(ROOT, "build", "venv312"), help="the Python 3.12 venv (made when missing; default build/venv312)")
    ap.add_argument("--python312", default=pyenv_python312(), help="Python 3.12 interpreter for a new venv")
    ap.add_argument("--quick", action="store_true", help="two small variants instead of every one")
    ap.add_argument("--no-extension", action="store_true", help="the Triton cache only")
    ap.add_argument("--jobs", type=int, default=max(1, min(8, os.cpu_count() or 1)), help="parallel compiles")
    ap.add_argument("--verify", action="store_true", help="only check that --out is current for this checkout")
    args = ap.parse_args(argv)
    if args.verify:
        try:
            m = load_manifest(args.out)
            check_current(m)
        except StalePrebuild as e:
            print(f"StalePrebuild: {e}", file=sys.stderr)
            return 1
        print(f"{args.out} is current: {m['cache']['variants']} variants, built {m['created']}")
        return 0
    if not os.path.isabs(args.cache_dir):
        ap.error(f"--cache-dir must be an absolute path (Triton's group files hold it), got {args.cache_dir!r}")
    m = prebuild(args)
    c = m["cache"]
    print(f"wrote {args.out}: {c['variants']} variants ({c['launchers']} launchers), cache "
          f"{c['bytes_untrimmed'] / 2**20:.1f} MiB -> trimmed {c['bytes_trimmed'] / 2**20:.1f} MiB -> archive "
          f"{c['archive_bytes'] / 2**20:.1f} MiB; extension {(m['extension'] or {}).get('bytes', 0) / 2**20:.1f} MiB; "
          f"{m['device_dir_bytes'] / 2**20:.1f} MiB in all; fresh-process check {c['check']}; "
          f"times {m['times_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
