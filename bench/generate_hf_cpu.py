"""Generation on a CPU: s1kernels' generate vs transformers' generate on SmolLM2-135M-Instruct.

    python bench/generate_hf_cpu.py --model runs/smollm2 --batch 8 32 --new-tokens 128 --reps 3 \\
        --out bench/results/generate-hf-cpu.md

Both engines load the same converted folder in fp32 and run with the same torch thread
count. Prompts are MATH500 problems in SmolLM2's chat format. Configurations:

- sampling: greedy, or temperature 0.7 + top-p 0.9 (each engine with its own RNG, so
  sampled outputs are not compared);
- budget forcing off: the chat prompt, the model answers; both stop a row at EOS or
  --new-tokens. On: the s1 prompt (ending with ``<|im_start|>think\\n``), thinking held to
  exactly --new-tokens/2 tokens (end of thinking and EOS suppressed before, the forced exit
  ``<|im_start|>answer\\nFinal Answer:`` at the budget), then the answer up to --new-tokens in
  all. transformers does this the way s1's scripts do it, with a LogitsProcessor that masks
  the stop ids before the budget and writes the exit token by token at it.

tokens/s counts each row's generated tokens up to and including its EOS (what a user keeps)
over the wall time of the whole batch. Repetitions are interleaved (s1kernels, transformers,
transformers, s1kernels, ...) because the machine is shared; the ratio is taken per
repetition and its median reported. Greedy outputs are compared token for token.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cpu_report import machine, write_report  # noqa: E402

from s1kernels.data.format import THINK_START, prompt_text  # noqa: E402
from s1kernels.runtime import load_model_and_tokenizer  # noqa: E402
from s1kernels.generate import generate  # noqa: E402
from s1kernels.ops.decode import Budget, ForcingTokens, Sampling  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data", "math500.jsonl")


def hf_budget_processor(prompt_len: int, forcing, think: int):
    """s1-script style thinking budget for transformers: stop ids masked before `think` new
    tokens, the forced exit written token by token from there."""
    from transformers import LogitsProcessor

    exit_ids, stops = list(forcing.forced_exit_ids), list(forcing.end_think_ids) + list(forcing.eos_ids)

    class ThinkingBudget(LogitsProcessor):
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - prompt_len
            if step < think:
                scores[:, stops] = float("-inf")
            elif step < think + len(exit_ids):
                forced = torch.full_like(scores, float("-inf"))
                forced[:, exit_ids[step - think]] = 0.0
                scores = forced
            return scores

    return ThinkingBudget()


def _kept(ids: list[int], eos: set[int]) -> list[int]:
    cut = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
    return ids[:cut]


def run_ours(model, tok, texts, new_tokens, greedy, bf, forcing):
    sampling = Sampling() if greedy else Sampling(temperature=0.7, top_p=0.9, seed=0)
    if bf:
        think = new_tokens // 2
        budget = Budget(min_thinking_tokens=think, max_thinking_tokens=think, mode="suppress",
                        max_answer_tokens=new_tokens - think - len(forcing.forced_exit_ids))
    else:
        budget = Budget()
    t0 = time.perf_counter()
    res = generate(model, tok, texts, budget=budget, sampling=sampling, max_new_tokens=new_tokens, chat=False,
                   forcing=forcing)
    dt = time.perf_counter() - t0
    return dt, [_kept(r.token_ids, set(forcing.eos_ids)) for r in res]


def run_hf(hf, hf_tok, texts, new_tokens, greedy, bf, forcing):
    from transformers import LogitsProcessorList

    enc = hf_tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    L = enc["input_ids"].shape[1]
    procs = LogitsProcessorList([hf_budget_processor(L, forcing, new_tokens // 2)] if bf else [])
    kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=0)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(**enc, max_new_tokens=new_tokens, logits_processor=procs, eos_token_id=list(forcing.eos_ids),
                          pad_token_id=forcing.pad_id, **kw)
    dt = time.perf_counter() - t0
    return dt, [_kept(row[L:].tolist(), set(forcing.eos_ids)) for row in out]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the converted SmolLM2 folder (python -m s1kernels.convert)")
    p.add_argument("--data", default=DATA if os.path.isfile(DATA) else "/work/shared/data/math500.jsonl")
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=["greedy", "greedy+bf", "top-p", "top-p+bf"])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    model, tok = load_model_and_tokenizer(args.model, "cpu", "float32")
    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(args.model)
    hf_tok.padding_side = "left"
    forcing = ForcingTokens.from_tokenizer(tok)
    with open(args.data, encoding="utf-8") as f:
        problems = [json.loads(line)["problem"] for line in f if line.strip()]

    rows = []
    load_before = os.getloadavg()[0]
    for B in args.batch:
        for cfg in args.configs:
            greedy, bf = cfg.startswith("greedy"), cfg.endswith("+bf")
            texts = [prompt_text(q, tok) + (THINK_START if bf else "") for q in problems[:B]]
            ours_t, hf_t, ratios, same = [], [], [], None
            for rep in range(args.reps):
                order = ("ours", "hf") if rep % 2 == 0 else ("hf", "ours")
                got = {}
                for who in order:
                    fn = run_ours if who == "ours" else run_hf
                    obj = (model, tok) if who == "ours" else (hf, hf_tok)
                    dt, ids = fn(*obj, texts, args.new_tokens, greedy, bf, forcing)
                    got[who] = (dt, ids)
                n_ours = sum(len(x) for x in got["ours"][1])
                n_hf = sum(len(x) for x in got["hf"][1])
                ours_t.append(n_ours / got["ours"][0])
                hf_t.append(n_hf / got["hf"][0])
                ratios.append(ours_t[-1] / hf_t[-1])
                if greedy:
                    same = got["ours"][1] == got["hf"][1] if same is None else (same and got["ours"][1] == got["hf"][1])
                print(f"B={B} {cfg} rep {rep}: s1kernels {ours_t[-1]:.1f} tok/s ({n_ours} tokens), transformers "
                      f"{hf_t[-1]:.1f} tok/s ({n_hf} tokens), ratio {ratios[-1]:.2f}, load {os.getloadavg()[0]:.1f}",
                      flush=True)
            rows.append(dict(batch=B, config=cfg, ours=statistics.median(ours_t), hf=statistics.median(hf_t),
                             ratio=statistics.median(ratios), ratios=ratios, same=same))
    lines = [
        "# Generation on a CPU: s1kernels vs transformers generate (SmolLM2-135M-Instruct, fp32)",
        "",
        f"Command: `python bench/generate_hf_cpu.py --model SMOLLM2_FOLDER --batch {' '.join(map(str, args.batch))} "
        f"--new-tokens {args.new_tokens} --reps {args.reps} --threads {args.threads} --configs {' '.join(args.configs)}`",
        f"Machine: {machine()}; torch {torch.__version__}, {args.threads} threads "
        f"per engine; shared machine, load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at "
        "the end (repetitions interleaved, ratio per repetition, medians).",
        "",
        "| batch | config | s1kernels tok/s | transformers tok/s | ratio (median) | ratios per rep | greedy output identical |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ident = "-" if r["same"] is None else ("yes" if r["same"] else "NO")
        lines.append(f"| {r['batch']} | {r['config']} | {r['ours']:.1f} | {r['hf']:.1f} | {r['ratio']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['ratios'])} | {ident} |")
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
