"""filters/minhash.py: shingling, hashing, datasketch-exact signatures, LSH parameters."""
from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from filters import minhash as mh
from filters.minhash import (MAX_HASH, MERSENNE_PRIME, MinHashConfig, MinHasher, band_keys, candidate_probability, jaccard,
                             optimal_param, poly64, shingle_units, shingles)

NTREX_FILES = {"en": "newstest2019-src.eng.txt", "zh": "newstest2019-ref.zho-CN.txt",
               "ja": "newstest2019-ref.jpn.txt", "th": "newstest2019-ref.tha.txt",
               "ar": "newstest2019-ref.arb.txt", "he": "newstest2019-ref.heb.txt",
               "ru": "newstest2019-ref.rus.txt", "ko": "newstest2019-ref.kor.txt",
               "fr": "newstest2019-ref.fra.txt"}


def ntrex_docs(root, lang):
    """NTREX documents of one language: lines grouped by DOCUMENT_IDS.tsv."""
    ids = (root / "ntrex-128" / "DOCUMENT_IDS.tsv").read_text().splitlines()
    lines = (root / "ntrex-128" / NTREX_FILES[lang]).read_text(encoding="utf-8").splitlines()
    docs: dict[str, list[str]] = {}
    for i, line in zip(ids, lines):
        docs.setdefault(i.split("\t")[0], []).append(line)
    return ["\n".join(v) for v in docs.values()]


EDGE_DOCS = ["", None, "   ", "!!! ...", "hi", "a b", "a b c d e", "a b c d e f", "東京", "。。「」",
             "ภาษาไทย", "l'homme d'état est là", "e-mail don't 3.5 1,000"]


@pytest.mark.parametrize("hash_name", ["poly64", "sha1_32", "sha1_64"])
def test_signatures_equal_datasketch(shared_data, hash_name):
    cfg = MinHashConfig(hash=hash_name, num_perm=128, seed=1)
    docs, langs = [], []
    for lang in ("en", "zh", "ja", "th", "ar"):
        d = ntrex_docs(shared_data, lang)[:12]
        docs += d
        langs += [lang] * len(d)
    docs += EDGE_DOCS
    langs += ["fr"] * len(EDGE_DOCS)
    hasher = MinHasher(cfg)
    h, off = hasher.shingle_hashes(docs, langs)
    sig = hasher.signatures(h, off)
    assert sig.dtype == np.uint32 and sig.shape == (len(docs), 128)
    fn = mh.SCALAR_HASHES[hash_name]
    for d, (t, l) in enumerate(zip(docs, langs)):
        sh = shingles(t, l, cfg)
        assert [int(x) for x in h[off[d]:off[d + 1]]] == [fn(s) for s in sh]
        ref = MinHash(num_perm=128, seed=1, hashfunc=fn)
        ref.update_batch(sh)
        np.testing.assert_array_equal(ref.hashvalues, sig[d].astype(np.uint64))
    if hash_name == "sha1_32":  # datasketch's default hash function
        ref = MinHash(num_perm=128, seed=1)
        ref.update_batch(shingles(docs[0], "en", cfg))
        np.testing.assert_array_equal(ref.hashvalues, sig[0])


@pytest.mark.parametrize("num_perm,seed", [(16, 1), (128, 1), (256, 42)])
def test_permutations_equal_datasketch(num_perm, seed):
    a, b = mh.permutations(num_perm, seed)
    ref = MinHash(num_perm=num_perm, seed=seed).permutations
    np.testing.assert_array_equal(a, ref[0])
    np.testing.assert_array_equal(b, ref[1])


def test_mersenne_reduction_edge_values():
    """Values whose fold lands on or above p take the rare correction path; compare with
    exact integer arithmetic on crafted inputs (a=1, b=0 so the permuted value is h itself)."""
    p = MERSENNE_PRIME
    crafted = [0, 1, p - 1, p, p + 1, p + 6, 2 * p, 2 ** 61, 2 ** 62 - 1, 2 ** 64 - 1,
               7 * 2 ** 61 + p - 1, 7 * 2 ** 61 + p - 7, 2 ** 64 - 8, 12345678901234567]
    h = np.array(crafted, dtype=np.uint64)
    a = np.ones(1, np.uint64)
    b = np.zeros(1, np.uint64)
    got = mh._permute_min_chunk(h, a, b, np.arange(len(h)))[:, 0]
    want = [(x % p) & MAX_HASH for x in crafted]
    assert [int(g) for g in got] == want


