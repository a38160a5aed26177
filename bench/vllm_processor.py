"""The vLLM processor's own time per engine step, without an engine: apply() + update_state()
on random logits, the compact step (greedy rows) against the whole-vocabulary step.

    python bench/vllm_processor.py --model runs/smollm2 --batch 8 32 --steps 40 --reps 3

Every row is greedy with a budget of min 8 / max 32 thinking tokens and one Wait, so the
steps cover thinking, the character rule near the cap, the forced exit and the answer. The
two paths run interleaved (the machine is shared) on the same logits, and their tokens are
compared. --threads sets torch's intra-op threads (1 by default: on a loaded machine a
2-thread fill or max over [32, 49152] waits milliseconds for its second thread).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def run(folder, B, V, steps, compact, seed=0):
    import torch
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from s1kernels.integrations.vllm import BudgetForcingLogitsProcessor, budget_args

    os.environ["S1K_VLLM_COMPACT"] = "1" if compact else "0"
    cfg = types.SimpleNamespace(model_config=types.SimpleNamespace(tokenizer=folder, get_vocab_size=lambda: V))
    p = BudgetForcingLogitsProcessor(cfg, torch.device("cpu"), False)
    outs = [[] for _ in range(B)]
    sp = SamplingParams(temperature=0.0, max_tokens=64,
                        extra_args=budget_args(min_thinking_tokens=8, max_thinking_tokens=32, num_waits=1))
    p.update_state(BatchUpdate(batch_size=B, removed=[], added=[(i, sp, [1, 2, 3], outs[i]) for i in range(B)],
                               moved=[]))
    gen = torch.Generator().manual_seed(seed)
    logits = [torch.randn(B, V, generator=gen) for _ in range(steps)]
    p.apply(logits[0].clone())  # the tokenizer tables are built on the first step: not timed
    p.update_state(None)
    spent = 0.0
    for s in range(1, steps):
        t = time.perf_counter()
        y = p.apply(logits[s])
        spent += time.perf_counter() - t
        tok = y.argmax(-1).tolist()  # vLLM's greedy sampler
        for i in range(B):
            outs[i].append(tok[i])
        t = time.perf_counter()
        p.update_state(None)
        spent += time.perf_counter() - t
    return spent / (steps - 1) * 1e3, outs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a folder with the SmolLM2 tokenizer.json")
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} torch thread(s), vocabulary {args.vocab}")
    for B in args.batch:
        ms = {True: [], False: []}
        for rep in range(args.reps):
            got = {}
            for compact in (False, True):
                t, got[compact] = run(args.model, B, args.vocab, args.steps, compact, seed=rep)
                ms[compact].append(t)
            if got[True] != got[False]:
                raise SystemExit(f"batch {B}: the compact step gave other tokens than the whole step")
        print(f"batch {B}: whole step {statistics.median(ms[False]):.2f} ms {[round(x, 2) for x in ms[False]]}, "
              f"compact {statistics.median(ms[True]):.2f} ms {[round(x, 2) for x in ms[True]]} per step "
              f"(apply + update_state, median of {args.reps}); same tokens", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
