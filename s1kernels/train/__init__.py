"""Packed SFT in the s1 format: `python -m s1kernels.train` (flags in __main__.py), or from
Python `train(TrainConfig(...))`, itself `setup`, then `step` per optimizer step and `save`.

    python -m s1kernels.train                                   # tiny model, built-in task, CPU, ~3 min
    python -m s1kernels.train --model Qwen2.5-0.5B-Instruct/ --data s1k.jsonl --output runs/s1
    torchrun --nproc-per-node 8 -m s1kernels.train --model M/ --data packed/ --output runs/s1

Without --model a tiny Qwen2 is built from scratch for the built-in tokenizer and task, with
settings that train it in about three minutes on a shared 2-core CPU (docs/train.md). With --model the defaults are s1's
(lr 1e-5, AdamW betas (0.9, 0.95), weight decay 1e-4, 5% warm-up, cosine decay, 5 epochs,
block 32768, bf16). Precedence: those defaults < --config file.json < command-line flags.

Every step: micro-batches of packed rows (samples concatenated, attention kept inside each
sample through cu_seqlens), loss only on the assistant turn by the fused linear
cross-entropy, normalised over the exact number of trained tokens (or samples) of the whole
accumulation window across all ranks. The output folder is an HF-format checkpoint with
the tokenizer (loads with s1kernels.model.load_model and in transformers).

Under torchrun the model is FSDP2-sharded: built on the meta device, sharded, and each rank
reads only its rows of every tensor from --model, so no rank ever holds the full model.
bf16 there means bf16 all-gathers and compute with fp32 reduce-scatters and fp32 master
weights (FSDP2 MixedPrecisionPolicy); in one process it means bf16 autocast. Checkpoints
under <output>/checkpoints are sharded torch.distributed.checkpoint folders (see
s1kernels.train.checkpoint); the final model is gathered one parameter at a time.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import torch

from s1kernels.data.tokenizer import real_vocab_size
from s1kernels.model import ModelConfig, Transformer, load_model
from s1kernels.runtime import default_threads
from s1kernels.train import checkpoint as ckpt
from s1kernels import distributed as dist_utils
from s1kernels.train import run as runs
from s1kernels.train.validate import check_train_config
from s1kernels.train.files import replace_atomic, replace_json_atomic
from s1kernels.train.data import (Schedule, block_size_note, build_dataset, check_chat_tokenizer, count_items,
                                  is_packed_path, micro_batch)
from s1kernels.train.optim import build_optimizer, build_scheduler
from s1kernels.train.throughput import ThroughputWatch


@dataclasses.dataclass
class TrainConfig:
    model: str | None = None  # HF-format folder; None = tiny model from scratch
    data: str | None = None  # JSONL/Parquet rows or packed shards; None = built-in task
    output: str = "runs/default"
    lr: float = 1e-5
    min_lr_ratio: float = 0.0
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05
    epochs: float = 5.0
    max_steps: int | None = None  # overrides epochs
    block_size: int = 32768
    micro_batch: int = 1  # packed rows per forward
    grad_accum: int = 1
    normalize: str = "token"  # "token" | "sequence"
    max_grad_norm: float = 1.0
    bf16: bool | None = None  # None: on when training on CUDA
    gradient_checkpointing: bool = False
    overlong: str = "truncate"
    seed: int = 42
    synthetic_rows: int = 2000
    max_samples: int | None = None
    save_every: int = 0  # steps between checkpoints (0: only the final model)
    keep_checkpoints: int = 1
    resume: str | None = None  # "latest" or a checkpoint folder
    overwrite: bool = False  # a new run may replace the run an --output folder holds
    log_every: int = 1
    eval_rows: int = 0  # built-in task only: greedy accuracy on held-out rows at the end
    progress: bool = True
    loss_backend: str = "auto"
    vocab_size: int | None = None  # real tokens; lm_head rows past it take no probability (None: the tokenizer's)
    threads: int | None = None  # CPU threads for torch (None: see s1kernels.runtime.default_threads)
    # tiny model (used only without --model)
    hidden_size: int = 128
    num_hidden_layers: int = 4
    # 8 heads of 16 dims (4 kv heads): the same 0.82M parameters as 4 heads of 32. On the
    # built-in task 4 heads left 4 of 6 default runs writing the start number one digit off
    # for 10-46% of held-out questions; 8 heads copied it in 3 of 3 (docs/eval.md)
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    intermediate_size: int = 384


# The built-in run: ~0.8M parameters, ~700 packed rows of 1,024 tokens (5,000 fresh rows of
# the task seen once), 166-189 s beside other jobs on two CPU cores (load average 3-4.5).
TINY_DEFAULTS = dict(lr=3e-3, min_lr_ratio=0.05, weight_decay=0.01, warmup_ratio=0.05, epochs=1.0,
                     block_size=1024, micro_batch=1, grad_accum=1, bf16=False, synthetic_rows=5000,
                     eval_rows=64, max_grad_norm=1.0)


def tiny_model_config(cfg: TrainConfig, tok) -> ModelConfig:
    return ModelConfig(model_type="qwen2", vocab_size=tok.vocab_size, hidden_size=cfg.hidden_size,
                       intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
                       num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                       # untied: with tied embeddings this size gets stuck predicting one digit for
                       # every copied digit; untied it learns the copy within a few hundred steps
                       rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=cfg.block_size,
                       eos_token_id=tok.eos_ids[0] if tok.eos_ids else None, pad_token_id=tok.pad_id)


def model_and_tokenizer(cfg: TrainConfig, device, world_size: int = 1, mp_policy=None):
    """The fp32 model on `device` and its tokenizer; with world_size > 1 the model is FSDP2-sharded.

    Without --model a tiny model is built for the built-in tokenizer. From --model it is the
    CLIs' one loader (s1kernels.runtime.load_model_and_tokenizer); under FSDP the model is built
    on the meta device, sharded, materialised with only this rank's shard on `device`, and
    each rank reads only its rows of every tensor.
    """
    from s1kernels.runtime import load_model_and_tokenizer
    from s1kernels.data import build_default_tokenizer

    shard = (lambda m: dist_utils.shard(m, device, mp_policy)) if world_size > 1 else None
    if cfg.model is None:
        tok = build_default_tokenizer()
        torch.manual_seed(cfg.seed)
        model = Transformer(tiny_model_config(cfg, tok)).init_weights(seed=cfg.seed).to(device)
        if shard is not None:
            shard(model)
    else:
        model, tok = load_model_and_tokenizer(cfg.model, device, torch.float32, shard=shard,
                                              vocab_size=cfg.vocab_size)
    check_chat_tokenizer(tok)
    return model, tok


def read_log(path: str, upto_step: int) -> list[dict]:
    """Records of a train_log.jsonl up to `upto_step` (a line cut short by a kill is skipped)."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError):  # a line cut short by a kill
                continue
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= upto_step]


