"""Nothing read from a checkpoint or model folder runs code, hangs, or allocates without bound.

Each test plants a malicious file where a loader reads (a pickle whose unpickling would create
a marker file) and asserts a named error and no marker.
"""
import json
import os
import pickle
import re
import shutil
import time
import warnings

import pytest
import torch

from s1kernels.data import S1Tokenizer, build_default_tokenizer
from s1kernels.model import ModelConfig, Transformer, load_model, save_model
from s1kernels.train import checkpoint as ckpt
from s1kernels.train.optim import build_optimizer, build_scheduler


class Evil:
    """Unpickling this runs a shell command that creates `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _tiny():
    tok = build_default_tokenizer()
    cfg = ModelConfig(model_type="qwen2", vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=24,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=64, rope_theta=10000.0)
    model = Transformer(cfg).init_weights(seed=0)
    opt = build_optimizer(model, 1e-3, (0.9, 0.95), 0.0)
    return tok, model, opt, build_scheduler(opt, 4, 1)


@pytest.fixture
def checkpoint(tmp_path):
    tok, model, opt, sched = _tiny()
    path = ckpt.save_checkpoint(str(tmp_path / "c"), 1, model, opt, sched, {"run_id": "r" * 16, "settings": {}},
                                lambda f: (tok.save(f), model.config.save(f)))
    return path, (model, opt, sched)


def _load(path):
    _, model, opt, sched = _tiny()
    return ckpt.load_checkpoint(path, model, opt, sched)


def test_checkpoint_roundtrip_has_no_pickle(checkpoint):
    path, _ = checkpoint
    assert _load(path)["step"] == 1
    assert not [n for n in os.listdir(path) if n.endswith((".pt", ".pkl", ".bin"))]


def test_planted_dcp_metadata_does_not_run(checkpoint, tmp_path):
    path, _ = checkpoint
    marker = tmp_path / "ran"
    with open(os.path.join(path, ".metadata"), "wb") as f:
        pickle.dump(Evil(str(marker)), f)
    with pytest.raises(ValueError, match=r"\.metadata.*system"):
        _load(path)
    with pytest.raises(ValueError, match="system"):
        ckpt.export_checkpoint(path, str(tmp_path / "export"))
    assert not marker.exists()


def test_planted_optimizer_entry_does_not_run(checkpoint, tmp_path):
    """DCP stores non-tensor leaves with torch.save; one of them replaced by a pickle payload."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    path, (model, opt, _) = checkpoint
    marker = tmp_path / "ran"
    model_state, optim_state = get_state_dict(model, opt)
    optim_state["param_groups"][0]["lr"] = Evil(str(marker))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=path, no_dist=True)
    assert not marker.exists()
    with pytest.raises(ValueError, match="param_groups.0.lr.*not plain data"):
        _load(path)
    assert not marker.exists()


def test_planted_state_files_are_never_unpickled(checkpoint, tmp_path):
    path, _ = checkpoint
    marker = tmp_path / "ran"
    for name in ("scheduler.pt", "rng-0.pt"):  # the old format's pickles: never read
        with open(os.path.join(path, name), "wb") as f:
            pickle.dump(Evil(str(marker)), f)
    assert _load(path)["step"] == 1
    os.remove(os.path.join(path, "scheduler.json"))  # an old-format checkpoint is refused by name
    with pytest.raises(ValueError, match="older checkpoint format"):
        _load(path)
    assert not marker.exists()


def test_planted_rng_and_scheduler_files_are_named_errors(checkpoint, tmp_path):
    path, _ = checkpoint
    marker = tmp_path / "ran"
    with open(os.path.join(path, "rng-0.safetensors"), "wb") as f:
        pickle.dump(Evil(str(marker)), f)
    with pytest.raises(ValueError, match="rng-0.safetensors.*not an RNG state"):
        _load(path)
    shutil.copy(os.path.join(path, "trainer_state.json"), os.path.join(path, "scheduler.json"))
    with pytest.raises(ValueError, match="scheduler.json.*not a learning-rate scheduler"):
        _load(path)
    assert not marker.exists()


def test_model_folder_with_only_a_pickle_is_not_loaded(tmp_path):
    tok, model, _, _ = _tiny()
    folder = tmp_path / "m"
    model.config.save(str(folder))
    marker = tmp_path / "ran"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump(Evil(str(marker)), f)
    with pytest.raises(FileNotFoundError, match="neither model.safetensors"):
        load_model(str(folder))
    assert not marker.exists()


@pytest.mark.parametrize("field,value", [("num_hidden_layers", 10**9), ("hidden_size", 10**9),
                                         ("vocab_size", 2**40), ("num_hidden_layers", 1e9),
                                         ("intermediate_size", True), ("rms_norm_eps", float("inf"))])
def test_config_bounds_fail_fast(tmp_path, field, value):
    tok, model, _, _ = _tiny()
    folder = str(tmp_path / "m")
    save_model(model, folder)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    cfg[field] = value
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(json.dumps(cfg).replace("Infinity", "1e999"))
    t0 = time.perf_counter()
    # 1e999 is refused where the file is read: a number beyond a float is no config value
    with pytest.raises(ValueError, match=field if value != float("inf") else "1e999 is beyond a float"):
        load_model(folder)
    assert time.perf_counter() - t0 < 5


