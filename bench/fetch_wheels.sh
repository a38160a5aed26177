#!/usr/bin/env bash
# Downloads the optional baselines as wheels for the lent GPU machine (Python 3.12, manylinux
# x86_64), which has no network: carry the folder with the device call and pass it to
# `bench/gpu_proof.py --wheels`. Run here, where pip reaches PyPI.
#
#   bash bench/fetch_wheels.sh [DIR]          # default .whl (git-ignored); about 1 MB
#
# Only pure-Python Triton baselines fit the 64 MiB a call may carry and need nothing the GPU
# image lacks: liger-kernel and cut-cross-entropy (each needs only torch and triton, both
# there; --no-deps keeps pip from fetching another torch). Left out: flashinfer-python (a
# 62 MB wheel that compiles its kernels on first use), faiss GPU builds (they need CUDA 12
# libraries of several hundred MB, or cuVS), flash-attn (built against one torch version).
set -euo pipefail
dir=${1:-.whl}
mkdir -p "$dir"
python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" \
    "liger-kernel==0.8.5" "cut-cross-entropy==25.1.1"
ls -la "$dir"
du -sh "$dir"
