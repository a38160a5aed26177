"""Fused decode step: torch reference vs C++ CPU twin (exact), budget-forcing properties,
sampling sets and distribution, dtypes, non-finite rows, bad input."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s1kernels import backend as _backend
from s1kernels.ops import decode as D
from s1kernels.ops.decode import (Budget, DecodeState, ForcingTokens, Sampling, decode_step, philox4x32,
                                  philox_uniforms)

HAS_CPP = _backend.native() is not None
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="s1kernels._C is not built")

# A toy vocabulary: 1, 2 = EOS; 3 = end of thinking; 4, 5 = delimiter completion;
# 6, 7 = "Wait"; forced exit = 3 4 5 8; 0 = pad.
FORCING = ForcingTokens(end_think_ids=[3], delimiter_completion_ids=[4, 5], wait_ids=[6, 7],
                        forced_exit_ids=[3, 4, 5, 8], eos_ids=[1, 2], pad_id=0)
STOP = (1, 2, 3)


def random_config(g: torch.Generator, B: int, greedy_share=0.25):
    """Random per-row budgets and sampling parameters (greedy rows included)."""
    r = lambda lo, hi: torch.randint(lo, hi, (B,), generator=g).tolist()  # noqa: E731
    u = lambda: torch.rand(B, generator=g).tolist()  # noqa: E731
    mn = r(0, 8)
    budget = Budget(min_thinking_tokens=mn, max_thinking_tokens=[a + b for a, b in zip(mn, r(0, 16))],
                    num_waits=r(0, 3), max_answer_tokens=r(1, 8),
                    mode=["wait" if v < 0.5 else "suppress" for v in u()])
    temps = [0.0 if v < greedy_share else 0.2 + 1.5 * v for v in u()]
    sampling = Sampling(temperature=temps, top_k=[0 if v < 0.4 else int(1 + 10 * v) for v in u()],
                        top_p=[1.0 if v < 0.4 else 0.3 + 0.7 * v for v in u()],
                        min_p=[0.0 if v < 0.6 else 0.3 * v for v in u()],
                        seed=r(-2**62, 2**62))
    return budget, sampling


def random_logits(g, B, V, dtype, scale=2.0):
    x = torch.randn(B, V, generator=g) * scale
    x[:, 3] += 1.5  # end of thinking and EOS are likely, so the forcing rules fire
    x[:, 1] += 0.5
    return x.to(dtype)


# One-token wait, no delimiter completion, two end-of-thinking ids: the other branches.
FORCING_SHORT = ForcingTokens(end_think_ids=[3, 9], delimiter_completion_ids=[], wait_ids=[6],
                              forced_exit_ids=[3], eos_ids=[1], pad_id=2)


def run_pair(seed, B, V, steps, dtype, vocab_size=None, row_pad=0, forcing=FORCING):
    """Drives the reference and the CPU twin on the same random logits; asserts exact agreement."""
    g = torch.Generator().manual_seed(seed)
    budget, sampling = random_config(g, B)
    bt, stt = budget.tensors(B, "cpu"), sampling.tensors(B, "cpu")
    s_ref, s_cpp = DecodeState.new(B), DecodeState.new(B)
    for step in range(steps):
        full = random_logits(g, B, V + row_pad, dtype)
        if vocab_size is not None:
            full[:, vocab_size:] = 100.0  # padded columns must never be read
        x = full[:, :V]  # row stride V + row_pad
        t_ref, lp_ref = decode_step(x, s_ref, bt, stt, forcing, vocab_size=vocab_size, backend="torch")
        t_cpp, lp_cpp = decode_step(x, s_cpp, bt, stt, forcing, vocab_size=vocab_size, backend="cpp")
        assert torch.equal(t_ref, t_cpp), (seed, step, t_ref, t_cpp)
        torch.testing.assert_close(lp_cpp, lp_ref, atol=2e-5, rtol=1e-5)
        for name, a, b in zip(D._STATE_FIELDS, s_ref.tensors(), s_cpp.tensors()):
            assert torch.equal(a, b), (seed, step, name, a, b)
    return s_ref


# ----------------------------------------------------------------------------- Philox

def test_philox_known_answers():
    # Random123's known-answer vectors for philox4x32_10
    T = lambda v: torch.tensor([v], dtype=torch.int64)  # noqa: E731
    cases = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
             ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
             ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
              (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
    for ctr, key, want in cases:
        got = philox4x32(*map(T, ctr), *map(T, key))
        assert [int(w) for w in got] == list(want)


def test_philox_uniforms_depend_on_seed_and_step_only():
    seed = torch.tensor([7, 7, -3, 2**62], dtype=torch.int64)
    step = torch.tensor([0, 5, 5, 1], dtype=torch.int64)
    u = philox_uniforms(seed, step, 37)
    assert u.shape == (4, 37) and bool(((u > 0) & (u < 1)).all())
    single = philox_uniforms(seed[2:3], step[2:3], 37)
    assert torch.equal(u[2:3], single)
    assert not torch.equal(u[0], u[1])


# ----------------------------------------------------------------------------- reference vs twin

@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_twin_matches_reference_multistep(dtype, seed):
    run_pair(seed, B=7, V=61, steps=30, dtype=dtype)


@needs_cpp
def test_twin_matches_reference_short_sequences():
    s = run_pair(4, B=8, V=30, steps=30, dtype=torch.float32, forcing=FORCING_SHORT)
    assert int(s.waits_used.sum()) > 0 and int((s.phase != D.THINKING).sum()) > 0


@needs_cpp
def test_twin_matches_reference_vocab_cut_and_row_stride():
    run_pair(11, B=5, V=50, steps=25, dtype=torch.bfloat16, vocab_size=43, row_pad=3)


@needs_cpp
def test_twin_matches_reference_large_vocab_sampling():
    # realistic vocabulary width, peaked and flat rows, every filter on
    B, V = 4, 5003
    g = torch.Generator().manual_seed(5)
    x = torch.randn(B, V, generator=g) * torch.tensor([[0.5], [3.0], [8.0], [1.0]])
    bt = Budget().tensors(B, "cpu")
    stt = Sampling(temperature=[0.7, 1.0, 1.3, 0.9], top_k=[0, 50, 0, 1000], top_p=[0.95, 0.9, 1.0, 0.5],
                   min_p=[0.0, 0.0, 0.05, 0.01], seed=[1, 2, 3, 4]).tensors(B, "cpu")
    for dtype in (torch.float32, torch.bfloat16):
        s1, s2 = DecodeState.new(B, start_phase="answer"), DecodeState.new(B, start_phase="answer")
        t1, l1 = decode_step(x.to(dtype), s1, bt, stt, FORCING, backend="torch")
        t2, l2 = decode_step(x.to(dtype), s2, bt, stt, FORCING, backend="cpp")
        assert torch.equal(t1, t2)
        torch.testing.assert_close(l1, l2, atol=2e-5, rtol=1e-5)


@needs_cpp
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 6), V=st.integers(9, 40),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_twin_matches_reference_hypothesis(seed, B, V, dtype):
    run_pair(seed, B=B, V=V, steps=8, dtype=dtype)


# ----------------------------------------------------------------------------- budget forcing

def drive(logits_fn, B, budget, sampling, steps, backend, forcing=FORCING, start_phase="thinking", V=24):
    """Runs `steps` steps; returns per-step tokens/events/phases/thinking counts as lists of rows."""
    bt, stt = budget.tensors(B, "cpu"), sampling.tensors(B, "cpu")
    s = DecodeState.new(B, start_phase=start_phase)
    toks, events, phases, thinking = [], [], [], []
    for i in range(steps):
        phase_before = s.phase.clone()
        t, _ = decode_step(logits_fn(i), s, bt, stt, forcing, backend=backend)
        toks.append(t.tolist())
        events.append(s.event.tolist())
        phases.append(phase_before.tolist())
        thinking.append(s.thinking_tokens.tolist())
    tr = lambda m: [list(r) for r in zip(*m)]  # noqa: E731
    return tr(toks), tr(events), tr(phases), tr(thinking), s


def thinking_span(tokens, events, phases):
    """Tokens emitted while the row was thinking, plus the exit/delimiter tokens that close it."""
    span = []
    for tok, ev, ph in zip(tokens, events, phases):
        if ph != D.THINKING and ev not in (D.EVENT_EXIT, D.EVENT_DELIMITER):
            break
        span.append((tok, ev))
    return span


BACKENDS = ["torch"] + (["cpp"] if HAS_CPP else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_forced_exit_at_max_thinking(backend):
    B, V = 3, 24
    x = torch.full((B, V), -5.0)
    x[:, 10] = 5.0  # never ends by itself
    toks, events, phases, thinking, s = drive(lambda i: x, B, Budget(max_thinking_tokens=[0, 4, 9],
                                                                     max_answer_tokens=3), Sampling(), 20, backend)
    for r, mx in enumerate([0, 4, 9]):
        assert toks[r][:mx] == [10] * mx
        assert toks[r][mx:mx + 4] == list(FORCING.forced_exit_ids)
        assert events[r][mx:mx + 4] == [D.EVENT_EXIT] * 4
        assert toks[r][mx + 4:mx + 7] == [10, 10, 10]  # answer capped at 3 sampled tokens
        assert toks[r][mx + 7:] == [FORCING.pad_id] * (20 - mx - 7)
        assert thinking[r][-1] == mx
    assert bool((s.phase == D.DONE).all())


def early_stop_budget(mode: str, B: int):
    """Random minimum and maximum thinking budgets and Wait counts for B rows (seed 3): the
    generator (it goes on to draw the scenario's logits), mins, maxs, waits and the Budget."""
    g = torch.Generator().manual_seed(3)
    mins = torch.randint(0, 10, (B,), generator=g).tolist()
    maxs = [m + int(v) for m, v in zip(mins, torch.randint(0, 12, (B,), generator=g))]
    waits = torch.randint(0, 3, (B,), generator=g).tolist()
    budget = Budget(min_thinking_tokens=mins, max_thinking_tokens=maxs, num_waits=waits, max_answer_tokens=4,
                    mode=mode)
    return g, mins, maxs, waits, budget


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["wait", "suppress"])
def test_never_ends_before_minimum_and_span_bounded(backend, mode):
    B, V = 16, 24
    g, mins, maxs, waits, budget = early_stop_budget(mode, B)
    logits = [random_logits(g, B, V, torch.float32, scale=1.0) for _ in range(40)]
    for x in logits:
        x[:, 3] += 2.0  # the model wants to stop thinking early
    toks, events, phases, thinking, _ = drive(lambda i: logits[i], B, budget,
                                              Sampling(temperature=1.0, seed=list(range(B))), 40, backend)
    for r in range(B):
        span = thinking_span(toks[r], events[r], phases[r])
        content = [t for t, ev in span if ev not in (D.EVENT_EXIT, D.EVENT_DELIMITER) and t != 3]
        # content never exceeds the max; the whole span never exceeds max + the forced exit
        assert len(content) <= maxs[r]
        assert len(span) <= maxs[r] + len(FORCING.forced_exit_ids)
        ended_by_model = any(ev == D.EVENT_SAMPLED and t in (1, 2, 3) for t, ev in span)
        if ended_by_model:
            assert len(content) >= mins[r]
            if mode == "wait":
                n_wait_starts = sum(1 for i, (t, ev) in enumerate(span)
                                    if ev == D.EVENT_WAIT and t == FORCING.wait_ids[0])
                assert n_wait_starts >= waits[r]
        if mode == "suppress":
            # below the minimum the stop ids are never sampled
            emitted = 0
            for t, ev in span:
                if ev == D.EVENT_SAMPLED and emitted < mins[r]:
                    assert t not in STOP
                if ev in (D.EVENT_SAMPLED, D.EVENT_WAIT) and t not in STOP:
                    emitted += 1
        else:
            # "wait" injects exactly the configured sequence (unless the cap cuts it short)
            i = 0
            while i < len(span):
                if span[i][1] == D.EVENT_WAIT:
                    seq = [t for t, ev in span[i:i + len(FORCING.wait_ids)] if ev == D.EVENT_WAIT]
                    assert seq == list(FORCING.wait_ids)[:len(seq)]
                    if len(seq) < len(FORCING.wait_ids):
                        assert span[i + len(seq)][1] == D.EVENT_EXIT
                    i += len(seq)
                else:
                    i += 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_wait_replaces_end_num_waits_times_then_delimiter(backend):
    B, V = 1, 24
    x = torch.full((B, V), -5.0)
    x[:, 3] = 5.0  # always wants to end thinking
    toks, events, _, _, s = drive(lambda i: x, B, Budget(num_waits=2, max_answer_tokens=2), Sampling(), 12, backend)
    w = list(FORCING.wait_ids)
    assert toks[0][:10] == w + w + [3, 4, 5, 3, 3, 0]
    assert events[0][:4] == [D.EVENT_WAIT] * 4
    assert events[0][4:7] == [D.EVENT_SAMPLED, D.EVENT_DELIMITER, D.EVENT_DELIMITER]
    assert int(s.waits_used[0]) == 2 and int(s.phase[0]) == D.DONE