def test_config_layers_must_match_the_weights(tmp_path):
    tok, model, _, _ = _tiny()
    folder = str(tmp_path / "m")
    save_model(model, folder)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    cfg["num_hidden_layers"] = 3000  # within bounds, but the weights hold one layer
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"num_hidden_layers=3000 but its weights hold layers 0..0"):
        load_model(folder)
    assert time.perf_counter() - t0 < 5


def _folder_with_template(tmp_path, template):
    tok = build_default_tokenizer()
    folder = tmp_path / "tok"
    tok.save(str(folder))
    (folder / "chat_template.jinja").write_text(template)
    cfg = json.load(open(folder / "tokenizer_config.json"))
    cfg.pop("chat_template")
    json.dump(cfg, open(folder / "tokenizer_config.json", "w"))
    return S1Tokenizer.from_folder(str(folder)), str(folder / "chat_template.jinja")


@pytest.mark.parametrize("template,why", [
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "longer than"),
    ("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}", "longer than|passed"),
    ("{{ 'x' * 10**12 }}", "repetition"),
    ("{{ 10 ** 10000000 }}", "too large"),
    ("{% for m in messages %}{{ m.content.__class__.__mro__ }}{% endfor %}", "failed to render|unsafe"),
    ("{% for %}", "does not compile"),
    # Work inside single C calls, which no check between template lines sees: the renderer
    # process is killed at the time limit or fails at its memory limit.
    ("{{ ('ab' * 400000)|wordwrap(1) }}", "longer than"),
    ("{{ ('ba' * 500000)|list|sort|join|list|sort|join|wordwrap(3) }}", "longer than"),
    ("{% set ns = namespace(v='x') %}{% for i in range(40) %}{% set ns.v = ns.v ~ ns.v %}{% endfor %}{{ ns.v|length }}",
     "memory|longer than"),
    ("{% set ns = namespace(v=['x']) %}{% for i in range(40) %}{% set ns.v = ns.v + ns.v %}{% endfor %}", "memory|longer than"),
    ("{{ '%02000000000d' % 1 }}", "memory|longer than"),
    ("{{ 'x'.center(2000000000) }}", "memory|longer than"),
    ("{{ '{:>2000000000}'.format(1) }}", "memory|longer than|unsafe|failed to render"),
])
def test_chat_template_is_bounded_and_named(tmp_path, monkeypatch, template, why):
    from s1kernels.data import template as tmpl

    monkeypatch.setattr(tmpl, "RENDER_SECONDS", 0.5)
    monkeypatch.setattr(tmpl, "RENDER_MEMORY_BYTES", 256 << 20)
    monkeypatch.setattr(tmpl, "MAX_OUTPUT_CHARS", 1 << 20)
    tok, path = _folder_with_template(tmp_path, template)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=re.escape(path)) as e:
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert re.search(why, str(e.value)), str(e.value)
    assert time.perf_counter() - t0 < 10
    # The renderer is usable again after a kill or a memory failure.
    (tmp_path / "tok" / "chat_template.jinja").write_text("{{ messages[0]['content'] }}!")
    ok = S1Tokenizer.from_folder(str(tmp_path / "tok"))
    assert ok.apply_chat_template([{"role": "user", "content": "hi"}]) == "hi!"


def test_no_unrestricted_unpickling_in_the_package():
    """The only unpickler is the restricted DCP metadata reader; no weights_only=False."""
    root = os.path.join(os.path.dirname(__file__), "..", "s1kernels")
    offenders = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            text = open(os.path.join(dirpath, name), encoding="utf-8").read()
            for pattern in ("weights_only=False", "pickle.load(", "pickle.loads(", "torch.load(", "dill", "joblib"):
                if pattern in text and not (pattern == "torch.load(" and "weights_only=True" in text):
                    offenders.append((name, pattern))
    assert offenders == []


# ---- paths read from a folder's files stay inside it (symlinks only when allowed) --------

def _sharded(tmp_path):
    _, model, _, _ = _tiny()
    folder = tmp_path / "m"
    save_model(model, str(folder), max_shard_bytes=4096)
    index = json.load(open(folder / "model.safetensors.index.json"))
    return model, folder, index


def _write_index(folder, index):
    with open(folder / "model.safetensors.index.json", "w") as f:
        json.dump(index, f)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "dotdot-inner"])
def test_index_entries_outside_the_folder_are_refused(tmp_path, how):
    model, folder, index = _sharded(tmp_path)
    name, fname = next(iter(index["weight_map"].items()))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(folder / fname, outside / fname)
    entry = {"absolute": str(outside / fname), "dotdot": f"../elsewhere/{fname}",
             "dotdot-inner": f"sub/../../elsewhere/{fname}"}[how]
    index["weight_map"] = {k: (entry if v == fname else v) for k, v in index["weight_map"].items()}
    _write_index(folder, index)
    with pytest.raises(ValueError, match="absolute or with '..'"):
        load_model(str(folder))


