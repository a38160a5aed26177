"""A strict reader of a GGUF file's header, run before anything else reads the file.

`python -m s1kernels.convert --gguf F` hands the file to transformers and the gguf package,
which trust it: a truncated header raises struct.error, an absurd count or length makes them
allocate or loop on it, `head_count` 0 divides by zero, a token id past the vocabulary
indexes out of range, and a tensor whose bytes overlap another's converts silently. This
module reads the header itself, bounded by the file's size, and checks what the converter
relies on; every failure is a ValueError naming the file and what is wrong.

Format (GGUF v2/v3, little-endian): magic, version, tensor count, metadata count, the
metadata (key string, type, value), the tensor infos (name, dims, ggml type, offset), then
the tensor data from the next multiple of `general.alignment` (default 32).
"""
from __future__ import annotations

import os
import struct

from s1kernels import checks

MAX_TENSORS = 1 << 20
MAX_METADATA = 1 << 20
MAX_DIMS = 8
MAX_ARRAY_DEPTH = 4

# ggml type -> (elements per block, bytes per block); the gguf package's GGML_QUANT_SIZES
GGML_BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
               10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
               16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
               22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
               29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18)}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id", "seperator_token_id",
                  "separator_token_id", "eot_token_id", "eom_token_id")


class _Reader:
    def __init__(self, f, size: int, path: str):
        self.f, self.size, self.path, self.pos = f, size, path, 0

    def fail(self, what: str):
        raise ValueError(f"--gguf: {self.path!r} is not a valid GGUF file: {what}")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            self.fail(f"{what} at byte {self.pos} needs {n} bytes, past the end of the file ({self.size} bytes)")
        data = self.f.read(n)
        if len(data) != n:
            self.fail(f"{what} at byte {self.pos} is cut short")
        self.pos += n
        return data

    def scalar(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar("<Q", f"{what}'s length")
        raw = self.take(n, what)  # bounded by the file's size
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} at byte {self.pos - n} is not UTF-8")

    def value(self, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                self.fail(f"{what} nests arrays more than {MAX_ARRAY_DEPTH} deep")
            itype = self.scalar("<I", f"{what}'s item type")
            n = self.scalar("<Q", f"{what}'s length")
            smallest = struct.calcsize(_SCALARS[itype]) if itype in _SCALARS else 8 if itype in (_STRING, _ARRAY) else 0
            if smallest == 0:
                self.fail(f"{what} has items of unknown type {itype}")
            if n * smallest > self.size - self.pos:  # checked before a list of n items is built
                self.fail(f"{what} claims {n} items, more than the rest of the file holds")
            if itype in _SCALARS and itype != 7:
                fmt = _SCALARS[itype]
                return list(struct.unpack(f"<{n}{fmt[1]}", self.take(n * smallest, what)))
            return [self.value(itype, what, depth + 1) for _ in range(n)]
        self.fail(f"{what} has unknown value type {vtype}")


def read_header(path: str) -> dict:
    """The metadata and tensor infos of GGUF file `path`, checked; ValueError when malformed.

    Returns {"version", "metadata": {key: value}, "tensors": [(name, dims, ggml type, start, size)],
    "data_start"} with start relative to the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        r = _Reader(f, size, path)
        if r.take(4, "the magic number") != b"GGUF":
            r.fail("it does not start with 'GGUF'")
        version = r.scalar("<I", "the version")
        if version not in (2, 3):
            r.fail(f"version {version} (this reader knows 2 and 3)")
        n_tensors = r.scalar("<Q", "the tensor count")
        n_meta = r.scalar("<Q", "the metadata count")
        if n_tensors > MAX_TENSORS or n_meta > MAX_METADATA:
            r.fail(f"it claims {n_tensors} tensors and {n_meta} metadata entries (at most {MAX_TENSORS} "
                   f"and {MAX_METADATA})")
        metadata = {}
        for i in range(n_meta):
            key = r.string(f"metadata key {i}")
            metadata[key] = r.value(r.scalar("<I", f"the type of {key!r}"), repr(key))
        infos = []
        for i in range(n_tensors):
            name = r.string(f"tensor name {i}")
            n_dims = r.scalar("<I", f"the dimension count of {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                r.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
            dims = [r.scalar("<Q", f"a dimension of {name!r}") for _ in range(n_dims)]
            gtype = r.scalar("<I", f"the type of {name!r}")
            offset = r.scalar("<Q", f"the data offset of {name!r}")
            infos.append((name, dims, gtype, offset))
        align = metadata.get("general.alignment", 32)
        if not checks.is_int(align) or align < 1 or align & (align - 1) or align > 1 << 16:
            r.fail(f"general.alignment is {align!r} (a power of two up to 65536)")
        data_start = -(-r.pos // align) * align
    tensors = _check_tensors(r, infos, data_start, size, align)
    _check_metadata(r, metadata)
    return {"version": version, "metadata": metadata, "tensors": tensors, "data_start": data_start}


def _check_tensors(r: _Reader, infos, data_start: int, size: int, align: int) -> list:
    seen, out = set(), []
    for name, dims, gtype, offset in infos:
        if name in seen:
            r.fail(f"tensor {name!r} appears twice")
        seen.add(name)
        if gtype not in GGML_BLOCKS:
            r.fail(f"tensor {name!r} has unknown ggml type {gtype}")
        block, block_bytes = GGML_BLOCKS[gtype]
        count = 1
        for d in dims:
            if d < 1:
                r.fail(f"tensor {name!r} has a dimension of {d}")
            count *= d
        if dims[0] % block:
            r.fail(f"tensor {name!r}: its first dimension {dims[0]} is not a multiple of its type's block of {block}")
        nbytes = count // block * block_bytes
        start = data_start + offset
        if offset % align or start + nbytes > size:
            r.fail(f"tensor {name!r}: its {nbytes} bytes at offset {offset} are misaligned or past the end of "
                   f"the file ({size} bytes)")
        out.append((name, dims, gtype, start, nbytes))
    ordered = sorted(out, key=lambda t: t[3])
    for a, b in zip(ordered, ordered[1:]):
        if a[3] + a[4] > b[3]:  # two tensors sharing bytes: one of them is not what it claims
            r.fail(f"the data of tensors {a[0]!r} and {b[0]!r} overlap (bytes {b[3]} to {a[3] + a[4]})")
    return out


def _positive_int(r: _Reader, metadata: dict, key: str, required: bool = False):
    v = metadata.get(key)
    if v is None and not required:
        return None
    if not checks.is_int(v) or v < 1:
        r.fail(f"{key} is {v!r}, expected a positive integer")
    return v


def _check_metadata(r: _Reader, metadata: dict) -> None:
    """What the converter reads from the metadata: attention shape and token ids."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        r.fail(f"general.architecture is {arch!r}, expected a name such as 'llama'")
    heads = _positive_int(r, metadata, f"{arch}.attention.head_count", required=True)
    kv = _positive_int(r, metadata, f"{arch}.attention.head_count_kv")
    width = _positive_int(r, metadata, f"{arch}.embedding_length", required=True)
    _positive_int(r, metadata, f"{arch}.block_count", required=True)
    if kv is not None and heads % kv:
        r.fail(f"{arch}.attention.head_count_kv={kv} does not divide head_count={heads}")
    if width % heads:
        r.fail(f"{arch}.embedding_length={width} is not a multiple of head_count={heads}")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if tokens is not None:
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            r.fail("tokenizer.ggml.tokens is not a non-empty list of strings")
        for key in _TOKEN_ID_KEYS:
            v = metadata.get(f"tokenizer.ggml.{key}")
            if v is not None and (not checks.is_int(v) or not 0 <= v < len(tokens)):
                r.fail(f"tokenizer.ggml.{key} is {v!r}, outside the {len(tokens)} tokens")
        for key in ("scores", "token_type"):
            v = metadata.get(f"tokenizer.ggml.{key}")
            if v is not None and (not isinstance(v, list) or len(v) != len(tokens)):
                r.fail(f"tokenizer.ggml.{key} has {len(v) if isinstance(v, list) else v!r} entries for "
                       f"{len(tokens)} tokens")