def test_poly64_vectorised_equals_scalar():
    rng = random.Random(3)
    alphabet = "abcdé東京ไทย€ \u0301"
    units = ["".join(rng.choice(alphabet.replace(" ", "")) for _ in range(rng.randint(1, 9)))
             for _ in range(300)]
    bufs = [" ".join(units[i:i + rng.randint(1, 40)]).encode() for i in range(0, 250, 7)]
    h, counts = mh._hash_group(bufs, 3)
    want = []
    for buf in bufs:
        u = buf.decode().split(" ")
        sh = [" ".join(u[i:i + 3]) for i in range(len(u) - 2)] if len(u) >= 3 else [" ".join(u)]
        want += [poly64(s.encode()) for s in sh]
        assert len(sh) > 0
    assert [int(x) for x in h] == want
    assert int(counts.sum()) == len(want)


@pytest.mark.parametrize("threshold,num_perm,weights", [(0.8, 128, (0.5, 0.5)), (0.5, 128, (0.5, 0.5)),
                                                        (0.7, 64, (0.3, 0.7)), (0.9, 256, (0.5, 0.5))])
def test_optimal_param_equals_datasketch(threshold, num_perm, weights):
    assert optimal_param(threshold, num_perm, *weights) == _optimal_param(threshold, num_perm, *weights)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    assert optimal_param(threshold, num_perm, *weights) == (lsh.b, lsh.r)


def test_optimal_param_rejects_bad_input():
    with pytest.raises(ValueError):
        optimal_param(1.5, 128)
    with pytest.raises(ValueError):
        optimal_param(0.8, 128, 0.6, 0.6)
    with pytest.raises(ValueError):
        MinHashConfig(hash="md5")


def test_band_keys_match_datasketch_buckets():
    """Equal band keys <=> same datasketch MinHashLSH bucket."""
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 4, size=(40, 128)).astype(np.uint32)  # tiny alphabet: many collisions
    b, r = 16, 2
    keys = band_keys(sigs, b, r)
    lsh = MinHashLSH(num_perm=128, params=(b, r))
    for i, s in enumerate(sigs):
        lsh.insert(i, MinHash(num_perm=128, hashvalues=s.astype(np.uint64)))
    for i, s in enumerate(sigs):
        ours = {j for j in range(len(sigs)) if any(keys[i][k] == keys[j][k] for k in range(b))}
        assert ours == set(lsh.query(MinHash(num_perm=128, hashvalues=s.astype(np.uint64))))


def test_short_documents_are_compared_and_do_not_collide():
    cfg = MinHashConfig()
    texts = ["Hello world", "Goodbye world", "Hello world!", "hi", "yes", "ok then", "東京", "大阪"]
    for t in texts:
        assert len(shingles(t, "en", cfg)) == 1
    sig = MinHasher(cfg).sign(texts, ["en"] * len(texts))
    rows = {tuple(s) for s in sig}
    assert len(rows) == len(texts) - 1          # only "Hello world" == "Hello world!" (punctuation)
    assert (sig[0] == sig[2]).all()
    assert not (sig == MAX_HASH).all(axis=1).any()  # every short doc has a real signature
    empty = MinHasher(cfg).sign(["", "  ", "..."])
    assert (empty == MAX_HASH).all()


def test_script_decides_shingle_mode_not_label():
    cfg = MinHashConfig()
    zh = "今天天气很好，我们去公园散步吧。"
    assert shingle_units(zh, "zh", cfg)[0] == "char"
    assert shingle_units(zh, "en", cfg) == shingle_units(zh, "ja", cfg) == shingle_units(zh, None, cfg)
    assert shingle_units("สวัสดีครับ ผมชื่อสมชาย", "th", cfg)[0] == "char"
    mode, units = shingle_units("The Quick, brown FOX -- jumps!", "en", cfg)
    assert mode == "word" and units == ["the", "quick", "brown", "fox", "jumps"]
    mode, units = shingle_units("Ｈｅｌｌｏ　ＷＯＲＬＤ", "en", cfg)   # NFKC folds full-width forms
    assert units == ["hello", "world"]


