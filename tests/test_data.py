"""Tests for training/data.py: manifest, packing, curriculum shares, ranks, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.data import (
    CurriculumLoader,
    load_manifest,
    language_shares,
    select_validation_rows,
    write_token_shards,
)
from training.train_config import StageConfig, paper_curriculum

LANGS = ["en", "zh", "de", "ar", "ja", "th"]


def _corpus(tmp_path, seed=0, docs_per_stream=60, docs_per_file=25):
    """Small synthetic token shards: per (lang, source) documents of random length whose token
    ids encode the stream, so a window's origin can be recognised."""
    rng = np.random.default_rng(seed)
    docs = {}
    tiers = {"web": "web", "wiki": "reference", "opus": "parallel"}
    for li, lang in enumerate(LANGS):
        sources = ["web", "wiki"] + (["opus"] if lang != "en" else [])
        for si, src in enumerate(sources):
            n = docs_per_stream if src == "web" else docs_per_stream // 2
            base = 10 + 30 * li + 10 * si  # token ids of this stream lie in [base, base+10)
            docs[(lang, src)] = [list(rng.integers(base, base + 10, size=rng.integers(5, 80)))
                                 for _ in range(n)]
    return write_token_shards(tmp_path / "tokens", docs, vocab_size=256, eos_id=2, tiers=tiers,
                              docs_per_file=docs_per_file)


def _stages():
    return [
        StageConfig(name="s1", start_step=0, lang_weights={"en": 0.7, "zh": 0.22, "*": 0.08}),
        StageConfig(name="s2", start_step=30, lang_weights={"en": 0.4, "zh": 0.44, "*": 0.16},
                    source_weights={"reference": 3.0, "parallel": 3.0}),
    ]


def _loader(root, **kw):
    args = dict(seq_len=32, global_batch_size=8, micro_batch_size=2, stages=_stages(),
                total_steps=60, seed=7, val_fraction=0.05)
    args.update(kw)
    return CurriculumLoader(root, **args)


def test_manifest_roundtrip_and_errors(tmp_path):
    root = _corpus(tmp_path)
    m = load_manifest(root)
    assert m.vocab_size == 256 and m.eos_id == 2
    assert {(s.lang, s.source) for s in m.streams} >= {("en", "web"), ("zh", "opus")}
    assert m.languages[:2] == ["en", "zh"]
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_manifest(tmp_path / "nope")
    raw = json.loads((root / "manifest.json").read_text())
    raw["streams"][0]["files"].append("lang=en/source=web/missing.parquet")
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(FileNotFoundError, match="missing shard"):
        load_manifest(root)


def test_batch_shapes_packing_and_labels(tmp_path):
    root = _corpus(tmp_path)
    ld = _loader(root)
    b = ld.next_batch()
    # global 8 = grad_accum 4 x micro 2 on one rank
    assert b.input_ids.shape == (4, 2, 32) and b.labels.shape == (4, 2, 32)
    assert b.input_ids.dtype == torch.int64 and b.lang_ids.shape == (4, 2)
    # labels are the inputs shifted by one inside each seq_len+1 window
    assert torch.equal(b.input_ids[..., 1:], b.labels[..., :-1])
    # every window comes from one stream: token ids (EOS excepted) match the sample's language
    for a in range(4):
        for m in range(2):
            lang = ld.languages[int(b.lang_ids[a, m])]
            li = LANGS.index(lang)
            toks = b.input_ids[a, m][b.input_ids[a, m] != 2]
            assert ((toks >= 10 + 30 * li) & (toks < 10 + 30 * li + 30)).all()


def test_language_shares_config():
    toks = {"en": 100, "zh": 50, "de": 30, "ar": 10}
    s = language_shares(StageConfig(lang_weights={"en": 0.7, "zh": 0.22, "*": 0.08}), toks)
    assert s["en"] == pytest.approx(0.7) and s["de"] == pytest.approx(0.06) and s["ar"] == pytest.approx(0.02)
    eq = language_shares(StageConfig(lang_weights={"en": 0.7, "zh": 0.22, "*": 0.08}, rest_split="equal"), toks)
    assert eq["de"] == pytest.approx(0.04) and eq["ar"] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="rest_split"):
        language_shares(StageConfig(lang_weights={"en": 1, "*": 1}, rest_split="zipf"), toks)
    nat = language_shares(StageConfig(lang_weights="natural"), toks)
    assert nat["en"] == pytest.approx(100 / 190)
    # a language absent from the data is dropped and the rest renormalised
    s = language_shares(StageConfig(lang_weights={"en": 0.5, "ko": 0.5}), toks)
    assert s == {"en": 1.0}
    with pytest.raises(ValueError, match="negative"):
        language_shares(StageConfig(lang_weights={"en": -1}), toks)
    with pytest.raises(ValueError, match="no language"):
        language_shares(StageConfig(lang_weights={"ko": 1.0}), toks)


