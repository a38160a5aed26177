"""Similarity ops against their references: top-k, dedup, k-center, MMR, k-means, bad input."""
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from s1kernels.ops import similarity as S

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
S1K_EMB = os.path.join(DATA, "s1k_questions.minilm.npy")


def rand(n, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype)


def assert_topk_matches(got, ref, atol=2e-6):
    """Scores agree within atol; an index may differ only where the reference has a near-tie."""
    gs, gi = got
    rs, ri = ref
    assert gs.dtype == torch.float32 and gi.dtype == torch.int64
    assert gs.shape == rs.shape and gi.shape == ri.shape
    torch.testing.assert_close(gs, rs, atol=atol, rtol=0)
    diff = gi != ri
    if diff.any():
        # A swapped index must carry (nearly) the score the reference has at that rank.
        assert (gs[diff] - rs[diff]).abs().max() <= atol, (gi[diff], ri[diff])


# ----------------------------------------------------------------------------- top-k, torch path

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [1, 5, 17])
@pytest.mark.parametrize("self_mode", [True, False])
def test_topk_torch_matches_reference(dtype, k, self_mode):
    x, y = rand(37, 24, dtype, 1), rand(53, 24, dtype, 2)
    yy = None if self_mode else y
    ref = S.topk_similarity_reference(x, yy, k)
    # block_m=7 forces many streamed chunks and merges
    got = S.topk_similarity(x, yy, k, backend="torch", block_m=7)
    assert_topk_matches(got, ref)
    if self_mode:
        assert not (got[1] == torch.arange(37)[:, None]).any()
    assert (got[0][:, :-1] >= got[0][:, 1:]).all()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpreter)])
def test_topk_exact_ties_lower_index_first(backend):
    # Small integers: every dot product is exact whatever the summation order, and every row
    # appears 4 times, so scores tie exactly and only the index rule decides.
    base = torch.randint(-3, 4, (5, 8), generator=torch.Generator().manual_seed(3)).float()
    x = base.repeat(4, 1)
    s, i = S.topk_similarity(x, k=6, backend=backend, block_m=16)
    rs, ri = S.topk_similarity_reference(x, k=6)
    assert torch.equal(i, ri), backend
    torch.testing.assert_close(s, rs, atol=1e-6, rtol=0)
    # row 0's three copies (5, 10, 15) score 1.0 and come in index order
    assert ri[0, :3].tolist() == [5, 10, 15]


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_topk_boundary_ties_in_some_rows_only(k):
    # Small integers: exact arithmetic, and 6 vectors appear 3 times. In one chunk some rows
    # tie between their k-th and (k+1)-th neighbour and others do not; only the tied rows
    # are keyed in full, and both kinds must come out exactly as in the reference.
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randint(-3, 4, (40, 8), generator=g),
                   torch.randint(-3, 4, (6, 8), generator=g).repeat(3, 1)]).float()
    x = x[x.norm(dim=1) > 0]
    wide = S.topk_similarity_reference(x, k=k + 1)[0]
    tied = wide[:, k - 1] == wide[:, k]
    assert tied.any() and not tied.all()
    ref = S.topk_similarity_reference(x, k=k)
    for block_m in (None, 16):
        got = S.topk_similarity(x, k=k, backend="torch", block_m=block_m)
        assert torch.equal(got[1], ref[1])
        assert torch.equal(got[0], ref[0])


def test_finite_check_survives_an_overflowing_sum():
    big = torch.full((3, 4), 3e38)  # every entry finite, their fp32 sum is not
    assert S.check_matrix("x", big).shape == (3, 4)
    bad = torch.cat([big, torch.tensor([[0.0, float("inf"), 0.0, 0.0]])])
    with pytest.raises(ValueError, match="1 row\\(s\\) contain NaN or inf"):
        S.check_matrix("x", bad)


def test_topk_large_k_and_inner_product():
    x, y = rand(19, 12, seed=4), rand(300, 12, seed=5)
    ref = S.topk_similarity_reference(x, y, 257, normalize=False)
    got = S.topk_similarity(x, y, 257, normalize=False, backend="torch", block_m=64)
    assert_topk_matches(got, ref, atol=1e-5)
    got = S.topk_similarity(x, y, 257, normalize=False, backend="auto")  # k > 128: streamed chunks
    assert_topk_matches(got, ref, atol=1e-5)


