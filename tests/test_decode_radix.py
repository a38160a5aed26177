"""Host harness of the CUDA decode kernel's radix select (tests/native/radix_select_check.cpp).

The kernel cannot run without a GPU, but its selection rules live in __host__ __device__
header code (csrc/include/s1k/radix_select.h). The harness runs the kernel's digit-by-digit
selection sequentially with those functions and checks it against sorting, exactly: top-k
and top-p thresholds on bf16/fp16/fp32 rows with ties, -inf, and repeated or out-of-range
suppressed ids subtracted once per pass; and the 32.32 fixed-point mass that makes the
kernel's histograms order-independent (hence deterministic).
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_radix_select_matches_sorting(tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    exe = tmp_path / "radix_select_check"
    subprocess.run([cxx, "-O2", "-std=c++17", "-Wall", "-Werror", "-I", os.path.join(ROOT, "csrc", "include"),
                    os.path.join(ROOT, "tests", "native", "radix_select_check.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok "), out.stdout
    assert int(out.stdout.split()[1]) > 5000  # the cases really ran
