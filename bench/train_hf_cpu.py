"""One SFT training step on a CPU: s1kernels vs transformers, on SmolLM2-135M-Instruct's weights.

    python bench/train_hf_cpu.py --model runs/smollm2 --rows 4 --seq 1024 --reps 2 --threads 2 \\
        --gradient-checkpointing --out bench/results/train-hf-cpu.md

Same weights (the converted folder), same batch: --rows MATH500 samples in the s1 format
(SmolLM2's tokenizer and chat template), each cut to --seq tokens, loss on the assistant turn.
- s1kernels: ``s1kernels.model`` (the rows packed into one row, cu_seqlens) + the fused
  ``linear_cross_entropy`` (no [T, V] logits) + torch AdamW;
- transformers: LlamaForCausalLM ([rows, seq], no padding) -> logits -> ``F.cross_entropy``
  + torch AdamW.
--gradient-checkpointing turns on activation recomputation in both (the setting s1's
training script uses; s1kernels: ``model.gradient_checkpointing``, transformers:
``gradient_checkpointing_enable()``), so what remains of the peak is mostly the output layer.
Each measurement is a fresh process: one warm-up step (optimizer state and gradient buffers
exist after it), then one timed step; peak memory is the growth of the resident set during
the timed step, beyond weights, gradients and AdamW state (VmHWM reset through
/proc/self/clear_refs; glibc's mmap threshold pinned so freed tensors leave the resident set).
Processes alternate (s1kernels, transformers, transformers, s1kernels, ...); ratios per pair.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

from cpu_report import machine, status_kb, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data", "math500.jsonl")




def _batch(tok, rows: int, seq: int, data: str):
    from s1kernels.data.format import render_sample
    from s1kernels.data.readers import read_rows

    samples = []
    for r in read_rows(data)[0]:
        ids, mask = render_sample(tok, r["question"], r["thinking"], r["answer"])
        if len(ids) >= seq:
            samples.append((ids[:seq], mask[:seq]))
        if len(samples) == rows:
            return samples
    raise ValueError(f"--seq: fewer than {rows} MATH500 samples have {seq} tokens")


def measure_one(impl: str, folder: str, rows: int, seq: int, threads: int, data: str, ckpt: bool = False) -> dict:
    ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD, fixed
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    from s1kernels.data.tokenizer import S1Tokenizer

    tok = S1Tokenizer.from_folder(folder)
    samples = _batch(tok, rows, seq, data)
    ids = torch.tensor([s[0] for s in samples])  # [rows, seq]
    labels = torch.full_like(ids, -100)
    for b, (x, m) in enumerate(samples):  # token t predicts t+1 where t+1 is trained
        for t in range(seq - 1):
            if m[t + 1]:
                labels[b, t] = x[t + 1]
    if impl == "s1kernels":
        from s1kernels.model import load_model
        from s1kernels.ops.loss import linear_cross_entropy

        model = load_model(folder, dtype=torch.float32).train()
        model.gradient_checkpointing = ckpt
        flat, lab = ids.reshape(-1), labels.reshape(-1)
        pos = torch.arange(seq).repeat(rows)
        cu = torch.arange(0, rows * seq + 1, seq, dtype=torch.int32)

        def loss_fn():
            return model(flat, pos, cu, max_seqlen=seq,
                         loss_fn=lambda h, w: linear_cross_entropy(h, w, lab, cu_seqlens=cu))
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").train()
        if ckpt:
            model.config.use_cache = False
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        def loss_fn():
            logits = model(input_ids=ids).logits
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        return float(loss)

    step()  # warm-up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status_kb("VmRSS")
    t0 = time.perf_counter()
    loss = step()
    seconds = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    return {"impl": impl, "seconds": seconds, "tokens_per_s": rows * seq / seconds, "peak_mb": (peak - base) / 1024,
            "base_mb": base / 1024, "loss": loss}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=DATA if os.path.isfile(DATA) else "/work/shared/data/math500.jsonl")
    p.add_argument("--rows", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in both")
    p.add_argument("--out", default=None)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.model, args.rows, args.seq, args.threads, args.data,
                                     args.gradient_checkpointing)))
        return 0
    import torch
    import transformers

    load0 = os.getloadavg()[0]
    res = {"s1kernels": [], "transformers": []}
    for rep in range(args.reps):
        for impl in (("s1kernels", "transformers") if rep % 2 == 0 else ("transformers", "s1kernels")):
            cmd = [sys.executable, os.path.abspath(__file__), "--one", impl, "--model", args.model, "--data", args.data,
                   "--rows", str(args.rows), "--seq", str(args.seq), "--threads", str(args.threads)]
            cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
            res[impl].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(res[impl][-1], f"load {os.getloadavg()[0]:.1f}", flush=True)
    speed = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(res["s1kernels"], res["transformers"])]
    mem = [a["peak_mb"] / b["peak_mb"] for a, b in zip(res["s1kernels"], res["transformers"])]
    med = lambda impl, key: statistics.median(r[key] for r in res[impl])  # noqa: E731
    lines = [
        "# One SFT training step on a CPU: s1kernels vs transformers (SmolLM2-135M-Instruct weights, fp32)",
        "",
        f"Command: `python bench/train_hf_cpu.py --model SMOLLM2_FOLDER --rows {args.rows} --seq {args.seq} "
        f"--reps {args.reps} --threads {args.threads}{' --gradient-checkpointing' if args.gradient_checkpointing else ''}`",
        f"Machine: {machine()}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {args.threads} threads; shared machine, load average {load0:.1f} at the "
        f"start, {os.getloadavg()[0]:.1f} at the end (fresh process per measurement, alternating).",
        f"Batch: {args.rows} MATH500 samples x {args.seq} tokens in the s1 format; one [tokens, V] fp32 logits "
        f"tensor is {args.rows * args.seq * 49152 * 4 / 2**20:.0f} MB; gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'} in both.",
        "",
        "| implementation | tokens/s (median) | step s | peak MB beyond weights + grads + AdamW (median) | loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for impl in res:
        lines.append(f"| {impl} | {med(impl, 'tokens_per_s'):.1f} | {med(impl, 'seconds'):.2f} | "
                     f"{med(impl, 'peak_mb'):.0f} | {res[impl][0]['loss']:.5f} |")
    lines += ["", f"Speed ratio s1kernels/transformers per pair: {', '.join(f'{x:.2f}' for x in speed)} (median "
                  f"{statistics.median(speed):.2f}); peak memory ratio: {', '.join(f'{x:.2f}' for x in mem)} "
                  f"(median {statistics.median(mem):.2f})."]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
