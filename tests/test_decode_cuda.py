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


# ----------------------------------------------------------------------------- edge layouts and rows

def _on_gpu(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x on the GPU as contiguous rows ("aligned"), rows offset by one element in a buffer of
    stride V + 2 ("unaligned": most rows miss the 16-byte alignment and take scalar loads), or
    rows padded with NaN past V ("padded": the columns past V must never be read)."""
    B, V = x.shape
    if layout == "aligned":
        return x.cuda()
    if layout == "unaligned":
        buf = torch.full((B, V + 2), float("nan"), dtype=x.dtype, device="cuda")
        out = buf[:, 1:V + 1]
    else:
        buf = torch.full((B, V + 11), float("nan"), dtype=x.dtype, device="cuda")
        out = buf[:, :V]
    out.copy_(x)
    return out


def _twin_and_gpu(x, sampling, layout, budget=None, start_phase="answer", state_fn=None, vocab_size=None):
    """One step of the twin and the kernel on the same logits and per-row configuration."""
    B = x.shape[0]
    budget = budget or Budget()
    s_c, s_g = DecodeState.new(B, start_phase=start_phase), DecodeState.new(B, "cuda", start_phase=start_phase)
    if state_fn is not None:
        state_fn(s_c)
        state_fn(s_g)
    t_c, l_c = decode_step(x, s_c, budget.tensors(B, "cpu"), sampling.tensors(B, "cpu"), FORCING,
                           vocab_size=vocab_size, backend="cpp")
    t_g, l_g = decode_step(_on_gpu(x, layout), s_g, budget.tensors(B, "cuda"), sampling.tensors(B, "cuda"), FORCING,
                           vocab_size=vocab_size, backend="cuda")
    return t_c, l_c, s_c, _cpu(t_g), _cpu(l_g), s_g


# Per-row configurations; the first five leave no choice (greedy, or a kept set of maxima only).
_EDGE_CONFIGS = [dict(temperature=0.0), dict(temperature=1.0, top_k=1), dict(temperature=0.8, top_p=1e-7),
                 dict(temperature=1.0, min_p=1.0), dict(temperature=1e-30),
                 dict(temperature=1.0), dict(temperature=1.0, top_k=10**6), dict(temperature=0.7, top_k=3, top_p=0.5),
                 dict(temperature=1.3, top_p=0.999999), dict(temperature=1.0, min_p=0.3, top_k=2)]
_N_FORCED = 5


def _edge_sampling(B, seed=0):
    rows = [_EDGE_CONFIGS[r % len(_EDGE_CONFIGS)] for r in range(B)]
    get = lambda key, default: [c.get(key, default) for c in rows]  # noqa: E731
    return Sampling(temperature=get("temperature", 0.0), top_k=get("top_k", 0), top_p=get("top_p", 1.0),
                    min_p=get("min_p", 0.0), seed=[seed * 1000 + r for r in range(B)])


@pytest.mark.parametrize("layout", ["aligned", "unaligned", "padded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("V", [9, 15, 16, 17, 511, 513, 4100, 8199])
def test_tiny_odd_and_unaligned_vocab_matches_twin(V, dtype, layout):
    """V below one 16-byte vector, below the block's 512 threads, odd, just past a multiple of
    the vector and the block: no read past V, and the row/vector tails are all visited."""
    g = torch.Generator().manual_seed(V)
    B = 2 * len(_EDGE_CONFIGS)
    x = random_logits(g, B, V, dtype)
    t_c, l_c, s_c, t_g, l_g, s_g = _twin_and_gpu(x, _edge_sampling(B), layout)
    assert int(_cpu(s_g.error).abs().sum()) == 0
    forced = torch.tensor([r % len(_EDGE_CONFIGS) < _N_FORCED for r in range(B)])
    assert torch.equal(t_c[forced], t_g[forced])
    assert int((t_c != t_g).sum()) <= 1
    same = t_c == t_g
    torch.testing.assert_close(l_g[same], l_c[same], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_single_unaligned_row(dtype):
    V = 1001
    x = random_logits(torch.Generator().manual_seed(5), 1, V, dtype)
    buf = torch.empty(V + 1, dtype=dtype, device="cuda")
    for temperature in (0.0, 1.0):
        x_gpu = buf[1:].view(1, V)
        x_gpu.copy_(x)
        s_c, s_g = DecodeState.new(1, start_phase="answer"), DecodeState.new(1, "cuda", start_phase="answer")
        t_c, _ = decode_step(x, s_c, Budget().tensors(1, "cpu"), Sampling(temperature=temperature).tensors(1, "cpu"),
                             FORCING, backend="cpp")
        t_g, _ = decode_step(x_gpu, s_g, Budget().tensors(1, "cuda"),
                             Sampling(temperature=temperature).tensors(1, "cuda"), FORCING, backend="cuda")
        assert torch.equal(t_c, _cpu(t_g))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_columns_past_vocab_size_are_never_read(dtype):
    B, V, vocab = 20, 4112, 4099  # vocab_size not a multiple of the 8-element vector
    x = random_logits(torch.Generator().manual_seed(11), B, V, dtype)
    x[:, vocab:] = float("nan")
    t_c, l_c, s_c, t_g, l_g, s_g = _twin_and_gpu(x, _edge_sampling(B, seed=1), "padded", vocab_size=vocab)
    assert int(_cpu(s_g.error).abs().sum()) == 0
    assert bool((t_g < vocab).all())
    assert int((t_c != t_g).sum()) <= 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_narrow_range_rows_with_ties_and_neg_inf(dtype, sign):
    """Rows whose finite logits share one or two digit-0 bins (the register histogram), with
    many ties at every filter threshold and -inf entries (top_k past the finite count)."""
    g = torch.Generator().manual_seed(3)
    B, V = 4 * len(_EDGE_CONFIGS), 3001
    x = sign * (1.0 + torch.randint(0, 8, (B, V), generator=g).float() / 8)  # 8 values in [1, 2) or (-2, -1]
    x[torch.rand(B, V, generator=g) < 0.2] = float("-inf")
    x[B // 2:, : V - 10] = float("-inf")  # 10 finite ids: top_k = 10**6 and top_k = 3 bracket them
    x = x.to(dtype)
    for layout in ("aligned", "unaligned"):
        t_c, l_c, s_c, t_g, l_g, s_g = _twin_and_gpu(x, _edge_sampling(B, seed=2), layout)
        assert int(_cpu(s_g.error).abs().sum()) == 0
        forced = torch.tensor([r % len(_EDGE_CONFIGS) < _N_FORCED for r in range(B)])
        assert torch.equal(t_c[forced], t_g[forced])
        assert int((t_c != t_g).sum()) <= 2


def test_signed_zeros_and_extreme_finite_values():
    B, V = len(_EDGE_CONFIGS), 700
    big = torch.finfo(torch.float32).max
    x = torch.zeros(B, V)
    x[:, ::2] = -0.0
    x[:, 100] = -big
    x[:, 200] = big
    x[:, 201] = big
    x[:, 300] = -big
    t_c, l_c, s_c, t_g, l_g, s_g = _twin_and_gpu(x, _edge_sampling(B, seed=3), "aligned")
    assert int(_cpu(s_g.error).abs().sum()) == 0
    assert set(t_g.tolist()) <= {200, 201}
    assert torch.equal(t_c[:_N_FORCED], t_g[:_N_FORCED])
    # with every logit 0 or -0 (ties everywhere), the greedy pick is the first id
    t_c, _, _, t_g, _, _ = _twin_and_gpu(torch.zeros(B, V) * torch.tensor([1.0, -1.0]).repeat(V // 2),
                                         _edge_sampling(B, seed=4), "unaligned")
    assert t_g[0].item() == 0 and t_c[0].item() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("V", [9, 5000])
def test_error_rows_all_dtypes(dtype, V):
    B = 8
    x = torch.randn(B, V)
    x[0] = float("-inf")  # nothing to sample
    x[1, V - 1] = float("nan")
    x[2, 0] = float("inf")
    x[3] = float("-inf")
    x[3, 3] = 5.0  # only the suppressed end-of-thinking id is finite
    x[4] = float("nan")
    x = x.to(dtype)
    budget = Budget(min_thinking_tokens=100, mode="suppress")
    temps = Sampling(temperature=[0.0, 1.0] * (B // 2), top_k=5, top_p=0.9, seed=list(range(B)))
    for layout in ("aligned", "unaligned"):
        t_c, l_c, s_c, t_g, l_g, s_g = _twin_and_gpu(x, temps, layout, budget=budget, start_phase="thinking")
        assert _cpu(s_g.error)[:5].tolist() == [D.ERROR_NO_TOKEN, D.ERROR_NONFINITE, D.ERROR_NONFINITE,
                                               D.ERROR_NO_TOKEN, D.ERROR_NONFINITE]
        assert t_g[:5].tolist() == [FORCING.pad_id] * 5 and l_g[:5].tolist() == [0.0] * 5
        _states_equal(s_c, s_g)
        assert torch.equal(t_c, t_g)


def test_forced_rows_never_read_their_logits():
    """Done rows, pending injections and rows at the thinking cap emit without reading the
    (NaN) logits, so they get no error flag; the states match the twin."""
    B, V = 6, 1000
    x = torch.full((B, V), float("nan"))

    def setup(s):
        s.phase[0] = D.DONE
        s.inject_kind[1], s.inject_pos[1] = D.INJECT_WAIT, 1
        s.phase[2], s.inject_kind[2] = D.ANSWER, D.INJECT_DELIMITER
        s.phase[3], s.inject_kind[3], s.inject_pos[3] = D.ANSWER, D.INJECT_EXIT, 2
        s.thinking_tokens[4] = 50  # at max_thinking_tokens: the forced exit starts
        s.thinking_tokens[5] = 50

    budget = Budget(max_thinking_tokens=50)
    t_c, l_c, s_c, t_g, l_g, s_g = _twin_and_gpu(x, Sampling(temperature=[0.0, 1.0] * 3), "unaligned",
                                                 budget=budget, start_phase="thinking", state_fn=setup)
    assert _cpu(s_g.error).tolist() == [0] * B
    assert torch.equal(t_c, t_g) and t_g.tolist() == [FORCING.pad_id, 7, 4, 5, 3, 3]
    _states_equal(s_c, s_g)


def test_logprob_of_large_logits_matches_twin():
    """logprob = (x - max) - log(sum): computed as x - (max + log(sum)) in fp32, the sum would
    round at the scale of the logits (2e-3 at 3e4)."""
    B, V = 16, 2000
    g = torch.Generator().manual_seed(9)
    x = 30000.0 + 2.0 * torch.randn(B, V, generator=g)
    for sampling in (Sampling(), Sampling(temperature=1.0, seed=list(range(B)))):
        t_c, l_c, _, t_g, l_g, _ = _twin_and_gpu(x, sampling, "aligned")
        same = t_c == t_g
        assert int((~same).sum()) <= 1
        torch.testing.assert_close(l_g[same], l_c[same], atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------- determinism and the row split

_DET_CONFIGS = [dict(temperature=1.0), dict(temperature=0.7, top_p=0.9), dict(temperature=1.0, top_k=50, top_p=0.95),
                dict(temperature=1.1, min_p=0.02), dict(temperature=0.8, top_k=7)]


def _same_row_everywhere(row: torch.Tensor, B: int, params: dict, seed=12345):
    """One row copied to every batch position, at a stride that moves the 16-byte alignment from
    row to row, all with the same seed and step; returns (tokens, logprobs) on the CPU."""
    V = row.numel()
    buf = torch.full((B, V + 3), float("nan"), dtype=row.dtype, device="cuda")
    x = buf[:, 1:V + 1]
    x.copy_(row.expand(B, V))
    sampling = Sampling(seed=[seed] * B, **params)
    tok, lp = decode_step(x, DecodeState.new(B, "cuda", start_phase="answer"), Budget().tensors(B, "cuda"),
                          sampling.tensors(B, "cuda"), FORCING, backend="cuda")
    return _cpu(tok), _cpu(lp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("params", _DET_CONFIGS)
def test_same_seed_same_token_at_every_batch_position_and_run(dtype, params):
    """Integer histograms and a fixed owner per element: the batch position, the row's alignment
    and the run change nothing, bit for bit (logprob included, for the same batch size)."""
    g = torch.Generator().manual_seed(3)
    V = 151_665
    row = (torch.randn(V, generator=g) * 3.0).to(dtype)
    row[1000:1010] = row.max()  # ties at the top
    for B in (1, 5, 64, 300):  # 8, 8, 4 and 1 CTAs per row on a 132-SM H100
        t1, l1 = _same_row_everywhere(row, B, params)
        t2, l2 = _same_row_everywhere(row, B, params)
        assert torch.equal(t1, t2) and torch.equal(l1, l2)
        assert bool((t1 == t1[0]).all()), (B, t1.unique())
        assert bool((l1 == l1[0]).all())
        if B == 1:
            first = t1[0]
        assert t1[0] == first, (B, int(t1[0]), int(first))  # CTAs per row change no token


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 3, 64, 200])
def test_row_split_across_ctas_matches_twin(dtype, B):
    """Small batches split each row over a cluster of CTAs; the result is the twin's."""
    g = torch.Generator().manual_seed(B)
    V = 152_064
    x = (torch.randn(B, V, generator=g) * torch.linspace(0.5, 5.0, B)[:, None]).to(dtype)
    sampling = Sampling(temperature=[0.6 + 0.01 * r for r in range(B)], top_k=[0 if r % 3 else 40 for r in range(B)],
                        top_p=[1.0 if r % 2 else 0.9 for r in range(B)], seed=list(range(B)))
    t_c, l_c = decode_step(x, DecodeState.new(B, start_phase="answer"), Budget().tensors(B, "cpu"),
                           sampling.tensors(B, "cpu"), FORCING, backend="cpp")
    t_g, l_g = decode_step(x.cuda(), DecodeState.new(B, "cuda", start_phase="answer"), Budget().tensors(B, "cuda"),
                           sampling.tensors(B, "cuda"), FORCING, backend="cuda")
    assert int((t_c != _cpu(t_g)).sum()) <= max(1, B // 100)
    same = t_c == _cpu(t_g)
    torch.testing.assert_close(_cpu(l_g)[same], l_c[same], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_suppressed_ids_above_everything_are_subtracted_once(dtype):
    """Thinking rows that may not stop yet, with the end/EOS ids (and a repeat of one in both
    lists) holding the largest logits: the histograms count them and take them back out once;
    no row samples them, and every row agrees with the twin."""
    forcing = D.ForcingTokens(end_think_ids=[3, 1], delimiter_completion_ids=[], wait_ids=[6],
                              forced_exit_ids=[3], eos_ids=[1, 2], pad_id=0)
    g = torch.Generator().manual_seed(11)
    B, V = 40, 50_001
    x = torch.randn(B, V, generator=g)
    x[:, [1, 2, 3]] = 30.0
    x = x.to(dtype)
    budget = Budget(min_thinking_tokens=1000, mode="suppress")
    sampling = Sampling(temperature=[0.0, 1.0, 0.8, 1.2] * 10, top_k=[0, 0, 5, 100] * 10,
                        top_p=[1.0, 0.9, 1.0, 0.5] * 10, seed=list(range(B)))
    t_c, l_c = decode_step(x, DecodeState.new(B), budget.tensors(B, "cpu"), sampling.tensors(B, "cpu"), forcing,
                           backend="cpp")
    t_g, l_g = decode_step(x.cuda(), DecodeState.new(B, "cuda"), budget.tensors(B, "cuda"), sampling.tensors(B, "cuda"),
                           forcing, backend="cuda")
    t_g = _cpu(t_g)
    assert not bool(torch.isin(t_g, torch.tensor([1, 2, 3])).any())
    assert int((t_c != t_g).sum()) <= 1
