"""Packing: labels stay inside samples, masked tokens are never trained, round trips."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from s1kernels.data import IGNORE_INDEX, Packed, build_default_tokenizer, make_rows, pack, render_sample

PAD = 0


def _samples(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(1, 50, (n,), generator=g).tolist()
        mask = (torch.rand(n, generator=g) < 0.6).tolist()
        out.append((ids, mask))
    return out


def check_invariants(p: Packed, samples, block_size, policy, pad=PAD):
    R, L = p.input_ids.shape
    assert L == block_size and p.labels.shape == p.position_ids.shape == (R, L)
    assert p.input_ids.dtype == p.labels.dtype == p.position_ids.dtype == torch.int64
    trained = 0
    seen = []
    for r in range(R):
        cu = p.cu_seqlens[r]
        assert cu.dtype == torch.int32 and cu[0] == 0 and cu[-1] == L
        assert bool((cu[1:] > cu[:-1]).all())
        assert len(p.sample_index[r]) == len(cu) - 1
        for s, si in enumerate(p.sample_index[r].tolist()):
            a, b = int(cu[s]), int(cu[s + 1])
            assert p.position_ids[r, a:b].tolist() == list(range(b - a))
            lab = p.labels[r, a:b]
            assert lab[-1] == IGNORE_INDEX  # no label crosses the boundary
            if si < 0:  # tail padding: never trained
                assert s == len(cu) - 2
                assert (p.input_ids[r, a:b] == pad).all() and (lab == IGNORE_INDEX).all()
                continue
            ids, mask = samples[si]
            n = b - a
            assert p.input_ids[r, a:b].tolist() == list(ids[:n])
            for t in range(n - 1):
                expect = ids[t + 1] if mask[t + 1] else IGNORE_INDEX  # masked tokens never trained
                assert lab[t] == expect
            seen.append(si)
        trained += int((p.labels[r] != IGNORE_INDEX).sum())
    assert trained == p.stats["trained_tokens"]
    long = [i for i, (ids, _) in enumerate(samples) if len(ids) > block_size]
    empty = [i for i, (ids, _) in enumerate(samples) if not ids]
    expect_seen = [i for i in range(len(samples)) if i not in empty and (policy == "truncate" or i not in long)]
    assert sorted(seen) == expect_seen  # every sample packed exactly once
    st_ = p.stats
    assert st_["samples"] == len(samples) and st_["packed"] == len(expect_seen) and st_["rows"] == R
    assert st_[("truncated" if policy == "truncate" else "dropped")] == len(long)
    assert st_["tokens"] == sum(min(len(samples[i][0]), block_size) for i in expect_seen)
    if R:
        assert abs(st_["fill_rate"] - st_["tokens"] / (R * L)) < 1e-12


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=0, max_size=30),
       block_size=st.integers(2, 48), policy=st.sampled_from(["truncate", "drop"]),
       seed=st.integers(0, 1000))
def test_pack_properties(lengths, block_size, policy, seed):
    samples = _samples(lengths, seed)
    p = pack(samples, block_size, PAD, overlong=policy)
    check_invariants(p, samples, block_size, policy)
    # unpack recovers every packed sample (truncated ones up to block_size)
    for si, ids, mask in p.unpack():
        ref_ids, ref_mask = samples[si]
        n = min(len(ref_ids), block_size)
        assert ids == list(ref_ids[:n])
        assert mask[1:] == [bool(m) for m in ref_mask[1:n]]


def test_best_fit_decreasing_layout():
    samples = _samples([6, 5, 4, 3, 2])
    p = pack(samples, 10, PAD)
    # 6 -> row0 (free 4); 5 -> row1 (free 5); 4 -> row0 (tightest fit); 3 -> row1; 2 -> row1
    assert p.stats["rows"] == 2
    assert [x.tolist() for x in p.sample_index] == [[0, 2], [1, 3, 4]]
    assert [x.tolist() for x in p.cu_seqlens] == [[0, 6, 10], [0, 5, 8, 10]]
    assert p.stats["fill_rate"] == 1.0


def test_save_load_round_trip(tmp_path):
    tok = build_default_tokenizer()
    rows = make_rows(40, seed=2)
    samples = [render_sample(tok, r["question"], r["thinking_trajectories"], r["attempt"]) for r in rows]
    # 512: longer than any sample (a trace with four checks is ~270 tokens), so none is cut
    p = pack(samples, 512, tok.pad_id)
    check_invariants(p, samples, 512, "truncate", pad=tok.pad_id)
    p.save(tmp_path / "x.safetensors")
    q = Packed.load(tmp_path / "x.safetensors")
    for name in ("input_ids", "labels", "position_ids"):
        assert torch.equal(getattr(p, name), getattr(q, name))
    assert all(torch.equal(a, b) for a, b in zip(p.cu_seqlens, q.cu_seqlens))
    assert all(torch.equal(a, b) for a, b in zip(p.sample_index, q.sample_index))
    assert q.stats == p.stats
    for si, ids, mask in q.unpack():
        assert ids == samples[si][0] and mask[1:] == samples[si][1][1:]
    sub = q.select([1, 0])
    assert torch.equal(sub.input_ids[0], q.input_ids[1]) and sub.row(1)["cu_seqlens"].tolist() == q.cu_seqlens[0].tolist()


def test_trained_tokens_are_the_assistant_turn():
    tok = build_default_tokenizer()
    r = make_rows(1, seed=5)[0]
    ids, mask = render_sample(tok, r["question"], r["thinking_trajectories"], r["attempt"])
    p = pack([(ids, mask)], 128, tok.pad_id)
    trained = p.labels[0][p.labels[0] != IGNORE_INDEX].tolist()
    assert trained == [i for i, m in zip(ids, mask) if m]
    assert tok.decode(trained).startswith("<|im_start|>think\n") and trained[-1] == tok.im_end_id


def test_pack_errors():
    with pytest.raises(ValueError, match="block_size"):
        pack([], 1, PAD)
    with pytest.raises(ValueError, match="overlong"):
        pack([], 8, PAD, overlong="split")
    with pytest.raises(ValueError, match=r"samples\[0\]"):
        pack([([1, 2], [True])], 8, PAD)
    with pytest.raises(TypeError, match=r"samples\[1\]"):
        pack([([1], [True]), [1, 2, 3]], 8, PAD)
    p = pack([], 8, PAD)
    assert p.input_ids.shape == (0, 8) and p.stats["rows"] == 0 and p.stats["fill_rate"] == 0.0
