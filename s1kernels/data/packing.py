"""Packing tokenized samples into fixed-size rows for varlen (cu_seqlens) training.

Samples are placed best-fit decreasing: longest first, each into the open row whose free
space is the smallest that still fits it, or into a new row. Inside a row, labels are
shifted within each sample (`labels[t] = input_ids[t+1]` when t+1 is in the same sample and
is trained, else -100), so no label ever crosses a sample boundary; position ids restart
at 0 per sample; `cu_seqlens[r]` holds the sample boundaries of row r, the tail padding
counted as its own segment (so `cu_seqlens[r][-1] == block_size`).
"""
from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from typing import Sequence

import torch
from s1kernels import checks

from s1kernels.ops.loss.contract import IGNORE_INDEX  # noqa: F401  (labels that are not trained)


@dataclass
class Packed:
    """Packed rows. `input_ids`, `labels`, `position_ids`: [R, L] int64; `cu_seqlens`: list of
    R int32 tensors [S_r + 1]; `sample_index`: list of R int64 tensors [S_r] (index of each
    packed sample in the input list, -1 for the tail padding segment); `stats`: counts."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: list[torch.Tensor]
    sample_index: list[torch.Tensor]
    stats: dict = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def block_size(self) -> int:
        return int(self.input_ids.shape[1])

    def row(self, r: int) -> dict:
        """Row `r` as the flat tensors a varlen model step takes."""
        return {
            "input_ids": self.input_ids[r],
            "labels": self.labels[r],
            "position_ids": self.position_ids[r],
            "cu_seqlens": self.cu_seqlens[r],
        }

    def select(self, rows: Sequence[int] | slice) -> "Packed":
        """A Packed holding only `rows` (stats are kept from the whole set)."""
        idx = list(range(self.num_rows))[rows] if isinstance(rows, slice) else list(rows)
        t = torch.tensor(idx, dtype=torch.long)
        return Packed(
            self.input_ids[t], self.labels[t], self.position_ids[t],
            [self.cu_seqlens[i] for i in idx], [self.sample_index[i] for i in idx], dict(self.stats),
        )

    def unpack(self) -> list[tuple[int, list[int], list[bool]]]:
        """The packed samples as (input index, input_ids, trained mask), cut by cu_seqlens.

        The mask is recovered from the labels: token t+1 is trained iff labels[t] != -100.
        The first token of a sample has no label pointing at it, so its mask is False.
        """
        out = []
        for r in range(self.num_rows):
            cu = self.cu_seqlens[r].tolist()
            ids = self.input_ids[r].tolist()
            lab = self.labels[r].tolist()
            for s, si in enumerate(self.sample_index[r].tolist()):
                if si < 0:
                    continue
                a, b = cu[s], cu[s + 1]
                mask = [False] + [lab[t] != IGNORE_INDEX for t in range(a, b - 1)]
                out.append((si, ids[a:b], mask))
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write to one safetensors file (ragged cu_seqlens/sample_index stored flat with offsets)."""
        from safetensors.torch import save_file

        counts = torch.tensor([len(c) for c in self.cu_seqlens], dtype=torch.int64)
        offsets = torch.zeros(self.num_rows + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(counts, 0)
        flat_cu = torch.cat(self.cu_seqlens) if self.cu_seqlens else torch.zeros(0, dtype=torch.int32)
        flat_si = torch.cat(self.sample_index) if self.sample_index else torch.zeros(0, dtype=torch.int64)
        tensors = {
            "input_ids": self.input_ids.contiguous(),
            "labels": self.labels.contiguous(),
            "position_ids": self.position_ids.contiguous(),
            "cu_seqlens": flat_cu.to(torch.int32).contiguous(),
            "cu_seqlens_offsets": offsets,
            "sample_index": flat_si.to(torch.int64).contiguous(),
        }
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
        save_file(tensors, os.fspath(path), metadata={"format": "s1kernels.packed/1", "stats": json.dumps(self.stats)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Packed":
        """Read a file written by `save`."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        off = t["cu_seqlens_offsets"].tolist()
        cu = [t["cu_seqlens"][off[i]:off[i + 1]].clone() for i in range(len(off) - 1)]
        # sample_index has one entry per segment, i.e. len(cu_seqlens[r]) - 1 per row.
        si, pos = [], 0
        for c in cu:
            si.append(t["sample_index"][pos:pos + len(c) - 1].clone())
            pos += len(c) - 1
        stats = json.loads(meta.get("stats", "{}"))
        return cls(t["input_ids"], t["labels"], t["position_ids"], cu, si, stats)


def shift_labels(input_ids: Sequence[int], mask: Sequence[bool]) -> list[int]:
    """Labels of one sample: input_ids[t+1] where mask[t+1] is True, else -100; the last is -100."""
    n = len(input_ids)
    return [input_ids[t + 1] if mask[t + 1] else IGNORE_INDEX for t in range(n - 1)] + ([IGNORE_INDEX] if n else [])


def pack(samples: Sequence[tuple[Sequence[int], Sequence[bool]]], block_size: int, pad_id: int,
         overlong: str = "truncate") -> Packed:
    """Pack (input_ids, loss_mask) samples into rows of `block_size` tokens, best-fit decreasing.

    overlong: what to do with a sample longer than `block_size`: "truncate" keeps its first
    `block_size` tokens, "drop" leaves it out; either way it is counted in `stats`
    ("truncated" / "dropped"). Empty samples are left out and counted as "empty".
    stats: samples (inputs), packed, tokens, trained_tokens, rows, fill_rate
    (tokens / (rows * block_size)), truncated, truncated_tokens, dropped, empty.
    """
    if not isinstance(block_size, int) or block_size < 2:
        raise checks.argument_error("block_size", "an int >= 2", repr(block_size))
    if overlong not in ("truncate", "drop"):
        raise checks.argument_error("overlong", "'truncate' or 'drop'", repr(overlong))
    if not isinstance(pad_id, int):
        raise checks.argument_error("pad_id", "int", type(pad_id).__name__, TypeError)

    stats = {"samples": len(samples), "packed": 0, "tokens": 0, "trained_tokens": 0, "rows": 0,
             "fill_rate": 0.0, "truncated": 0, "truncated_tokens": 0, "dropped": 0, "empty": 0}
    kept: list[tuple[int, list[int], list[bool]]] = []
    for i, item in enumerate(samples):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise checks.argument_error(f"samples[{i}]", "an (input_ids, loss_mask) pair", type(item).__name__,
                                        TypeError)
        ids, mask = list(item[0]), [bool(m) for m in item[1]]
        if len(ids) != len(mask):
            raise ValueError(f"samples[{i}]: input_ids has {len(ids)} tokens but loss_mask has {len(mask)}")
        if not ids:
            stats["empty"] += 1
            continue
        if len(ids) > block_size:
            if overlong == "drop":
                stats["dropped"] += 1
                continue
            stats["truncated"] += 1
            stats["truncated_tokens"] += len(ids) - block_size
            ids, mask = ids[:block_size], mask[:block_size]
        kept.append((i, ids, mask))

    # Best-fit decreasing: `free` is kept sorted as (free space, row) so bisect finds the
    # tightest row that still fits; ties go to the older row.
    order = sorted(range(len(kept)), key=lambda k: -len(kept[k][1]))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []
    for k in order:
        n = len(kept[k][1])
        j = bisect.bisect_left(free, (n, -1))
        if j < len(free):
            space, r = free.pop(j)
            rows[r].append(k)
            if space - n > 0:
                bisect.insort(free, (space - n, r))
        else:
            rows.append([k])
            if block_size - n > 0:
                bisect.insort(free, (block_size - n, len(rows) - 1))

    R = len(rows)
    input_ids = torch.full((R, block_size), pad_id, dtype=torch.int64)
    labels = torch.full((R, block_size), IGNORE_INDEX, dtype=torch.int64)
    position_ids = torch.zeros((R, block_size), dtype=torch.int64)
    cu_seqlens, sample_index = [], []
    for r, members in enumerate(rows):
        cu, si, pos = [0], [], 0
        for k in members:
            i, ids, mask = kept[k]
            n = len(ids)
            input_ids[r, pos:pos + n] = torch.tensor(ids, dtype=torch.int64)
            lab = shift_labels(ids, mask)
            labels[r, pos:pos + n] = torch.tensor(lab, dtype=torch.int64)
            position_ids[r, pos:pos + n] = torch.arange(n)
            stats["trained_tokens"] += sum(1 for x in lab if x != IGNORE_INDEX)
            stats["tokens"] += n
            pos += n
            cu.append(pos)
            si.append(i)
        if pos < block_size:
            position_ids[r, pos:] = torch.arange(block_size - pos)
            cu.append(block_size)
            si.append(-1)
        cu_seqlens.append(torch.tensor(cu, dtype=torch.int32))
        sample_index.append(torch.tensor(si, dtype=torch.int64))
    stats["packed"] = len(kept)
    stats["rows"] = R
    stats["fill_rate"] = stats["tokens"] / (R * block_size) if R else 0.0
    return Packed(input_ids, labels, position_ids, cu_seqlens, sample_index, stats)