@pytest.mark.interpreter  # on CPU tensors the Triton backend is only usable in the interpreter
def test_topk_triton_refuses_more_than_128_neighbours():
    # the Triton kernel holds at most 128 neighbours: asking for it by name raises, naming what exists
    x, y = rand(19, 12, seed=4), rand(300, 12, seed=5)
    with pytest.raises(ValueError, match="at most k=128.*backend='torch'"):
        S.topk_similarity(x, y, 257, normalize=False, backend="triton")


def test_topk_k_equals_pool_and_single_row():
    x = rand(9, 5, seed=6)
    s, i = S.topk_similarity(x, k=8)
    assert sorted(i[0].tolist()) == list(range(1, 9))
    s, i = S.topk_similarity(rand(1, 5), rand(1, 5, seed=7), k=1)
    assert i.tolist() == [[0]]


def test_max_similarity():
    x, y = rand(23, 10, seed=8), rand(31, 10, seed=9)
    s, i = S.max_similarity(x, y)
    rs, ri = S.topk_similarity_reference(x, y, 1)
    torch.testing.assert_close(s, rs[:, 0], atol=2e-6, rtol=0)
    assert torch.equal(i, ri[:, 0])


# ----------------------------------------------------------------------------- top-k, Triton (interpreter on CPU)

