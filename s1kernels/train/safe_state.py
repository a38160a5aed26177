"""Training state on disk without pickle: nothing read from a checkpoint folder can run code.

- RNG states (Python, NumPy, torch CPU, every CUDA device) -> `rng-<rank>.safetensors`: the
  generator states are uint8/int64 tensors, the few scalars JSON in the file's metadata.
- The learning-rate scheduler -> `scheduler.json` (LambdaLR's state is numbers and lists).
- DCP's `.metadata` is a pickle that torch reads with `pickle.load`; `SafeReader` reads it
  through an unpickler that builds only the plain DCP metadata classes, torch.Size and torch
  dtypes/layouts/memory formats, and refuses every other global (a planted `os.system`
  raises ValueError instead of running).
- DCP stores non-tensor leaves (optimizer hyper-parameters) as `torch.save` bytes; the
  default planner unpickles them in full. `SafePlanner` uses `weights_only=True`.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import random

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from s1kernels import checks
from s1kernels.checks import path_inside, read_json, symlinks_allowed
from s1kernels.train.files import write_json_synced, write_synced

# ---- DCP metadata --------------------------------------------------------------------------

_DCP_META = "torch.distributed.checkpoint.metadata"
_ALLOWED_GLOBALS = {
    (_DCP_META, name) for name in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties",
                                   "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                                   "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.distributed.checkpoint.filesystem", "_StoragePrefix"),
    ("torch.serialization", "_get_layout"),  # maps a layout's name to torch.strided etc.
    ("torch", "Size"),
    ("pathlib", "PosixPath"),  # StorageMeta.checkpoint_id
    ("pathlib", "Path"),
    ("collections", "OrderedDict"),
}


# BUILD (set an object's state) is applied only to fresh instances of these classes, which
# is all DCP metadata needs; on anything else (a class such as pathlib.Path, a function, an
# enum member, a dtype: objects shared by the whole process) it would rewrite them for the
# rest of the process. Item opcodes (APPEND(S), SETITEM(S), ADDITEMS) are applied only to
# plain containers, which the unpickler itself makes fresh.
_BUILDABLE_NAMES = ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
                    "BytesStorageMetadata", "ChunkStorageMetadata", "_StorageInfo", "_StoragePrefix")
_CONTAINERS = (list, dict, set, collections.OrderedDict)


def _buildable() -> tuple[type, ...]:
    import torch.distributed.checkpoint.filesystem as fs
    import torch.distributed.checkpoint.metadata as meta

    return tuple(getattr(meta, n, None) or getattr(fs, n) for n in _BUILDABLE_NAMES)


class _MetadataUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (its opcode table can be changed) with `find_class`
    restricted to `_ALLOWED_GLOBALS` and the mutating opcodes restricted as above."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, f, path: str):
        super().__init__(f)
        self.path = path
        self.buildable = _buildable()

    def _refuse(self, opcode: str, target) -> None:
        raise ValueError(f"checkpoint: {self.path!r} applies {opcode} to {type(target).__name__} "
                         f"{_describe(target)}, which would change an object shared by the process; "
                         f"refusing to load it (only plain checkpoint metadata is read)")

    def load_build(self):
        target = self.stack[-2]  # the state is on top
        if type(target) not in self.buildable:
            self._refuse("BUILD", target)
        pickle._Unpickler.load_build(self)

    def _items_target(self, opcode: str, target) -> None:
        if type(target) not in _CONTAINERS:
            self._refuse(opcode, target)

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch":
            obj = getattr(torch, name, None)
            # dtypes, layouts and memory formats pickle as torch.<name>
            if isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)):
                return obj
        raise ValueError(f"checkpoint: {self.path!r} refers to {module}.{name}, which a DCP metadata file "
                         f"never holds; refusing to load it (only plain checkpoint metadata is read)")


def _guard_items(opcode: str, target_of) -> None:
    """Routes an item-adding opcode through `_items_target`; `target_of(unpickler)` is the
    object it would change (under the items, or under the mark for the batched opcodes)."""
    base = pickle._Unpickler.dispatch[getattr(pickle, opcode)[0]]

    def load(self):
        self._items_target(opcode, target_of(self))
        base(self)

    _MetadataUnpickler.dispatch[getattr(pickle, opcode)[0]] = load


for _opcode, _target_of in (("APPEND", lambda u: u.stack[-2]), ("SETITEM", lambda u: u.stack[-3]),
                            ("APPENDS", lambda u: u.metastack[-1][-1]), ("SETITEMS", lambda u: u.metastack[-1][-1]),
                            ("ADDITEMS", lambda u: u.metastack[-1][-1])):
    _guard_items(_opcode, _target_of)
del _opcode, _target_of


def _describe(obj) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return repr(name) if isinstance(name, str) else ""


def read_dcp_metadata(path: str):
    """The `Metadata` object of DCP file `path`, read without running any code it names."""
    from torch.distributed.checkpoint.metadata import Metadata

    with open(path, "rb") as f:
        try:
            md = _MetadataUnpickler(f, path).load()
        except ValueError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise ValueError(f"checkpoint: {path!r} is not a readable DCP metadata file "
                             f"({type(e).__name__}: {e})") from None
    if not isinstance(md, Metadata):
        raise checks.argument_error(f"checkpoint: {path!r}", "DCP Metadata", f"a {type(md).__name__}")
    return md


def check_storage_paths(md, folder: str) -> None:
    """Every data file `.metadata` points to is a file inside `folder` (no absolute path, no
    '..', no symbolic link unless S1K_ALLOW_SYMLINKS=1): a checkpoint whose own data file is
    gone must not load another folder's."""
    seen = set()
    for info in (getattr(md, "storage_data", None) or {}).values():
        rel = getattr(info, "relative_path", None)
        if rel in seen:
            continue
        seen.add(rel)
        path = path_inside(folder, rel, f"checkpoint: {folder!r}/.metadata data file", symlinks_allowed())
        if not os.path.isfile(path):
            raise ValueError(f"checkpoint: {folder!r} is incomplete: its .metadata names the data file {rel!r}, "
                             f"which is missing")


