"""The Triton top-k kernel's exactness: k at the list boundaries, partial tiles, exact ties and
duplicate vectors, and fp32 input scored on the tensor cores in bf16 then re-scored exactly.

Runs in the interpreter on CPU with the kernel's H100 tiles (64-row query tiles, 32/64-column
pool tiles) and with small tiles, on sizes that leave a partial tile in every dimension.
"""
import math

import pytest
import torch

from s1kernels.ops import similarity as S
from s1kernels.ops.similarity import triton_impl as SK
from test_similarity import assert_topk_matches, rand


@pytest.fixture
def h100_tiles(monkeypatch):
    monkeypatch.setattr(SK, "_tile_config", lambda k2, dt, device: SK.gpu_config(k2, dt))


def _ints(n, d, seed, lo=-2, hi=3):
    """Small-integer vectors: every score is exact in fp32, so ties are real ties."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(lo, hi, (n, d), generator=g).float()
    x[x.abs().sum(1) == 0, 0] = 1.0
    return x


@pytest.mark.interpreter  # Triton on CPU tensors
@pytest.mark.parametrize("k", [1, 16, 17, 32, 33, 100, 128])
def test_k_at_the_list_boundaries_with_h100_tiles(h100_tiles, k):
    """K = k rounded up to a power of two; k = 2^j and 2^j + 1 fill the list or leave it almost
    empty. Pool sizes leave a partial pool tile; 70 rows leave a partial query tile."""
    dtype = (torch.float32, torch.bfloat16, torch.float16)[k % 3]
    x, y = rand(70, 40, dtype, k), rand(k + 37, 40, dtype, k + 1)
    got = S.topk_similarity(x, y, k, backend="triton")
    assert_topk_matches(got, S.topk_similarity_reference(x, y, k))


@pytest.mark.interpreter  # Triton on CPU tensors
@pytest.mark.parametrize("dtype,k", [(torch.float32, 1), (torch.float32, 17), (torch.bfloat16, 33), (torch.float16, 5)])
def test_exact_duplicates_and_ties_resolve_like_the_reference(dtype, k):
    """Integer vectors with every pool vector present three times: scores tie exactly, and the
    lower index must win every tie, in self mode (self excluded) and against a pool."""
    base = _ints(15, 12, k)
    x = torch.cat([base, base, base])[torch.randperm(45, generator=torch.Generator().manual_seed(k))].to(dtype)
    for yy in (None, _ints(25, 12, k + 5).repeat(2, 1).to(dtype)):
        got = S.topk_similarity(x, yy, k, backend="triton", normalize=False)
        ref = S.topk_similarity_reference(x, yy, k, normalize=False)
        assert torch.equal(got[1], ref[1])
        assert torch.equal(got[0], ref[0])
        got = S.topk_similarity(x, yy, k, backend="triton")
        ref = S.topk_similarity_reference(x, yy, k)
        assert_topk_matches(got, ref)


def _bf16_blind_pool(n_pool, d, seed):
    """Queries and a pool whose fp32 ranking is invisible in bf16: every pool vector rounds to
    the same bf16 vector (relative perturbations j * 2^-12 < 2^-8, half of bf16's spacing at 1),
    while the fp32 inner products differ. Every product and sum is exact in fp32 (at most 21
    significant bits for d <= 8), so the reference's inner products, ties included, are exact."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(1, 4, (d,), generator=g).float()
    y = base * (1 + torch.randint(0, 8, (n_pool, d), generator=g).float() * 2.0 ** -12)
    x = base[None, :] + torch.randint(-1, 2, (9, d), generator=g).float() * 0.25
    return x, y


@pytest.mark.interpreter  # Triton on CPU tensors
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("k", [1, 5, 33])
def test_fp32_ranking_invisible_in_bf16_is_recovered_exactly(h100_tiles, normalize, k):
    """The adversarial case for bf16 scoring: all bf16 scores of a row tie, so the bf16 order
    says nothing; the bound keeps every column a candidate and the fp32 re-score decides."""
    x, y = _bf16_blind_pool(150, 8, k)
    yb = y.bfloat16().float()
    assert torch.equal(yb, yb[:1].expand_as(yb))  # bf16 sees one pool vector
    ref = S.topk_similarity_reference(x, y, k, normalize=normalize)
    if k > 1:  # the ranking is not an artefact of ties: it differs from bf16's (all ties -> index order)
        assert not torch.equal(ref[1], torch.arange(k).expand(9, k))
    got = S.topk_similarity(x, y, k, backend="triton", normalize=normalize)
    if normalize:  # cosine rounds (1/|x|, 1/|y|): near-ties may swap, as for every backend
        assert_topk_matches(got, ref)
    else:  # exact inner products: the same indices and scores, ties included
        assert torch.equal(got[1], ref[1]) and torch.equal(got[0], ref[0])


@pytest.mark.interpreter  # Triton on CPU tensors
def test_fp32_close_scores_across_many_tiles_small_tiles():
    """A pool of near-copies spread over many small tiles: the running threshold rises while
    candidates keep arriving, and each is re-scored; the result is the fp32 one."""
    x, y = _bf16_blind_pool(300, 8, 7)
    for k in (1, 16, 17):
        got = S.topk_similarity(x, y, k, backend="triton", normalize=False)
        ref = S.topk_similarity_reference(x, y, k, normalize=False)
        assert torch.equal(got[1], ref[1]) and torch.equal(got[0], ref[0])


@pytest.mark.interpreter  # Triton on CPU tensors
def test_kmeans_assignment_fp32_exact_on_bf16_blind_centroids():
    """k-means assigns with topk_similarity(x, centroids, 1) on fp32 unit vectors: nearest
    centroids that bf16 cannot tell apart are still told apart."""
    x, y = _bf16_blind_pool(40, 8, 3)
    xn, cn = S.normalized(x), S.normalized(y)
    got = S.topk_similarity(xn, cn, 1, backend="triton")
    assert_topk_matches(got, S.topk_similarity_reference(xn, cn, 1))
    # the winner's exact fp32 cosine is the best one (a bf16 pick would be centroid 0)
    best = (xn.double() @ cn.double().T).max(1).values
    assert ((best - got[0][:, 0].double()).abs() < 1e-6).all()


@pytest.mark.interpreter  # Triton on CPU tensors
def test_streamed_query_tile_matches(monkeypatch):
    """D too large for the query tile on chip: the kernel streams D slices instead."""
    monkeypatch.setattr(SK, "query_parts", lambda *a, **k: (0, 0))
    for dtype in (torch.float32, torch.bfloat16):
        x, y = rand(37, 40, dtype, 3), rand(45, 40, dtype, 4)
        got = S.topk_similarity(x, y, 6, backend="triton")
        assert_topk_matches(got, S.topk_similarity_reference(x, y, 6))


def test_query_parts_cover_d():
    assert SK.query_parts(384, 64, 64, 2) == (256, 128)
    assert SK.query_parts(256, 64, 64, 2) == (256, 0)
    assert SK.query_parts(24, 16, 32, 2) == (16, 16)
    assert SK.query_parts(100, 64, 64, 2) == (64, 64)
    assert SK.query_parts(4096, 64, 64, 2) == (0, 0)  # too large for chip: streamed
    for d in range(1, 600, 7):
        q1, q2 = SK.query_parts(d, 16, 32, 2)
        assert q1 + q2 >= d and q1 >= 16 and (q2 == 0 or q2 >= 16)


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 1e30])
def test_rescore_bound_holds(scale):
    """|bf16 score - exact score| <= ex_i * ey_j / 2 (half the bound: the kernel has a factor 2
    of margin), for cosine and inner products, at tiny and huge magnitudes and with
    components that are subnormal or flushed in bf16."""
    g = torch.Generator().manual_seed(int(-math.log10(scale)) + 50)
    d = 64
    x = torch.randn(30, d, generator=g) * torch.logspace(-6, 0, d)[torch.randperm(d, generator=g)] * scale
    y = torch.randn(40, d, generator=g) * scale
    for normalize in (True, False):
        try:
            rx, ry = S.inverse_norms(x, normalize=normalize), S.inverse_norms(y, normalize=normalize)
        except ValueError:  # 1e-30 vectors: their fp32 norm underflows, cosine refuses them
            continue
        exact = (x.double() @ y.double().T) * rx.double()[:, None] * ry.double()[None, :]
        approx = (x.bfloat16().double() @ y.bfloat16().double().T) * rx.double()[:, None] * ry.double()[None, :]
        bound = SK.rescore_bounds(x, rx, d).double()[:, None] * SK.rescore_bounds(y, ry, d).double()[None, :]
        assert ((approx - exact).abs() <= bound / 2).all()