def test_realised_token_share_per_stage_within_two_points(tmp_path):
    root = _corpus(tmp_path)
    ld = _loader(root, global_batch_size=16, micro_batch_size=16, total_steps=60)
    counts = [dict(), dict()]
    src_counts = [dict(), dict()]
    for _ in range(60):
        b = ld.next_batch()
        for lid in b.lang_ids.flatten().tolist():
            lang = ld.languages[lid]
            counts[b.stage][lang] = counts[b.stage].get(lang, 0) + ld.seq_len
    for stage in (0, 1):
        total = sum(counts[stage].values())
        target = ld.target_language_shares(stage)
        assert set(target) == set(LANGS)
        for lang, share in target.items():
            realised = counts[stage].get(lang, 0) / total
            assert abs(realised - share) <= 0.02, (stage, lang, realised, share)
    assert ld.target_language_shares(0)["en"] == pytest.approx(0.70)
    assert ld.target_language_shares(1)["en"] == pytest.approx(0.40)
    # stage 2 favours reference/parallel inside a language
    w1, w2 = ld.stage_weights
    zh_web = [s.index for s in ld.streams if s.key == "zh/web"][0]
    zh_opus = [s.index for s in ld.streams if s.key == "zh/opus"][0]
    assert w2[zh_opus] / w2[zh_web] == pytest.approx(3 * w1[zh_opus] / w1[zh_web])


def test_ranks_partition_the_global_batch(tmp_path):
    root = _corpus(tmp_path)
    single = _loader(root, global_batch_size=8, micro_batch_size=4)
    ranks = [_loader(root, global_batch_size=8, micro_batch_size=2, dp_rank=r, dp_world=2) for r in range(2)]
    for _ in range(35):  # crosses the stage boundary at step 30
        g = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        glob = g.input_ids.reshape(8, 32)
        cat = torch.cat([p.input_ids.reshape(4, 32) for p in parts])
        assert torch.equal(glob, cat)
        assert torch.equal(g.lang_ids.reshape(8), torch.cat([p.lang_ids.reshape(4) for p in parts]))
        assert g.stage == parts[0].stage == parts[1].stage


def test_deterministic_and_exact_resume_mid_stage(tmp_path):
    root = _corpus(tmp_path)
    a = _loader(root)
    ref = [a.next_batch() for _ in range(50)]
    b = _loader(root)
    for _ in range(37):  # mid stage 2, streams have wrapped into later epochs
        b.next_batch()
    state = json.loads(json.dumps(b.state_dict()))  # JSON round-trip, as in checkpoints
    assert state["stage"] == 1 and state["step"] == 37
    c = _loader(root)
    c.load_state_dict(state)
    for i in range(37, 50):
        x = c.next_batch()
        assert x.step == ref[i].step and x.stage == ref[i].stage
        assert torch.equal(x.input_ids, ref[i].input_ids) and torch.equal(x.lang_ids, ref[i].lang_ids)
    # resuming at another world size gives that rank's slice of the same global batch
    d = _loader(root, micro_batch_size=1, dp_rank=1, dp_world=2)
    d.load_state_dict(state)
    x = d.next_batch()
    assert torch.equal(x.input_ids.reshape(4, 32), ref[37].input_ids.reshape(8, 32)[4:])
    with pytest.raises(ValueError, match="seed"):
        _loader(root, seed=8).load_state_dict(state)


def test_validation_is_held_out(tmp_path):
    root = _corpus(tmp_path)
    ld = _loader(root, val_fraction=0.1)
    v = ld.validation_set()
    assert v.input_ids.shape[1] == 32 and v.input_ids.shape[0] == v.lang_ids.shape[0]
    assert {ld.languages[i] for i in v.lang_ids.tolist()} == set(LANGS)
    # held-out rows are never served for training: build the set of held-out docs and check that
    # no training window contains a held-out document's full token sequence
    import pyarrow.parquet as pq

    held = set()
    for s in ld.streams:
        for fidx, rows in ld._val_rows[s.index].items():
            col = pq.read_table(s.files[fidx]).column("input_ids").to_pylist()
            for r in rows:
                if len(col[r]) >= 20:
                    held.add(tuple(col[r][:20]))
    assert held
    seen = set()
    for _ in range(40):
        b = ld.next_batch().input_ids.reshape(-1, 32)
        for row in b.tolist():
            for k in range(0, 32 - 20 + 1):
                seen.add(tuple(row[k:k + 20]))
    assert not (held & seen)


