"""Builds s1kernels._C: the CPU twins always, the CUDA kernels when nvcc is found.

The extension does not link libtorch: Python passes raw pointers, sizes and the CUDA
stream, so one build serves every torch version and the build needs only pybind11.

Environment:
  S1K_CUDA        auto (default: build CUDA when nvcc is found) | 0 | 1 (nvcc required)
  S1K_CUDA_ARCHS  semicolon/comma separated arch list, default "90a"
  CUDA_HOME       where to find nvcc (else PATH, else /usr/local/cuda)
"""
import glob
import importlib.util
import os
import shutil
import subprocess
import sys

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load(name, *path):
    """A module of the package loaded by path (no torch import)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, *path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and NamedTuple look their module up
    spec.loader.exec_module(mod)
    return mod


def source_digest():
    """The fingerprint s1kernels/native_sources.py computes."""
    return _load("_s1k_sources", "s1kernels", "native_sources.py").source_digest(ROOT)


def write_decode_fields():
    """csrc/include/s1k/decode_fields.h from the decode step's field table, before anything
    compiles, so the C++ struct and the bindings are always built from the table."""
    fields = _load("_s1k_decode_fields", "s1kernels", "ops", "decode", "fields.py")
    path = os.path.join(ROOT, fields.HEADER)
    text = fields.header_text()
    current = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            current = f.read()
    if current != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {fields.HEADER} from s1kernels/ops/decode/fields.py", flush=True)


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda/bin/nvcc"
    return None


def cudart_dir(nvcc):
    """The folder holding libcudart_static.a for this nvcc. nvcc on PATH may be a wrapper
    script (so its realpath says nothing), hence nvcc's own report of its install (TOP)."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "probe.cu", "-o", "probe.o"], capture_output=True, text=True).stderr
        homes += [line.split("=", 1)[1].strip() for line in out.splitlines() if line.startswith("#$ TOP=")]
    except OSError:
        pass
    homes += [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    for home in filter(None, homes):
        for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"),
                    os.path.join("targets", "sbsa-linux", "lib")):
            if os.path.exists(os.path.join(home, sub, "libcudart_static.a")):
                return os.path.normpath(os.path.join(home, sub))
    sys.exit(f"nvcc found at {nvcc} but libcudart_static.a was not found under {[h for h in homes if h]}; "
             "set CUDA_HOME to the CUDA toolkit, or S1K_CUDA=0 to build without CUDA")


def cuda_wanted():
    mode = os.environ.get("S1K_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"S1K_CUDA must be auto, 0 or 1, got {mode!r}")
    nvcc = find_nvcc()
    if mode == "1" and nvcc is None:
        sys.exit("S1K_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
    return (mode != "0" and nvcc is not None), nvcc


def cuda_archs():
    raw = os.environ.get("S1K_CUDA_ARCHS", "90a")
    archs = [a.strip().replace("sm_", "").replace(".", "") for a in raw.replace(";", ",").split(",")]
    return [a for a in archs if a]


class BuildExt(build_ext):
    """Compiles .cu sources with nvcc into objects the C++ link step picks up."""

    def build_extensions(self):
        use_cuda, nvcc = cuda_wanted()
        for ext in self.extensions:
            cu_sources = [s for s in ext.sources if s.endswith(".cu")]
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            if use_cuda and cu_sources:
                objects = self.compile_cuda(nvcc, cu_sources, ext)
                ext.extra_objects = list(ext.extra_objects or []) + objects
                ext.library_dirs = list(ext.library_dirs or []) + [cudart_dir(nvcc)]
                ext.libraries = list(ext.libraries or []) + ["cudart_static", "rt", "pthread", "dl"]
                # The arch list goes into the module so the runtime can refuse a GPU that has
                # no kernel image (the build embeds SASS only, no PTX).
                ext.define_macros = list(ext.define_macros or []) + [
                    ("S1K_WITH_CUDA", "1"), ("S1K_CUDA_ARCHS", '"%s"' % ",".join(cuda_archs()))]
        super().build_extensions()

    def compile_cuda(self, nvcc, sources, ext):
        out_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(out_dir, exist_ok=True)
        gencode = []
        for arch in cuda_archs():
            gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        includes = [f"-I{d}" for d in ext.include_dirs]
        objects = []
        for src in sources:
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "--use_fast_math",
                   "-Xcompiler", "-fPIC", "-DS1K_WITH_CUDA=1", *gencode, *includes]
            print(" ".join(cmd), flush=True)
            subprocess.check_call(cmd)
            objects.append(obj)
        return objects


write_decode_fields()
sources = sorted(glob.glob("python/*.cpp")) + sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/*.cu"))

setup(
    ext_modules=[
        Pybind11Extension(
            "s1kernels._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc", "include")],
            define_macros=[("S1K_SOURCE_DIGEST", '"%s"' % source_digest())],
            cxx_std=17,
            # -ffp-contract=off: a * b + c rounds twice, as torch computes it (the CPU RoPE matches it bit for bit)
            extra_compile_args=["-O3", "-pthread", "-ffp-contract=off"],
            extra_link_args=["-pthread"],  # the CPU top-k folds rows on std::thread workers
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
