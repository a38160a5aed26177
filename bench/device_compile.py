"""Compiles traced Triton variants into a Triton cache with the GPU machine's exact Triton,
launchers included, and checks in a fresh process that every one of them is a hit.

    PY312 bench/device_compile.py compile --variants variants.json --cache-dir DIR [--jobs N]
    PY312 bench/device_compile.py check   --variants variants.json --cache-dir DIR
    PY bench/device_compile.py facts                       # this Triton's key inputs, as JSON

Run by bench/prebuild_device.py with a Python 3.12 that has the cp312 triton==3.6.0 wheel and
no torch. Triton's cache key holds the wheel itself (libtriton.so and its Python files), the
bundled ptxas, the kernel source and its specialisation, the options and the TRITON_*
variables that change code; its group files name their members by absolute path. So the
cache is compiled here by the same wheel and Python as the GPU machine's, into the folder it
will be unpacked to there. The kernel modules import torch at module level for their
launchers; a stand-in module answers those imports, and each variant's source hash is checked
against the one traced with the real torch (a kernel whose code depended on torch would be
refused, not cached under a key the GPU never asks for).

The launchers (`__triton_launcher` per signature, `cuda_utils` once) are C extensions Triton
builds with gcc on first use, keyed by their C source and the platform. They are built here
against a stand-in libcuda.so.1 that carries only the soname (on the GPU machine the real
driver library satisfies it) and not loaded, since nothing here can load the driver.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = ("cuda", 90, 32)


# ---------------------------------------------------------------------- the Triton key inputs
def triton_facts() -> dict:
    """What Triton's cache keys depend on besides the kernels: the wheel (libtriton.so's
    sha256, triton_key()), the bundled ptxas and the variables that change code. Needs no GPU
    and no torch; gpu_proof runs it on the GPU machine to compare with the manifest."""
    import triton
    from triton._C.libtriton import get_cache_invalidating_env_vars
    from triton.runtime.cache import triton_key

    lib = os.path.join(os.path.dirname(triton.__file__), "_C", "libtriton.so")
    h = hashlib.sha256()
    with open(lib, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    try:
        from triton.backends.nvidia.compiler import get_ptxas_version

        ptxas = get_ptxas_version(TARGET[1])
    except Exception as e:  # reported, not fatal: the key check below still compares the rest
        ptxas = f"unknown ({type(e).__name__}: {e})"
    return {"triton": triton.__version__, "python": ".".join(map(str, sys.version_info[:2])),
            "libtriton_sha256": h.hexdigest(), "triton_key_sha256": hashlib.sha256(triton_key().encode()).hexdigest(),
            "ptxas": ptxas, "key_env": get_cache_invalidating_env_vars(),
            "triton_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("TRITON_")}}


# ---------------------------------------------------------------------- torch stand-in
class _Any:
    """Stands for any torch object at import time: attribute, call, index, decorator, base class.
    False in a test and empty when iterated, so import-time branches take their plain path."""

    def __init__(self, name="torch"):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Any(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        return _Any(f"{self._name}()")

    def __getitem__(self, key):
        return _Any(f"{self._name}[]")

    def __mro_entries__(self, bases):
        return (object,)

    def __bool__(self):
        return False

    def __iter__(self):
        return iter(())

    def __or__(self, other):
        return self

    __ror__ = __or__

    def __repr__(self):
        return f"<torch stand-in {self._name}>"


class _StubModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Any(f"{self.__name__}.{attr}")


class _TorchStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def _import_kernels(variants) -> dict:
    """{(module, kernel): JITFunction} for every kernel the variants name."""
    import importlib

    try:
        import torch  # noqa: F401
    except ImportError:
        sys.meta_path.insert(0, _TorchStandIn())
    sys.path.insert(0, ROOT)
    kernels = {}
    for v in variants:
        key = (v["module"], v["kernel"])
        if key not in kernels:
            kernels[key] = getattr(importlib.import_module(v["module"]), v["kernel"])
    return kernels


def _tuples(value):
    """JSON gave lists where Triton's options hold tuples (hashed as such)."""
    return tuple(_tuples(x) for x in value) if isinstance(value, list) else value


def _options(v) -> dict:
    return {k: _tuples(val) for k, val in v["options"].items()}


def _source(v, kernels):
    from triton.compiler import ASTSource

    return ASTSource(fn=kernels[(v["module"], v["kernel"])], signature=v["signature"],
                     constexprs={tuple(p): val for p, val in v["constexprs"]},
                     attrs={tuple(p): a for p, a in v["attrs"]})


# ---------------------------------------------------------------------- launchers without a driver
def _stub_libcuda(folder: str) -> str:
    """A libcuda.so.1 with the driver's soname and nothing else, for the launchers' link step."""
    src = os.path.join(folder, "empty.c")
    with open(src, "w") as f:
        f.write("/* link-time stand-in for the CUDA driver library */\n")
    subprocess.check_call(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                           os.path.join(folder, "libcuda.so.1"), src])
    return folder