def test_select_validation_rows():
    ids = [f"d{i}" for i in range(50)]
    rows = select_validation_rows(ids, 0.1)
    assert len(rows) == 5 and list(rows) == sorted(rows)
    assert list(select_validation_rows(ids, 0.1)) == list(rows)  # deterministic
    assert len(select_validation_rows(ids[:3], 0.01)) == 1  # at least one
    assert len(select_validation_rows(ids[:1], 0.5)) == 0  # never the only doc
    assert len(select_validation_rows(ids, 0.0)) == 0


def test_bad_configuration_errors(tmp_path):
    root = _corpus(tmp_path)
    with pytest.raises(ValueError, match="multiple"):
        _loader(root, global_batch_size=7)
    with pytest.raises(ValueError, match="start at step 0"):
        _loader(root, stages=[StageConfig(name="x", start_step=5)])
    with pytest.raises(ValueError, match="increase"):
        _loader(root, stages=[StageConfig(start_step=0), StageConfig(start_step=0)])
    with pytest.raises(ValueError, match="exactly one"):
        _loader(root, stages=[StageConfig(start_step=0, start_fraction=0.1)])
    # the paper curriculum resolves stage 2 at 540/640 of training
    ld = _loader(root, stages=paper_curriculum(), total_steps=640)
    assert ld.stage_starts == [0, 540]


def _row_group_corpus(tmp_path):
    """12 streams x 200 documents, one document per Parquet row group, with ``n_tokens``."""
    rng = np.random.default_rng(1)
    docs = {(lang, src): [list(rng.integers(10, 250, size=rng.integers(5, 80))) for _ in range(200)]
            for lang in LANGS for src in ("web", "wiki")}
    return write_token_shards(tmp_path / "rg", docs, vocab_size=256, eos_id=2, docs_per_file=100,
                              row_group_size=1, n_tokens=True)


def test_each_rank_reads_only_its_share_and_memory_is_bounded(tmp_path):
    root = _row_group_corpus(tmp_path)
    stages = [StageConfig(name="nat", start_step=0, lang_weights="natural")]
    kw = dict(seq_len=256, global_batch_size=16, micro_batch_size=2, stages=stages, total_steps=8, seed=3)
    steps = 6  # 6 x 16 x 257 tokens: under one epoch of every stream (no row is needed twice)
    one = CurriculumLoader(root, **kw)
    ref = [one.next_batch() for _ in range(steps)]
    one.close()
    full = one.read_stats
    ranks = []
    for r in range(4):
        # a cache smaller than one step's row groups: evictions happen, batches must not change
        ld = CurriculumLoader(root, dp_rank=r, dp_world=4, cache_bytes=4096, **kw)
        got = [ld.next_batch() for _ in range(steps)]
        ld.close()
        for g, x in zip(got, ref):
            assert torch.equal(g.input_ids, x.input_ids.reshape(8, 2, 256)[2 * r: 2 * r + 2])
        st = ld.read_stats
        ranks.append(st)
        # only its rows: a quarter of the rows and bytes, plus the documents cut by a window edge
        assert st.rows_decoded <= 0.35 * full.rows_decoded, (st, full)
        assert st.bytes_read <= 0.35 * full.bytes_read, (st, full)
        # memory: decoded row groups held at once stay within cache_bytes + one row group
        assert st.peak_cache_bytes <= 4096 + 2048
        # the length index came from the small n_tokens column, not from decoding input_ids
        assert st.index_bytes < full.bytes_read
    assert sum(s.rows_decoded for s in ranks) <= 1.3 * full.rows_decoded


def test_prefetch_gives_the_same_batches_and_resume_state(tmp_path):
    root = _corpus(tmp_path)
    sync = _loader(root, prefetch=0)
    pre = _loader(root, prefetch=3)
    for _ in range(12):
        a, b = sync.next_batch(), pre.next_batch()
        assert torch.equal(a.input_ids, b.input_ids) and a.step == b.step
    # the state is the one after the last batch returned, not after the batches prefetched
    assert pre.state_dict() == sync.state_dict() and pre.step == 12
    state = pre.state_dict()
    pre.load_state_dict(state)  # stops the thread, resumes at step 12
    assert torch.equal(pre.next_batch().input_ids, sync.next_batch().input_ids)
    pre.close()
