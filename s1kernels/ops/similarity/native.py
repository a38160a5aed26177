"""The similarity top-k on the CPU with the extension's selection (backend "cpp").

Each chunk of scores is a blocked matrix product by torch (MKL/oneDNN sgemm into one reused
fp32 buffer); csrc/topk_cpu.cpp then folds the chunk into every row's running top-k,
rejecting a score with one comparison against the row's k-th best (most scores after the
first chunks), where the torch path ranks every score of a chunk with torch.topk.

Self-kNN (y is x) computes only the square blocks on and above the diagonal: block (I, J)
with J > I is folded into the lists of I's rows and, transposed, of J's rows, which halves
the matrix products. Each list still receives its candidates in increasing index order (J's
rows get blocks I < J before their own row of blocks), which the tie rule relies on.

Results: the same fp32 scaling as the torch path, the same (score, index) order. The dot
product x_i . x_j of block (I, J) stands in for x_j . x_i of block (J, I); sgemm sums both
from the same products, but a BLAS may order that sum differently in different tiles, so a
score may differ from the torch path's in its last bit (the tests compare to 1e-5 and
allow index swaps only between such near-ties, as for the Triton kernel).
"""
from __future__ import annotations

import math

import torch

from s1kernels import backend as _backend
from s1kernels.ops.similarity.contract import score_keys

# Chunk shapes. Rows x columns against another pool: 256 x 4096 fp32 scores (4 MB) stay in
# the last-level cache between the product writing them and the fold reading them. Self-kNN
# uses square blocks, whose product is folded twice.
BLOCK_N, BLOCK_M = 256, 4096
BLOCK_SELF = 2048


def topk_keys(x, y, rx, ry, k, exclude_self, block_m=None, self_mode=False):
    """int64 keys [N, k] of each row's top-k (the torch path's topk_keys contract); x, y CPU
    tensors (any float dtype, upcast once), rx/ry fp32 inverse norms or None (both); with
    self_mode, y is x and ry is rx (the symmetric blocks above)."""
    n, m = x.shape[0], y.shape[0]
    xf = x.float().contiguous()
    yf = xf if self_mode else y.float().contiguous()
    rxf = None if rx is None else rx.float().contiguous()
    ryf = rxf if self_mode else (None if ry is None else ry.float().contiguous())
    best_s = torch.full((n, k), -math.inf, dtype=torch.float32)
    best_i = torch.zeros(n, k, dtype=torch.int64)
    fold = _Folder(rxf, ryf, k, exclude_self, best_s, best_i)
    if self_mode:
        b = max(1, min(n, block_m or BLOCK_SELF))
        buf = torch.empty(b, b, dtype=torch.float32)
        for i0 in range(0, n, b):
            i1 = min(n, i0 + b)
            for j0 in range(i0, n, b):
                j1 = min(n, j0 + b)
                s = buf[: i1 - i0, : j1 - j0]
                torch.mm(xf[i0:i1], xf[j0:j1].T, out=s)
                fold(s, i0, j0, transpose=False)
                if j0 > i0:
                    fold(s, i0, j0, transpose=True)
    else:
        bm = max(1, min(m, block_m or BLOCK_M))
        bn = max(1, min(n, BLOCK_N))
        buf = torch.empty(bn, bm, dtype=torch.float32)
        for i0 in range(0, n, bn):
            i1 = min(n, i0 + bn)
            for j0 in range(0, m, bm):
                j1 = min(m, j0 + bm)
                s = buf[: i1 - i0, : j1 - j0]
                torch.mm(xf[i0:i1], yf[j0:j1].T, out=s)
                fold(s, i0, j0, transpose=False)
    return score_keys(best_s, best_i)


class _Folder:
    """One call of the extension's fold per chunk: s holds rows i0.. against columns j0..."""

    def __init__(self, rx, ry, k, exclude_self, best_s, best_i):
        self.mod = _backend.native()
        self.rx, self.ry, self.k, self.exclude = rx, ry, k, bool(exclude_self)
        self.best_s, self.best_i = best_s, best_i
        self.threads = torch.get_num_threads()

    def __call__(self, s, i0, j0, transpose):
        rx = 0 if self.rx is None else self.rx[i0:].data_ptr()
        ry = 0 if self.ry is None else self.ry[j0:].data_ptr()
        # the lists of the chunk's rows (from row i0), or of the whole pool when transposed
        bs = self.best_s if transpose else self.best_s[i0:]
        bi = self.best_i if transpose else self.best_i[i0:]
        err = self.mod.topk_fold_cpu(s.data_ptr(), s.shape[0], s.shape[1], s.stride(0), rx, ry, i0, j0,
                                     self.exclude, self.k, bs.data_ptr(), bi.data_ptr(), transpose, self.threads)
        if err:
            raise RuntimeError(f"topk_similarity: the extension's topk_fold_cpu returned error {err}")
