"""The gradient in the forward pass (ops/loss/triton_fused.py, grad_op.py): used exactly when a
scalar loss needs a gradient on the Triton backend, and equal to the fp64 reference, gradients
included, at awkward sizes. Triton runs in the interpreter on CPU (small shapes)."""
import pytest
import torch

from s1kernels.ops.loss import linear_cross_entropy, linear_cross_entropy_reference
from s1kernels.ops.loss import triton_fused as F
from s1kernels.ops.loss import triton_impl as K
from test_loss import IGNORE, TOL, make_case, relerr, run

pytestmark = pytest.mark.interpreter  # every test runs the Triton kernels on CPU tensors


@pytest.fixture
def fused_calls(monkeypatch):
    calls = []
    real = F.forward_with_grad

    def counting(*args, **kw):
        calls.append(args[-2:])
        return real(*args, **kw)

    monkeypatch.setattr(F, "forward_with_grad", counting)
    return calls


def compare(n, h, v, dtype, *, bias=False, vocab_size=None, segments=None, **kw):
    hidden, weight, labels, b, cu = make_case(n, h, v, dtype, vocab_size=vocab_size, bias=bias, segments=segments)
    if cu is not None:
        kw["cu_seqlens"] = cu
    ref, ref_grads = run(linear_cross_entropy_reference, hidden.double(), weight.double(), labels,
                         b.double() if b is not None else None, vocab_size=vocab_size, **kw)
    out, grads = run(linear_cross_entropy, hidden, weight, labels, b, vocab_size=vocab_size, backend="triton", **kw)
    fwd_tol, grad_tol = TOL[dtype]
    assert out.dtype == torch.float32 and out.shape == ()
    assert relerr(out, ref) < fwd_tol, (out, ref)
    for name, g, r in zip(("hidden", "weight", "bias"), grads, ref_grads):
        assert g.dtype == dtype
        assert relerr(g, r) < grad_tol, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,v,kw", [
    (1, 203, dict(reduction="mean")),                                   # one token, V % 16 != 0
    (45, 203, dict(reduction="sum", bias=True, z_loss=1e-2)),
    (60, 150, dict(reduction="mean", normalize="sequence", segments=5, vocab_size=141)),  # packed, padded
])
def test_fused_matches_reference(fused_calls, dtype, n, v, kw):
    compare(n, 40, v, dtype, **kw)
    assert fused_calls, "the scalar loss with a gradient must take the forward-pass gradient"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_over_several_token_chunks(monkeypatch, fused_calls, dtype):
    # One token tile per chunk: 100 rows, ~70 trained, give full, partial and empty chunks, so
    # the fp32 dW accumulator's first / middle / last and skipped-empty steps all run.
    monkeypatch.setattr(F, "FUSED_WORKSPACE_BYTES", 1)
    compare(100, 32, 200, dtype, reduction="mean", normalize="sequence", segments=4, bias=True, z_loss=1e-3,
            vocab_size=187, num_items=torch.tensor(57.0))
    assert fused_calls


def test_fused_with_the_h100_block_sizes(monkeypatch, fused_calls):
    monkeypatch.setattr(K, "_config", lambda device, dt: K.CUDA_CONFIG_FP32)
    compare(150, 48, 300, torch.float32, reduction="sum", bias=True)
    assert fused_calls


def test_frozen_weight_or_trunk(fused_calls):
    hidden, weight, labels, b, _ = make_case(30, 16, 130, torch.float32, bias=True)
    h = hidden.clone().requires_grad_()
    linear_cross_entropy(h, weight, labels, bias=b, backend="triton").backward()
    assert fused_calls[-1] == (True, False)
    ref_h = hidden.clone().requires_grad_()
    linear_cross_entropy_reference(ref_h, weight, labels, bias=b).backward()
    assert relerr(h.grad, ref_h.grad) < 1e-4
    w = weight.clone().requires_grad_()
    linear_cross_entropy(hidden, w, labels, bias=b, backend="triton").backward()
    assert fused_calls[-1] == (False, True)
    ref_w = weight.clone().requires_grad_()
    linear_cross_entropy_reference(hidden, ref_w, labels, bias=b).backward()
    assert relerr(w.grad, ref_w.grad) < 1e-4


def test_no_extra_work_without_a_gradient_or_a_scalar(fused_calls):
    hidden, weight, labels, _, _ = make_case(20, 16, 100, torch.float32)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.no_grad():
        linear_cross_entropy(h, w, labels, backend="triton")
    linear_cross_entropy(hidden, weight, labels, backend="triton")  # nothing requires grad
    linear_cross_entropy(h, w, labels, backend="triton", reduction="none").sum().backward()
    linear_cross_entropy(h, w, labels, backend="triton", softcap=4.0).backward()  # needs the logits
    assert not fused_calls


def test_all_ignored_and_stats(fused_calls):
    hidden, weight, labels, _, _ = make_case(9, 16, 70, torch.float32)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = linear_cross_entropy(h, w, torch.full_like(labels, IGNORE), backend="triton")
    loss.backward()
    assert loss.item() == 0.0 and not h.grad.any() and not w.grad.any()
    h.grad = None
    loss, stats = linear_cross_entropy(h, w, labels, backend="triton", return_stats=True)
    ref, ref_stats = linear_cross_entropy_reference(hidden, weight, labels, return_stats=True)
    assert relerr(stats["token_loss"], ref_stats["token_loss"]) < 1e-5
    assert torch.equal(stats["correct"], ref_stats["correct"])
    assert len(fused_calls) == 2


def test_forward_with_grad_equals_forward_then_backward():
    # The same gradients as the recomputing path (fp32: the two differ only in rounding).
    hidden, weight, labels, b, _ = make_case(70, 24, 157, torch.float32, bias=True)
    tw = torch.rand(70)
    tl, lse, pred, gh, gw, gb = F.forward_with_grad(hidden, weight, labels, b, tw, IGNORE, 1e-3, 150)
    tl2, lse2, pred2 = K.forward(hidden, weight, labels, b, IGNORE, 1e-3, None, 150)
    gh2, gw2, gb2 = K.backward(tw, hidden, weight, labels, b, lse2, IGNORE, 1e-3, None, 150)
    torch.testing.assert_close(tl, tl2)
    assert torch.equal(pred, pred2)
    for a, r in ((gh, gh2), (gw, gw2), (gb, gb2)):
        assert relerr(a, r) < 1e-5
    assert not gw[150:].any() and not gb[150:].any()  # padded rows take no gradient


def test_opcheck_with_grad_op():
    hidden, weight, labels, b, _ = make_case(11, 8, 40, torch.float32, bias=True)
    torch.library.opcheck(torch.ops.s1kernels.linear_cross_entropy_with_grad.default,
                          (hidden.requires_grad_(), weight.requires_grad_(), labels, b.requires_grad_(),
                           torch.rand(11), IGNORE, 1e-2, 37, True, True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
