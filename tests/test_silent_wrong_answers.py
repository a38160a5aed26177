"""Inputs that used to give a quiet wrong answer now give the right one or a named error.

Each test names the class of input it covers; each failed on the code before its fix.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from s1kernels.ops.similarity import k_center, threshold_dedup, topk_similarity


# ---- similarity: the underflow twin of the 1e19 overflow -----------------------------------

@pytest.mark.parametrize("scale", [1e-30, 1e-40])
def test_tiny_embeddings_give_the_answers_of_their_rescaled_rows(scale):
    torch.manual_seed(0)
    base = torch.randn(9, 7)
    base[5] = base[1]  # a duplicate, which dedup must drop
    x = base * scale  # 1e-40 is an fp32 subnormal (~17 bits left)
    scores, idx = topk_similarity(x, x, k=3)
    ref_scores, ref_idx = topk_similarity(base, base, k=3)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=0)
    assert threshold_dedup(x, 0.999).kept.tolist() == threshold_dedup(base, 0.999).kept.tolist()
    picks = k_center(x, 5).tolist()
    assert len(set(picks)) == 5 and picks == k_center(base, 5).tolist()
