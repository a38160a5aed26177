"""Ops on inputs that used to answer wrong or crash: each now the right answer or a named error."""
import pytest


# ---- decode: parameters checked in the dtype the kernels use; hand-built states -----------

@pytest.mark.parametrize("kw,msg", [(dict(temperature=1e39), "temperature: 1e\\+39 is beyond float32"),
                                    (dict(top_p=1e-50), "top_p: 1e-50 is below the smallest normal float32"),
                                    (dict(min_p=1e-45), "min_p"), (dict(top_k=2.5), "top_k: expected an integer"),
                                    (dict(seed=float("nan")), "seed: expected an integer")])
def test_sampling_ranges_in_float32(kw, msg):
    from s1kernels.ops.decode import Sampling

    with pytest.raises(ValueError, match=msg):
        Sampling(**kw).tensors(2, "cpu")


@pytest.mark.parametrize("kw", [dict(max_answer_tokens=float("inf")), dict(num_waits=float("nan")),
                                dict(max_thinking_tokens=[10, 2.5])])
def test_budget_non_integers_are_named_errors(kw):
    from s1kernels.ops.decode import Budget

    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name}: expected an integer"):
        Budget(**kw).tensors(2, "cpu")


@pytest.mark.parametrize("field,value", [("phase", 7), ("phase", -1), ("inject_kind", 9)])
def test_hand_built_decode_state_is_refused_by_every_cpu_backend(field, value):
    import torch

    from s1kernels.ops.decode import Budget, DecodeState, ForcingTokens, Sampling, decode_step

    forcing = ForcingTokens(end_think_ids=[3], delimiter_completion_ids=[4], wait_ids=[5, 6],
                            forced_exit_ids=[3, 4], eos_ids=[2], pad_id=0)
    for backend in ("torch", "cpp"):
        s = DecodeState.new(3)
        getattr(s, field)[1] = value
        with pytest.raises(ValueError, match=f"state.{field}: row 1 holds {value}"):
            decode_step(torch.randn(3, 20), s, Budget().tensors(3, "cpu"), Sampling().tensors(3, "cpu"), forcing,
                        backend=backend)


# ---- similarity: rows of any finite scale give the answer of the rescaled rows -------------

def _pool(n=40, d=12, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return torch.cat([x, x[:6] + 1e-4 * torch.randn(6, d, generator=g)])  # 6 near-duplicates


# Triton on CPU tensors needs the interpreter: marked so that a GPU machine skips it with the reason.
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpreter), "cpp"]


@pytest.mark.parametrize("scale", [2.0**64, 2.0**-70, 2.0**100])
@pytest.mark.parametrize("backend", BACKENDS)
def test_similarity_is_exact_at_any_power_of_two_scale(scale, backend):
    import torch

    from s1kernels.ops.similarity import k_center, kmeans, mmr, threshold_dedup, topk_similarity

    x = _pool()
    ref = topk_similarity(x, k=4, backend=backend)
    got = topk_similarity(x * scale, k=4, backend=backend)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])  # power-of-two scaling is exact
    assert torch.equal(threshold_dedup(x * scale, 0.99).keep, threshold_dedup(x, 0.99).keep)
    assert int(threshold_dedup(x * scale, 0.99).keep.sum()) == 40
    assert torch.equal(k_center(x * scale, 7), k_center(x, 7))
    rel = torch.rand(46, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mmr(x * scale, rel, 7), mmr(x, rel, 7))
    assert torch.equal(kmeans(x * scale, 3, backend=backend)[0], kmeans(x, 3, backend=backend)[0])


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e-25])
@pytest.mark.parametrize("backend", BACKENDS)
def test_similarity_at_huge_and_tiny_scales_matches_float64(scale, backend):
    import torch

    from s1kernels.ops.similarity import topk_similarity

    x = _pool(seed=3)
    xs = x * scale
    x64 = x.double() / x.double().norm(dim=1, keepdim=True)
    s64 = x64 @ x64.T
    s64.fill_diagonal_(-2)
    s, i = topk_similarity(xs, k=3, backend=backend)
    assert torch.isfinite(s).all()
    torch.testing.assert_close(s.double(), s64.gather(1, i), atol=1e-5, rtol=0)
    assert torch.equal(i[:, 0], s64.argmax(1))


def test_inner_products_that_overflow_are_refused():
    import torch

    from s1kernels.ops.similarity import k_center, threshold_dedup, topk_similarity

    x = _pool() * 1e19
    for call in (lambda: topk_similarity(x, k=2, normalize=False, backend="torch"),
                 lambda: threshold_dedup(x, 0.5, normalize=False), lambda: k_center(x, 3, normalize=False)):
        with pytest.raises(ValueError, match="x: inner products .* can overflow float32"):
            call()
    assert torch.isfinite(topk_similarity(x * 1e-19, k=2, normalize=False, backend="torch")[0]).all()


def test_selection_ops_read_tensors_that_require_grad():
    import torch

    from s1kernels.ops.similarity import k_center, mmr, threshold_dedup, topk_similarity

    x = _pool().requires_grad_()
    assert torch.equal(k_center(x, 5), k_center(x.detach(), 5))
    rel = torch.rand(46, generator=torch.Generator().manual_seed(2))
    assert torch.equal(mmr(x, rel, 5), mmr(x.detach(), rel, 5))
    assert threshold_dedup(x, 0.99).keep.sum() == 40 and topk_similarity(x, k=2, backend="torch")[1].shape == (46, 2)
