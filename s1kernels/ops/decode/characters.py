"""Forcing never lands inside a character: the one rule that keeps a byte-level character whole.

Byte-level BPE vocabularies (GPT-2, Qwen, SmolLM2) spell some characters over several
tokens: SmolLM2 writes `≤` as `âī` + `¤` (the UTF-8 bytes E2 89 + A4). When a forced token
(the "Wait" that replaces an early end, the forced exit at the thinking budget, or the model's
own end-of-thinking) comes between such tokens, the thinking text holds a cut UTF-8 sequence
and decodes with U+FFFD.

The rule, applied to the logits of every row that is about to sample a thinking token:

  * a row inside a character (bytes of it still missing) may not end its thinking: the
    end-of-thinking and end-of-sequence ids are masked, so no Wait, delimiter or EOS can
    follow half a character;
  * a row may not open a character it cannot finish within its thinking budget: a token
    that leaves `n` bytes missing needs `n` more thinking tokens, so it is masked when
    `thinking_tokens + 1 + n > max_thinking_tokens`. The forced exit therefore always finds
    the row between characters, and a byte-level vocabulary always has a single-byte token
    to finish with, so the mask never leaves a row without a token.

`need` (int32 [B]: continuation bytes still missing, 0-3) is tracked from the emitted tokens
with `advance`. Only rows in the thinking phase, with no injection pending and budget left,
are masked: the others do not sample (or, in the answer phase, are not forced). The state
machine itself is unchanged; the rule only removes choices from the logits it reads, so
every backend of `decode_step` (and every engine that calls it: s1kernels.generate, the
transformers processor, the vLLM processor) applies it the same way.

A tokenizer that is not byte-level (or a vocabulary of whole characters, like the built-in
one) gives an all-zero table and the rule masks nothing.
"""
from __future__ import annotations

import weakref

import torch

from s1kernels.ops.decode.contract import INJECT_NONE, THINKING, BudgetTensors, DecodeState, ForcingTokens
from s1kernels import checks
from s1kernels.data.byte_level import CHAR_TO_BYTE

__all__ = ["CharacterGuard", "token_bytes", "missing_after"]

_MAX_NEED = 3  # a UTF-8 character has at most 3 continuation bytes


def _token_strings(tokenizer, n: int) -> list[str | None]:
    """The vocabulary's spelling of ids 0..n-1 (None for holes)."""
    inner = getattr(tokenizer, "tokenizer", None)  # S1Tokenizer wraps a tokenizers.Tokenizer
    vocab = None
    if inner is not None and hasattr(inner, "get_vocab"):
        vocab = inner.get_vocab(with_added_tokens=True)
    elif hasattr(tokenizer, "get_vocab"):  # transformers
        vocab = tokenizer.get_vocab()
    if isinstance(vocab, dict):
        out: list[str | None] = [None] * n
        for piece, i in vocab.items():
            if 0 <= i < n:
                out[i] = piece
        return out
    if hasattr(tokenizer, "convert_ids_to_tokens"):  # transformers (and vLLM's tokenizers)
        return list(tokenizer.convert_ids_to_tokens(list(range(n))))
    if hasattr(tokenizer, "id_to_token"):  # S1Tokenizer, tokenizers.Tokenizer
        return [tokenizer.id_to_token(i) for i in range(n)]
    raise checks.argument_error("tokenizer", "convert_ids_to_tokens or id_to_token", type(tokenizer).__name__,
                                TypeError)


def _is_byte_level(tokenizer) -> bool:
    """A byte-level vocabulary spells a leading space as 'Ġ' (byte 0x20 in the GPT-2 table)."""
    enc = tokenizer.encode(" a", add_special_tokens=False) if _takes_special(tokenizer) else tokenizer.encode(" a")
    enc = list(getattr(enc, "ids", enc))
    if not enc:
        return False
    first = _token_strings_one(tokenizer, enc[0])
    return bool(first) and first.startswith("Ġ")


def _takes_special(tokenizer) -> bool:
    return hasattr(tokenizer, "convert_ids_to_tokens")


def _token_strings_one(tokenizer, i: int) -> str | None:
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return tokenizer.convert_ids_to_tokens(int(i))
    return tokenizer.id_to_token(int(i))


def token_bytes(piece: str | None, byte_level: bool) -> bytes:
    """The bytes a vocabulary entry stands for: byte-level pieces through the GPT-2 table,
    SentencePiece byte pieces (`<0xE2>`) as that byte, anything else (special and added
    tokens, whole-character vocabularies) as its UTF-8 text."""
    if not piece:
        return b""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    if byte_level and all(c in CHAR_TO_BYTE for c in piece):
        return bytes(CHAR_TO_BYTE[c] for c in piece)
    return piece.encode("utf-8")


def missing_after(data: bytes, need: int) -> int:
    """Continuation bytes still missing after `data`, entered with `need` missing."""
    for b in data:
        if b < 0x80:
            need = 0
        elif b < 0xC0:  # a continuation byte
            need = max(need - 1, 0)
        elif b < 0xE0:
            need = 1
        elif b < 0xF0:
            need = 2
        elif b < 0xF8:
            need = 3
        else:  # not UTF-8 at all: nothing to wait for
            need = 0
    return need


