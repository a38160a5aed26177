"""A kill at every file-system call of checkpoint save, rotation, publish and resume start.

`KillAt(i)` makes the i-th file-system call (open, os.rename/replace/remove/unlink/rmdir/
mkdir/makedirs/fsync/open, and the writers that bypass Python's open: safetensors' save_file,
the tokenizer's save) raise `Killed`, a BaseException no handler in the code catches, so
everything after it is skipped as it would be by SIGKILL. For every i the test checks what a
later process would see, then runs the recovery a later process would run and checks again.
Invariants: the latest checkpoint is always complete and holds exactly the state saved at its
step; a folder that loads as a model holds exactly one of the published models; another run's
checkpoints are never touched.
"""
import builtins
import io
import json
import os
import shutil

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException

from s1kernels.data import build_default_tokenizer
from s1kernels.model import ModelConfig, Transformer, load_model
from s1kernels.model import checkpoint as model_ckpt
from s1kernels.train import checkpoint as ckpt
from s1kernels.train import publish
from s1kernels.train import run as runs
from s1kernels.train.optim import build_optimizer, build_scheduler


class Killed(BaseException):
    pass


_OS_CALLS = ("rename", "replace", "remove", "unlink", "rmdir", "mkdir", "makedirs", "fsync", "open")


class KillAt:
    """Counts file-system calls; raises Killed at call `at` (never when `at` is None)."""

    def __init__(self, monkeypatch, at=None):
        self.count, self.at = 0, at
        for name in _OS_CALLS:
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))
        monkeypatch.setattr(builtins, "open", self._wrap(builtins.open))
        monkeypatch.setattr(io, "open", self._wrap(io.open))
        monkeypatch.setattr(model_ckpt, "save_file", self._wrap(model_ckpt.save_file))
        from s1kernels.data.tokenizer import S1Tokenizer

        monkeypatch.setattr(S1Tokenizer, "save", self._wrap(S1Tokenizer.save))

    def _wrap(self, fn):
        def call(*a, **k):
            self.count += 1
            if self.count == self.at:
                raise Killed(f"killed at call {self.count}: {getattr(fn, '__name__', fn)}")
            return fn(*a, **k)
        return call


def _run_counted(monkeypatch, fn, at=None):
    """Runs fn() with the kill armed at call `at`; returns (calls made, killed?)."""
    with monkeypatch.context() as m:
        k = KillAt(m, at)
        try:
            fn()
            killed = False
        except Killed:
            killed = True
        except CheckpointException as e:  # DCP collects a failure of its writer into this
            assert "Killed" in str(e), e
            killed = True
    return k.count, killed


def _killed_copies(monkeypatch, base, tmp_path, act, must_kill=True):
    """act(folder) on a fresh copy of folder `base`, killed at each of its writes in turn:
    yields (write number, the copy it left). `must_kill=False` for an act that may catch the
    kill and clean up itself."""
    def fresh():
        work = tmp_path / "w"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        return str(work)

    out = fresh()
    total, _ = _run_counted(monkeypatch, lambda: act(out))
    for at in range(1, total + 1):
        out = fresh()
        _, killed = _run_counted(monkeypatch, lambda: act(out), at)
        assert killed or not must_kill, at
        yield at, out


# ---- a tiny model whose state is easy to compare ------------------------------------------

def _tiny_config():
    tok = build_default_tokenizer()
    return tok, ModelConfig(model_type="qwen2", vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=24,
                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                            max_position_embeddings=64, rope_theta=10000.0)


def _trainer(seed):
    tok, cfg = _tiny_config()
    model = Transformer(cfg).init_weights(seed=seed)
    opt = build_optimizer(model, 1e-3, (0.9, 0.95), 0.01)
    sched = build_scheduler(opt, 10, 2)
    return tok, model, opt, sched