class SafeReader(FileSystemReader):
    """FileSystemReader whose `.metadata` goes through the restricted unpickler."""

    def read_metadata(self, *args, **kwargs):
        from torch.distributed.checkpoint.metadata import StorageMeta

        rank = kwargs.get("rank")
        meta_path = os.fspath(self._get_metadata_path(rank))
        md = read_dcp_metadata(meta_path)
        check_storage_paths(md, os.path.dirname(meta_path))
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = StorageMeta()
        md.storage_meta.load_id = self.load_id
        return md


class SafePlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner that reads non-tensor leaves with `torch.load(weights_only=True)`."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            obj = torch.load(value, weights_only=True)
        except Exception as e:
            raise ValueError(f"checkpoint: entry {fqn!r} is not plain data; refusing to load it "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


# ---- RNG ------------------------------------------------------------------------------------

def save_rng(path: str) -> None:
    """This process's Python, NumPy, torch and CUDA RNG states as a safetensors file."""
    version, internal, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_key": torch.from_numpy(key.astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    meta = {"python": json.dumps([version, list(internal), gauss]),
            "numpy": json.dumps([name, int(pos), int(has_gauss), float(cached)])}
    write_synced(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))


def load_rng(path: str) -> None:
    """Restores the states written by `save_rng`; ValueError naming the file when malformed."""
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        version, internal, gauss = json.loads(meta["python"])
        name, pos, has_gauss, cached = json.loads(meta["numpy"])
        state = (int(version), tuple(int(x) for x in internal), None if gauss is None else float(gauss))
        key = tensors["numpy_key"].numpy().astype(np.uint32)
        torch_state = tensors["torch"]
        if torch_state.dtype != torch.uint8:
            raise TypeError(f"torch state has dtype {torch_state.dtype}")
        random.setstate(state)
        np.random.set_state((str(name), key, int(pos), int(has_gauss), float(cached)))
    except Exception as e:  # missing keys, wrong types, not a safetensors file
        raise ValueError(f"checkpoint: {path!r} is not an RNG state file written by s1kernels "
                         f"({type(e).__name__}: {e})") from None
    torch.set_rng_state(torch_state)
    cuda = [tensors[f"cuda_{i}"] for i in range(len(tensors)) if f"cuda_{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])


# ---- scheduler ------------------------------------------------------------------------------

def save_scheduler(path: str, scheduler) -> None:
    state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    write_json_synced(path, state)


def load_scheduler(path: str, scheduler) -> None:
    state = read_json(path, "checkpoint")
    expected = {k for k in scheduler.state_dict() if k != "lr_lambdas"}
    if not isinstance(state, dict) or not {"last_epoch", "base_lrs"} <= set(state) or set(state) - expected:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise checks.argument_error(f"checkpoint: {path!r} is not a learning-rate scheduler state",
                                    f"the keys {sorted(expected)}", got)
    full = scheduler.state_dict()
    full.update(state)
    scheduler.load_state_dict(full)


__all__ = ["SafeReader", "SafePlanner", "read_dcp_metadata", "save_rng", "load_rng", "save_scheduler",
           "load_scheduler"]