# ----------------------------------------------------------------------------- GPU (skipped without one)

@pytest.mark.cuda
@pytest.mark.parametrize("k", [1, 16, 17, 33, 128])
def test_gpu_fp32_bf16_blind_pool_exact(k):
    """On the GPU the fp32 path really scores in bf16 on the tensor cores; the re-score must
    still give the exact inner products, ties included, at every list regime."""
    x, y = _bf16_blind_pool(3000, 8, k)
    got = S.topk_similarity(x.cuda(), y.cuda(), k, backend="triton", normalize=False)
    ref = S.topk_similarity_reference(x, y, k, normalize=False)
    assert torch.equal(got[1].cpu(), ref[1]) and torch.equal(got[0].cpu(), ref[0])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [1, 16, 17, 32, 33, 100, 128])
def test_gpu_duplicates_and_k_boundaries(dtype, k):
    base = _ints(700, 384, k)
    x = torch.cat([base, base[:301]]).to(dtype).cuda()  # 1001 rows: partial query and pool tiles
    got = S.topk_similarity(x, None, k, backend="triton", normalize=False)
    ref = S.topk_similarity_reference(x.cpu(), None, k, normalize=False)
    assert torch.equal(got[1].cpu(), ref[1]) and torch.equal(got[0].cpu(), ref[0])
