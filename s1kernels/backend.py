"""Which backends exist on this machine, and the `backend=` dispatch every op shares.

Backends: "cuda" (the compiled extension s1kernels._C with its CUDA kernels), "triton"
(Triton kernels: on a GPU, or on CPU under TRITON_INTERPRET=1), "cpp" (the extension's
CPU twins) and "torch" (the readable reference, always present).
"""
from __future__ import annotations

import functools
import importlib
import os

import torch
from s1kernels import checks

BACKENDS = ("auto", "cuda", "triton", "cpp", "torch")

# Multiprocessors of the H100 SXM: what launchers assume on a meta device (the offline
# compile check in s1kernels.ops.triton_compile imitates that GPU).
H100_SMS = 132


def _installed_build_for_checkout() -> str:
    """Loads the installed s1kernels._C for a source checkout that has none; '' on success,
    else why not.

    `pip install .` then `python -m s1kernels.<cli>` from the repository root imports the
    checkout (the current folder comes first on sys.path), which holds no compiled module;
    the installed one next door is used when it was built from the very same native sources.
    """
    import importlib.metadata
    import importlib.util
    import sys

    from s1kernels.native_sources import source_digest

    package_dir = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.dirname(package_dir)
    digest = source_digest(checkout)
    if digest is None:
        return "not a source checkout"
    # Every s1kernels on sys.path: the checkout's own build metadata (s1kernels.egg-info) may
    # come first and lists no compiled file.
    dists = list(importlib.metadata.distributions(name="s1kernels"))
    if not dists:
        return "s1kernels is not installed: build it with pip install -e . (or pip install .)"
    built = [f for dist in dists for f in dist.files or []
             if f.parts[:1] == ("s1kernels",) and f.name.startswith("_C.") and f.name.endswith((".so", ".pyd"))]
    if not built:
        return "the installed s1kernels has no compiled extension"
    path = os.path.abspath(built[0].locate())
    if os.path.dirname(path) == package_dir:
        return "the extension in this checkout failed to import"
    spec = importlib.util.spec_from_file_location("s1kernels._C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if getattr(module, "source_digest", None) != digest:
        return (f"the installed extension {path} was built from other sources than this checkout "
                f"({checkout}); rebuild with pip install -e .")
    sys.modules["s1kernels._C"] = module
    return ""


@functools.lru_cache(maxsize=None)
def _load_native() -> tuple[object, str]:
    try:
        return importlib.import_module("s1kernels._C"), ""
    except ImportError as e:
        first = str(e)
    try:
        why = _installed_build_for_checkout()
    except (ImportError, OSError) as e:
        why = f"{type(e).__name__}: {e}"
    if not why:
        return importlib.import_module("s1kernels._C"), ""
    return None, f"{first} ({why})"


def native():
    """The compiled extension module, or None when it could not be imported."""
    return _load_native()[0]


def _native_error() -> str:
    return _load_native()[1]


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def triton_usable(device: torch.device) -> bool:
    """Triton runs on CUDA tensors, or on CPU tensors in the interpreter."""
    if triton_version() is None:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and triton_interpret()


def arch_supported(capability: tuple[int, int], archs: str) -> bool:
    """Whether a build for `archs` ("90a", "80,90a") has a kernel image for a GPU of this
    compute capability: an "a" arch runs only on its exact capability, a plain one on the
    same major version at that minor or later (no PTX is embedded to JIT elsewhere)."""
    major, minor = capability
    for arch in filter(None, (a.strip() for a in archs.split(","))):
        exact = arch.endswith("a")
        a_major, a_minor = int(arch.rstrip("a")[:-1]), int(arch.rstrip("a")[-1])
        if a_major == major and (a_minor == minor if exact else a_minor <= minor):
            return True
    return False


def cuda_usable(device: torch.device) -> bool:
    mod = native()
    if device.type != "cuda" or mod is None or not mod.cuda_compiled:
        return False
    return arch_supported(torch.cuda.get_device_capability(device), mod.cuda_archs)


def cpp_usable(device: torch.device) -> bool:
    return device.type == "cpu" and native() is not None


# Each kernel family's implementations, fastest first; "torch" is always last and always
# usable. For the loss "torch" is the chunked torch path (the plain oracle that materialises
# every logit is linear_cross_entropy_reference, never a backend); for similarity the chunked
# top-k; for decode the vectorised reference. Attention implementations (flash_attn,
# torch_varlen, sdpa_mask, sdpa_loop) are a model option, not a kernel backend: see
# s1kernels.model.attention and docs/backends.md.
FAMILIES = {
    "loss": ("triton", "torch"),
    "similarity": ("triton", "cpp", "torch"),
    "decode": ("cuda", "cpp", "torch"),
}
_OPS = {"loss": "linear_cross_entropy", "similarity": "topk_similarity", "decode": "decode_step"}


def _device_of(tensors) -> torch.device:
    if isinstance(tensors, torch.device):
        return tensors
    if isinstance(tensors, torch.Tensor):
        return tensors.device
    if isinstance(tensors, (list, tuple)) and tensors:
        return _device_of(tensors[0])
    return torch.device(tensors)


def resolve(family: str, requested: str, tensors, op: str | None = None) -> str:
    """The one backend chooser: `requested` ("auto" | "cuda" | "triton" | "cpp" | "torch")
    for an op of `family` (a key of FAMILIES) on the device of `tensors` (a tensor, a list
    of tensors or a device).

    "auto" takes the first implementation of the family that is usable there (the Triton
    interpreter is never chosen on a CPU: it is a correctness tool); an explicit choice the
    family lacks, or that cannot run on that device, raises ValueError naming what exists.
    """
    if family not in FAMILIES:
        raise checks.argument_error("family", f"one of {tuple(FAMILIES)}", repr(family))
    available = FAMILIES[family]
    op = op or _OPS[family]
    device = _device_of(tensors)
    if requested not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {requested!r}")
    usable = {
        "cuda": cuda_usable,
        "triton": triton_usable,
        "cpp": cpp_usable,
        "torch": lambda d: True,
    }
    if requested == "auto":
        for name in available:
            if name == "triton" and device.type == "cpu":
                continue
            if usable[name](device):
                return name
        return "torch"
    if requested not in available:
        raise ValueError(f"{op}: backend {requested!r} is not implemented; choose from {('auto',) + available}")
    if not usable[requested](device):
        raise ValueError(f"{op}: backend {requested!r} is not usable for tensors on {device} ({why_not(requested)})")
    return requested


def why_not(backend: str) -> str:
    if backend == "cuda":
        if native() is None:
            return f"extension not importable: {_native_error()}"
        if not native().cuda_compiled:
            return "extension built without CUDA (no nvcc at build time, or S1K_CUDA=0)"
        if not torch.cuda.is_available():
            return "no CUDA device visible to torch"
        cap = torch.cuda.get_device_capability()
        if not arch_supported(cap, native().cuda_archs):
            return (f"the extension was built for sm_{native().cuda_archs} but this GPU is sm_{cap[0]}{cap[1]}: "
                    f"rebuild with S1K_CUDA_ARCHS={cap[0]}{cap[1]}")
        return "available"
    if backend == "triton":
        if triton_version() is None:
            return "triton is not installed"
        if not torch.cuda.is_available():
            return "no CUDA device: Triton runs on CPU only under TRITON_INTERPRET=1" + (
                " (set)" if triton_interpret() else " (not set)")
        return "available"
    if backend == "cpp":
        return "available" if native() is not None else f"extension not importable: {_native_error()}"
    return "available"


def info() -> dict:
    """What this installation can run, and why not where it cannot."""
    mod = native()
    report = {
        "torch": torch.__version__,
        "triton": triton_version(),
        "extension": mod is not None,
        "extension_cuda_compiled": bool(mod.cuda_compiled) if mod is not None else False,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "backends": {},
    }
    cuda_dev = torch.device("cuda") if torch.cuda.is_available() else None
    for name in ("cuda", "triton", "cpp", "torch"):
        if name == "cpp":
            ok = cpp_usable(torch.device("cpu"))
        elif name == "torch":
            ok = True
        elif name == "triton":
            ok = (cuda_dev is not None and triton_usable(cuda_dev)) or triton_usable(torch.device("cpu"))
        else:
            ok = cuda_dev is not None and cuda_usable(cuda_dev)
        report["backends"][name] = {"usable": ok, "why": why_not(name)}
    try:
        import flash_attn  # noqa: F401
        report["flash_attn"] = True
    except ImportError:
        report["flash_attn"] = False
    return report