@pytest.mark.parametrize("backend", BACKENDS)
def test_eos_in_thinking_and_answer(backend):
    B, V = 2, 24
    x = torch.full((B, V), -5.0)
    x[:, 2] = 5.0  # EOS
    toks, events, _, _, s = drive(lambda i: x, B, Budget(min_thinking_tokens=0), Sampling(), 3, backend)
    assert toks == [[2, 0, 0], [2, 0, 0]]
    toks, _, _, _, s = drive(lambda i: x, B, Budget(), Sampling(), 2, backend, start_phase="answer")
    assert toks[0] == [2, 0] and bool((s.phase == D.DONE).all()) and s.answer_tokens.tolist() == [1, 1]


def test_from_tokenizer():
    from s1kernels.data.tokenizer import build_default_tokenizer
    tok = build_default_tokenizer()
    f = ForcingTokens.from_tokenizer(tok)
    assert f.end_think_ids == (tok.token_to_id("<|im_start|>"),)
    assert tok.decode(list(f.wait_ids)) == "Wait"
    assert tok.decode(list(f.forced_exit_ids)) == "<|im_start|>answer\nFinal Answer:"
    assert set(f.eos_ids) == set(tok.eos_ids) and f.pad_id == tok.pad_id


# ----------------------------------------------------------------------------- sampling

