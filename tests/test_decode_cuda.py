"""The CUDA decode kernel against the CPU twin (run on a GPU machine; skipped without one).

Greedy steps and the whole budget-forcing state machine must agree exactly. Sampled tokens
agree except where a value sits within fp32 rounding of a filter boundary or of a Gumbel tie
(the kernel computes in fp32, the twin in fp64), so those comparisons allow a tiny mismatch rate.
"""
import pytest
import torch

from s1kernels.ops import decode as D
from s1kernels.ops.decode import Budget, DecodeState, Sampling, decode_step
from test_decode import FORCING, random_config, random_logits

pytestmark = pytest.mark.cuda


def _cpu(t):
    return t.detach().to("cpu")


def _states_equal(a: DecodeState, b: DecodeState):
    for name, x, y in zip(D._STATE_FIELDS, a.tensors(), b.tensors()):
        assert torch.equal(_cpu(x), _cpu(y)), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("V", [61, 4099, 152064])
def test_greedy_with_forcing_matches_twin(dtype, V):
    g = torch.Generator().manual_seed(V)
    B = 33
    budget, _ = random_config(g, B)
    sampling = Sampling()  # greedy
    bt_c, st_c = budget.tensors(B, "cpu"), sampling.tensors(B, "cpu")
    bt_g, st_g = budget.tensors(B, "cuda"), sampling.tensors(B, "cuda")
    s_c, s_g = DecodeState.new(B), DecodeState.new(B, device="cuda")
    for step in range(25):
        x = random_logits(g, B, V, dtype)
        t_c, l_c = decode_step(x, s_c, bt_c, st_c, FORCING, backend="cpp")
        t_g, l_g = decode_step(x.cuda(), s_g, bt_g, st_g, FORCING, backend="cuda")
        assert torch.equal(t_c, _cpu(t_g)), step
        torch.testing.assert_close(_cpu(l_g), l_c, atol=1e-4, rtol=1e-4)
        _states_equal(s_c, s_g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("params", [dict(temperature=1.0), dict(temperature=0.7, top_p=0.95),
                                    dict(temperature=1.0, top_k=50, top_p=0.95), dict(temperature=1.2, min_p=0.05),
                                    dict(temperature=0.9, top_k=7)])
def test_sampling_matches_twin(dtype, params):
    B, V = 256, 32011
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(B, V, generator=g) * torch.linspace(0.5, 6.0, B)[:, None]).to(dtype)
    x_odd = torch.empty(B, V + 1, dtype=dtype, device="cuda")[:, 1:]  # rows not 16-byte aligned: scalar loads
    x_odd.copy_(x)
    for logits, logits_gpu in ((x, x.cuda()), (x, x_odd)):
        sampling = Sampling(seed=list(range(B)), **params)
        t_c, l_c = decode_step(logits, DecodeState.new(B, start_phase="answer"), Budget().tensors(B, "cpu"),
                               sampling.tensors(B, "cpu"), FORCING, backend="cpp")
        t_g, l_g = decode_step(logits_gpu, DecodeState.new(B, "cuda", start_phase="answer"),
                               Budget().tensors(B, "cuda"), sampling.tensors(B, "cuda"), FORCING, backend="cuda")
        mismatch = int((t_c != _cpu(t_g)).sum())
        assert mismatch <= 2, mismatch
        same = t_c == _cpu(t_g)
        torch.testing.assert_close(_cpu(l_g)[same], l_c[same], atol=1e-4, rtol=1e-4)


def test_multistep_sampling_with_forcing_matches_twin():
    g = torch.Generator().manual_seed(7)
    B, V = 64, 1000
    budget, sampling = random_config(g, B)
    s_c, s_g = DecodeState.new(B), DecodeState.new(B, device="cuda")
    args_c = (budget.tensors(B, "cpu"), sampling.tensors(B, "cpu"))
    args_g = (budget.tensors(B, "cuda"), sampling.tensors(B, "cuda"))
    diverged = torch.zeros(B, dtype=torch.bool)
    for _ in range(30):
        x = random_logits(g, B, V, torch.bfloat16)
        t_c, _ = decode_step(x, s_c, *args_c, FORCING, backend="cpp")
        t_g, _ = decode_step(x.cuda(), s_g, *args_g, FORCING, backend="cuda")
        diverged |= t_c != _cpu(t_g)
    assert int(diverged.sum()) <= 1
    keep = ~diverged
    for name, a, b in zip(D._STATE_FIELDS, s_c.tensors(), s_g.tensors()):
        assert torch.equal(a[keep], _cpu(b)[keep]), name


def test_non_finite_rows_on_gpu():
    B, V = 3, 5000
    x = torch.randn(B, V)
    x[1, 4321] = float("nan")
    x[2] = float("-inf")
    s = DecodeState.new(B, "cuda", start_phase="answer")
    tok, lp = decode_step(x.cuda(), s, Budget().tensors(B, "cuda"), Sampling(temperature=1.0).tensors(B, "cuda"),
                          FORCING, backend="cuda")
    assert _cpu(s.error).tolist() == [0, D.ERROR_NONFINITE, D.ERROR_NO_TOKEN]
    assert _cpu(tok)[1:].tolist() == [FORCING.pad_id] * 2 and _cpu(s.phase)[1:].tolist() == [D.DONE] * 2


def test_cuda_graph_capture_and_replay():
    g = torch.Generator().manual_seed(3)
    B, V = 16, 152064
    budget = Budget(min_thinking_tokens=4, max_thinking_tokens=12, num_waits=1, max_answer_tokens=6)
    sampling = Sampling(temperature=0.8, top_k=50, top_p=0.95, seed=list(range(B)))
    bt, stt = budget.tensors(B, "cuda"), sampling.tensors(B, "cuda")
    state = DecodeState.new(B, device="cuda")
    logits = torch.zeros(B, V, dtype=torch.bfloat16, device="cuda")

    # warm up on a side stream (caches the forcing table on the device), then reset the state
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        decode_step(logits, state.clone(), bt, stt, FORCING, backend="cuda")
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tokens, logprobs = decode_step(logits, state, bt, stt, FORCING, backend="cuda")

    ref_state = DecodeState.new(B)
    bt_c, st_c = budget.tensors(B, "cpu"), sampling.tensors(B, "cpu")
    diverged = torch.zeros(B, dtype=torch.bool)
    for _ in range(20):
        x = random_logits(g, B, V, torch.bfloat16)
        logits.copy_(x)
        graph.replay()
        t_c, _ = decode_step(x, ref_state, bt_c, st_c, FORCING, backend="cpp")
        diverged |= t_c != _cpu(tokens)
    assert int(diverged.sum()) <= 1
    assert torch.equal(_cpu(state.step), torch.full((B,), 20, dtype=torch.int64))
    keep = ~diverged
    assert torch.equal(_cpu(state.phase)[keep], ref_state.phase[keep])
