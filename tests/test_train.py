"""Trainer: exact normalisation over accumulation and ranks, FSDP2 on gloo (sharded loading,
bf16 policy, sharded DCP checkpoints, per-parameter export), SIGKILL + resume, the CLI's
output folder, and clear errors."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from s1kernels.data import build_default_tokenizer
from s1kernels.model import load_model
from s1kernels.train import TINY_DEFAULTS, TrainConfig, train
from s1kernels.train.__main__ import parse_args
from s1kernels.data import render_rows
from s1kernels.train.data import Schedule, count_items, micro_batch, pack_samples
from s1kernels.train.optim import lr_factor

TINY = dict(TINY_DEFAULTS, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, block_size=256, synthetic_rows=40, lr=3e-3, warmup_ratio=0.2,
            epochs=1.0, eval_rows=0, progress=False, bf16=False, weight_decay=0.01)
TINY_FLAGS = ["--hidden-size", "32", "--num-hidden-layers", "2", "--num-attention-heads", "4", "--num-key-value-heads", "2",
              "--intermediate-size", "64", "--block-size", "256",
              "--synthetic-rows", "40", "--no-progress", "--eval-rows", "0", "--warmup-ratio", "0.2"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")



def _log(folder):
    from s1kernels.train import read_log

    return read_log(os.path.join(folder, "train_log.jsonl"), upto_step=10**9)


def _run_inprocess(tmp_path, name, **kw):
    cfg = TrainConfig(**{**TINY, "output": str(tmp_path / name), **kw})
    summary = train(cfg)
    return summary, _log(cfg.output)


def _torchrun(*args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *map(str, args)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_schedule_splits_rows_and_fills_the_last_step():
    s = Schedule(num_rows=7, micro_batch=1, grad_accum=2, world_size=2, seed=3)
    assert s.rows_per_step == 4 and s.steps_per_epoch == 2
    seen = []
    for step in range(2):
        per_rank = [s.step_rows(step, r) for r in range(2)]
        assert all(len(mb) == 2 and all(len(m) == 1 for m in mb) for mb in per_rank)
        seen += [i for mb in per_rank for m in mb for i in m]
    assert sorted(i for i in seen if i >= 0) == list(range(7)) and seen.count(-1) == 1
    assert s.step_rows(2, 0) != s.step_rows(0, 0) or s.step_rows(2, 1) != s.step_rows(0, 1)  # new epoch, new order


def test_micro_batch_counts_tokens_and_sequences():
    tok = build_default_tokenizer()
    from s1kernels.data import make_rows

    packed = pack_samples(render_rows(tok, make_rows(12, seed=1)), 512, tok.pad_id)
    b = micro_batch(packed, [0, -1, 1], tok.pad_id, "cpu")
    T = b["input_ids"].shape[0]
    real = sum(int(packed.cu_seqlens[r][-2 if int(packed.sample_index[r][-1]) < 0 else -1]) for r in (0, 1))
    assert T == real + 2 and int(b["cu_seqlens"][-1]) == T and b["tokens"] == real  # padding tails cut
    assert int(count_items(b, "token")) == int((packed.labels[:2] != -100).sum())
    n_samples = sum(int((si >= 0).sum()) for si in packed.sample_index[:2])
    assert int(count_items(b, "sequence")) == n_samples


@pytest.mark.parametrize("normalize", ["token", "sequence"])
def test_grad_accum_equals_one_big_micro_batch(tmp_path, normalize):
    _, a = _run_inprocess(tmp_path, "a", max_steps=3, micro_batch=2, grad_accum=1, normalize=normalize)
    _, b = _run_inprocess(tmp_path, "b", max_steps=3, micro_batch=1, grad_accum=2, normalize=normalize)
    assert [r["items"] for r in a] == [r["items"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)


def test_fsdp_two_ranks_match_single_process(tmp_path):
    """torchrun, gloo, 2 ranks x 1 micro-batch == 1 process x 2 accumulated micro-batches."""
    out = str(tmp_path / "fsdp")
    _torchrun("-m", "s1kernels.train", "--output", out, "--max-steps", "3", "--grad-accum", "1", *TINY_FLAGS)
    _, single = _run_inprocess(tmp_path, "single", max_steps=3, micro_batch=1, grad_accum=2)
    dist_log = _log(out)
    assert len(dist_log) == 3
    for rd, rs in zip(dist_log, single):
        assert rd["items"] == rs["items"]
        assert rd["loss"] == pytest.approx(rs["loss"], rel=1e-5)
        assert rd["lr"] == pytest.approx(rs["lr"], rel=1e-9)
    # the sharded run's saved model equals the single-process one
    m1, m2 = load_model(out), load_model(str(tmp_path / "single"))
    for (n, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters()):
        torch.testing.assert_close(p1, p2, atol=1e-5, rtol=1e-4, msg=n)


def test_sigkill_then_resume_gives_the_same_loss_curve(tmp_path):
    steps, every = 60, 5
    _, reference = _run_inprocess(tmp_path, "ref", max_steps=steps, save_every=every, synthetic_rows=100)
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "s1kernels.train", "--output", out, "--max-steps", str(steps),
           "--save-every", str(every), *TINY_FLAGS, "--synthetic-rows", "100"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckdir = os.path.join(out, "checkpoints")
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(ckdir) and any(n.startswith("step-") for n in os.listdir(ckdir)):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = len(_log(out))
    assert killed_at < steps
    resumed = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    log = _log(out)
    assert [r["step"] for r in log] == list(range(1, steps + 1))
    for r, ref in zip(log, reference):
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-6, abs=1e-6), r["step"]
        assert r["lr"] == pytest.approx(ref["lr"], rel=1e-9)
    # the output folder is a loadable HF-format checkpoint with the tokenizer
    from s1kernels.data import S1Tokenizer

    names = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    tok = S1Tokenizer.from_folder(out)
    a, b = load_model(out), load_model(str(tmp_path / "ref"))
    assert a.config.vocab_size == tok.vocab_size
    for (n, p1), (_, p2) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p1, p2, atol=1e-6, rtol=1e-5, msg=n)
    assert len([n for n in os.listdir(ckdir) if n.startswith("step-")]) == 1  # keep_checkpoints=1


def test_loss_falls_and_checkpoint_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    summary, log = _run_inprocess(tmp_path, "fall", max_steps=25, synthetic_rows=100)
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "fall")).eval()
    ours = load_model(str(tmp_path / "fall"))
    ids = torch.randint(0, ours.config.vocab_size, (9,))
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
        got = ours.logits(ours(ids, torch.arange(9), torch.tensor([0, 9], dtype=torch.int32)))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_config_file_and_flags_precedence(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lr": 0.5, "block_size": 128, "epochs": 2}))
    cfg = parse_args(["--config", str(path), "--lr", "0.25"])
    assert cfg.lr == 0.25 and cfg.block_size == 128 and cfg.epochs == 2
    s1 = parse_args(["--model", "some/folder"])  # s1's hyper-parameters for real models
    assert (s1.lr, s1.betas, s1.weight_decay, s1.warmup_ratio, s1.epochs, s1.block_size) == \
        (1e-5, (0.9, 0.95), 1e-4, 0.05, 5.0, 32768)
    path.write_text(json.dumps({"learning_rate": 1}))
    with pytest.raises(SystemExit) as e:
        parse_args(["--config", str(path)])
    assert e.value.code == 2


def _model_folder(tmp_path, tok=None):
    """A tiny trained-from-scratch checkpoint folder to fine-tune from."""
    _run_inprocess(tmp_path, "base", max_steps=1)
    return str(tmp_path / "base")


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(TrainConfig(**{**TINY, "model": str(tmp_path / "missing"), "output": str(tmp_path / "o")}))
    base = _model_folder(tmp_path)
    # malformed config.json
    bad = tmp_path / "bad"
    bad.mkdir()
    for n in os.listdir(base):
        if os.path.isfile(os.path.join(base, n)):
            (bad / n).write_bytes(open(os.path.join(base, n), "rb").read())
    (bad / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        train(TrainConfig(**{**TINY, "model": str(bad), "output": str(tmp_path / "o")}))
    # tokenizer without chat tokens
    from tokenizers import Tokenizer, models, pre_tokenizers

    plain = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<|endoftext|>": 2, "[UNK]": 3}, unk_token="[UNK]"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    plain.save(str(bad / "tokenizer.json"))
    (bad / "config.json").write_text(open(os.path.join(base, "config.json")).read())
    with pytest.raises(ValueError, match="im_start"):
        train(TrainConfig(**{**TINY, "model": str(bad), "output": str(tmp_path / "o")}))
    # data without trainable tokens: every sample is longer than the block and gets dropped
    with pytest.raises(ValueError, match="no trainable tokens"):
        train(TrainConfig(**{**TINY, "block_size": 16, "overlong": "drop", "output": str(tmp_path / "o")}))
    with pytest.raises(ValueError, match="longer than block_size=16"):
        train(TrainConfig(**{**TINY, "block_size": 16, "overlong": "error", "output": str(tmp_path / "o")}))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "q", "thinking": "t", "answer": "1"}) + "\n")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(TrainConfig(**{**TINY, "data": str(tmp_path / "nope.jsonl"), "output": str(tmp_path / "o")}))


def test_resume_refuses_a_different_global_batch(tmp_path):
    _run_inprocess(tmp_path, "r", max_steps=2, save_every=1)
    with pytest.raises(ValueError, match="rows per step"):
        _run_inprocess(tmp_path, "r", max_steps=4, save_every=1, grad_accum=2, resume="latest")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        _run_inprocess(tmp_path, "fresh", max_steps=2, resume="latest")


def test_trains_from_jsonl_rows_and_packed_shards(tmp_path):
    from s1kernels.data import make_rows
    from s1kernels.train.data import pack_samples

    rows = make_rows(30, seed=5)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary, log = _run_inprocess(tmp_path, "jsonl", data=str(path), max_steps=2)
    assert len(log) == 2 and summary["data"]["samples"] == 30
    tok = build_default_tokenizer()
    shards = tmp_path / "packed"
    packed = pack_samples(render_rows(tok, rows), 512, tok.pad_id)
    packed.select(slice(0, 2)).save(shards / "shard-00000.safetensors")
    packed.select(slice(2, None)).save(shards / "shard-00001.safetensors")
    summary, log = _run_inprocess(tmp_path, "shards", data=str(shards), max_steps=2)
    assert summary["data"]["block_size"] == 512 and len(log) == 2
    assert sum(r["items"] for r in log) <= int((packed.labels != -100).sum())


def test_bf16_autocast_and_gradient_checkpointing_train(tmp_path):
    _, log = _run_inprocess(tmp_path, "bf16", max_steps=3, bf16=True, gradient_checkpointing=True)
    assert all(math.isfinite(r["loss"]) for r in log) and log[-1]["loss"] < log[0]["loss"]
    cfg = json.load(open(tmp_path / "bf16" / "config.json"))
    assert cfg["torch_dtype"] == "bfloat16"
    assert load_model(str(tmp_path / "bf16")).embed_tokens.weight.dtype == torch.float32


def _base_model(tmp_path, name="base", intermediate_size=67, max_shard_bytes=30_000):
    """A --model folder: bf16 weights in several safetensors files with an index; intermediate
    size and vocabulary (125) odd, so two ranks hold unequal numbers of rows."""
    from s1kernels.model import ModelConfig, Transformer, save_model

    tok = build_default_tokenizer()
    cfg = ModelConfig(model_type="qwen2", vocab_size=tok.vocab_size, hidden_size=32,
                      intermediate_size=intermediate_size, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=False,
                      max_position_embeddings=256, eos_token_id=tok.eos_ids[0], pad_token_id=tok.pad_id)
    folder = str(tmp_path / name)
    save_model(Transformer(cfg).init_weights(seed=11), folder, max_shard_bytes=max_shard_bytes, dtype=torch.bfloat16)
    tok.save(folder)
    return folder


# Run by torchrun on 2 gloo ranks: every bad folder raises ValueError on every rank; the good
# folder is loaded sharded (reads recorded), each rank's shard is compared with the rows of
# the full file tensor, the bf16 policy is checked in a forward/backward, and the model is
# exported from both ranks. Results go to <out>/rank<r>.json for the test to assert on.
_SHARDED_LOAD_SCRIPT = r'''
import json, os, sys
import torch
from safetensors import safe_open
import s1kernels.model.checkpoint as mc
from s1kernels.train import TrainConfig, model_and_tokenizer
from s1kernels.model.transformer import rope_inv_freq
from s1kernels import distributed as dist_utils
from s1kernels.train import checkpoint as ckpt

good, out, bad = sys.argv[1], sys.argv[2], sys.argv[3:]
device, rank, world = dist_utils.init()
res = {"errors": []}
for folder in bad:
    try:
        model_and_tokenizer(TrainConfig(model=folder), device, world)
        res["errors"].append(None)
    except ValueError as e:
        res["errors"].append(str(e))

reads, real_open = {}, mc.safe_open
class Slice:
    def __init__(self, name, s): self.name, self.s = name, s
    def get_shape(self): return self.s.get_shape()
    def get_dtype(self): return self.s.get_dtype()
    def __getitem__(self, idx):
        t = self.s[idx]
        reads[self.name] = reads.get(self.name, 0) + t.shape[0]
        return t
class Recording:
    def __init__(self, *a, **k): self.f = real_open(*a, **k)
    def __enter__(self): return self
    def __exit__(self, *a): return False
    def keys(self): return self.f.keys()
    def get_slice(self, name): return Slice(name, self.f.get_slice(name))
    def get_tensor(self, name): raise AssertionError(f"rank {rank} read all of {name}")
mc.safe_open = Recording
mp_policy, _ = dist_utils.precision(True, device, world)
model, tok = model_and_tokenizer(TrainConfig(model=good), device, world, mp_policy)
mc.safe_open = real_open

files = mc._weight_files(good)
res["params"] = {}
for name, p in model.named_parameters():
    hf = mc.hf_name(name)
    with safe_open(files[hf], "pt") as f:
        full = f.get_tensor(hf)
    start, end = mc.shard_rows(full.shape[0], rank, world)
    local = p.to_local()
    res["params"][hf] = {"rows": full.shape[0], "start": start, "end": end, "local_rows": local.shape[0],
                         "read_rows": reads.get(hf, 0), "dtype": str(p.dtype),
                         "equal": torch.equal(local, full[start:end].to(local.dtype))}
res["inv_freq_ok"] = torch.equal(model.inv_freq, rope_inv_freq(model.config))

seen = {}
def loss_fn(hidden, weight):
    seen["hidden"], seen["weight"] = hidden.detach(), weight.detach()
    return (hidden @ weight.T).float().square().mean()
inputs = (torch.arange(1, 20) % model.config.vocab_size, torch.arange(19), torch.tensor([0, 19], dtype=torch.int32))
model(*inputs, loss_fn=loss_fn).backward()
with torch.no_grad():
    ref = mc.load_model(good, dtype=torch.bfloat16)(*inputs).float()
res["compute_dtypes"] = [str(seen["hidden"].dtype), str(seen["weight"].dtype)]
res["hidden_max_err"] = float((seen["hidden"].float() - ref).abs().max() / ref.abs().max())
res["grad_dtypes"] = sorted({str(p.grad.dtype) for p in model.parameters()})
res["param_dtypes"] = sorted({str(p.dtype) for p in model.parameters()})

ckpt.export_model(model, os.path.join(out, "two"), tok, None, max_shard_bytes=40_000)
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(res, f)
dist_utils.cleanup()
'''


@pytest.mark.parametrize("rows", [1, 2, 5, 125, 128])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_rows_match_torch_chunk(rows, world):
    from s1kernels.model.checkpoint import shard_rows

    chunks = torch.arange(rows).chunk(world)
    for rank in range(world):
        start, end = shard_rows(rows, rank, world)
        expected = chunks[rank].tolist() if rank < len(chunks) else []
        assert list(range(start, end)) == expected


def test_fsdp_reads_only_each_ranks_rows_and_exports_like_one_process(tmp_path):
    from safetensors.torch import load_file, save_file

    from s1kernels.model import ModelConfig
    from s1kernels.train.checkpoint import export_model

    base = _base_model(tmp_path)
    # bad inputs: a tensor missing, and tensors of another shape than config.json implies
    missing = _base_model(tmp_path, "missing", max_shard_bytes=None)
    tensors = load_file(os.path.join(missing, "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, os.path.join(missing, "model.safetensors"))
    reshaped = _base_model(tmp_path, "reshaped", intermediate_size=66, max_shard_bytes=None)
    ModelConfig.from_json(base).save(reshaped)

    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "load.py"
    script.write_text(_SHARDED_LOAD_SCRIPT)
    _torchrun(script, base, out, missing, reshaped, timeout=180)
    results = [json.load(open(out / f"rank{r}.json")) for r in range(2)]

    for res in results:
        assert len(res["errors"]) == 2
        assert "missing" in res["errors"][0] and "model.layers.1.mlp.up_proj.weight" in res["errors"][0]
        assert re.search(r"has shape \(\d+, \d+\) in .*config.json implies", res["errors"][1])
        assert "66" in res["errors"][1]
        assert res["inv_freq_ok"]
        # the bf16 policy: bf16 compute close to a bf16 model, fp32 gradients of fp32 master shards
        assert res["compute_dtypes"] == ["torch.bfloat16", "torch.bfloat16"] and res["hidden_max_err"] < 2e-2
        assert res["grad_dtypes"] == res["param_dtypes"] == ["torch.float32"]
    for name in results[0]["params"]:
        per_rank = [res["params"][name] for res in results]
        rows = per_rank[0]["rows"]
        # torch.chunk's split: rank 0 holds ceil(rows / 2), rank 1 the rest
        assert [(p["start"], p["end"]) for p in per_rank] == [(0, (rows + 1) // 2), ((rows + 1) // 2, rows)]
        for p in per_rank:
            assert p["equal"] and p["dtype"] == "torch.float32", name
            assert p["local_rows"] == p["read_rows"] == p["end"] - p["start"], name
    assert results[0]["params"]["model.embed_tokens.weight"]["rows"] == 125  # uneven: 63 + 62

    # one process exports the same files, byte for byte
    tok = build_default_tokenizer()
    export_model(load_model(base), str(tmp_path / "one"), tok, None, max_shard_bytes=40_000)
    two, one = sorted(os.listdir(out / "two")), sorted(os.listdir(tmp_path / "one"))
    assert two == one and "model.safetensors.index.json" in one
    assert len([n for n in one if n.startswith("model-")]) > 1
    for name in one:
        assert (out / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    for (n, a), (_, b) in zip(load_model(str(out / "two")).named_parameters(), load_model(base).named_parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=n)


def test_fsdp_sharded_checkpoint_resumes_and_exports(tmp_path):
    from s1kernels.train.checkpoint import export_checkpoint

    base = _base_model(tmp_path)
    flags = ["--model", base, "--block-size", "256", "--synthetic-rows", "40", "--lr", "1e-3", "--warmup-ratio", "0.2",
             "--max-steps", "4", "--save-every", "2", "--keep-checkpoints", "2", "--no-progress"]
    a, b = tmp_path / "a", tmp_path / "b"
    _torchrun("-m", "s1kernels.train", "--output", a, *flags)
    step2 = a / "checkpoints" / "step-2"
    # each rank wrote its own shard; no file holds the whole model
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "rng-0.safetensors", "rng-1.safetensors", "scheduler.json",
            "trainer_state.json", "config.json", "tokenizer.json"} <= set(os.listdir(step2))
    assert not any(n.endswith(".safetensors") and not n.startswith("rng-") for n in os.listdir(step2))
    # two ranks resume from step 2 into a fresh folder: steps 3 and 4 as in the first run
    _torchrun("-m", "s1kernels.train", "--output", b, *flags, "--resume", step2)
    log_a, log_b = _log(a), _log(b)
    assert [r["step"] for r in log_b] == [3, 4]
    for ra, rb in zip(log_a[2:], log_b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-5)
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-9)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    # one process (2 accumulated micro-batches) resumes the 2-rank checkpoint: DCP reshards
    cfg = TrainConfig(model=base, output=str(tmp_path / "c"), block_size=256, synthetic_rows=40, lr=1e-3,
                      warmup_ratio=0.2, max_steps=4, grad_accum=2, progress=False, resume=str(step2))
    train(cfg)
    for ra, rc in zip(log_a[2:], _log(cfg.output)):
        assert rc["loss"] == pytest.approx(ra["loss"], rel=1e-5)
    # the last checkpoint exports to the same model as the run's final export
    export_checkpoint(str(a / "checkpoints" / "step-4"), str(tmp_path / "exported"), dtype=None)
    for (n, x), (_, y) in zip(load_model(str(tmp_path / "exported")).named_parameters(),
                              load_model(str(a)).named_parameters()):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=n)
    # the command line's export (python -m s1kernels.convert --checkpoint) writes the same weights
    from s1kernels.convert import main as convert_main

    assert convert_main(["--checkpoint", str(a / "checkpoints" / "step-4"), "--output", str(tmp_path / "cli"),
                         "--dtype", "float32"]) == 0
    for (n, x), (_, y) in zip(load_model(str(tmp_path / "cli")).named_parameters(),
                              load_model(str(a)).named_parameters()):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=n)
