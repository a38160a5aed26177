"""Training data: from rows (built-in task, JSONL/Parquet) or packed shards to micro-batches.

The order of packed rows is a permutation per epoch drawn from (seed, epoch), and step s
reads a fixed slice of it, so the data position is just the optimizer step: a resumed run
sees exactly the rows an uninterrupted run would. Each step takes `rows_per_step =
world_size * grad_accum * micro_batch` rows; rank r takes the r-th chunk. The last step of an
epoch is filled with empty rows (no trained tokens) so every rank runs the same number of
micro-batches, which collective (FSDP) training needs; they add nothing to the loss.
"""
from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass

import torch

from s1kernels.data import IGNORE_INDEX, Packed, make_rows, pack, render_rows
from s1kernels import checks

OVERLONG_POLICIES = ("truncate", "drop", "error")


def check_chat_tokenizer(tok) -> None:
    """The s1 format needs ChatML specials as single tokens."""
    missing = [t for t in ("<|im_start|>", "<|im_end|>") if tok.token_to_id(t) is None]
    if missing:
        raise ValueError(f"tokenizer: the s1 chat format needs the special tokens {missing} "
                         f"(ChatML, as in Qwen2.5 tokenizers), this tokenizer lacks them")


def pack_samples(samples, block_size: int, pad_id: int, overlong: str = "truncate") -> Packed:
    """Packs samples; `overlong` decides what happens to a sample longer than block_size.

    "truncate" keeps its first block_size tokens (what s1/TRL do), "drop" leaves it out,
    "error" raises. Raises ValueError when nothing trainable is left.
    """
    if overlong not in OVERLONG_POLICIES:
        raise checks.argument_error("overlong", f"one of {OVERLONG_POLICIES}", repr(overlong))
    if not samples:
        raise ValueError("data: no samples")
    longest = max(len(s[0]) for s in samples)
    if overlong == "error" and longest > block_size:
        n = sum(len(s[0]) > block_size for s in samples)
        raise ValueError(f"block_size: {n} samples are longer than block_size={block_size} (longest {longest} "
                         f"tokens); raise --block-size or choose --overlong truncate|drop")
    packed = pack(samples, block_size, pad_id, overlong="drop" if overlong == "drop" else "truncate")
    check_trainable(packed)
    return packed


def check_trainable(packed: Packed) -> None:
    if packed.num_rows == 0 or int((packed.labels != IGNORE_INDEX).sum()) == 0:
        raise ValueError(f"data: no trainable tokens (packing stats {packed.stats}); the loss mask covers "
                         f"only the assistant turn, check the data fields and --block-size")


def load_packed(path: str) -> Packed:
    """A packed .safetensors file, or a folder of them (concatenated; same block size)."""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
    if not files:
        raise FileNotFoundError(f"data: no .safetensors packed shards in folder {path!r}")
    parts = []
    for f in files:
        try:
            parts.append(Packed.load(f))
        except Exception as e:
            raise ValueError(f"data: {f!r} is not a packed shard ({type(e).__name__}: {e})") from None
    if len({p.block_size for p in parts}) > 1:
        raise ValueError(f"data: shards in {path!r} have different block sizes {sorted({p.block_size for p in parts})}")
    if len(parts) == 1:
        return parts[0]
    return Packed(torch.cat([p.input_ids for p in parts]), torch.cat([p.labels for p in parts]),
                  torch.cat([p.position_ids for p in parts]), [c for p in parts for c in p.cu_seqlens],
                  [s for p in parts for s in p.sample_index], {"shards": len(parts)})


def is_packed_path(path: str) -> bool:
    return path.endswith(".safetensors") or (os.path.isdir(path) and bool(glob.glob(os.path.join(path, "*.safetensors"))))


def build_dataset(tok, data: str | None, block_size: int, overlong: str, synthetic_rows: int, seed: int,
                  max_samples: int | None = None) -> tuple[Packed, dict]:
    """The packed training set and a description of where it came from."""
    if data is None:
        rows = make_rows(synthetic_rows, seed=seed)
        source = f"built-in task ({synthetic_rows} rows, seed {seed})"
    elif not os.path.exists(data):
        raise FileNotFoundError(f"data: {data!r} does not exist")
    elif is_packed_path(data):
        packed = load_packed(data)
        if packed.block_size != block_size:
            # packed shards fix the block size; follow them rather than repacking silently
            block_size = packed.block_size
        check_trainable(packed)
        return packed, {"source": f"packed shards {data}", "block_size": block_size, **packed.stats}
    else:
        from s1kernels.data.readers import read_rows

        rows, stats = read_rows(data)
        source = f"{data} ({len(rows)} rows)"
    if max_samples:
        rows = rows[:max_samples]
    check_chat_tokenizer(tok)
    packed = pack_samples(render_rows(tok, rows), block_size, tok.pad_id, overlong)
    return packed, {"source": source, "block_size": block_size, **packed.stats}


