"""The CUDA decode kernel (csrc/decode.cu), its own source, run on the CPU under the host SIMT
emulation (tests/native/simt): it must equal the C++ twin and the torch reference token for
token, state for state and logprob for logprob (fp32 vs fp64: atol/rtol 1e-5), under seeded
random thread schedules, for every cluster size the kernel can launch with.

What this proves and what only a GPU proves: docs/testing.md.
"""
from __future__ import annotations

import json
import os
import random

import pytest
import torch

from s1kernels import backend as _backend
from s1kernels.ops import decode as D
from s1kernels.ops.decode import Budget, DecodeState, ForcingTokens, Sampling, decode_step
from simt_harness import build, compiler
from test_decode import FORCING, FORCING_SHORT, early_stop_budget, random_config

pytestmark = [pytest.mark.simt,
              pytest.mark.skipif(_backend.native() is None, reason="s1kernels._C is not built (the C++ twin)"),
              pytest.mark.skipif(compiler() is None, reason="no C++ compiler on PATH")]

CLUSTERS = (1, 2, 4, 8)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return build(str(tmp_path_factory.getbasetemp() / "simt"))


# ----------------------------------------------------------------------------- the three backends in lockstep

def place(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x [B, V] as the kernel may receive it: "aligned" (contiguous), "off1"/"off2" (every row
    starts 1 or 2 elements into a NaN-filled buffer: misaligned by 2 or 4 bytes for 16-bit
    logits, 4 or 8 for fp32), "padded" (rows of stride V + 11, NaN past V). The NaNs make any
    read outside the row an error row, which the comparison catches."""
    B, V = x.shape
    if layout == "aligned":
        return x.contiguous()
    off, pad = {"off1": (1, 3), "off2": (2, 5), "padded": (0, 11)}[layout]
    buf = torch.full((B, V + pad), float("nan"), dtype=x.dtype)
    out = buf[:, off:off + V]
    out.copy_(x)
    return out


def _states_equal(a: DecodeState, b: DecodeState, what):
    for name, x, y in zip(D._STATE_FIELDS, a.tensors(), b.tensors()):
        assert torch.equal(x, y), (what, name, x.tolist(), y.tolist())


def lockstep(sim, logits_fn, B, budget: Budget, sampling: Sampling, steps: int, forcing: ForcingTokens = FORCING,
             start_phase="thinking", vocab_size=None, cluster=0, schedule=0, state_fn=None, what=""):
    """Runs `steps` decode steps of the reference, the twin and the emulated kernel on the same
    logits (logits_fn(step) -> [B, V] in its layout); asserts after every step that tokens and
    states are equal and logprobs close. Returns the per-step tokens, logprobs and the state."""
    bt, stt = budget.tensors(B, "cpu"), sampling.tensors(B, "cpu")
    states = [DecodeState.new(B, start_phase=start_phase) for _ in range(3)]
    if state_fn is not None:
        for s in states:
            state_fn(s)
    toks, lps = [], []
    for step in range(steps):
        x = logits_fn(step)
        t_ref, l_ref = decode_step(x, states[0], bt, stt, forcing, vocab_size=vocab_size, backend="torch")
        t_cpp, l_cpp = decode_step(x, states[1], bt, stt, forcing, vocab_size=vocab_size, backend="cpp")
        t_sim, l_sim = sim.step(x, states[2], bt, stt, forcing, vocab_size=vocab_size, cluster=cluster,
                                schedule=schedule + 7919 * step)
        where = (what, step, f"cluster {sim.last_cluster}")
        assert torch.equal(t_ref, t_cpp), (where, t_ref, t_cpp)
        assert torch.equal(t_sim, t_cpp), (where, "tokens", t_sim.tolist(), t_cpp.tolist())
        torch.testing.assert_close(l_sim, l_cpp, atol=ATOL, rtol=RTOL, msg=lambda m: f"{where}: {m}")
        _states_equal(states[2], states[1], where)
        toks.append(t_sim)
        lps.append(l_sim)
    return toks, lps, states[2]


# ----------------------------------------------------------------------------- random cases

def random_case(i: int) -> dict:
    """Case i of the random differential test: everything drawn from seed i."""
    rng = random.Random(1_000_003 * i + 17)
    dtype = DTYPES[i % 3]
    vec = 4 if dtype == torch.float32 else 8
    kind = rng.choice(["small", "chunk", "large"])
    if kind == "small":
        V = rng.randint(12, 120)
    elif kind == "chunk":  # just around a multiple of the 16-byte vector, or of a rank's 256-thread chunk
        V = rng.choice([vec, 256 * vec, 512 * vec, 1024 * vec]) * rng.randint(1, 2) + rng.randint(-3, 3)
        V = min(max(V, 12), 5000)
    else:
        V = rng.randint(1000, 5000)
    return dict(
        i=i, dtype=dtype, V=V, B=rng.randint(1, 3), steps=rng.randint(1, 3),
        layout=rng.choice(["aligned", "aligned", "off1", "off2", "padded"]),
        cut=rng.random() < 0.15,  # vocab_size < V: the columns past it are never read
        cluster=rng.choice([0, 1, 2, 4, 8]),
        style=rng.choice(["normal", "normal", "peaked", "ties", "ties", "nonfinite"]),
        forcing=rng.choice([FORCING, FORCING_SHORT]), start=rng.choice(["thinking", "thinking", "answer"]),
        greedy=rng.choice([0.0, 0.25, 0.5]), seed=rng.randrange(2**31))


def case_logits(c: dict, g: torch.Generator, B: int) -> torch.Tensor:
    V = c["V"]
    scale = {"normal": 2.0, "peaked": 8.0, "ties": 1.0, "nonfinite": 2.0}[c["style"]]
    x = torch.randn(B, V, generator=g) * scale
    if c["style"] == "ties":
        x = torch.round(x * 2) / 2  # few distinct values: ties at every threshold
    x[:, 3] += 2.0  # end of thinking and EOS are likely, so the forcing rules fire
    x[:, 1] += 1.0
    if c["style"] == "nonfinite":
        for r in range(B):
            u = float(torch.rand(1, generator=g))
            j = int(torch.randint(0, V, (1,), generator=g))
            if u < 0.25:
                x[r, j] = float("nan")
            elif u < 0.5:
                x[r, j] = float("inf")
            elif u < 0.6:
                x[r] = float("-inf")  # no token: an error row
            else:  # -inf holes, a finite row
                x[r, torch.randint(0, V, (max(1, V // 10),), generator=g)] = float("-inf")
    return x.to(c["dtype"])


def run_case(sim, c: dict, schedule: int = 0):
    g = torch.Generator().manual_seed(c["seed"])
    B = c["B"]
    budget, sampling = random_config(g, B, greedy_share=c["greedy"])
    vocab_size = max(10, c["V"] - 1 - c["i"] % 7) if c["cut"] else None  # FORCING_SHORT has id 9

    def logits(step):
        x = case_logits(c, g, B)
        if vocab_size is not None:
            x[:, vocab_size:] = float("nan")  # never read
        return place(x, c["layout"])

    lockstep(sim, logits, B, budget, sampling, c["steps"], forcing=c["forcing"], start_phase=c["start"],
             vocab_size=vocab_size, cluster=c["cluster"], schedule=schedule + c["i"], what=c)


N_RANDOM = 240


@pytest.mark.parametrize("i", range(N_RANDOM))
def test_random_cases_match_twin_and_reference(sim, i):
    run_case(sim, random_case(i))


def test_random_cases_cover_what_they_claim():
    """The case mix really holds each kind of input docs/testing.md says it does."""
    cs = [random_case(i) for i in range(N_RANDOM)]
    for key, values in [("dtype", DTYPES), ("cluster", (0, 1, 2, 4, 8)),
                        ("style", ("normal", "peaked", "ties", "nonfinite")),
                        ("layout", ("aligned", "off1", "off2", "padded")), ("start", ("thinking", "answer"))]:
        for v in values:
            assert sum(c[key] == v for c in cs) >= 5, (key, v)
    assert sum(c["cut"] for c in cs) >= 10
    assert sum(c["V"] % 8 != 0 for c in cs) >= 50 and max(c["V"] for c in cs) <= 5000
    assert sum(c["forcing"] is FORCING_SHORT for c in cs) >= 20


# ----------------------------------------------------------------------------- the race detector

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cluster", CLUSTERS)
def test_schedules_give_the_same_bits(sim, dtype, cluster):
    """Different thread interleavings (schedule seeds) give the same tokens, logprob bits and state."""
    g = torch.Generator().manual_seed(cluster)
    B, V = 2, 3001
    x = (torch.randn(B, V, generator=g) * 3).to(dtype)
    stt = Sampling(temperature=[0.9, 1.2], top_k=[40, 0], top_p=[0.9, 0.8], min_p=[0.0, 0.01], seed=[5, 6])
    runs = []
    for schedule in (0, 1, 2, 3):
        s = DecodeState.new(B, start_phase="answer")
        t, lp = sim.step(x, s, Budget().tensors(B, "cpu"), stt.tensors(B, "cpu"), FORCING, cluster=cluster,
                         schedule=schedule)
        runs.append((t, lp.view(torch.int32), s))
    for t, lp, s in runs[1:]:
        assert torch.equal(t, runs[0][0]) and torch.equal(lp, runs[0][1])
        _states_equal(s, runs[0][2], "schedule")


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_row_at_every_position_alignment_and_cluster_size(sim, dtype):
    """One row at 5 batch positions (rows offset by 3 elements: each has another alignment), the
    same seed: the same token everywhere and for every cluster size; the same logprob bits at
    every position for a given cluster size; and the twin's token."""
    g = torch.Generator().manual_seed(7)
    V, B = 4999, 5
    row = (torch.randn(V, generator=g) * 3.0).to(dtype)
    row[100:104] = row.max()  # ties at the top
    buf = torch.full((B, V + 3), float("nan"), dtype=dtype)
    x = buf[:, 1:V + 1]
    x.copy_(row.expand(B, V))
    for params in (dict(temperature=1.0), dict(temperature=0.7, top_p=0.9), dict(temperature=1.0, top_k=50, top_p=0.95),
                   dict(temperature=1.1, min_p=0.02), dict()):
        stt = Sampling(seed=[12345] * B, **params).tensors(B, "cpu")
        t_cpp, _ = decode_step(x, DecodeState.new(B, start_phase="answer"), Budget().tensors(B, "cpu"), stt, FORCING,
                               backend="cpp")
        for cluster in CLUSTERS:
            t, lp = sim.step(x, DecodeState.new(B, start_phase="answer"), Budget().tensors(B, "cpu"), stt, FORCING,
                             cluster=cluster, schedule=cluster)
            assert torch.equal(t, t_cpp), (params, cluster, t.tolist(), t_cpp.tolist())
            assert bool((lp.view(torch.int32) == lp.view(torch.int32)[0]).all()), (params, cluster, lp.tolist())


LOGPROB_BITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native", "simt", "logprob_bits.json")


def logprob_bits(sim) -> dict:
    """The fp32 bits of the emulated kernel's logprobs on fixed rows, per dtype and cluster size."""
    out = {}
    for dtype in DTYPES:
        g = torch.Generator().manual_seed(99)
        B, V = 8, 4999
        # one dominant logit per row: logprob = -log(s) with s near 1, where fp32 shows the
        # rounding of every partial sum
        x = torch.randn(B, V, generator=g) * torch.linspace(0.5, 2.0, B)[:, None]
        x[torch.arange(B), torch.randint(0, V, (B,), generator=g)] = torch.linspace(8.0, 14.0, B)
        x = x.to(dtype)
        stt = Sampling(temperature=[0.0, 1.0] * 4, top_p=[1.0, 0.9] * 4, seed=list(range(B))).tensors(B, "cpu")
        for cluster in CLUSTERS:
            _, lp = sim.step(x, DecodeState.new(B, start_phase="answer"), Budget().tensors(B, "cpu"), stt, FORCING,
                             cluster=cluster)
            out[f"{str(dtype).split('.')[1]}/C={cluster}"] = lp.view(torch.int32).tolist()
    return out


def test_logprob_bits_are_the_kernels_fixed_order(sim):
    """The kernel's logprob is a fixed-order fp32 sum (per thread in increasing id, a butterfly over
    lanes and warps, then the ranks of the cluster in rank order): these bits, recorded from the
    emulated kernel, change when that order does, e.g. when ranks are merged in another order
    (only visible for C >= 4: a + b is b + a in fp32). After an intended change of the order,
    rewrite the file: `python bench/simt_mutations.py --write-logprob-bits`. (A GPU's __expf gives
    other bits; this is the emulation's record, with expf.)"""
    with open(LOGPROB_BITS) as f:
        want = json.load(f)
    assert logprob_bits(sim) == want


def test_natural_cluster_sizes(sim):
    """Without a forced size the launch picks it as on an H100 (132 SMs): 8 CTAs for one row of a
    large vocabulary, fewer for short rows; the result is the twin's either way."""
    # 2 * C * 256 16-byte chunks per row are needed for C CTAs: fp32 4100 -> 1025 chunks -> 4
    for B, V, dtype, want in [(1, 61, torch.float32, 1), (1, 4100, torch.float32, 4), (1, 5000, torch.bfloat16, 2),
                              (2, 4100, torch.bfloat16, 2), (1, 16387, torch.float32, 8)]:
        x = torch.randn(B, V, generator=torch.Generator().manual_seed(V)).to(dtype)
        lockstep(sim, lambda s: x, B, Budget(), Sampling(temperature=1.0, top_p=0.9, seed=list(range(B))), 1,
                 start_phase="answer")
        assert sim.last_cluster == want, (B, V, sim.last_cluster)


# ----------------------------------------------------------------------------- budget-forcing scenarios
# Those of tests/test_decode.py, each run step by step on all three backends.

@pytest.mark.parametrize("cluster", CLUSTERS)
def test_scenario_forced_exit_at_max_thinking(sim, cluster):
    B, V = 3, 24
    x = torch.full((B, V), -5.0)
    x[:, 10] = 5.0  # never ends by itself
    toks, _, s = lockstep(sim, lambda i: x, B, Budget(max_thinking_tokens=[0, 4, 9], max_answer_tokens=3), Sampling(),
                          20, cluster=cluster)
    assert [int(t[1]) for t in toks[4:8]] == list(FORCING.forced_exit_ids)
    assert bool((s.phase == D.DONE).all())


@pytest.mark.parametrize("mode", ["wait", "suppress"])
@pytest.mark.parametrize("cluster", (1, 2))
def test_scenario_never_ends_before_minimum(sim, mode, cluster):
    B, V = 16, 24
    g, _, _, _, budget = early_stop_budget(mode, B)
    logits = [torch.randn(B, V, generator=g) for _ in range(40)]
    for x in logits:
        x[:, 3] += 3.5  # the model wants to stop thinking early
        x[:, 1] += 0.5
    _, _, s = lockstep(sim, lambda i: logits[i], B, budget, Sampling(temperature=1.0, seed=list(range(B))), 40,
                       cluster=cluster)
    assert int(s.waits_used.sum()) > 0 or mode == "suppress"


def test_scenario_wait_replaces_end_then_delimiter(sim):
    x = torch.full((1, 24), -5.0)
    x[:, 3] = 5.0  # always wants to end thinking
    toks, _, s = lockstep(sim, lambda i: x, 1, Budget(num_waits=2, max_answer_tokens=2), Sampling(), 12)
    w = list(FORCING.wait_ids)
    assert [int(t[0]) for t in toks[:10]] == w + w + [3, 4, 5, 3, 3, 0]
    assert int(s.waits_used[0]) == 2 and int(s.phase[0]) == D.DONE


def test_scenario_eos_in_thinking_and_answer(sim):
    x = torch.full((2, 24), -5.0)
    x[:, 2] = 5.0  # EOS
    toks, _, _ = lockstep(sim, lambda i: x, 2, Budget(min_thinking_tokens=0), Sampling(), 3)
    assert [t.tolist() for t in toks] == [[2, 2], [0, 0], [0, 0]]
    lockstep(sim, lambda i: x, 2, Budget(), Sampling(), 2, start_phase="answer")


@pytest.mark.parametrize("dtype", DTYPES)
def test_scenario_short_sequences_and_multistep(sim, dtype):
    """run_pair of tests/test_decode.py: random budgets, greedy and sampled rows, 30 steps."""
    g = torch.Generator().manual_seed(4)
    B, V = 8, 30
    budget, sampling = random_config(g, B)
    logits = [torch.randn(B, V, generator=g) * 2 for _ in range(30)]
    for x in logits:
        x[:, 3] += 1.5
        x[:, 1] += 0.5
    _, _, s = lockstep(sim, lambda i: logits[i].to(dtype), B, budget, sampling, 30, forcing=FORCING_SHORT, cluster=2)
    assert int(s.waits_used.sum()) > 0 and int((s.phase != D.THINKING).sum()) > 0


def test_scenario_vocab_cut_and_row_stride(sim):
    g = torch.Generator().manual_seed(11)
    B, V = 5, 50
    budget, sampling = random_config(g, B)
    full = [torch.randn(B, V + 3, generator=g).to(torch.bfloat16) for _ in range(25)]
    for x in full:
        x[:, 43:] = 100.0  # past vocab_size: never read
    lockstep(sim, lambda i: full[i][:, :V], B, budget, sampling, 25, vocab_size=43, cluster=4)


def test_scenario_hand_written_cursor_past_its_sequence(sim):
    def cursor(s):
        s.inject_kind.fill_(D.INJECT_WAIT)
        s.inject_pos.copy_(torch.tensor([0, 50, -3], dtype=torch.int32))
    toks, _, _ = lockstep(sim, lambda i: torch.randn(3, 20), 3, Budget(), Sampling(), 1, state_fn=cursor)
    assert toks[0].tolist() == [6, 2, 3]


# ----------------------------------------------------------------------------- sampling edge cases

@pytest.mark.parametrize("cluster", CLUSTERS)
def test_greedy_ties_take_the_lowest_index(sim, cluster):
    x = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]]).repeat(1, 300)
    toks, _, _ = lockstep(sim, lambda i: x, 2, Budget(), Sampling(), 1, start_phase="answer", cluster=cluster)
    assert toks[0].tolist() == [1, 0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cluster", (1, 8))
def test_ties_at_the_threshold(sim, dtype, cluster):
    """Rows of a few distinct values: the k-th largest value and the top-p boundary value are
    shared by many ids, which all stay in the kept set."""
    g = torch.Generator().manual_seed(cluster)
    B, V = 6, 2050
    x = torch.randint(-3, 4, (B, V), generator=g).float() * 0.5
    s = Sampling(temperature=1.0, top_k=[1, 5, 100, 0, 7, 0], top_p=[1.0, 1.0, 0.9, 0.5, 0.3, 0.999], seed=[1] * B)
    lockstep(sim, lambda i: x.to(dtype), B, Budget(), s, 1, start_phase="answer", cluster=cluster)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_non_finite_rows_get_an_error_flag(sim, cluster):
    B, V = 4, 20
    x = torch.randn(B, V, generator=torch.Generator().manual_seed(0))
    x[0, 11] = 10.0
    x[1, 7] = float("nan")
    x[2, 3] = float("inf")
    x[3] = float("-inf")
    x[0, V - 1] = float("nan")  # past vocab_size: never read
    _, _, s = lockstep(sim, lambda i: x, B, Budget(), Sampling(temperature=[0.0, 1.0, 0.0, 1.0]), 1,
                       start_phase="answer", vocab_size=V - 1, cluster=cluster)
    assert s.error.tolist() == [0, D.ERROR_NONFINITE, D.ERROR_NONFINITE, D.ERROR_NO_TOKEN]


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize("cluster", (1, 4))
def test_suppressed_ids_above_everything_are_subtracted_once(sim, dtype, cluster):
    forcing = ForcingTokens(end_think_ids=[3, 1], delimiter_completion_ids=[], wait_ids=[6], forced_exit_ids=[3],
                            eos_ids=[1, 2], pad_id=0)
    g = torch.Generator().manual_seed(11)
    B, V = 8, 3001
    x = torch.randn(B, V, generator=g)
    x[:, [1, 2, 3]] = 30.0
    sampling = Sampling(temperature=[0.0, 1.0, 0.8, 1.2] * 2, top_k=[0, 0, 5, 100] * 2, top_p=[1.0, 0.9, 1.0, 0.5] * 2,
                        seed=list(range(B)))
    toks, _, _ = lockstep(sim, lambda i: x.to(dtype), B, Budget(min_thinking_tokens=1000, mode="suppress"), sampling, 1,
                          forcing=forcing, cluster=cluster)
    assert not bool(torch.isin(toks[0], torch.tensor([1, 2, 3])).any())


def test_suppressed_everything_is_an_error(sim):
    x = torch.full((1, 10), float("-inf"))
    x[0, 3] = 1.0
    _, _, s = lockstep(sim, lambda i: x, 1, Budget(min_thinking_tokens=5, mode="suppress"), Sampling(), 1)
    assert s.error.tolist() == [D.ERROR_NO_TOKEN]


def test_per_row_seeds(sim):
    """Each row draws from its own (seed, step) stream: the same logits with different seeds give
    different tokens, with equal seeds the same, at any batch position."""
    B, V = 8, 700
    row = torch.randn(V, generator=torch.Generator().manual_seed(2))
    x = row.expand(B, V).contiguous()
    toks, _, _ = lockstep(sim, lambda i: x, B, Budget(), Sampling(temperature=2.0, seed=[1, 2, 3, 4, 1, 2, 3, 4]), 2,
                          start_phase="answer", cluster=2)
    for t in toks:
        assert t[:4].tolist() == t[4:].tolist() and len(set(t[:4].tolist())) > 1


def test_strict_aliasing_regression(sim):
    """The case that found the kernel's type-punned shuffle (shfl_xor_any read a struct through
    an int*): under g++ -O2 the block reduction of RowStats read stale words and the kernel
    read logits[0x7fffffff]. V=61 fp32, temperature 1, one CTA per row."""
    g = torch.Generator().manual_seed(0)
    from test_decode import random_logits
    random_logits(g, 3, 61, torch.float32)
    x = random_logits(g, 3, 61, torch.float32)
    lockstep(sim, lambda i: x, 3, Budget(), Sampling(temperature=1.0, seed=[1, 2, 3]), 1, start_phase="answer",
             cluster=1, schedule=5)


# ----------------------------------------------------------------------------- the full vocabulary (slow)

@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_full_vocabulary(sim, dtype):
    """V = 151,665 (Qwen2.5's vocabulary), one row split over 8 CTAs (what launch() picks for a
    small batch) and two rows forced onto 1 and 4, every filter on."""
    g = torch.Generator().manual_seed(151665)
    V = 151_665
    for B, cluster, params in [(1, 0, dict(temperature=0.7, top_k=50, top_p=0.95)),
                               (2, 1, dict(temperature=1.0, top_p=0.9, min_p=0.01)), (2, 4, dict())]:
        x = place((torch.randn(B, V, generator=g) * 3).to(dtype), "off1")
        lockstep(sim, lambda i: x, B, Budget(), Sampling(seed=list(range(B)), **params), 1, start_phase="answer",
                 cluster=cluster)
        if cluster == 0:
            assert sim.last_cluster == 8


# ----------------------------------------------------------------------------- the emulator itself and planted bugs

def test_emulator_selftest(tmp_path):
    """Each warp collective against CUDA's definition (masks, groups of different masks, 64-bit
    shuffles), distributed shared memory across a cluster, a missing __syncthreads exposed by
    the schedule, and a skipped barrier, collectives that never meet and a read of an exited
    CTA's shared memory reported (tests/native/simt/simt_selftest.cpp)."""
    import subprocess
    from simt_harness import ROOT, SIMT
    exe = tmp_path / "simt_selftest"
    subprocess.run([compiler(), "-std=c++17", "-O2", "-Wall", "-Werror", "-Wno-unknown-pragmas", "-D__CUDACC__",
                    "-D__CUDA_ARCH__=900", "-I", os.path.join(SIMT, "include"), "-I",
                    os.path.join(ROOT, "csrc", "include"), os.path.join(SIMT, "simt_selftest.cpp"), "-o", str(exe)],
                   check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok "), out.stdout + out.stderr
    assert int(out.stdout.split()[1]) > 2000


def _mutants():
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import simt_mutations
    return simt_mutations


@pytest.mark.parametrize("name", ["merge-rank-order", "radix-digit-off-by-one", "radix-bin-off-by-one",
                                  "parity-not-flipped", "no-syncthreads-before-exchange",
                                  "no-syncthreads-in-block-reduce", "no-cluster-sync-in-histogram",
                                  "no-final-cluster-sync", "histogram-halves-swapped"])
def test_planted_bug_fails_the_tests(tmp_path, name):
    """The quick form of bench/simt_mutations.py: a copy of the kernel with this bug fails."""
    M = _mutants()
    _, what, old, new = next(m for m in M.MUTANTS if m[0] == name)
    with open(M.KERNEL) as f:
        source = f.read()
    assert source.count(old) == 1, "the mutant no longer applies to csrc/decode.cu"
    path = tmp_path / "decode.cu"
    path.write_text(source.replace(old, new))
    n, failure = M.run_battery(build(str(tmp_path), kernel=str(path)), M.battery(quick=True), stop_at_first=True)
    assert failure is not None, f"planted bug survived {n} checks: {what}"


def test_every_mutant_is_in_ci():
    assert {m[0] for m in _mutants().MUTANTS} == set(test_planted_bug_fails_the_tests.pytestmark[0].args[1])


def test_entry_point_takes_the_field_table(sim):
    """decode_simt.cpp fills DecodeArgs from the field table's X-macros, as the bindings do, so the
    emulated kernel reads the tensors the other backends read (the harness also checks this)."""
    from s1kernels.ops.decode.native import FIELD_NAMES
    assert sim.fields() == FIELD_NAMES and len(FIELD_NAMES["state"]) == len(D._STATE_FIELDS)