# tokenizer -> {vocab_size: table}: building a table reads the whole vocabulary once
_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _table_for(tokenizer, vocab_size: int) -> torch.Tensor:
    try:
        per = _TABLES.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: build it every time
        per = {}
    if vocab_size not in per:
        byte_level = _is_byte_level(tokenizer)
        pieces = _token_strings(tokenizer, vocab_size)
        cols, vals = [], []
        for v, piece in enumerate(pieces):
            if piece is None or piece.isascii():
                continue  # ASCII spelling: ASCII bytes (or a SentencePiece <0x..> byte, below)
            data = token_bytes(piece, byte_level)
            if not data.isascii():
                cols.append(v)
                vals.append([missing_after(data, k) for k in range(_MAX_NEED + 1)])
        for v, piece in enumerate(pieces):
            if piece is not None and piece.startswith("<0x") and not token_bytes(piece, byte_level).isascii():
                cols.append(v)
                vals.append([missing_after(token_bytes(piece, byte_level), k) for k in range(_MAX_NEED + 1)])
        table = torch.zeros(_MAX_NEED + 1, vocab_size, dtype=torch.int8)
        if cols:
            table[:, torch.tensor(cols)] = torch.tensor(vals, dtype=torch.int8).t()
        per[vocab_size] = table
    return per[vocab_size]


class CharacterGuard:
    """The rule of this module for one vocabulary (see the module docstring).

    table: int8 [4, V], entry [k, v] = bytes missing after token v entered with k missing.
    stop_ids: end-of-thinking and end-of-sequence ids (masked inside a character).
    """

    def __init__(self, table: torch.Tensor, stop_ids):
        if not torch.is_tensor(table) or table.dim() != 2 or table.shape[0] != _MAX_NEED + 1:
            raise checks.argument_error("table", f"a [{_MAX_NEED + 1}, V] tensor",
                                        repr(getattr(table, 'shape', table)))
        self.table = table.to(torch.int8)
        self.stop_ids = torch.tensor(sorted({int(i) for i in stop_ids}), dtype=torch.int64)
        # a vocabulary of whole characters can never leave a row inside one: skip the work
        self.active = bool((self.table > 0).any())
        self._dev: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_tokenizer(cls, tokenizer, forcing: ForcingTokens, vocab_size: int | None = None) -> "CharacterGuard":
        """The guard for `tokenizer`'s vocabulary (ids 0..vocab_size-1; default its id limit)."""
        if not isinstance(forcing, ForcingTokens):
            raise checks.argument_error("forcing", "ForcingTokens", type(forcing).__name__, TypeError)
        if vocab_size is None:
            from s1kernels.data.tokenizer import _id_limit
            vocab_size = _id_limit(tokenizer)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise checks.argument_error("vocab_size", "a positive int", repr(vocab_size))
        return cls(_table_for(tokenizer, vocab_size), (*forcing.end_think_ids, *forcing.eos_ids))

    @classmethod
    def for_generation(cls, tokenizer, forcing: ForcingTokens, vocab_size: int | None = None):
        """The guard an engine applies, or None when the rule can never mask anything (a
        vocabulary of whole characters) or the tokenizer does not expose its vocabulary."""
        if not (hasattr(tokenizer, "get_vocab") or hasattr(tokenizer, "convert_ids_to_tokens")
                or hasattr(tokenizer, "id_to_token")):
            return None
        guard = cls.from_tokenizer(tokenizer, forcing, vocab_size)
        return guard if guard.active else None

    def _on(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._dev:
            self._dev[key] = (self.table.to(device), self.stop_ids.to(device))
        return self._dev[key]

    def new_need(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(batch, dtype=torch.int32, device=device)

    def advance(self, need: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`need` after each row emitted `tokens` (int [B]); ids past the table count as whole."""
        if not self.active:
            return need
        table, _ = self._on(need.device)
        tok = tokens.to(torch.int64)
        inside = tok < table.shape[1]
        got = table[need.to(torch.int64).clamp(0, _MAX_NEED), tok.clamp(0, table.shape[1] - 1)]
        return torch.where(inside, got.to(torch.int32), torch.zeros_like(need))

    def mask_(self, logits: torch.Tensor, need: torch.Tensor, state: DecodeState, budget_t: BudgetTensors) -> None:
        """Sets to -inf, in place, the logits the rule forbids (rows that sample a thinking
        token next). On the CPU only the rows near their budget or inside a character are
        touched; on a GPU every row is, with no host synchronisation."""
        if not self.active:
            return
        table, stop = self._on(logits.device)
        thinking, cap = state.thinking_tokens.to(torch.int64), budget_t.max_thinking_tokens.to(torch.int64)
        samples = (state.phase == THINKING) & (state.inject_kind == INJECT_NONE) & (thinking < cap)
        room = cap - thinking - 1  # thinking tokens left after this one
        hit = samples & ((need > 0) | (room < _MAX_NEED))
        if logits.device.type == "cpu":
            rows = hit.nonzero()[:, 0]
            if rows.numel() == 0:
                return
            self._mask_rows(logits, rows, need[rows], room[rows], table, stop)
            return
        V = min(table.shape[1], logits.shape[1])
        bad = table[need.to(torch.int64).clamp(0, _MAX_NEED), :V].to(torch.int64) > room[:, None]
        bad[:, stop[stop < V]] |= (need > 0)[:, None]
        bad &= hit[:, None]
        logits[:, :V].masked_fill_(bad, float("-inf"))

    @staticmethod
    def _mask_rows(logits, rows, need, room, table, stop):
        V = min(table.shape[1], logits.shape[1])
        bad = table[need.to(torch.int64).clamp(0, _MAX_NEED), :V].to(torch.int64) > room[:, None]
        bad[:, stop[stop < V]] |= (need > 0)[:, None]
        sub = logits[rows, :V]
        sub.masked_fill_(bad, float("-inf"))
        logits[rows, :V] = sub
