"""The GPT-2 byte <-> printable-character table of byte-level BPE vocabularies (the
ByteLevel pre-tokenizer's alphabet): every byte has a printable stand-in, so a vocabulary
spells raw bytes as text. Written once here for the tokenizer (text -> stand-ins) and the
forcing character rule (a vocabulary's spellings -> bytes)."""
from __future__ import annotations


def _table() -> dict[int, str]:
    # printable Latin-1 bytes stand for themselves; the rest map, in order, to 256, 257, ...
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


BYTE_TO_CHAR: dict[int, str] = _table()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_CHAR.items()}
