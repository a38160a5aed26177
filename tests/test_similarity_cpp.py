"""The CPU top-k with the extension's threshold selection (backend "cpp") against the torch
reference: random pools at awkward sizes, exact ties, near-duplicate rows, both scalings,
every input dtype, another pool, chunk widths that split rows and blocks unevenly."""
import math

import pytest
import torch

from s1kernels import backend
from s1kernels.ops import similarity as S
from test_similarity import assert_topk_matches, rand

pytestmark = pytest.mark.skipif(backend.native() is None, reason="s1kernels._C is not built")


def _check(x, y, k, normalize, block_m=None, exact=False):
    got = S.topk_similarity(x, y, k, backend="cpp", normalize=normalize, block_m=block_m)
    ref = S.topk_similarity_reference(x, y, k, normalize=normalize)
    if exact:  # integer vectors: every score is exact, so indices must match the tie rule
        assert torch.equal(got[1], ref[1])
        assert torch.equal(got[0], ref[0])
    else:
        assert_topk_matches(got, ref, atol=2e-6 if normalize else 2e-5)
    if y is None:
        assert not (got[1] == torch.arange(x.shape[0])[:, None]).any()
    assert (got[0][:, :-1] >= got[0][:, 1:]).all()
    return got


@pytest.mark.parametrize("n,d,k,block_m", [(1, 3, 1, None), (2, 1, 1, None), (37, 24, 5, 7), (131, 19, 17, 32),
                                           (300, 33, 10, None), (257, 64, 64, 100), (1000, 40, 3, 333)])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("self_mode", [True, False])
def test_random_pools_match_the_reference(n, d, k, block_m, normalize, self_mode):
    x = rand(n, d, torch.float32, n + d)
    y = None if self_mode else rand(n + 11, d, torch.float32, n + 1)
    if self_mode and k > n - 1:
        k = n if n > 1 else 1
        y = x.clone()  # a one-row pool has no other row: compare against a copy instead
    _check(x, y, k, normalize, block_m)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_scored_in_fp32(dtype):
    x = rand(211, 48, dtype, 5)
    _check(x, None, 9, True, 64)
    _check(x, rand(97, 48, dtype, 6), 9, True, 50)


@pytest.mark.parametrize("block_m", [None, 16, 45, 64])
@pytest.mark.parametrize("k", [1, 6, 13])
def test_exact_ties_resolve_to_the_lower_index(block_m, k):
    """Small integers, every row four times: scores tie exactly (in any summation order), so
    the lower index must come first, across chunk boundaries and the transposed blocks."""
    base = torch.randint(-3, 4, (23, 8), generator=torch.Generator().manual_seed(k)).float()
    base[base.abs().sum(1) == 0, 0] = 1.0
    x = base.repeat(4, 1)[torch.randperm(92, generator=torch.Generator().manual_seed(7))]
    _check(x, None, k, False, block_m, exact=True)
    _check(x, base.repeat(3, 1), k, False, block_m, exact=True)
    s, i = S.topk_similarity(x, k=k, backend="cpp", block_m=block_m)
    rs, ri = S.topk_similarity_reference(x, k=k)
    torch.testing.assert_close(s, rs, atol=1e-6, rtol=0)


def test_near_duplicate_rows_keep_every_copy_in_order():
    """A pool where most rows are near-copies of a few (the case where a threshold test rejects
    little): every row's list must still equal the reference's."""
    g = torch.Generator().manual_seed(11)
    centers = torch.randn(7, 32, generator=g)
    x = centers[torch.arange(700) % 7] + 1e-3 * torch.randn(700, 32, generator=g)
    x[::50] = x[1::50]  # plus exact duplicates
    for normalize in (True, False):
        _check(x, None, 12, normalize, 128)
        _check(x, None, 40, normalize)


def test_same_neighbours_as_the_torch_path_on_a_larger_pool():
    x = rand(5000, 96, torch.float32, 3)
    got = S.topk_similarity(x, k=10, backend="cpp")
    ref = S.topk_similarity(x, k=10, backend="torch")
    assert_topk_matches(got, ref)


def test_auto_takes_cpp_on_the_cpu_and_the_fold_refuses_bad_sizes():
    assert backend.resolve("similarity", "auto", torch.device("cpu")) == "cpp"
    mod = backend.native()
    s, bs, bi = torch.zeros(4, 4), torch.full((4, 2), -math.inf), torch.zeros(4, 2, dtype=torch.int64)
    args = dict(scores=s.data_ptr(), rows=4, cols=4, ld=4, rx=0, ry=0, row0=0, col0=0, exclude_self=True, k=2,
                best_s=bs.data_ptr(), best_i=bi.data_ptr(), transpose=False, threads=1)
    assert mod.topk_fold_cpu(*args.values()) == 0
    for bad in (dict(ld=3), dict(k=0), dict(threads=0), dict(rx=s.data_ptr())):
        assert mod.topk_fold_cpu(*{**args, **bad}.values()) != 0, bad