def test_symlinked_weights_need_the_flag(tmp_path, monkeypatch):
    _, model, _, _ = _tiny()
    real = tmp_path / "blobs"
    save_model(model, str(real))
    folder = tmp_path / "snapshot"
    folder.mkdir()
    shutil.copy(real / "config.json", folder / "config.json")
    os.symlink(real / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(ValueError, match="is a symbolic link .*S1K_ALLOW_SYMLINKS=1"):
        load_model(str(folder))
    monkeypatch.setenv("S1K_ALLOW_SYMLINKS", "1")
    loaded = load_model(str(folder))
    assert torch.equal(loaded.embed_tokens.weight, model.embed_tokens.weight)


@pytest.mark.parametrize("weight_map,why", [
    ([["model.norm.weight", "model-00001.safetensors"]], "got a list"),
    ({"model.norm.weight": {"deep": {"deeper": "x.safetensors"}}}, "is a dict"),
    ("model.safetensors", "got a str"),
    ({"model.norm.weight": "pytorch_model.bin"}, "not a .safetensors file"),
    ({"model.norm.weight": ""}, "not a .safetensors file"),
    ({"model.norm.weight": "/etc/x.safetensors"}, "absolute"),
])
def test_malformed_weight_maps_are_named(tmp_path, weight_map, why):
    _, folder, index = _sharded(tmp_path)
    index["weight_map"] = weight_map
    _write_index(folder, index)
    with pytest.raises(ValueError, match=why):
        load_model(str(folder))


def test_deeply_nested_index_is_named(tmp_path):
    _, folder, _ = _sharded(tmp_path)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(str(folder))


# ---- JSON numbers that no file means: refused where they are read -------------------------

@pytest.mark.parametrize("answer", ["1e999", "NaN", "-Infinity", "9" * 5000])
def test_json_rows_with_out_of_range_numbers_are_bad_rows(tmp_path, answer):
    from s1kernels.data.readers import read_rows

    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "q", "answer": "1", "thinking": "t"}\n'
                    f'{{"question": "q2", "answer": {answer}, "thinking": "t"}}\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}:line 2") + ": invalid JSON"):
        read_rows(path)
    rows, stats = read_rows(path, skip_bad=True)  # skipped and counted, naming file and line
    assert [r["question"] for r in rows] == ["q"]


# ---- the restricted unpickler changes nothing outside the objects it builds --------------

def _mutating_pickles():
    # GLOBAL pathlib.Path; state (None, {"home": 1}); BUILD: would set Path.home = 1 for the
    # whole process. Then the same through SETITEMS / APPENDS aimed at an allowed global.
    yield "BUILD on a class", b"\x80\x02cpathlib\nPath\nN}X\x04\x00\x00\x00homeK\x01s\x86b."
    yield "BUILD on a dtype", b"\x80\x02ctorch\nfloat32\nN}X\x04\x00\x00\x00homeK\x01s\x86b."
    yield "SETITEMS on a class", b"\x80\x02cpathlib\nPath\n(X\x04\x00\x00\x00homeK\x01u."
    yield "APPENDS on a class", b"\x80\x02ccollections\nOrderedDict\n(K\x01e."


@pytest.mark.parametrize("case,data", list(_mutating_pickles()))
def test_metadata_pickle_cannot_modify_allowed_globals(tmp_path, case, data):
    import pathlib

    from s1kernels.train.safe_state import read_dcp_metadata

    home = pathlib.Path.__dict__["home"]
    path = tmp_path / ".metadata"
    path.write_bytes(data)
    try:
        with pytest.raises(ValueError, match="would change an object shared by the process"):
            read_dcp_metadata(str(path))
        assert pathlib.Path.__dict__["home"] is home
        assert not hasattr(torch.float32, "home")
    finally:
        pathlib.Path.home = home


@pytest.mark.parametrize("how", ["absolute", "dotdot", "deleted"])
def test_checkpoint_data_files_stay_inside_the_checkpoint(checkpoint, tmp_path, how):
    from s1kernels.train.safe_state import read_dcp_metadata

    path, _ = checkpoint
    other = tmp_path / "other"
    shutil.copytree(path, other)
    md = read_dcp_metadata(os.path.join(path, ".metadata"))
    names = {info.relative_path for info in md.storage_data.values()}
    for name in names:
        os.remove(os.path.join(path, name))  # the checkpoint's own data is gone
    if how != "deleted":
        for info in md.storage_data.values():
            info.relative_path = (str(other / info.relative_path) if how == "absolute"
                                  else f"../other/{info.relative_path}")
        with open(os.path.join(path, ".metadata"), "wb") as f:
            pickle.dump(md, f)
    why = "is missing" if how == "deleted" else "absolute or with '..'"
    with pytest.raises(ValueError, match=why):
        _load(path)
    with pytest.raises(ValueError, match=why):
        ckpt.export_checkpoint(path, str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()
