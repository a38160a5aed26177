"""Builds csrc/decode.cu under the host SIMT emulation (tests/native/simt) and runs its decode
step on CPU tensors, with the arguments the compiled backends get (s1kernels/ops/decode/native.py:
three pointer lists in the order of the field table).

Used by tests/test_decode_simt.py and bench/simt_mutations.py (which builds altered copies of
the kernel through `build(kernel=...)`).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess

import torch

from s1kernels.ops.decode import DecodeState, ForcingTokens
from s1kernels.ops.decode.native import _DTYPE_CODE, FIELD_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMT = os.path.join(ROOT, "tests", "native", "simt")
KERNEL = os.path.join(ROOT, "csrc", "decode.cu")


def compiler() -> str | None:
    return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def build(out_dir: str, kernel: str = KERNEL, opt: str = "-O2") -> "Simt":
    """Compiles `kernel` with the host compiler under the emulation into out_dir (reused when the
    sources and flags are unchanged) and loads it."""
    srcs = [kernel, os.path.join(SIMT, "decode_simt.cpp"), os.path.join(SIMT, "simt.h")]
    srcs += [os.path.join(SIMT, "include", f) for f in sorted(os.listdir(os.path.join(SIMT, "include")))]
    inc = os.path.join(ROOT, "csrc", "include")
    srcs += [os.path.join(inc, "s1k", f) for f in sorted(os.listdir(os.path.join(inc, "s1k")))]
    # hidden visibility: the emulator's globals (inline variables) stay private to each library,
    # so several builds (the mutation check's) can be loaded in one process
    cmd = [compiler(), "-std=c++17", *opt.split(), "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Werror",
           "-Wno-unknown-pragmas",
           # the device branches of the kernel and of the shared headers, as under nvcc
           "-D__CUDACC__", "-D__CUDA_ARCH__=900", f'-DS1K_SIMT_KERNEL="{os.path.abspath(kernel)}"',
           "-I", os.path.join(SIMT, "include"), "-I", inc, os.path.join(SIMT, "decode_simt.cpp")]
    h = hashlib.sha256(" ".join(cmd).encode())
    for s in srcs:
        with open(s, "rb") as f:
            h.update(f.read())
    os.makedirs(out_dir, exist_ok=True)
    lib = os.path.join(out_dir, f"simt_decode_{h.hexdigest()[:16]}.so")
    if not os.path.exists(lib):
        tmp = lib + f".{os.getpid()}.tmp"
        res = subprocess.run(cmd + ["-o", tmp], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"building {kernel} under the SIMT emulation failed:\n{res.stderr[-4000:]}")
        os.replace(tmp, lib)
    return Simt(lib)


class Simt:
    """The emulated kernel: step() is decode_step(..., backend="cuda") run on the CPU."""

    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        f = self.lib.simt_decode_step
        P = ctypes.POINTER
        f.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                      P(ctypes.c_size_t), P(ctypes.c_size_t), P(ctypes.c_size_t), ctypes.c_size_t,
                      P(ctypes.c_int32), ctypes.c_int32, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_uint,
                      ctypes.c_uint64, P(ctypes.c_uint)]
        f.restype = ctypes.c_int
        self.lib.simt_last_error.restype = ctypes.c_char_p
        self.lib.simt_decode_fields.restype = ctypes.c_char_p
        self.last_cluster = 0
        if self.fields() != FIELD_NAMES:
            raise RuntimeError(f"{path} was built with the decode fields {self.fields()}, the package declares "
                               f"{FIELD_NAMES}")

    def fields(self) -> dict[str, list[str]]:
        """The field table the library was built with, by group (the order its pointer lists take)."""
        groups = self.lib.simt_decode_fields().decode().split(";")
        return {g.split(":")[0]: [n for n in g.split(":")[1].split(",") if n] for g in groups}

    def step(self, logits: torch.Tensor, state: DecodeState, budget_t, sampling_t, forcing: ForcingTokens,
             vocab_size: int | None = None, cluster: int = 0, schedule: int = 0):
        """One decode step of the kernel on CPU tensors; updates `state` in place and returns
        (tokens, logprobs). cluster: 0 = the size launch() picks (for an H100's 132 SMs), else
        forced to 1, 2, 4 or 8. schedule: the seed of the emulator's thread interleaving.
        Arguments are not validated here (decode_step does that); pass what it accepts."""
        B, V = logits.shape
        vocab_size = V if vocab_size is None else vocab_size
        if B > 1 and logits.stride(0) < vocab_size:
            logits = logits.contiguous()
        assert logits.stride(1) == 1
        row_stride = logits.stride(0) if B > 1 else V
        tokens = torch.empty(B, dtype=torch.int64)
        logprobs = torch.empty(B, dtype=torch.float32)
        arr = lambda ts: (ctypes.c_size_t * len(ts))(*[t.data_ptr() for t in ts])  # noqa: E731
        table = forcing.table("cpu")
        lengths = (ctypes.c_int32 * 5)(*forcing.lengths)
        used = ctypes.c_uint(0)
        code = self.lib.simt_decode_step(logits.data_ptr(), _DTYPE_CODE[logits.dtype], B, row_stride, vocab_size,
                                         arr(list(state.tensors())), arr(list(budget_t)), arr(list(sampling_t)),
                                         table.data_ptr(), lengths, forcing.pad_id, tokens.data_ptr(),
                                         logprobs.data_ptr(), cluster, schedule, ctypes.byref(used))
        self.last_cluster = used.value
        if code != 0:
            raise RuntimeError(f"emulated decode step failed (code {code}): "
                               f"{self.lib.simt_last_error().decode(errors='replace')}")
        return tokens, logprobs