def _step(model, opt, sched, seed):
    """One optimizer step on a seeded loss, so optimizer and scheduler state are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in model.parameters())
    loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()


def _snapshot(model, sched):
    return {"params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "lr": sched.get_last_lr()[0]}


RUN = "a" * 16
OTHER = "b" * 16


def _save(ckpt_dir, step, model, opt, sched, tok, keep, run=RUN):
    extra = lambda folder: (tok.save(folder), model.config.save(folder))  # noqa: E731
    return ckpt.save_checkpoint(ckpt_dir, step, model, opt, sched, {"run_id": run, "settings": {}},
                                extra, keep)


def _restored(path):
    """Params and lr of checkpoint `path` loaded into a fresh trainer."""
    tok, model, opt, sched = _trainer(seed=123)
    state = ckpt.load_checkpoint(path, model, opt, sched)
    return state["step"], _snapshot(model, sched)


def _same(a, b):
    return a["lr"] == b["lr"] and all(torch.equal(a["params"][n], b["params"][n]) for n in a["params"])


def _tree(path):
    return {os.path.relpath(os.path.join(r, f), path): open(os.path.join(r, f), "rb").read()
            for r, _, fs in os.walk(path) for f in fs}


@pytest.fixture(scope="module")
def saved_world(tmp_path_factory):
    """A checkpoint folder holding this run's step-2 and step-3 (latest), another run's step-9,
    and the states a save at step 3 (again) or 4 writes; copied fresh for every kill."""
    root = tmp_path_factory.mktemp("world")
    ckdir = str(root / "checkpoints")
    tok, model, opt, sched = _trainer(seed=1)
    states = {}
    for step in (2, 3):
        _step(model, opt, sched, step)
        _save(ckdir, step, model, opt, sched, tok, keep=0)
        states[step] = _snapshot(model, sched)
    _save(ckdir, 9, model, opt, sched, tok, keep=0, run=OTHER)
    with open(os.path.join(ckdir, ckpt.LATEST), "w") as f:
        f.write("step-3\n")
    _step(model, opt, sched, 4)
    states["next"] = _snapshot(model, sched)
    return str(root), (tok, model, opt, sched), states


@pytest.mark.parametrize("step,keep", [(4, 1), (3, 2)], ids=["new-step-keep1", "resave-step-keep2"])
def test_kill_anywhere_in_save_and_rotate(tmp_path, monkeypatch, saved_world, step, keep):
    root, (tok, model, opt, sched), states = saved_world
    other = os.path.join(root, "checkpoints", "step-9")
    other_files = _tree(other)

    def fresh():
        work = tmp_path / "w"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(root, work)
        return str(work / "checkpoints")

    ckdir = fresh()
    total, killed = _run_counted(monkeypatch, lambda: _save(ckdir, step, model, opt, sched, tok, keep))
    assert not killed and total > 20
    for at in range(1, total + 1):
        ckdir = fresh()
        _, killed = _run_counted(monkeypatch, lambda: _save(ckdir, step, model, opt, sched, tok, keep), at)
        assert killed, at
        # what a later process sees: a complete checkpoint, the old newest one or the new one
        latest = ckpt.latest_checkpoint(ckdir, RUN)
        assert latest is not None, at
        got_step, got = _restored(latest)
        if _same(got, states["next"]):
            assert got_step == step, at
        else:
            assert got_step == 3 and _same(got, states[3]), (at, latest)
        assert _tree(os.path.join(ckdir, "step-9")) == other_files, at
        # the later process saves again: exactly `keep` of this run's checkpoints remain
        _save(ckdir, step, model, opt, sched, tok, keep)
        mine = ckpt.list_checkpoints(ckdir, RUN)
        got_step, got = _restored(ckpt.latest_checkpoint(ckdir, RUN))
        assert got_step == step and _same(got, states["next"]), at
        if keep:
            assert len(mine) == keep, (at, mine)
        assert not [n for n in os.listdir(ckdir) if n.startswith((".tmp-", ".del-"))], (at, os.listdir(ckdir))
        assert _tree(os.path.join(ckdir, "step-9")) == other_files, at


def _published(tmp_path, name, seed, dtype=None, shard=None):
    tok, cfg = _tiny_config()
    model = Transformer(cfg).init_weights(seed=seed)
    out = str(tmp_path / name)
    publish.publish_final(out, model, tok, dtype, shard)
    return out, tok, model


def _params(folder):
    return {n: p.detach().clone() for n, p in load_model(folder).named_parameters()}


@pytest.mark.parametrize("shards", [(None, 3000), (3000, None)], ids=["single-to-sharded", "sharded-to-single"])
def test_kill_anywhere_in_publish(tmp_path, monkeypatch, shards):
    old_shard, new_shard = shards
    base, tok, _ = _published(tmp_path, "base", seed=1, shard=old_shard)
    with open(os.path.join(base, "train_log.jsonl"), "w") as f:
        f.write("{}\n")  # a file the publish does not own
    old = _params(base)
    _, cfg = _tiny_config()
    new_model = Transformer(cfg).init_weights(seed=2)
    new = {n: p.detach().clone() for n, p in new_model.named_parameters()}
    clean = str(tmp_path / "clean")
    publish.publish_final(clean, new_model, tok, None, new_shard)
    expected = set(os.listdir(clean)) | {"train_log.jsonl"}

    for at, out in _killed_copies(monkeypatch, base, tmp_path,
                                  lambda out: publish.publish_final(out, new_model, tok, None, new_shard)):
        _check_model_folder(out, old, new, at)
        # the next start rolls a committed publish forward; the run then publishes again
        publish.finish_publish(out)
        got = _params(out)
        assert _equal(got, old) or _equal(got, new), at
        publish.publish_final(out, new_model, tok, None, new_shard)
        assert _equal(_params(out), new), at
        assert set(os.listdir(out)) == expected, (at, sorted(os.listdir(out)))
        assert open(os.path.join(out, "train_log.jsonl")).read() == "{}\n"


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _check_model_folder(out, old, new, at):
    """Loads as exactly the old or the new model, or refuses with a named error; and a folder
    with config.json and no pending publish (what other loaders look at) is never mixed."""
    try:
        got = _params(out)
    except (ValueError, FileNotFoundError) as e:
        assert "interrupted publish" in str(e) or "config.json" in str(e), (at, str(e))
        assert not (os.path.isfile(os.path.join(out, "config.json"))
                    and not os.path.isdir(os.path.join(out, model_ckpt.PENDING_PUBLISH))), at
        return
    assert _equal(got, old) or _equal(got, new), at


def test_kill_anywhere_in_resume_start(tmp_path, monkeypatch, saved_world):
    """The start of a resumed run: claim the folder (finish a pending publish, write run.json),
    load the checkpoint, rewrite the log. A kill anywhere keeps the checkpoint and run.json."""
    root, _, states = saved_world
    base = tmp_path / "base"
    shutil.copytree(root, base)
    s = {"lr": 1.0}
    rid = runs.run_id(s)
    with open(base / "run.json", "w") as f:
        json.dump({"run_id": rid, "settings": s}, f)
    with open(base / "train_log.jsonl", "w") as f:
        f.write("".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in range(1, 6)))

    def start(out):
        runs.claim(out, rid, s, overwrite=False)
        path = ckpt.latest_checkpoint(os.path.join(out, "checkpoints"), RUN)
        _, model, opt, sched = _trainer(seed=5)
        step = ckpt.load_checkpoint(path, model, opt, sched)["step"]
        from s1kernels.train import read_log
        from s1kernels.train.files import replace_atomic

        log = read_log(os.path.join(out, "train_log.jsonl"), step)
        replace_atomic(os.path.join(out, "train_log.jsonl"), "".join(json.dumps(r) + "\n" for r in log).encode())
        return step

    for at, out in _killed_copies(monkeypatch, base, tmp_path, start):
        assert runs.owner(out)["run_id"] == rid
        log = [json.loads(x) for x in open(os.path.join(out, "train_log.jsonl"))]
        assert [r["step"] for r in log] in ([1, 2, 3, 4, 5], [1, 2, 3]), at
        assert start(out) == 3
        assert _same(_restored(ckpt.latest_checkpoint(os.path.join(out, "checkpoints"), RUN))[1], states[3])


def test_overwrite_removes_only_what_a_run_wrote(tmp_path, monkeypatch):
    out, tok, model = _published(tmp_path, "o", seed=3)
    os.makedirs(os.path.join(out, "checkpoints", "step-1"))
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine")
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump({"run_id": OTHER, "settings": {}}, f)
    old = _params(out)

    claim = lambda work: runs.claim(work, RUN, {}, overwrite=True)  # noqa: E731
    for at, work in _killed_copies(monkeypatch, out, tmp_path, claim, must_kill=False):
        _check_model_folder(work, old, old, at)
        runs.claim(work, RUN, {}, overwrite=True)
        assert sorted(os.listdir(work)) == ["notes.txt", "run.json"], (at, os.listdir(work))
        assert runs.owner(work)["run_id"] == RUN


def test_resave_of_the_pointed_step_never_deletes_it_first(tmp_path):
    tok, model, opt, sched = _trainer(seed=1)
    ckdir = str(tmp_path / "c")
    first = _save(ckdir, 5, model, opt, sched, tok, keep=1)
    _step(model, opt, sched, 1)
    second = _save(ckdir, 5, model, opt, sched, tok, keep=1)
    assert first != second and os.path.basename(second) == "step-5.1"
    assert ckpt.list_checkpoints(ckdir) == [second] and ckpt.latest_checkpoint(ckdir) == second
    assert _same(_restored(second)[1], _snapshot(model, sched))


# ---- a run killed before its first checkpoint: the same command starts it over ----------

def test_kill_before_the_first_checkpoint_then_the_same_command(tmp_path, monkeypatch, capsys):
    from s1kernels.train import TINY_DEFAULTS, TrainConfig, read_log, train

    cfg = TrainConfig(**{**TINY_DEFAULTS, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "num_key_value_heads": 1, "intermediate_size": 32, "block_size": 128,
                         "synthetic_rows": 12, "max_steps": 3, "save_every": 2, "eval_rows": 0, "progress": False,
                         "bf16": False, "output": str(tmp_path / "run")})

    def killed_at_first_save(*a, **k):
        raise Killed("killed inside the first checkpoint save")

    with monkeypatch.context() as m:
        m.setattr(ckpt, "save_checkpoint", killed_at_first_save)
        with pytest.raises(Killed):
            train(cfg)
    assert runs.owner(cfg.output) is not None  # the folder holds the run, and no checkpoint of it
    assert ckpt.latest_checkpoint(os.path.join(cfg.output, "checkpoints")) is None
    capsys.readouterr()

    summary = train(cfg)  # the same command, neither --resume nor --overwrite
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    steps = [r["step"] for r in read_log(os.path.join(cfg.output, "train_log.jsonl"), 10**9) if "loss" in r]
    assert steps == [1, 2, 3], steps
    assert ckpt.latest_checkpoint(os.path.join(cfg.output, "checkpoints")) is not None
    assert summary is not None

    # A folder holding another run stays refused without --overwrite.
    other = TrainConfig(**{**cfg.__dict__, "lr": cfg.lr * 2})
    with pytest.raises(ValueError, match="already holds a training run"):
        train(other)


def test_resume_before_the_first_checkpoint_starts_over(tmp_path, monkeypatch, capsys):
    from s1kernels.train import TINY_DEFAULTS, TrainConfig, train

    cfg = TrainConfig(**{**TINY_DEFAULTS, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "num_key_value_heads": 1, "intermediate_size": 32, "block_size": 128,
                         "synthetic_rows": 12, "max_steps": 2, "save_every": 1, "eval_rows": 0, "progress": False,
                         "bf16": False, "output": str(tmp_path / "run")})
    with monkeypatch.context() as m:
        m.setattr(ckpt, "save_checkpoint", lambda *a, **k: (_ for _ in ()).throw(Killed("first save")))
        with pytest.raises(Killed):
            train(cfg)
    capsys.readouterr()
    train(TrainConfig(**{**cfg.__dict__, "resume": "latest"}))
    assert "stopped before its first checkpoint" in capsys.readouterr().err