def _resume_path(cfg: TrainConfig, ckpt_dir: str, rid: str, settings: dict, main: bool = True) -> str | None:
    """The checkpoint to resume from (None for a new run); ValueError when it is not this run's."""
    held = runs.owner(cfg.output)
    if runs.restart(cfg.output, rid, cfg.overwrite, main) and cfg.resume in (None, False, "latest"):
        return None  # this run, stopped before its first checkpoint: start over (said by restart)
    if not cfg.resume:
        if held is not None and not cfg.overwrite:
            runs.refuse_taken(cfg.output)  # another run's folder (check_output left it to here)
        return None
    if cfg.resume == "latest":
        if held is not None and held["run_id"] != rid:
            runs.check_resume(held, settings, cfg.output)
        path = ckpt.latest_checkpoint(ckpt_dir, rid)
        if path is None and ckpt.latest_checkpoint(ckpt_dir) is not None:  # another run's: say what differs
            runs.check_resume(ckpt.read_trainer_state(ckpt.latest_checkpoint(ckpt_dir)), settings, ckpt_dir)
        if path is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint of this run under {ckpt_dir!r}")
    else:
        path = cfg.resume
        inside = os.path.realpath(path).startswith(os.path.realpath(cfg.output) + os.sep)
        if cfg.overwrite and inside and held is not None and held["run_id"] != rid:
            raise ValueError(f"--resume: {path} lies inside --output {cfg.output!r}, which --overwrite would clear")
        if held is not None and held["run_id"] != rid and not cfg.overwrite:
            raise ValueError(f"--output: {cfg.output!r} holds another run; pass --overwrite to replace it "
                             f"with the run resumed from {path}")
    state = ckpt.read_trainer_state(path)
    runs.check_resume(state, settings, path)
    return path