@pytest.mark.parametrize("lang", ["ar", "he", "th", "zh", "ja", "ko", "ru", "en"])
def test_ntrex_no_false_duplicates_and_small_edits_found(shared_data, lang):
    """Distinct NTREX documents stay apart; a copy with a few characters changed is close."""
    cfg = MinHashConfig()
    docs = ntrex_docs(shared_data, lang)
    rng = random.Random(11)
    hasher = MinHasher(cfg)
    h, off = hasher.shingle_hashes(docs, [lang] * len(docs))
    sets = mh.unique_sorted(h, off)
    b, r = optimal_param(0.8, cfg.num_perm)
    sig = hasher.signatures(h, off)
    keys = band_keys(sig, b, r)
    buckets: dict = {}
    for d, ks in enumerate(keys):
        for k, key in enumerate(ks):
            buckets.setdefault((k, key), set()).add(d)
    pairs = {(x, y) for s in buckets.values() for x in s for y in s if x < y}
    for x, y in pairs:  # the rare NTREX pairs that share a band are genuinely similar
        assert jaccard(sets[x], sets[y]) > 0.3, (x, y)
    # near copies: change 3 characters in the middle of each of the 10 longest documents. Each
    # change removes up to n shingles, so the copies have Jaccard ~0.9-0.97 with the original;
    # with (bands, rows) = (9, 13) the LSH finds a pair at J = 0.9 with probability 0.93 and at
    # J = 0.95 with 0.998 (short documents with J near the 0.8 threshold are found only with
    # the S-curve's probability, which is what LSH promises).
    for d in sorted(range(len(docs)), key=lambda i: -len(sets[i]))[:10]:
        t = list(docs[d])
        letters = [i for i, c in enumerate(t) if c.isalpha()]
        for i in rng.sample(letters[len(letters) // 4: 3 * len(letters) // 4], 3):
            t[i] = "x" if t[i] != "x" else "y"
        copy = "".join(t)
        s2 = hasher.sign([copy], [lang])[0]
        j = jaccard(sets[d], np.unique(hasher.shingle_hashes([copy], [lang])[0]))
        assert j > 0.88, (lang, d, j)
        k2 = band_keys(s2[None, :], b, r)[0]
        assert any(k2[k] == keys[d][k] for k in range(b)), (lang, d, j)


def test_numba_kernel_mersenne_edge_values():
    """The compiled loop takes the same rare correction path as the numpy one."""
    kernel = mh._numba_kernel()
    if kernel is None:
        pytest.skip("numba not available")
    p = MERSENNE_PRIME
    crafted = [0, 1, p - 1, p, p + 1, p + 6, 2 * p, 2 ** 61, 2 ** 62 - 1, 2 ** 64 - 1,
               7 * 2 ** 61 + p - 1, 7 * 2 ** 61 + p - 7, 2 ** 64 - 8, 12345678901234567]
    h = np.array(crafted, dtype=np.uint64)
    out = np.full((len(h), 1), MAX_HASH, np.uint64)
    kernel(h, np.arange(len(h) + 1, dtype=np.int64), np.ones(1, np.uint64), np.zeros(1, np.uint64), out)
    assert [int(g) for g in out[:, 0]] == [(x % p) & MAX_HASH for x in crafted]


@pytest.mark.parametrize("num_perm,seed", [(128, 1), (7, 99)])
def test_numba_and_numpy_backends_agree(shared_data, num_perm, seed):
    if mh._numba_kernel() is None:
        pytest.skip("numba not available")
    docs = ntrex_docs(shared_data, "en")[:20] + ntrex_docs(shared_data, "ja")[:20] + EDGE_DOCS
    langs = ["en"] * 20 + ["ja"] * 20 + ["fr"] * len(EDGE_DOCS)
    h, off = MinHasher(MinHashConfig()).shingle_hashes(docs, langs)
    rng = np.random.default_rng(seed)
    h = np.concatenate([h, rng.integers(0, 2 ** 64 - 1, 5000, dtype=np.uint64, endpoint=True)])
    off = np.concatenate([off, [len(h)]])
    a = mh.minhash_signatures(h, off, num_perm, seed, backend="numba")
    b = mh.minhash_signatures(h, off, num_perm, seed, backend="numpy", chunk=333)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        mh.minhash_signatures(h, off, num_perm, seed, backend="gpu")


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.85, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_recall_param_reaches_min_recall_at_threshold(threshold, num_perm):
    from filters.minhash import recall_param, s_curve

    b, r = recall_param(threshold, num_perm, 0.95)
    assert b * r <= num_perm
    assert candidate_probability(threshold, b, r) >= 0.95
    # the cheapest such banding: no other (b', r') reaching 0.95 has fewer false candidates
    from filters.minhash import _fp_probability

    cost = _fp_probability(threshold, b, r)
    for r2 in range(1, num_perm + 1):
        for b2 in range(1, num_perm // r2 + 1):
            if candidate_probability(threshold, b2, r2) >= 0.95:
                assert _fp_probability(threshold, b2, r2) >= cost - 1e-9
                break
    curve = s_curve(b, r, threshold)
    assert curve[f"{threshold:.2f}"] >= 0.95 and list(curve.values()) == sorted(curve.values())


def test_recall_param_default_banding():
    from filters.minhash import recall_param

    assert recall_param(0.8, 128) == (13, 7)
    assert candidate_probability(0.8, *optimal_param(0.8, 128)) < 0.45   # datasketch's 9 x 13
    with pytest.raises(ValueError, match="raise num_perm"):
        recall_param(0.5, 2, 0.9)
