"""Crafted GGUF files stop with a named error before transformers or gguf read them.

Each case is built by hand from the format (header, metadata, tensor infos, data) with one
thing wrong: truncated headers, absurd counts and lengths, zero heads, token ids past the
vocabulary, tensors whose bytes overlap. The converter must exit 2 with one line naming
the file, and never raise struct.error, ZeroDivisionError or IndexError.
"""
import struct

import pytest

from s1kernels.convert import main as convert_main
from s1kernels.model.gguf_header import read_header

U32, U64, STR, ARR, I32, F32T = 4, 10, 8, 9, 5, 0


def _s(text):
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key, vtype, value):
    body = _s(key) + struct.pack("<I", vtype)
    if vtype == U32:
        return body + struct.pack("<I", value)
    if vtype == STR:
        return body + _s(value)
    if vtype == ARR:  # a list of strings
        return body + struct.pack("<IQ", STR, len(value)) + b"".join(_s(v) for v in value)
    raise AssertionError(vtype)


def _gguf(meta=None, tensors=None, counts=None, tail=b""):
    meta = meta if meta is not None else {
        "general.architecture": (STR, "llama"), "llama.attention.head_count": (U32, 2),
        "llama.attention.head_count_kv": (U32, 1), "llama.embedding_length": (U32, 8), "llama.block_count": (U32, 1),
        "tokenizer.ggml.tokens": (ARR, ["a", "b", "c"]), "tokenizer.ggml.eos_token_id": (U32, 2)}
    tensors = tensors if tensors is not None else [("token_embd.weight", [8, 3], F32T, 0),
                                                   ("output_norm.weight", [8], F32T, 96)]
    n_t, n_m = counts or (len(tensors), len(meta))
    out = b"GGUF" + struct.pack("<IQQ", 3, n_t, n_m)
    out += b"".join(_kv(k, t, v) for k, (t, v) in meta.items())
    for name, dims, gtype, offset in tensors:
        out += _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", gtype, offset)
    out += b"\0" * (-len(out) % 32)
    return out + b"\0" * 128 + tail


def _base_meta(**changes):
    meta = {"general.architecture": (STR, "llama"), "llama.attention.head_count": (U32, 2),
            "llama.attention.head_count_kv": (U32, 1), "llama.embedding_length": (U32, 8),
            "llama.block_count": (U32, 1), "tokenizer.ggml.tokens": (ARR, ["a", "b", "c"]),
            "tokenizer.ggml.eos_token_id": (U32, 2)}
    meta.update(changes)
    return meta


CASES = {
    "empty": (b"", "magic number"),
    "not gguf (json)": (b'{"a": 1}', "does not start with 'GGUF'"),
    "truncated after magic": (b"GGUF\x03\x00", "the version"),
    "truncated counts": (b"GGUF" + struct.pack("<I", 3) + b"\x01", "tensor count"),
    "unknown version": (b"GGUF" + struct.pack("<IQQ", 99, 0, 0), "version 99"),
    "absurd tensor count": (_gguf(counts=(1 << 60, 7)), "tensors"),
    "absurd metadata count": (_gguf(counts=(2, 1 << 40)), "metadata entries"),
    "more metadata than written": (_gguf(counts=(2, 9)), "past the end"),
    "absurd string length": (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 62), "past the end"),
    "absurd array length": (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _s("k") + struct.pack("<IIQ", ARR, U32, 1 << 61),
                            "claims"),
    "unknown value type": (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _s("k") + struct.pack("<I", 77), "unknown value type"),
    "head_count 0": (_gguf(meta=_base_meta(**{"llama.attention.head_count": (U32, 0)})), "head_count is 0"),
    "head_count_kv 0": (_gguf(meta=_base_meta(**{"llama.attention.head_count_kv": (U32, 0)})), "head_count_kv is 0"),
    "heads not dividing": (_gguf(meta=_base_meta(**{"llama.embedding_length": (U32, 7)})), "not a multiple"),
    "no architecture": (_gguf(meta={k: v for k, v in _base_meta().items() if k != "general.architecture"}),
                        "general.architecture"),
    "token id past the vocabulary": (_gguf(meta=_base_meta(**{"tokenizer.ggml.eos_token_id": (U32, 3)})),
                                     "outside the 3 tokens"),
    "overlapping tensors": (_gguf(tensors=[("token_embd.weight", [8, 3], F32T, 0), ("output_norm.weight", [8], F32T, 64)]),
                            "overlap"),
    "tensor past the end": (_gguf(tensors=[("token_embd.weight", [8, 3], F32T, 0), ("output_norm.weight", [8], F32T, 1 << 40)]),
                            "past the end"),
    "zero dimension": (_gguf(tensors=[("token_embd.weight", [8, 0], F32T, 0)]), "dimension of 0"),
    "unknown tensor type": (_gguf(tensors=[("token_embd.weight", [8, 3], 99, 0)]), "unknown ggml type"),
    "bad block multiple": (_gguf(tensors=[("token_embd.weight", [8, 3], 2, 0)]), "not a multiple of its type's block"),
    "duplicate tensor": (_gguf(tensors=[("a", [8], F32T, 0), ("a", [8], F32T, 32)]), "appears twice"),
}


def test_a_well_formed_file_reads(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(_gguf())
    h = read_header(str(path))
    assert h["metadata"]["llama.attention.head_count"] == 2 and [t[0] for t in h["tensors"]] == [
        "token_embd.weight", "output_norm.weight"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_gguf_is_a_named_error(tmp_path, capsys, case):
    data, why = CASES[case]
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=why):
        read_header(str(path))
    code = convert_main(["--gguf", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and why.split()[0] in err, (code, err)
    assert not (tmp_path / "out").exists()