@dataclasses.dataclass
class Run:
    """What a training run holds between its steps (`setup` builds it on every rank)."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world_size: int
    bf16: bool
    amp: object  # the autocast context of one process (a null context under FSDP)
    model: torch.nn.Module
    tok: object
    vocab_size: int
    n_params: int
    threads: int
    packed: object
    data_info: dict
    sched: Schedule
    total_steps: int
    settings: dict
    run_id: str
    optimizer: torch.optim.Optimizer
    scheduler: object
    start_step: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_dir(self) -> str:
        return os.path.join(self.cfg.output, "checkpoints")

    @property
    def log_path(self) -> str:
        return os.path.join(self.cfg.output, "train_log.jsonl")


def setup(cfg: TrainConfig) -> Run:
    """Checks, process group, model, data, optimizer and schedule; claims --output and
    resumes from a checkpoint when asked. Every rank calls it alike."""
    check_train_config(cfg)
    # before any long work: the output folder is writable and not another run's
    runs.check_output(cfg.output, cfg.resume, cfg.overwrite)
    device, rank, world_size = dist_utils.init()
    main = rank == 0
    bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"

    mp_policy, amp = dist_utils.precision(bf16, device, world_size)
    model, tok = model_and_tokenizer(cfg, device, world_size, mp_policy)
    vocab_size = real_vocab_size(tok, model.config.vocab_size, cfg.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    threads = default_threads(cfg.threads, device, n_params)
    packed, data_info = build_dataset(tok, cfg.data, cfg.block_size, cfg.overlong, cfg.synthetic_rows, cfg.seed,
                                      cfg.max_samples)
    if main and (data_info.get("truncated") or data_info.get("dropped")):
        print(f"note: {data_info.get('truncated', 0)} samples longer than block_size={cfg.block_size} truncated, "
              f"{data_info.get('dropped', 0)} dropped (--overlong {cfg.overlong})", file=sys.stderr)
    sched = Schedule(packed.num_rows, cfg.micro_batch, cfg.grad_accum, world_size, cfg.seed)
    note = block_size_note(packed, sched.rows_per_step, cfg.data is not None and is_packed_path(cfg.data))
    if main and note:
        print(note, file=sys.stderr)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * sched.steps_per_epoch))
    warmup = int(round(cfg.warmup_ratio * total_steps))
    settings = runs.settings(cfg, total_steps, warmup, sched.rows_per_step, bf16, vocab_size)
    rid = runs.run_id(settings)

    model.gradient_checkpointing = cfg.gradient_checkpointing
    model.train()
    optimizer = build_optimizer(model, cfg.lr, cfg.betas, cfg.weight_decay)
    scheduler = build_scheduler(optimizer, total_steps, warmup, cfg.min_lr_ratio)
    run = Run(cfg, device, rank, world_size, bf16, amp, model, tok, vocab_size, n_params, threads, packed, data_info,
              sched, total_steps, settings, rid, optimizer, scheduler, 0)

    resume_path = _resume_path(cfg, run.ckpt_dir, rid, settings, main)  # every rank checks alike, before rank 0 writes
    dist_utils.barrier()
    if main:
        runs.claim(cfg.output, rid, settings, cfg.overwrite)
    dist_utils.barrier()
    log = []
    if resume_path is not None:
        run.start_step = ckpt.load_checkpoint(resume_path, model, optimizer, scheduler)["step"]
        log = read_log(run.log_path, run.start_step)
        if main:
            print(f"resumed from {resume_path} at step {run.start_step}", file=sys.stderr)
    if main:
        replace_atomic(run.log_path, "".join(json.dumps(r) + "\n" for r in log).encode())
        replace_json_atomic(os.path.join(cfg.output, "train_config.json"),
                            json.loads(json.dumps(dict(dataclasses.asdict(cfg), world_size=world_size,
                                                       total_steps=total_steps, data=data_info, bf16=bf16,
                                                       real_vocab_size=vocab_size, threads_used=threads,
                                                       run_id=rid), default=str)))
    return run


def step(run: Run, index: int, on_batch=None) -> dict:
    """One optimizer step (0-based `index`): the rank's micro-batches, each a forward with the
    fused loss and a backward, then clipping, the optimizer and the schedule. The loss is
    normalised over the trained tokens (or samples) of the whole step on every rank.
    `on_batch(tokens)` is called after each micro-batch. Returns the step's loss sum (a device
    tensor: reading it is a host sync), gradient norm, item count, learning rate and tokens."""
    from s1kernels.ops.loss import linear_cross_entropy

    cfg, model = run.cfg, run.model
    batches = [micro_batch(run.packed, rows, run.tok.pad_id, run.device) for rows in run.sched.step_rows(index, run.rank)]
    num_items = dist_utils.all_reduce_sum(sum(count_items(b, cfg.normalize) for b in batches).float())
    loss_sum = torch.zeros((), device=run.device)
    tokens = 0
    for b in batches:
        def loss_fn(hidden, weight, b=b):
            if run.bf16:
                hidden, weight = hidden.to(torch.bfloat16), weight.to(torch.bfloat16)
            return linear_cross_entropy(hidden, weight, b["labels"], cu_seqlens=b["cu_seqlens"],
                                        normalize=cfg.normalize, num_items=num_items, vocab_size=run.vocab_size,
                                        backend=cfg.loss_backend)

        with run.amp:
            loss = model(b["input_ids"], b["position_ids"], b["cu_seqlens"], b["max_seqlen"], loss_fn=loss_fn)
        # FSDP averages gradients over ranks; the loss is already a global mean, so undo it
        (loss * run.world_size).backward()
        loss_sum += loss.detach()
        tokens += b["tokens"]  # real tokens: the padding tail is cut off before the model
        if on_batch is not None:
            on_batch(b["tokens"])
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                               cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
    if hasattr(grad_norm, "full_tensor"):
        grad_norm = grad_norm.full_tensor()
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    return {"loss_sum": loss_sum, "grad_norm": grad_norm, "num_items": num_items, "lr": lr, "tokens": tokens}


def save(run: Run, step_done: int) -> None:
    """A resumable checkpoint after `step_done` steps (every rank writes its shard)."""
    extra = (lambda folder: (run.tok.save(folder), run.model.config.save(folder))) if run.main else None
    ckpt.save_checkpoint(run.ckpt_dir, step_done, run.model, run.optimizer, run.scheduler,
                         {"run_id": run.run_id, "settings": run.settings, "total_steps": run.total_steps,
                          "rows_per_step": run.sched.rows_per_step, "world_size": run.world_size},
                         extra, run.cfg.keep_checkpoints)


def train(cfg: TrainConfig) -> dict:
    """Runs training as configured (`setup`, then `step` after step with logging and `save`
    every --save-every steps, then the final model); returns a summary dict (on every rank)."""
    run = setup(cfg)
    main, total_steps = run.main, run.total_steps
    log_file = open(run.log_path, "a") if main else None
    bar = None
    if main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=run.start_step, desc="train", dynamic_ncols=True)
    watch = ThroughputWatch(cpu=run.device.type == "cpu", threads=run.threads)

    def on_batch(tokens: int):
        note = watch.update(tokens * run.world_size) if main else None
        if note:
            (bar.write if bar is not None else lambda s: print(s, file=sys.stderr))(note)

    # tokens_seen: this rank's real tokens (padding is never computed, so never counted);
    # window_tokens: those since the last log record, summed over ranks when it is written
    t_start, tokens_seen, window_tokens, tokens_logged = time.perf_counter(), 0, 0, 0
    window_t0 = time.perf_counter()
    # without a bar, a line on the first step, then at least every HEARTBEAT_S seconds
    heartbeat = None if bar is not None or not main else _Heartbeat(total_steps)
    if heartbeat is not None and run.start_step < total_steps:
        heartbeat.say(f"training steps {run.start_step + 1}-{total_steps}, {run.sched.rows_per_step} packed row(s) of "
                      f"block size {run.packed.block_size} a step")
    for index in range(run.start_step, total_steps):
        out = step(run, index, on_batch)
        tokens_seen += out["tokens"]
        window_tokens += out["tokens"]
        done = index + 1
        if done % cfg.log_every == 0 or done == total_steps:
            # one reduction for the step's loss and the tokens since the last record (float64: exact)
            totals = torch.stack([out["loss_sum"].double(),
                                  torch.tensor(float(window_tokens), dtype=torch.float64, device=run.device)])
            loss_val, new_tokens = dist_utils.all_reduce_sum(totals).tolist()
            tokens_logged, window_tokens = tokens_logged + int(new_tokens), 0
            if main:
                elapsed = time.perf_counter() - window_t0
                tps = tokens_logged / max(elapsed, 1e-9)
                # tokens: real tokens trained since the previous record, all ranks; seconds: since
                # this process started training, so tokens_per_s = sum(tokens) / seconds
                rec = {"step": done, "loss": loss_val, "lr": out["lr"], "grad_norm": float(out["grad_norm"]),
                       "items": float(out["num_items"]), "tokens": int(new_tokens), "seconds": elapsed,
                       "tokens_per_s": tps, "load1": watch.load()}
                if heartbeat is not None:
                    heartbeat.loss = loss_val
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_val:.4f}", tok_s=f"{tps:,.0f}", lr=f"{out['lr']:.2e}",
                                    **({"slow": watch.status} if watch.status else {}))
        if bar is not None:
            bar.update(1)
        if heartbeat is not None:
            heartbeat.step(done, tokens_seen * run.world_size / max(time.perf_counter() - window_t0, 1e-9))
        if cfg.save_every and done % cfg.save_every == 0 and done < total_steps:
            save(run, done)
    if bar is not None:
        bar.close()
    if log_file is not None:
        log_file.close()
    if cfg.save_every and run.start_step < total_steps:  # a resumed finished run has nothing new to save
        save(run, total_steps)
    ckpt.publish_final(cfg.output, run.model, run.tok, torch.bfloat16 if run.bf16 else None)
    # steps: the run's length; start_step: where this process began (a resumed run), so it
    # trained steps - start_step of them
    summary = {"steps": total_steps, "start_step": run.start_step, "params": run.n_params,
               "seconds": time.perf_counter() - t_start,
               "output": cfg.output, "data": run.data_info}
    if main:
        if cfg.eval_rows and cfg.data is None:
            summary.update(_eval_builtin(cfg, run.tok, run.device))
        with open(run.log_path) as f:
            losses = [json.loads(line)["loss"] for line in f if line.strip()]
        if losses:
            summary["first_loss"], summary["last_loss"] = losses[0], losses[-1]
    dist_utils.cleanup()
    return summary


class _Heartbeat:
    """Progress lines on stderr for runs without a bar (--no-progress): one when training
    starts, one after the first step, then one at least every HEARTBEAT_S seconds and at the
    end, so a slow step is never minutes of silence."""

    HEARTBEAT_S = 30.0

    def __init__(self, total_steps: int, clock=time.perf_counter):
        self.total, self.clock, self.loss = total_steps, clock, None
        self.t0 = self.last = clock()
        self.first = True

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        self.last = self.clock()

    def step(self, done: int, tokens_per_s: float) -> None:
        now = self.clock()
        if self.first or done == self.total or now - self.last >= self.HEARTBEAT_S:
            loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
            self.say(f"step {done}/{self.total}{loss}, {tokens_per_s:,.0f} tokens/s, {now - self.t0:.0f}s")
            self.first = False


def _eval_builtin(cfg, tok, device) -> dict:
    """Greedy accuracy of the saved model on held-out rows of the built-in task."""
    from s1kernels.data import make_rows
    from s1kernels.train.evaluate import task_accuracy

    model = load_model(cfg.output, device=device)
    rows = make_rows(cfg.eval_rows, seed=cfg.seed + 7919)  # a seed the training rows never use
    acc, texts = task_accuracy(model, tok, rows, vocab_size=real_vocab_size(tok, model.config.vocab_size,
                                                                            cfg.vocab_size))
    return {"eval_accuracy": acc, "eval_rows": len(rows), "eval_example": texts[0] if texts else ""}