def _build_without_loading():
    """Triton's compile_module_from_src, minus the load of the built module (it would need the
    driver). Returns the list that records each module built (a launcher cache miss)."""
    import triton.runtime.build as build

    built = []
    real_build = build._build

    def _build(name, *args, **kwargs):
        built.append(name)
        return real_build(name, *args, **kwargs)

    build._build = _build
    build._load_module_from_path = lambda name, path: types.SimpleNamespace(__file__=path)
    return built


def _launchers(compiled_kernels) -> None:
    from triton.backends.nvidia import driver as nv

    # CudaUtils.__init__ without the load
    from pathlib import Path

    from triton.runtime.build import compile_module_from_src

    compile_module_from_src(src=Path(os.path.join(nv.dirname, "driver.c")).read_text(), name="cuda_utils",
                            library_dirs=nv.library_dirs(), include_dirs=nv.include_dirs, libraries=nv.libraries)
    for ck in compiled_kernels:
        # CudaLauncher.__init__ builds the module, then reads attributes of it: only the build matters
        try:
            nv.CudaLauncher(ck.src, ck.metadata)
        except AttributeError:
            pass


# ---------------------------------------------------------------------- compile / check
def _compile_one(args):
    i, v = args
    import triton
    from triton.backends.compiler import GPUTarget

    src = _source(v, _KERNELS)
    if src.hash() != v["src_hash"]:
        return i, None, (f"{v['label']}: source hash {src.hash()[:12]} here, {v['src_hash'][:12]} where traced "
                         "(the kernel depends on something the torch stand-in changes)")
    t0 = time.perf_counter()
    try:
        ck = triton.compile(src, target=GPUTarget(*TARGET), options=_options(v))
        _launchers([ck])
    except Exception as e:
        return i, None, f"{v['label']}: {type(e).__name__}: {str(e)[:500]}"
    return i, time.perf_counter() - t0, None


_KERNELS: dict = {}


def compile_all(variants, jobs: int) -> dict:
    global _KERNELS
    _KERNELS = _import_kernels(variants)
    t0 = time.perf_counter()
    errors, seconds = [], []
    work = list(enumerate(variants))
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_compile_one, work, chunksize=1)
    else:
        results = [_compile_one(w) for w in work]
    for _i, s, err in results:
        if err:
            errors.append(err)
        else:
            seconds.append(s)
    return {"compiled": len(seconds), "errors": errors, "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(sum(seconds), 1)}


def check_all(variants) -> dict:
    """Looks every variant up as the JIT would, in this (fresh) process: hits and misses of
    the kernels (Triton's compilation listener) and of their launchers (a build is a miss)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget

    kernels = _import_kernels(variants)
    built = _build_without_loading()
    events = []
    knobs.compilation.listener = lambda **kw: events.append(bool(kw.get("cache_hit")))
    compiled, missed = [], []
    for v in variants:
        n_before = len(events)
        ck = triton.compile(_source(v, kernels), target=GPUTarget(*TARGET), options=_options(v))
        if not all(events[n_before:]):
            missed.append(v["label"])
        compiled.append(ck)
    n_built = len(built)
    _launchers(compiled)
    launcher_misses = len(built) - n_built
    return {"variants": len(variants), "hits": sum(events), "misses": len(events) - sum(events),
            "missed": missed, "launcher_misses": launcher_misses}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("compile", "check", "facts"))
    ap.add_argument("--variants", help="JSON written by bench/device_variants.py")
    ap.add_argument("--cache-dir", help="the Triton cache folder (the fixed path it is unpacked to on the GPU)")
    ap.add_argument("--jobs", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    args = ap.parse_args(argv)
    if args.mode == "facts":
        print(json.dumps(triton_facts()))
        return 0
    if not (args.variants and args.cache_dir):
        ap.error("compile and check need --variants and --cache-dir")
    if os.path.abspath(os.environ.get("TRITON_CACHE_DIR", "")) != os.path.abspath(args.cache_dir):
        ap.error(f"--cache-dir {args.cache_dir}: set TRITON_CACHE_DIR to the same folder before Python starts "
                 f"(it is {os.environ.get('TRITON_CACHE_DIR')!r}); Triton reads it once")
    with open(args.variants) as f:
        variants = json.load(f)["variants"]
    with tempfile.TemporaryDirectory() as stub:
        os.environ["TRITON_LIBCUDA_PATH"] = _stub_libcuda(stub)
        if args.mode == "compile":
            _build_without_loading()
            report = compile_all(variants, args.jobs)
        else:
            report = check_all(variants)
    report["facts"] = triton_facts()
    print("DEVICE_COMPILE " + json.dumps(report))
    bad = report.get("errors") or report.get("misses") or report.get("launcher_misses")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
