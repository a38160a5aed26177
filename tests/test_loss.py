"""Fused linear + cross-entropy: every backend against the fp64 reference, options, stats, errors.

Triton cases run in the interpreter on CPU (TRITON_INTERPRET=1 from conftest), so they stay
small (H <= 64, V <= 300, N <= 64).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from s1kernels.ops.loss import triton_impl as K
from s1kernels.ops.loss import LinearCrossEntropy, linear_cross_entropy, linear_cross_entropy_reference

IGNORE = -100


def make_case(n, h, v, dtype, *, vocab_size=None, ignore_frac=0.3, bias=False, seed=0, segments=None):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) / math.sqrt(h) * 2.0
    labels = torch.randint(0, vocab_size or v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignore_frac] = IGNORE
    b = torch.randn(v, generator=g, dtype=torch.float64) if bias else None
    cu = None
    if segments is not None:
        cuts = torch.randperm(max(n - 1, 1), generator=g)[:segments - 1] + 1
        cuts = cuts if n > 1 else torch.zeros(0, dtype=torch.long)
        cu = torch.cat([torch.tensor([0]), cuts.sort().values.clamp(max=n), torch.tensor([n])]).to(torch.int32)
    return hidden.to(dtype), weight.to(dtype), labels, (b.to(dtype) if bias else None), cu


def run(fn, hidden, weight, labels, bias, grad_out_seed=1, **kw):
    """Loss and grads wrt (hidden, weight, bias) for a random upstream gradient."""
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    inputs = [hidden, weight]
    if bias is not None:
        bias = bias.detach().clone().requires_grad_()
        inputs.append(bias)
    out = fn(hidden, weight, labels, bias=bias, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed), dtype=torch.float64)
    grads = torch.autograd.grad(out, inputs, g.to(out.dtype), allow_unused=True)
    return out.detach(), [x.detach() for x in grads]


def relerr(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def check_against_reference(n, h, v, dtype, backend, *, bias=False, vocab_size=None, segments=None, fwd_tol, grad_tol,
                            **kw):
    hidden, weight, labels, b, cu = make_case(n, h, v, dtype, vocab_size=vocab_size, bias=bias, segments=segments)
    if cu is not None:
        kw["cu_seqlens"] = cu
    ref_kw = {k: x for k, x in kw.items() if k != "chunk_tokens"}
    ref, ref_grads = run(linear_cross_entropy_reference, hidden.double(), weight.double(), labels,
                         b.double() if b is not None else None, vocab_size=vocab_size, **ref_kw)
    out, grads = run(linear_cross_entropy, hidden, weight, labels, b, vocab_size=vocab_size, backend=backend, **kw)
    assert out.shape == ref.shape
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out).all()
    assert relerr(out, ref) < fwd_tol, (out, ref)
    for name, g, r in zip(("hidden", "weight", "bias"), grads, ref_grads):
        assert g.dtype == dtype
        assert relerr(g, r) < grad_tol, name


TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (1e-5, 1e-4), torch.float16: (2e-3, 1e-2),
       torch.bfloat16: (1e-2, 4e-2)}

OPTIONS = {
    "plain": dict(),
    "sequence": dict(normalize="sequence", segments=4),
    "z_loss": dict(z_loss=1e-3),
    "softcap": dict(softcap=5.0),
    "padded_vocab": dict(vocab_size=-7),  # resolved to V - 7
    "bias": dict(bias=True),
    "all": dict(normalize="sequence", segments=3, z_loss=1e-2, softcap=3.0, vocab_size=-13, bias=True),
}


def options(name, v):
    kw = dict(OPTIONS[name])
    if "vocab_size" in kw:
        kw["vocab_size"] = v + kw["vocab_size"]
    return kw


# ---------------------------------------------------------------------------------------------
# The reference itself
# ---------------------------------------------------------------------------------------------

def test_reference_matches_plain_cross_entropy():
    hidden, weight, labels, _, _ = make_case(50, 16, 257, torch.float64)
    logits = hidden @ weight.T
    expected = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    assert torch.allclose(linear_cross_entropy_reference(hidden, weight, labels), expected)
    none = linear_cross_entropy_reference(hidden, weight, labels, reduction="none")
    assert torch.allclose(none, F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none"))
    assert torch.allclose(linear_cross_entropy_reference(hidden, weight, labels, reduction="sum"), none.sum())


def test_reference_sequence_normalisation_by_hand():
    hidden, weight, labels, _, _ = make_case(30, 8, 100, torch.float64)
    cu = torch.tensor([0, 4, 4, 12, 30], dtype=torch.int32)  # includes an empty sample
    labels[4:12] = IGNORE  # and a sample with no trained token
    per_tok = F.cross_entropy(hidden @ weight.T, labels, ignore_index=IGNORE, reduction="none")
    means = [per_tok[a:b][labels[a:b] != IGNORE].mean() for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())
             if (labels[a:b] != IGNORE).any()]
    expected = torch.stack(means).mean()
    got = linear_cross_entropy_reference(hidden, weight, labels, cu_seqlens=cu, normalize="sequence")
    assert torch.allclose(got, expected)
    got_sum = linear_cross_entropy_reference(hidden, weight, labels, cu_seqlens=cu, normalize="sequence",
                                             reduction="sum")
    assert torch.allclose(got_sum, torch.stack(means).sum())


def test_reference_z_loss_softcap_padded_vocab_by_hand():
    hidden, weight, labels, b, _ = make_case(9, 8, 40, torch.float64, vocab_size=33, bias=True)
    z = hidden @ weight.T + b
    z = 2.0 * torch.tanh(z / 2.0)
    z = z[:, :33]
    lse = torch.logsumexp(z, -1)
    valid = labels != IGNORE
    tok = F.cross_entropy(z, labels, ignore_index=IGNORE, reduction="none") + 0.1 * lse**2 * valid
    got = linear_cross_entropy_reference(hidden, weight, labels, bias=b, softcap=2.0, z_loss=0.1, vocab_size=33,
                                         reduction="none")
    assert torch.allclose(got, tok)


# ---------------------------------------------------------------------------------------------
# torch and chunked backends (fast on CPU: the full matrix of sizes and options)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch"])
@pytest.mark.parametrize("n,v", [(1, 257), (7, 1000), (300, 257)])
@pytest.mark.parametrize("opt", list(OPTIONS))
def test_torch_backends_fp64(backend, n, v, opt):
    kw = options(opt, v)
    for reduction in ("mean", "sum", "none"):
        check_against_reference(n, 24, v, torch.float64, backend, reduction=reduction, chunk_tokens=64,
                                fwd_tol=1e-10, grad_tol=1e-9, **kw)


@pytest.mark.parametrize("backend", ["torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("opt", ["plain", "all"])
def test_torch_backends_low_precision(backend, dtype, opt):
    fwd_tol, grad_tol = TOL[dtype]
    check_against_reference(300, 32, 1000, dtype, backend, chunk_tokens=128, fwd_tol=fwd_tol, grad_tol=grad_tol,
                            **options(opt, 1000))


# ---------------------------------------------------------------------------------------------
# Triton (interpreter on CPU)
# ---------------------------------------------------------------------------------------------

@pytest.mark.interpreter
@pytest.mark.parametrize("n,v", [(1, 257), (7, 300), (64, 257)])
@pytest.mark.parametrize("opt,reduction", [("plain", "mean"), ("all", "none")])
def test_triton_fp32(n, v, opt, reduction):
    check_against_reference(n, 40, v, torch.float32, "triton", reduction=reduction, fwd_tol=1e-5, grad_tol=1e-4,
                            **options(opt, v))


@pytest.mark.interpreter
@pytest.mark.parametrize("opt", ["sequence", "z_loss", "softcap", "padded_vocab", "bias"])
def test_triton_options_fp32(opt):
    check_against_reference(23, 24, 130, torch.float32, "triton", reduction="sum", fwd_tol=1e-5, grad_tol=1e-4,
                            **options(opt, 130))


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("opt", ["plain", "all"])
def test_triton_half(dtype, opt):
    fwd_tol, grad_tol = TOL[dtype]
    check_against_reference(37, 64, 257, dtype, "triton", fwd_tol=fwd_tol, grad_tol=grad_tol, **options(opt, 257))


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_several_vocab_chunks(monkeypatch, dtype):
    # A tiny workspace forces many vocab chunks: the dH accumulator's first/middle/last steps.
    # N=100 (about 70 trained) also gives the grouped tile order a full and a partial group.
    monkeypatch.setattr(K, "WORKSPACE_BYTES", 1)
    fwd_tol, grad_tol = TOL[dtype]
    check_against_reference(100, 32, 200, dtype, "triton", fwd_tol=fwd_tol, grad_tol=grad_tol, **options("all", 200))


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_with_the_h100_block_sizes(monkeypatch, dtype):
    # The GPU launches use 128-256 wide tiles that the small interpreter config never shows:
    # run those exact configs here, on sizes that leave a partial tile in every dimension.
    cfg = K.CUDA_CONFIG_FP32 if dtype == torch.float32 else K.CUDA_CONFIG
    monkeypatch.setattr(K, "_config", lambda device, dt: cfg)
    fwd_tol, grad_tol = TOL[dtype]
    check_against_reference(300, 200, 300, dtype, "triton", fwd_tol=fwd_tol, grad_tol=grad_tol,
                            **options("all", 300))


@pytest.mark.interpreter
def test_triton_fp16_small_gradients_do_not_underflow():
    # 1/num_items = 1e-6: g * softmax would underflow in an fp16 dlogits workspace; the error
    # must stay at the level of rounding the fp16 gradients themselves.
    hidden, weight, labels, _, _ = make_case(40, 32, 200, torch.float16)
    num_items = torch.tensor(1e6)
    out, grads = run(linear_cross_entropy, hidden, weight, labels, None, backend="triton", num_items=num_items)
    ref, ref_grads = run(linear_cross_entropy_reference, hidden.double(), weight.double(), labels, None,
                         num_items=num_items)
    for g, r in zip(grads, ref_grads):
        floor = relerr(r.half(), r)
        assert relerr(g, r) < 1.5 * floor + 2e-3


def test_compaction_lists_trained_rows_first():
    labels = torch.tensor([5, IGNORE, 3, IGNORE, IGNORE, 0, 7, 2**32 + 5, 8])
    rows, lab, count, valid, pos = K._compact(labels, IGNORE, vocab_size=8)
    assert count.tolist() == [6]
    assert rows[:6].tolist() == [0, 2, 5, 6, 7, 8]
    # out-of-range labels have no target (never wrapped by the int32 cast onto token 5)
    assert lab[:6].tolist() == [5, 3, 0, 7, -1, -1]
    assert pos[valid].tolist() == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------
# Semantics shared by every backend
# ---------------------------------------------------------------------------------------------

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpreter)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", ["token", "sequence"])
def test_all_ignored_gives_zero_loss_and_zero_grads(backend, normalize):
    hidden, weight, labels, _, _ = make_case(13, 16, 130, torch.float32, bias=False)
    labels[:] = IGNORE
    b = torch.randn(130)
    cu = torch.tensor([0, 5, 13], dtype=torch.int32)
    for reduction in ("mean", "sum", "none"):
        out, grads = run(linear_cross_entropy, hidden, weight, labels, b, backend=backend, reduction=reduction,
                         normalize=normalize, cu_seqlens=cu, z_loss=1e-2)
        assert torch.all(out == 0)
        for g in grads:
            assert torch.isfinite(g).all() and torch.all(g == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_tokens_at_all(backend):
    hidden = torch.randn(0, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long)
    for reduction, normalize in (("mean", "token"), ("mean", "sequence"), ("sum", "token"), ("none", "token")):
        out = linear_cross_entropy(hidden, weight, labels, backend=backend, reduction=reduction, normalize=normalize)
        assert out.shape == (() if reduction != "none" else (0,))
        assert torch.all(out == 0)
        out.sum().backward()
    assert torch.all(weight.grad == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_hidden_and_int32_labels(backend):
    hidden = torch.randn(16, 30)[:, :20].T  # [20, 16], not contiguous
    weight = torch.randn(50, 16)
    labels = torch.randint(0, 50, (20,), dtype=torch.int32)
    labels[3] = IGNORE
    got = linear_cross_entropy(hidden, weight, labels, backend=backend)
    ref = linear_cross_entropy_reference(hidden.double(), weight.double(), labels)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_num_items_makes_micro_batches_exact(backend):
    hidden, weight, labels, _, cu = make_case(40, 16, 130, torch.float32, segments=6)
    full, full_grads = run(linear_cross_entropy, hidden, weight, labels, None, backend=backend)
    total = (labels != IGNORE).sum()  # a device tensor, as an all-reduced count would be
    parts = []
    grads = [torch.zeros_like(hidden), torch.zeros_like(weight)]
    for sl in (slice(0, 17), slice(17, 40)):
        h = hidden[sl].clone().requires_grad_()
        w = weight.clone().requires_grad_()
        loss = linear_cross_entropy(h, w, labels[sl], num_items=total, backend=backend)
        gh, gw = torch.autograd.grad(loss, [h, w])
        grads[0][sl] += gh
        grads[1] += gw
        parts.append(loss.detach())
    torch.testing.assert_close(sum(parts), full.float(), rtol=1e-5, atol=1e-6)
    hidden_ref = hidden.clone().requires_grad_()
    weight_ref = weight.clone().requires_grad_()
    gh, gw = torch.autograd.grad(linear_cross_entropy(hidden_ref, weight_ref, labels, backend=backend),
                                 [hidden_ref, weight_ref])
    torch.testing.assert_close(grads[0], gh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1], gw, rtol=1e-4, atol=1e-6)


def test_num_items_for_sequences_is_the_sample_count():
    hidden, weight, labels, _, cu = make_case(40, 16, 130, torch.float64, segments=5, ignore_frac=0.0)
    seq_mean = linear_cross_entropy(hidden, weight, labels, cu_seqlens=cu, normalize="sequence", backend="torch")
    seq_sum = linear_cross_entropy(hidden, weight, labels, cu_seqlens=cu, normalize="sequence", reduction="sum",
                                   backend="torch")
    got = linear_cross_entropy(hidden, weight, labels, cu_seqlens=cu, normalize="sequence",
                               num_items=torch.tensor(10.0), backend="torch")
    torch.testing.assert_close(got, seq_sum / 10)
    torch.testing.assert_close(seq_mean, seq_sum / 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stats(backend):
    hidden, weight, labels, b, _ = make_case(33, 16, 130, torch.float32, vocab_size=120, bias=True)
    # make a few predictions right, so accuracy is neither 0 nor 1
    labels[:10] = torch.where(labels[:10] == IGNORE, IGNORE, (hidden[:10] @ weight[:120].T + b[:120]).argmax(-1))
    kw = dict(vocab_size=120, bias=b, z_loss=1e-3, return_stats=True)
    loss, stats = linear_cross_entropy(hidden, weight, labels, backend=backend, **kw)
    ref, ref_stats = linear_cross_entropy_reference(hidden.double(), weight.double(), labels,
                                                    **{**kw, "bias": b.double()})
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["token_loss"].double(), ref_stats["token_loss"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["logsumexp"].double(), ref_stats["logsumexp"], rtol=1e-5, atol=1e-5)
    assert torch.equal(stats["correct"], ref_stats["correct"])
    assert 0 < stats["accuracy"].item() < 1
    torch.testing.assert_close(stats["accuracy"], ref_stats["accuracy"])


def test_module_wraps_the_function():
    hidden, weight, labels, _, cu = make_case(21, 16, 130, torch.float32, segments=3)
    mod = LinearCrossEntropy(normalize="sequence", z_loss=1e-3, backend="torch")
    assert "sequence" in repr(mod)
    expected = linear_cross_entropy(hidden, weight, labels, cu_seqlens=cu, normalize="sequence", z_loss=1e-3)
    torch.testing.assert_close(mod(hidden, weight, labels, cu_seqlens=cu), expected)


def test_autocast_casts_fp32_operands_like_linear():
    hidden, weight, labels, _, _ = make_case(19, 16, 130, torch.float32)
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, labels)
    loss.backward()
    expected = linear_cross_entropy(hidden.bfloat16(), weight.bfloat16(), labels)
    torch.testing.assert_close(loss, expected)
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_auto_backend_on_cpu_is_torch_and_chunked_is_not_a_backend():
    from s1kernels import backend as B

    assert B.resolve("loss", "auto", torch.device("cpu")) == "torch"
    hidden, weight, labels, _, _ = make_case(5, 8, 40, torch.float32)
    with pytest.raises(ValueError, match="expected one of .*'triton', 'torch'"):
        linear_cross_entropy(hidden, weight, labels, backend="chunked")


def test_explicit_triton_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    hidden, weight, labels, _, _ = make_case(5, 8, 40, torch.float32)
    with pytest.raises(ValueError, match="triton"):
        linear_cross_entropy(hidden, weight, labels, backend="triton")


# ---------------------------------------------------------------------------------------------
# Custom op registration and torch.compile
# ---------------------------------------------------------------------------------------------

def test_opcheck_custom_op():
    hidden, weight, labels, b, _ = make_case(11, 8, 40, torch.float32, bias=True)
    hidden.requires_grad_()
    weight.requires_grad_()
    b.requires_grad_()
    torch.library.opcheck(torch.ops.s1kernels.linear_cross_entropy.default,
                          (hidden, weight, labels, b, IGNORE, 1e-2, 2.0, 40, "torch", 4))


@pytest.mark.parametrize("need_hidden,need_weight", [(True, False), (False, True)])
def test_opcheck_backward_op(need_hidden, need_weight):
    hidden, weight, labels, b, _ = make_case(11, 8, 40, torch.float32, bias=True)
    lse = torch.logsumexp(hidden @ weight.T + b, -1)
    torch.library.opcheck(torch.ops.s1kernels.linear_cross_entropy_backward.default,
                          (torch.randn(11), hidden, weight, labels, b, lse, IGNORE, 0.0, 0.0, 40, "torch", 4,
                           need_hidden, need_weight))


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_inputs_skip_their_gradient(backend):
    hidden, weight, labels, b, _ = make_case(19, 16, 130, torch.float32, bias=True)
    ref_h, ref_w, ref_b = (x.clone().requires_grad_() for x in (hidden, weight, b))
    linear_cross_entropy(ref_h, ref_w, labels, bias=ref_b, backend=backend).backward()
    # frozen lm_head and bias: only hidden gets a gradient
    h = hidden.clone().requires_grad_()
    linear_cross_entropy(h, weight, labels, bias=b, backend=backend).backward()
    torch.testing.assert_close(h.grad, ref_h.grad)
    # frozen trunk: weight and bias only
    w, bb = weight.clone().requires_grad_(), b.clone().requires_grad_()
    linear_cross_entropy(hidden, w, labels, bias=bb, backend=backend).backward()
    torch.testing.assert_close(w.grad, ref_w.grad)
    torch.testing.assert_close(bb.grad, ref_b.grad)


def test_torch_compile_fullgraph():
    hidden, weight, labels, _, cu = make_case(24, 16, 130, torch.float32, segments=3)

    def step(h, w, y, cu):
        return linear_cross_entropy(h, w, y, cu_seqlens=cu, normalize="sequence", z_loss=1e-3, backend="auto",
                                    validate=False)

    # aot_eager: dynamo + AOTAutograd trace the op (fake impl, registered backward) without
    # spending CI time on inductor codegen of the few surrounding [N]-vector ops.
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = compiled(h1, w1, labels, cu)
    loss.backward()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    expected = step(h2, w2, labels, cu)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def _bad_cases():
    h = torch.randn(6, 8)
    w = torch.randn(20, 8)
    y = torch.tensor([1, 2, IGNORE, 3, 4, 5])
    return [
        ("hidden", TypeError, dict(hidden=h.numpy())),
        ("hidden", ValueError, dict(hidden=h[None])),
        ("hidden", TypeError, dict(hidden=h.long(), weight=w.long())),
        ("weight", TypeError, dict(weight=w.double())),
        ("weight", ValueError, dict(weight=torch.randn(20, 9))),
        ("labels", ValueError, dict(labels=y[:5])),
        ("labels", TypeError, dict(labels=y.float())),
        ("labels", ValueError, dict(labels=torch.tensor([1, 2, IGNORE, 20, 4, 5]))),
        ("labels", ValueError, dict(labels=torch.tensor([1, 2, -1, 3, 4, 5]))),
        ("labels", ValueError, dict(labels=torch.tensor([1, 2, 15, 3, 4, 5]), vocab_size=12)),
        ("bias", ValueError, dict(bias=torch.randn(19))),
        ("bias", TypeError, dict(bias=torch.randn(20).double())),
        ("reduction", ValueError, dict(reduction="avg")),
        ("normalize", ValueError, dict(normalize="sample")),
        ("backend", ValueError, dict(backend="cuBLAS")),
        ("vocab_size", ValueError, dict(vocab_size=21)),
        ("vocab_size", ValueError, dict(vocab_size=0)),
        ("z_loss", ValueError, dict(z_loss=-1.0)),
        ("softcap", ValueError, dict(softcap=0.0)),
        ("ignore_index", ValueError, dict(ignore_index=3)),
        ("num_items", TypeError, dict(num_items=5)),
        ("num_items", ValueError, dict(num_items=torch.ones(2))),
        ("num_items", ValueError, dict(num_items=torch.tensor(4.0), reduction="sum")),
        ("cu_seqlens", ValueError, dict(cu_seqlens=torch.tensor([0, 4, 2, 6], dtype=torch.int32))),
        ("cu_seqlens", ValueError, dict(cu_seqlens=torch.tensor([0, 4, 5], dtype=torch.int32))),
        ("cu_seqlens", ValueError, dict(cu_seqlens=torch.tensor([6], dtype=torch.int32))),
        ("cu_seqlens", TypeError, dict(cu_seqlens=torch.tensor([0.0, 6.0]))),
    ]


@pytest.mark.parametrize("arg,exc,kw", _bad_cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input_names_the_argument(arg, exc, kw):
    args = dict(hidden=torch.randn(6, 8), weight=torch.randn(20, 8), labels=torch.tensor([1, 2, IGNORE, 3, 4, 5]))
    for k in ("hidden", "weight", "labels"):
        if k in kw:
            args[k] = kw.pop(k)
    with pytest.raises(exc, match=arg):
        linear_cross_entropy(args["hidden"], args["weight"], args["labels"], **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_validate_can_be_switched_off(backend):
    # Without validation (the CUDA default: no host sync) an out-of-range label is not an error
    # and reads no memory out of bounds; its loss is just the logsumexp.
    # Labels past int32 (2^32 + 1 would wrap onto token 1) mean the same on every backend.
    h, w = torch.randn(6, 8), torch.randn(20, 8)
    y = torch.tensor([1, 25, 2**32 + 1, 2**31, -7, 3])
    out = linear_cross_entropy(h, w, y, reduction="none", validate=False, backend=backend)
    assert torch.isfinite(out).all()
    for i in (1, 2, 3, 4):
        torch.testing.assert_close(out[i], torch.logsumexp(h[i] @ w.T, 0), msg=f"{backend} row {i}")
    torch.testing.assert_close(out, linear_cross_entropy(h, w, y, reduction="none", validate=False, backend="torch"))


@pytest.mark.parametrize("ignore_index", [2**63, -(2**63) - 1, 10**30])
def test_ignore_index_beyond_int64_is_a_named_error(ignore_index):
    h, w = torch.randn(3, 8), torch.randn(20, 8)
    with pytest.raises(ValueError, match="ignore_index: expected an int64"):
        linear_cross_entropy(h, w, torch.tensor([1, 2, 3]), ignore_index=ignore_index)


# ---------------------------------------------------------------------------------------------
# On a GPU: the compiled kernels with the CUDA block sizes (skipped without one)
# ---------------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("n,h,v", [(1, 64, 1000), (777, 256, 5003), (3000, 512, 33000)])
@pytest.mark.parametrize("softcap", [30.0, None])  # None: the gradient in the forward pass (triton_fused.py)
def test_triton_cuda_against_reference(dtype, n, h, v, softcap):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    hidden = torch.randn(n, h, device=dev).to(dtype)
    weight = (torch.randn(v, h, device=dev) / h**0.5).to(dtype)
    b = torch.randn(v, device=dev).to(dtype)
    labels = torch.randint(0, v - 5, (n,), device=dev)
    labels[torch.rand(n, device=dev) < 0.3] = IGNORE
    cu = torch.tensor([0, n // 3, n // 3, n], dtype=torch.int32, device=dev)
    kw = dict(cu_seqlens=cu, normalize="sequence", z_loss=1e-4, softcap=softcap, vocab_size=v - 5)
    fwd_tol, grad_tol = TOL[dtype] if dtype != torch.float32 else (5e-3, 3e-2)  # fp32 dots run as tf32
    for bias in (None, b):
        out, grads = run(linear_cross_entropy, hidden, weight, labels, bias, backend="triton", **kw)
        ref, ref_grads = run(linear_cross_entropy_reference, hidden.double(), weight.double(), labels,
                             bias.double() if bias is not None else None, **kw)
        assert relerr(out, ref) < fwd_tol
        for g, r in zip(grads, ref_grads):
            assert relerr(g, r) < grad_tol


@pytest.mark.cuda
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_triton_cuda_memory_is_bounded(monkeypatch, reduction):
    # No [N, V] buffer. reduction="none" (recomputing backward): beyond inputs and gradients,
    # only the dlogits workspace, the fp32 dH accumulator and O(N) vectors. A scalar loss
    # (gradient in the forward pass, triton_fused.py) with a budget of a quarter of [N, V]:
    # the workspace, the tile maxima, the fp32 dW accumulator and the scaled gradients.
    from s1kernels.ops.loss import triton_fused

    dev = torch.device("cuda")
    n, h, v = 8192, 512, 65536
    monkeypatch.setattr(triton_fused, "FUSED_WORKSPACE_BYTES", n * v * 2 // 4)
    hidden = torch.randn(n, h, device=dev, dtype=torch.bfloat16, requires_grad=True)
    weight = (torch.randn(v, h, device=dev) / h**0.5).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, v, (n,), device=dev)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = linear_cross_entropy(hidden, weight, labels, backend="triton", reduction=reduction)
    (loss.sum() if reduction == "none" else loss).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - (hidden.numel() + weight.numel()) * 2
    grads = (n * h + v * h) * 2
    if reduction == "none":
        bound = K.WORKSPACE_BYTES + n * h * 4 + 32 * 2**20
    else:
        tile_max = (n // 4) * (v // 128) * 4
        bound = triton_fused.FUSED_WORKSPACE_BYTES + tile_max + v * h * 4 + 2 * grads + 32 * 2**20
    assert extra < bound < n * v * 2, (extra, bound)
