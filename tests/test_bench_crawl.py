"""The crawl-like benchmark input (bench/crawl.py): planted near-duplicate share, planted pairs
above the dedup threshold, distinct originals, determinism by seed. No Spark."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from bench.crawl import LANGS, PLANTED_SHARE_EN, PLANTED_SHARE_OTHER, CrawlGenerator
from filters.minhash import shingles
from pipeline.dedup import exact_key

N = 4000


@pytest.fixture(scope="module")
def gen(shared_data):
    return CrawlGenerator(N, seed=3, root=shared_data)


def _jaccard(a: str, b: str, lang: str) -> float:
    x, y = set(shingles(a, lang)), set(shingles(b, lang))
    return len(x & y) / max(1, len(x | y))


def test_planted_share_near_polylm(gen):
    en = gen.lang == LANGS.index("en")
    copy = gen.kind == gen.COPY
    # binomial sd at these sizes is about 0.01 (en) and 0.008 (others); first documents of a
    # language can have no original to copy, which lowers the share slightly
    assert abs(copy[en].mean() - PLANTED_SHARE_EN) < 0.04
    assert abs(copy[~en].mean() - PLANTED_SHARE_OTHER) < 0.03
    p = gen.planted()
    assert p["copies"] == int(copy.sum()) and p["documents"] == N
    # every copy derives from an earlier original of its own language: any prefix is self-contained
    der = np.flatnonzero(gen.kind != gen.ORIGINAL)
    assert (gen.root[der] < der).all()
    assert (gen.kind[gen.root[der]] == gen.ORIGINAL).all()
    assert (gen.lang[gen.root[der]] == gen.lang[der]).all()
    assert p["largest_cluster"] > 3  # heavy-tailed cluster sizes, not only pairs


def test_planted_pairs_above_threshold_rewrites_below_and_originals_distinct(gen):
    copies = np.flatnonzero(gen.kind == gen.COPY)[:150]
    rewrites = np.flatnonzero(gen.kind == gen.RELATED)[:60]
    for i in copies:
        d, o = gen.document(int(i)), gen.document(int(gen.root[i]))
        assert d["lang"] == o["lang"] and d["text"] != "" and d["id"] != o["id"]
        assert _jaccard(d["text"], o["text"], d["lang"]) >= 0.8, (i, d["lang"])
    for i in rewrites:
        d, o = gen.document(int(i)), gen.document(int(gen.root[i]))
        assert _jaccard(d["text"], o["text"], d["lang"]) < 0.8
    orig = np.flatnonzero(gen.kind == gen.ORIGINAL)
    keys = {exact_key(gen.document(int(i))["text"]) for i in orig[:1500]}
    assert len(keys) == min(1500, len(orig))
    assert {gen.document(int(i))["lang"] for i in orig[:1500]} == set(LANGS)


def test_deterministic_by_seed_and_streamed_files(gen, shared_data, tmp_path):
    again = CrawlGenerator(N, seed=3, root=shared_data)
    other = CrawlGenerator(N, seed=4, root=shared_data)
    for i in (0, 17, 999, N - 1):
        assert again.document(i) == gen.document(i)
    assert [other.document(i)["text"] for i in range(20)] != [gen.document(i)["text"] for i in range(20)]
    nbytes = gen.write_jsonl(tmp_path, files=3, lo=100, hi=400)
    got = []
    for f in sorted(tmp_path.glob("part-*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            got += [json.loads(line) for line in fh]
    assert [d["id"] for d in got] == [f"s{i}" for i in range(100, 400)]
    assert got[5] == gen.document(105)
    assert nbytes == sum(len(d["text"].encode("utf-8")) for d in got)
    with pytest.raises(ValueError):
        CrawlGenerator(0)