def kept_set(x: torch.Tensor, t: float, k: int, p: float, min_p: float) -> set:
    """The filtered set by the definitions, computed independently (fp64 sort)."""
    x = x.double()
    order = torch.argsort(x, descending=True, stable=True)
    xs = x[order]
    keep = torch.ones_like(x, dtype=torch.bool)
    if 0 < k < x.numel():
        keep &= x >= xs[k - 1]
    if p < 1:
        probs = torch.softmax(torch.where(x >= (xs[k - 1] if 0 < k < x.numel() else -math.inf), x, -math.inf) / t, 0)
        ps = probs[order].cumsum(0)
        j = int((ps < p * ps[-1]).sum())
        keep &= x >= xs[j]
    if min_p > 0:
        keep &= (x - x.max()) / t >= math.log(min_p)
    return set(torch.nonzero(keep).flatten().tolist())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k,p,min_p", [(5, 1.0, 0.0), (0, 0.8, 0.0), (0, 1.0, 0.2), (20, 0.9, 0.05), (1, 1.0, 0.0)])
def test_sampled_tokens_respect_filters(backend, k, p, min_p):
    V, B = 300, 400
    g = torch.Generator().manual_seed(k * 7 + int(p * 10))
    row = torch.randn(V, generator=g) * 2.0
    x = row.expand(B, V).contiguous()
    t = 1.0
    stt = Sampling(temperature=t, top_k=k, top_p=p, min_p=min_p, seed=list(range(B))).tensors(B, "cpu")
    s = DecodeState.new(B, start_phase="answer")
    tok, lp = decode_step(x, s, Budget().tensors(B, "cpu"), stt, FORCING, backend=backend)
    allowed = kept_set(row, t, k, p, min_p)
    assert set(tok.tolist()) <= allowed
    assert len(set(tok.tolist())) > min(len(allowed), 3) - 1  # the draws spread over the set
    torch.testing.assert_close(lp, torch.log_softmax(row, 0)[tok], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k,temperature", [(0, 0.8), (3, 1.3)])
def test_temperature_sampling_chi_square(backend, k, temperature):
    V, B = 6, 6000
    row = torch.tensor([1.0, 0.2, -0.5, 0.7, 0.0, -1.2])
    stt = Sampling(temperature=temperature, top_k=k, seed=torch.arange(B) * 7919 + 13).tensors(B, "cpu")
    x = torch.cat([row, torch.full((4,), -math.inf)])  # room for the forcing ids (up to 8)
    tok, _ = decode_step(x.expand(B, V + 4).contiguous(), DecodeState.new(B, start_phase="answer"),
                         Budget().tensors(B, "cpu"), stt, FORCING, backend=backend)
    logits = row / temperature
    if k:
        logits = torch.where(row >= row.sort(descending=True).values[k - 1], logits, -math.inf)
    probs = torch.softmax(logits.double(), 0)
    observed = torch.bincount(tok, minlength=V).double()
    assert observed.numel() == V
    support = probs > 0
    assert observed[~support].sum() == 0
    expected = probs[support] * B
    chi2 = float(((observed[support] - expected) ** 2 / expected).sum())
    # critical values at p = 0.001 for 5 and 2 degrees of freedom
    assert chi2 < {6: 20.515, 3: 13.816}[int(support.sum())], chi2


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_is_argmax_with_lowest_index_on_ties(backend):
    x = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]]).repeat(1, 4)
    tok, lp = decode_step(x, DecodeState.new(2, start_phase="answer"), Budget().tensors(2, "cpu"),
                          Sampling().tensors(2, "cpu"), FORCING, backend=backend)
    assert tok.tolist() == [1, 0]
    torch.testing.assert_close(lp, torch.log_softmax(x, -1).gather(1, tok[:, None])[:, 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_output_does_not_depend_on_batch_position(backend):
    g = torch.Generator().manual_seed(9)
    B, V = 6, 40
    x = torch.randn(B, V, generator=g)
    seeds = torch.randint(0, 2**40, (B,), generator=g)
    run = lambda perm: decode_step(  # noqa: E731
        x[perm].contiguous(), DecodeState.new(B, start_phase="answer"), Budget().tensors(B, "cpu"),
        Sampling(temperature=1.0, top_p=0.9, seed=seeds[perm]).tensors(B, "cpu"), FORCING, backend=backend)[0]
    perm = torch.randperm(B, generator=g)
    assert torch.equal(run(torch.arange(B))[perm], run(perm))


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_rows_get_an_error_flag(backend):
    B, V = 4, 20
    x = torch.randn(B, V, generator=torch.Generator().manual_seed(0))
    x[0, 11] = 10.0  # row 0 greedily picks an ordinary token, never EOS, so it stays in ANSWER
    x[1, 7] = float("nan")
    x[2, 3] = float("inf")
    x[3] = float("-inf")
    x[0, V - 1] = float("nan")  # past vocab_size: never read
    stt = Sampling(temperature=[0.0, 1.0, 0.0, 1.0]).tensors(B, "cpu")
    s = DecodeState.new(B, start_phase="answer")
    tok, lp = decode_step(x, s, Budget().tensors(B, "cpu"), stt, FORCING, vocab_size=V - 1, backend=backend)
    assert tok[1:].tolist() == [FORCING.pad_id] * 3 and lp[1:].tolist() == [0.0] * 3
    assert s.error.tolist() == [0, D.ERROR_NONFINITE, D.ERROR_NONFINITE, D.ERROR_NO_TOKEN]
    assert s.phase.tolist() == [D.ANSWER, D.DONE, D.DONE, D.DONE]
    assert s.event.tolist()[1:] == [D.EVENT_ERROR] * 3
    assert bool(torch.isfinite(lp).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_suppressed_everything_is_an_error(backend):
    x = torch.full((1, 10), float("-inf"))
    x[0, 3] = 1.0  # only the end-of-thinking id is finite, and it is masked below the minimum
    s = DecodeState.new(1)
    decode_step(x, s, Budget(min_thinking_tokens=5, mode="suppress").tensors(1, "cpu"), Sampling().tensors(1, "cpu"),
                FORCING, backend=backend)
    assert s.error.tolist() == [D.ERROR_NO_TOKEN] and s.phase.tolist() == [D.DONE]


def _args(B=2, V=16):
    return (torch.randn(B, V), DecodeState.new(B), Budget().tensors(B, "cpu"), Sampling().tensors(B, "cpu"), FORCING)


def test_bad_configuration():
    with pytest.raises(ValueError, match="min_thinking_tokens <= max_thinking_tokens"):
        Budget(min_thinking_tokens=10, max_thinking_tokens=5).tensors(1, "cpu")
    with pytest.raises(ValueError, match="num_waits"):
        Budget(num_waits=-1).tensors(1, "cpu")
    with pytest.raises(ValueError, match="mode"):
        Budget(mode="stop").tensors(1, "cpu")
    with pytest.raises(ValueError, match="max_answer_tokens"):
        Budget(max_answer_tokens=0).tensors(1, "cpu")
    with pytest.raises(ValueError, match="min_thinking_tokens: expected 3 per-row values"):
        Budget(min_thinking_tokens=[1, 2]).tensors(3, "cpu")
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0.0).tensors(1, "cpu")
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1.0).tensors(1, "cpu")
    with pytest.raises(ValueError, match="smallest normal fp32"):
        Sampling(temperature=[1.0, 1e-40]).tensors(2, "cpu")
    Sampling(temperature=1e-30).tensors(1, "cpu")  # tiny but normal: allowed
    with pytest.raises(ValueError, match="min_p"):
        Sampling(min_p=1.5).tensors(1, "cpu")
    with pytest.raises(ValueError, match="seed: expected 4 per-row values"):
        Sampling(seed=[1, 2]).tensors(4, "cpu")
    with pytest.raises(TypeError, match="top_k"):
        Sampling(top_k="5").tensors(1, "cpu")
    with pytest.raises(ValueError, match="wait_ids: expected at least one"):
        ForcingTokens([3], [4], [], [3, 4], [1], 0)
    with pytest.raises(ValueError, match="eos_ids: expected at least one"):
        ForcingTokens([3], [4], [6], [3, 4], [], 0)
    with pytest.raises(ValueError, match="must be >= 0"):
        ForcingTokens([3], [4], [6], [3, -4], [1], 0)
    with pytest.raises(ValueError, match="start_phase"):
        DecodeState.new(2, start_phase="done")


def test_bad_step_arguments():
    x, s, bt, stt, f = _args()
    with pytest.raises(ValueError, match="vocab_size"):
        decode_step(x, s, bt, stt, f, vocab_size=17)
    with pytest.raises(ValueError, match="every token id must be < vocab_size"):
        decode_step(x, s, bt, stt, f, vocab_size=5)
    with pytest.raises(TypeError, match="logits: expected dtype"):
        decode_step(x.to(torch.int32), s, bt, stt, f)
    with pytest.raises(ValueError, match="non-empty"):
        decode_step(x[0], s, bt, stt, f)
    with pytest.raises(ValueError, match="stride 1"):
        decode_step(torch.randn(16, 2).t(), s, bt, stt, f)
    with pytest.raises(ValueError, match=r"state.phase: expected shape \(3,\)"):
        decode_step(torch.randn(3, 16), s, bt, stt, f)
    with pytest.raises(ValueError, match=r"budget_t.min_thinking_tokens: expected shape \(2,\)"):
        decode_step(x, s, Budget().tensors(3, "cpu"), stt, f)
    with pytest.raises(TypeError, match="sampling_t.temperature: expected dtype"):
        decode_step(x, s, bt, stt._replace(temperature=stt.temperature.double()), f)
    with pytest.raises(TypeError, match="budget_t: expected BudgetTensors"):
        decode_step(x, s, Budget(), stt, f)
    with pytest.raises(TypeError, match="state: expected a DecodeState"):
        decode_step(x, {}, bt, stt, f)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="backend 'cuda' is not usable"):
            decode_step(x, s, bt, stt, f, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        decode_step(x, s, bt, stt, f, backend="triton2")
    many = ForcingTokens([3], [4], [6], [3, 4], list(range(10, 30)), 0)
    with pytest.raises(ValueError, match="at most 16"):
        decode_step(torch.randn(2, 40), s, bt, stt, many)


@needs_cpp
def test_custom_op_registration():
    x, s, bt, stt, f = _args(B=3, V=20)
    args = (x, s.tensors(), list(bt), list(stt), f.table("cpu"), f.lengths, f.pad_id, 20, "cpp")
    torch.library.opcheck(torch.ops.s1kernels.decode_step.default, args,
                          test_utils=("test_schema", "test_faketensor"))


@needs_cpp
def test_torch_compile_fullgraph_traces_the_step():
    B, V = 3, 20
    bt = Budget(min_thinking_tokens=2).tensors(B, "cpu")
    stt = Sampling(temperature=1.0, top_p=0.9, seed=[1, 2, 3]).tensors(B, "cpu")
    s_eager, s_comp = DecodeState.new(B), DecodeState.new(B)
    step = lambda x, s: decode_step(x, s, bt, stt, FORCING)  # noqa: E731
    compiled = torch.compile(step, fullgraph=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = random_logits(g, B, V, torch.float32)
        t_c, l_c = compiled(x, s_comp)
        t_e, l_e = step(x, s_eager)
        assert torch.equal(t_c, t_e) and torch.equal(l_c, l_e)
    for a, b in zip(s_eager.tensors(), s_comp.tensors()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_written_cursor_past_its_sequence_reads_inside_the_table(backend):
    # inject_pos is state this machine writes; one set by hand past the wait sequence (or
    # negative) is clamped to the token table, the same way in every backend.
    s = DecodeState.new(3)
    s.inject_kind.fill_(D.INJECT_WAIT)
    s.inject_pos.copy_(torch.tensor([0, 50, -3], dtype=torch.int32))
    tok, _ = decode_step(torch.randn(3, 20), s, Budget().tensors(3, "cpu"), Sampling().tensors(3, "cpu"),
                         FORCING, backend=backend)
    assert tok.tolist() == [6, 2, 3]  # first wait id; last table id (an EOS id); first table id