@pytest.mark.interpreter
@pytest.mark.parametrize("dtype,k,self_mode,block_m", [
    (torch.float32, 5, True, None),
    (torch.bfloat16, 17, False, None),
    (torch.float16, 1, True, None),
    (torch.float32, 3, False, 16),
])
def test_topk_triton_matches_reference(dtype, k, self_mode, block_m):
    x, y = rand(37, 24, dtype, 10), rand(53, 24, dtype, 11)
    yy = None if self_mode else y
    got = S.topk_similarity(x, yy, k, backend="triton", block_m=block_m)
    assert_topk_matches(got, S.topk_similarity_reference(x, yy, k))


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype,k,n,pools", [
    (torch.float32, 16, 150, (None, 300)),
    (torch.float16, 16, 150, (None, 300)),
    (torch.bfloat16, 100, 40, (150,)),  # the large-K regime is slow in the interpreter: fewer rows
])
def test_topk_triton_with_the_h100_tile_sizes(monkeypatch, dtype, k, n, pools):
    # The GPU launches use 32-64 x 128 x 32-64 tiles (both regimes of gpu_config) that the
    # small interpreter tiles never show: run them here with a partial tile in every dimension.
    from s1kernels.ops.similarity import triton_impl as SK

    monkeypatch.setattr(SK, "_tile_config", lambda k2, dt, device: SK.gpu_config(k2, dt))
    x = rand(n, 100, dtype, 12)
    for m in pools:
        yy = None if m is None else rand(m, 100, dtype, 13)
        got = S.topk_similarity(x, yy, k, backend="triton")
        assert_topk_matches(got, S.topk_similarity_reference(x, yy, k))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make,match", [
    (lambda: S.topk_similarity(rand(5, 4), k=5), "pool offers 4"),
    (lambda: S.topk_similarity(rand(5, 4), rand(3, 4), k=4), "pool offers 3"),
    (lambda: S.topk_similarity(rand(5, 4), k=0), "positive int"),
    (lambda: S.topk_similarity(torch.zeros(0, 4), k=1), "empty"),
    (lambda: S.topk_similarity(rand(5, 4), torch.zeros(0, 4), k=1), "empty"),
    (lambda: S.topk_similarity(rand(5, 4), rand(5, 3), k=1), "dimension 3 does not match"),
    (lambda: S.topk_similarity(torch.cat([rand(5, 4), torch.zeros(2, 4)]), k=1), "2 row\\(s\\) have zero norm"),
    (lambda: S.topk_similarity(rand(5, 4).index_fill(0, torch.tensor([1]), float("nan")), k=1), "NaN"),
    (lambda: S.topk_similarity(rand(5, 4)[0], k=1), "2-D"),
    (lambda: S.topk_similarity(rand(5, 4), k=1, backend="nope"), "backend"),
    (lambda: S.threshold_dedup(torch.zeros(0, 3), 0.9), "empty"),
    (lambda: S.threshold_dedup(rand(4, 3), float("nan")), "threshold"),
    (lambda: S.threshold_dedup(rand(4, 3), 0.9, order=torch.tensor([0, 0, 1, 2])), "permutation"),
    (lambda: S.threshold_dedup(rand(4, 3), 0.9, block=0), "block: expected a positive int"),
    (lambda: S.threshold_dedup(rand(4, 3), 0.9, chunk=2.5), "chunk: expected a positive int"),
    (lambda: S.k_center(rand(4, 3), 5), "5 picks from a pool of 4"),
    (lambda: S.k_center(rand(4, 3), 2, start=4), "start"),
    (lambda: S.mmr(rand(4, 3), torch.rand(3), 2), "relevance"),
    (lambda: S.mmr(rand(4, 3), torch.rand(4), 2, lambda_=1.5), "lambda_"),
])
def test_bad_input_raises_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_types():
    with pytest.raises(TypeError, match="dtype"):
        S.topk_similarity(torch.ones(3, 2, dtype=torch.int64), k=1)
    with pytest.raises(TypeError, match="dtype"):
        S.topk_similarity(rand(3, 2), rand(3, 2, torch.float16), k=1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        S.topk_similarity(np.ones((3, 2)), k=1)


def test_zero_norm_allowed_for_inner_product():
    x = torch.cat([rand(5, 4), torch.zeros(1, 4)])
    s, i = S.topk_similarity(x, k=2, normalize=False)
    assert_topk_matches((s, i), S.topk_similarity_reference(x, k=2, normalize=False))


# ----------------------------------------------------------------------------- dedup

def near_duplicates(n_base=60, copies=3, d=16, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n_base, d, generator=g)
    x = torch.cat([base + noise * torch.randn(n_base, d, generator=g) for _ in range(copies)])
    return x[torch.randperm(len(x), generator=g)]


@pytest.mark.parametrize("threshold,block", [(0.3, 16), (0.9, 1), (0.9, 256), (0.99, 16)])
def test_dedup_matches_reference(threshold, block):
    x = near_duplicates()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    for o in (None, order):
        got = S.threshold_dedup(x, threshold, order=o, block=block, chunk=37)
        ref = S.threshold_dedup_reference(x, threshold, order=o)
        assert torch.equal(got.keep, ref.keep)
        assert torch.equal(got.kept, ref.kept)


def test_dedup_packs_kept_rows_across_many_blocks():
    # 1,500 rows, about a third kept: later blocks compare with the packed kept rows only
    x = near_duplicates(n_base=500, copies=3)
    ref = S.threshold_dedup_reference(x, 0.9)
    assert 400 < int(ref.keep.sum()) < 1000
    for block, chunk in ((64, 100), (1024, 2048), (1500, 7)):
        got = S.threshold_dedup(x, 0.9, block=block, chunk=chunk)
        assert torch.equal(got.keep, ref.keep)
        assert torch.equal(got.kept, ref.kept)


def test_dedup_semantics_chain():
    # b is a duplicate of a, c of b but not of a: c survives because b was dropped.
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([np.cos(0.3), np.sin(0.3)], dtype=torch.float32)
    c = torch.tensor([np.cos(0.6), np.sin(0.6)], dtype=torch.float32)
    x = torch.stack([a, b, c])
    thr = float(np.cos(0.45))
    assert S.threshold_dedup(x, thr).keep.tolist() == [True, False, True]
    assert S.threshold_dedup(x, thr, order=[1, 0, 2]).keep.tolist() == [False, True, False]


@pytest.mark.skipif(not os.path.exists(S1K_EMB), reason="shared data not present")
def test_dedup_real_s1k_embeddings_finds_the_duplicates():
    x = torch.from_numpy(np.load(S1K_EMB))
    got = S.threshold_dedup(x, 0.99)
    ref = S.threshold_dedup_reference(x, 0.99)
    assert torch.equal(got.keep, ref.keep)
    # 14 pairs are above 0.99: each pair loses its second member
    assert int((~got.keep).sum()) == 14
    s, _ = S.max_similarity(x[~got.keep], x[got.keep])
    assert (s > 0.99).all()


# ----------------------------------------------------------------------------- greedy diversity

@pytest.mark.parametrize("start", [None, 7])
def test_k_center_matches_reference(start):
    x = rand(150, 12, seed=12)
    got = S.k_center(x, 25, start=start)
    assert torch.equal(got, S.k_center_reference(x, 25, start=start))
    assert len(set(got.tolist())) == 25


def test_k_center_with_duplicates_never_repeats():
    x = rand(4, 6, seed=13).repeat(5, 1)
    got = S.k_center(x, 10)
    assert torch.equal(got, S.k_center_reference(x, 10))
    assert len(set(got.tolist())) == 10
    assert sorted(got[:4].tolist()) == [0, 1, 2, 3]  # first the 4 distinct points, lowest copies


@pytest.mark.parametrize("lambda_", [0.0, 0.3, 1.0])
def test_mmr_matches_reference(lambda_):
    x = rand(120, 10, torch.bfloat16, seed=14)
    rel = torch.rand(120, generator=torch.Generator().manual_seed(2))
    got = S.mmr(x, rel, 20, lambda_)
    assert torch.equal(got, S.mmr_reference(x, rel, 20, lambda_))
    assert got[0] == rel.argmax()
    if lambda_ == 1.0:
        assert torch.equal(got, rel.argsort(descending=True, stable=True)[:20])


# ----------------------------------------------------------------------------- k-means

def test_kmeans_recovers_planted_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(4, 16, generator=g) * 5
    x = torch.cat([c + 0.3 * torch.randn(40, 16, generator=g) for c in centers])
    labels, cent = S.kmeans(x, 4, seed=0)
    labels2, _ = S.kmeans(x, 4, seed=0)
    assert torch.equal(labels, labels2)
    for j in range(4):  # each planted group lands in one cluster
        assert labels[40 * j:40 * (j + 1)].unique().numel() == 1
    assert labels.unique().numel() == 4
    # labels are the nearest centroid
    sims = S.normalized(x) @ cent.T
    assert torch.equal(labels, sims.argmax(1))


def test_custom_op_traces_with_fullgraph():
    x = rand(13, 8, seed=20)
    op = torch.ops.s1kernels.topk_similarity
    torch.library.opcheck(op, (x, None, 3, True, True, "torch", 0),
                          test_utils=("test_schema", "test_faketensor"))
    fn = torch.compile(lambda t: op(t, None, 3, True, True, "torch", 0), fullgraph=True, backend="aot_eager")
    s, i = fn(x)
    assert_topk_matches((s, i), S.topk_similarity_reference(x, k=3))


def test_greedy_graph_needs_cuda():
    with pytest.raises(ValueError, match="use_graph"):
        S.k_center(rand(40, 4), 3, use_graph=True)


# ----------------------------------------------------------------------------- GPU (skipped without one)

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("k", [1, 16, 100, 300])
def test_topk_triton_gpu_matches_reference(dtype, k):
    x, y = rand(1000, 384, dtype, 30).cuda(), rand(3001, 384, dtype, 31).cuda()
    for yy in (None, y):
        if k > S.TRITON_MAX_K:
            # past the kernel's register list an explicit "triton" refuses, naming the limit,
            # and "auto" takes the chunked torch top-k, which must still be right
            with pytest.raises(ValueError, match=f"at most k={S.TRITON_MAX_K}"):
                S.topk_similarity(x, yy, k, backend="triton")
            got = S.topk_similarity(x, yy, k, backend="auto")
        else:
            got = S.topk_similarity(x, yy, k, backend="triton")
        assert_topk_matches(got, S.topk_similarity_reference(x, yy, k), atol=5e-6)


@pytest.mark.cuda
def test_greedy_graph_replay_matches_plain_loop():
    x = rand(5000, 64, seed=32).cuda()
    rel = torch.rand(5000, generator=torch.Generator().manual_seed(4)).cuda()
    assert torch.equal(S.k_center(x, 200, use_graph=True), S.k_center(x, 200, use_graph=False))
    assert torch.equal(S.mmr(x, rel, 200, 0.6, use_graph=True), S.mmr(x, rel, 200, 0.6, use_graph=False))


# ----------------------------------------------------------------------------- properties

@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), m=st.integers(2, 40), d=st.integers(1, 9), kfrac=st.floats(0, 1),
       self_mode=st.booleans(), block_m=st.integers(1, 50), seed=st.integers(0, 10_000), ints=st.booleans())
def test_topk_torch_property(n, m, d, kfrac, self_mode, block_m, seed, ints):
    g = torch.Generator().manual_seed(seed)
    make = (lambda r: torch.randint(-2, 3, (r, d), generator=g).float()) if ints else (
        lambda r: torch.randn(r, d, generator=g))
    x = make(m if self_mode else n)
    y = None if self_mode else make(m)
    x = x[x.norm(dim=1) > 0] if ints else x
    if y is not None and ints:
        y = y[y.norm(dim=1) > 0]
    pool = (x.shape[0] - 1) if self_mode else (0 if y is None else y.shape[0])
    if x.shape[0] == 0 or pool < 1:
        return
    k = 1 + int(kfrac * (pool - 1))
    got = S.topk_similarity(x, y, k, backend="torch", block_m=block_m)
    ref = S.topk_similarity_reference(x, y, k)
    assert_topk_matches(got, ref)
    if ints:  # exact arithmetic: ties must resolve identically
        assert torch.equal(got[1], ref[1])
