"""A run's identity: a used --output folder is refused unless overwritten, resume refuses
settings that change the result (naming them) and accepts those that cannot, rotation and
re-saves keep the last complete checkpoint, bad config values are named errors before work."""
import json
import os

import pytest

from s1kernels.model import load_model
from s1kernels.train import TINY_DEFAULTS, TrainConfig, train
from s1kernels.train.__main__ import parse_args
from s1kernels.train import checkpoint as ckpt

TINY = dict(TINY_DEFAULTS, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, block_size=256, synthetic_rows=40, lr=3e-3, warmup_ratio=0.2,
            epochs=1.0, eval_rows=0, progress=False, bf16=False, weight_decay=0.01)


def _train(out, **kw):
    return train(TrainConfig(**{**TINY, "output": str(out), "max_steps": 4, "save_every": 2, **kw}))


def _log(out):
    return [json.loads(x) for x in open(os.path.join(out, "train_log.jsonl"))]


def test_used_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "o"
    _train(out)
    with pytest.raises(ValueError, match="already holds a training run.*--overwrite"):
        _train(out, lr=1e-3)
    (out / "notes.txt").write_text("kept")
    _train(out, lr=1e-3, overwrite=True, save_every=0)
    assert not os.path.isdir(out / "checkpoints")  # the old run's checkpoints went with it
    assert (out / "notes.txt").read_text() == "kept"
    assert len(_log(out)) == 4 and load_model(str(out)) is not None


@pytest.mark.parametrize("change,named", [({"lr": 1e-3}, "--lr: 0.003 -> 0.001"),
                                          ({"max_steps": 6}, "--max-steps/--epochs: 2 -> 6"),
                                          ({"num_hidden_layers": 1}, "--num-hidden-layers: 2 -> 1"),
                                          ({"weight_decay": 0.5}, "--weight-decay"),
                                          ({"betas": (0.8, 0.9)}, "--betas"),
                                          ({"grad_accum": 2}, "rows per step")])
def test_resume_refuses_result_changing_settings(tmp_path, change, named):
    out = tmp_path / "o"
    _train(out, max_steps=2)
    with pytest.raises(ValueError, match="other settings that change the result") as e:
        _train(out, resume="latest", **change)
    assert named in str(e.value)
    path = str(out / "checkpoints" / "step-2")
    with pytest.raises(ValueError, match=named.split(":")[0].replace("(", r"\(").replace(")", r"\)")):
        _train(tmp_path / "fresh", resume=path, **change)


def test_resume_accepts_settings_that_cannot_change_the_result(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "o"
    _train(ref, max_steps=4, save_every=0)
    _train(out, max_steps=4, save_every=2)
    # a finished run resumed: nothing to train or save again, the model is published again
    before = sorted(os.listdir(out / "checkpoints"))
    _train(out, resume="latest", log_every=3, keep_checkpoints=3, gradient_checkpointing=True)
    assert sorted(os.listdir(out / "checkpoints")) == before
    # resume an older checkpoint of the same run (micro-batch/accumulation split changed too)
    _train(tmp_path / "b", max_steps=4, save_every=1, keep_checkpoints=0)
    _train(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoints" / "step-2"), log_every=2,
           micro_batch=1, grad_accum=1)
    # the re-saved steps got new names; rotation (keep 1) then dropped the abandoned step-4
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["latest", "step-4.1"]
    for (n, a), (_, b) in zip(load_model(str(tmp_path / "b")).named_parameters(),
                              load_model(str(ref)).named_parameters()):
        assert (a - b).abs().max() < 1e-5, n


def test_rotation_only_touches_this_run(tmp_path):
    import shutil

    out = tmp_path / "o"
    _train(out, max_steps=4, save_every=1, keep_checkpoints=0)
    ckdir = out / "checkpoints"
    shutil.copytree(ckdir / "step-1", ckdir / "step-9")  # another run's checkpoint in the same folder
    state = json.loads((ckdir / "step-9" / "trainer_state.json").read_text())
    (ckdir / "step-9" / "trainer_state.json").write_text(json.dumps(dict(state, run_id="f" * 16)))
    _train(out, max_steps=4, save_every=1, keep_checkpoints=1, resume=str(ckdir / "step-2"))
    # step 3 was saved as step-3.1 (step-3 existed); its rotation dropped this run's step-1..4,
    # so step 4 got its plain name back
    assert sorted(os.listdir(ckdir)) == ["latest", "step-4", "step-9"]
    assert ckpt.latest_checkpoint(str(ckdir)).endswith("step-4")


@pytest.mark.parametrize("flags,named", [
    (["--max-steps", "-5"], "max_steps (--max-steps)"), (["--log-every", "0"], "log_every (--log-every)"),
    (["--threads", "-1"], "threads (--threads)"), (["--lr", "nan"], "lr (--lr)"),
    (["--betas", "0.9", "1.5"], "betas"), (["--warmup-ratio", "2"], "warmup_ratio"),
    (["--epochs", "0"], "epochs"), (["--seed", "-1"], "seed"), (["--block-size", "1"], "block_size"),
])
def test_cli_numbers_are_checked_before_work(tmp_path, flags, named, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--output", str(tmp_path / "o"), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_config_file_values_are_checked(tmp_path, capsys):
    path = tmp_path / "c.json"
    for body, named in [({"lr": "abc"}, "lr (--lr): expected a number"), ({"max_steps": 2.5}, "max_steps"),
                        ({"betas": 3}, "betas")]:
        path.write_text(json.dumps(body))
        with pytest.raises(SystemExit) as e:
            parse_args(["--config", str(path)])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert named in err and str(path) in err and len(err.splitlines()) == 1, err
    path.write_bytes(b'{"lr": "\xff"}')
    with pytest.raises(SystemExit):
        parse_args(["--config", str(path)])
    assert "UnicodeDecodeError" in capsys.readouterr().err


def test_read_only_output_fails_before_training(tmp_path):
    """Refused before the model is loaded or a step is trained (a read-only folder; as root,
    where permissions do not stop writes, a folder under /proc)."""
    if os.geteuid() == 0:
        with pytest.raises(ValueError, match="--output: cannot write into '/proc'"):
            _train("/proc/s1k-no-such-run")
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="--output: cannot write"):
            _train(ro / "run")
    finally:
        ro.chmod(0o700)


def test_output_that_is_a_file_is_refused_by_the_cli(tmp_path, capsys):
    # the CLI's main() in this process: a subprocess spent 8 s importing torch to say the same
    from s1kernels.train.__main__ import main

    f = tmp_path / "file"
    f.write_text("x")
    assert main(["--output", str(f), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "not a folder" in err