@dataclass
class Schedule:
    """Which packed rows each step and micro-batch reads."""

    num_rows: int
    micro_batch: int
    grad_accum: int
    world_size: int
    seed: int

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_rows / self.rows_per_step))

    def step_rows(self, step: int, rank: int) -> list[list[int]]:
        """Row indices (-1 = empty filler) of each of this rank's micro-batches at `step`."""
        epoch, i = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        perm = torch.randperm(self.num_rows, generator=g).tolist()
        rows = perm[i * self.rows_per_step:(i + 1) * self.rows_per_step]
        rows += [-1] * (self.rows_per_step - len(rows))
        mine = rows[rank * self.grad_accum * self.micro_batch:(rank + 1) * self.grad_accum * self.micro_batch]
        return [mine[m * self.micro_batch:(m + 1) * self.micro_batch] for m in range(self.grad_accum)]


def real_length(packed: Packed, r: int) -> int:
    """Tokens of packed row `r` before its padding tail (the last segment when its
    sample_index is -1), i.e. the tokens a training step has to compute."""
    cu, si = packed.cu_seqlens[r], packed.sample_index[r]
    return int(cu[-2]) if len(si) and int(si[-1]) < 0 else int(cu[-1])


def micro_batch(packed: Packed, rows: list[int], pad_id: int, device) -> dict:
    """Concatenates packed rows into one flat varlen batch on `device`.

    Each row is cut before its padding tail: padding carries no labels and attends only to
    itself, so dropping it changes no loss or gradient, and it is never embedded, attended,
    multiplied or scored (a small file at block size 32,768 is mostly padding, which as one
    causal segment cost more than all its samples). "tokens" counts the samples' tokens (a
    host int, for throughput). An empty filler row (-1) becomes a 2-token segment with no labels.
    """
    ids, labels, pos, cus, offset, real = [], [], [], [torch.zeros(1, dtype=torch.int32)], 0, 0
    for r in rows:
        if r < 0:
            i = torch.full((2,), pad_id, dtype=torch.int64)
            lab, p, cu = torch.full((2,), IGNORE_INDEX, dtype=torch.int64), torch.arange(2), torch.tensor([0, 2], dtype=torch.int32)
        else:
            n = real_length(packed, r)
            i, lab, p = packed.input_ids[r, :n], packed.labels[r, :n], packed.position_ids[r, :n]
            cu = packed.cu_seqlens[r]
            cu = cu[: len(cu) - 1] if int(cu[-1]) > n else cu
            real += n
        ids.append(i)
        labels.append(lab)
        pos.append(p)
        cus.append(cu[1:] + offset)
        offset += i.shape[0]
    cu = torch.cat(cus)
    max_seqlen = int((cu[1:] - cu[:-1]).max())  # from host tensors: no device sync
    return {
        "input_ids": torch.cat(ids).to(device, non_blocking=True),
        "labels": torch.cat(labels).to(device, non_blocking=True),
        "position_ids": torch.cat(pos).to(device, non_blocking=True),
        "cu_seqlens": cu.to(device, non_blocking=True),
        "max_seqlen": max_seqlen,
        "tokens": real,
    }


def count_items(batch: dict, normalize: str) -> torch.Tensor:
    """Trained tokens (normalize="token") or samples with trained tokens ("sequence"), on device."""
    valid = batch["labels"] != IGNORE_INDEX
    if normalize == "token":
        return valid.sum()
    cu = batch["cu_seqlens"].to(torch.int64)
    seg = torch.searchsorted(cu[1:], torch.arange(valid.shape[0], device=valid.device), right=True)
    per_seg = torch.zeros(cu.shape[0] - 1, dtype=torch.int64, device=valid.device).scatter_add_(0, seg, valid.long())
    return (per_seg > 0).sum()


def block_size_note(packed: Packed, rows_per_step: int, from_shards: bool = False) -> str | None:
    """A line for data that fills its packed rows less than half (a small file at the default
    block size of 32,768): what the block size means for the steps, and a size to try."""
    if packed.num_rows == 0:
        return None
    block = packed.block_size
    tokens = sum(real_length(packed, r) for r in range(packed.num_rows))
    fill = tokens / (packed.num_rows * block)
    if fill >= 0.5:
        return None
    longest = max(int((c[1:] - c[:-1])[si >= 0].max()) for c, si in zip(packed.cu_seqlens, packed.sample_index))
    samples = sum(int((si >= 0).sum()) for si in packed.sample_index)
    fits = max(2, 1 << (longest - 1).bit_length())  # the smallest power of two the longest sample fits
    if fits >= block:
        return None
    how = (f"repack the shards with python -m s1kernels.data --block-size {fits}" if from_shards
           else f"set --block-size {fits} (the longest sample fits) or larger")
    steps = math.ceil(packed.num_rows / rows_per_step)
    return (f"note: {samples} samples ({tokens:,} tokens, the longest {longest}) fill "
            f"{_count(packed.num_rows, 'packed row')} of block size {block} to {fill:.0%}; padding costs no compute, "
            f"but each optimizer step takes {_count(rows_per_step, 'row')}, so an epoch is {_count(steps, 'step')}: "
            f"for more, smaller steps {how}")


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"
