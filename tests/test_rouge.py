"""filters.rouge: Rouge-L on our segmentation (the rouge_score non-ASCII trap), bit-parallel LCS,
exact pruning bounds."""
from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

from filters.rouge import (RougeTokenizer, length_compatible, lcs_length, min_overlap,
                           occurrence_tokens, prefix_tokens, rouge_l, rouge_l_text, rouge_tokens,
                           sequential_filter, indexed_filter)

SAME = {
    "zh": "请为下面的句子写一个简短的摘要。",
    "ja": "次の文章を読んで、短い要約を書いてください。",
    "th": "เขียนสรุปสั้นๆ ของบทความต่อไปนี้",
    "ar": "اكتب ملخصا قصيرا للمقال التالي.",
    "ru": "Напишите краткое изложение следующей статьи.",
}
UNRELATED = {
    "zh": ("请为下面的句子写一个简短的摘要。", "告诉我一个关于猫的笑话。"),
    "ja": ("次の文章を読んで、短い要約を書いてください。", "東京で一番高い建物はどれですか。"),
    "th": ("เขียนสรุปสั้นๆ ของบทความต่อไปนี้", "แมวชอบกินปลามาก"),
    "ar": ("اكتب ملخصا قصيرا للمقال التالي.", "ما هي عاصمة فرنسا؟"),
}


@pytest.mark.parametrize("lang", sorted(SAME))
def test_identical_non_latin_instructions_score_one(lang):
    # rouge_score's default tokenizer gives 0.0 here (all tokens dropped): the known trap
    default = rouge_scorer.RougeScorer(["rougeL"]).score(SAME[lang], SAME[lang])["rougeL"].fmeasure
    assert default == 0.0
    assert len(rouge_tokens(SAME[lang], lang)) >= 3
    assert rouge_l_text(SAME[lang], SAME[lang], lang) == 1.0


@pytest.mark.parametrize("lang", sorted(UNRELATED))
def test_unrelated_instructions_score_low(lang):
    a, b = UNRELATED[lang]
    assert rouge_l_text(a, b, lang) < 0.3


def test_equals_rouge_score_on_english():
    texts = [
        "Generate a one sentence description for each of the following people",
        "Write a one sentence description of each person below",
        "What is the relation between the given pairs",
        "Find the relation between the two given words",
        "Give me a list of five healthy breakfast ideas without eggs",
        "List five healthy breakfast ideas that do not contain eggs or milk",
    ]
    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for a in texts:
        for b in texts:
            ref = sc.score(a, b)["rougeL"].fmeasure
            assert rouge_l_text(a, b, "en") == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("lang", ["zh", "ja", "th", "ar", "en"])
def test_equals_rouge_score_with_our_tokenizer(lang):
    sc = rouge_scorer.RougeScorer(["rougeL"], tokenizer=RougeTokenizer(lang))
    a = SAME.get(lang, "Write a short summary of the following article.")
    b = UNRELATED.get(lang, ("", "Write a very short summary of this news article please."))[1]
    for x, y in [(a, b), (a, a + b), (b, a)]:
        assert rouge_l_text(x, y, lang) == pytest.approx(sc.score(x, y)["rougeL"].fmeasure, abs=1e-12)


def _lcs_dp(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            t[i][j] = t[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(t[i - 1][j], t[i][j - 1])
    return t[-1][-1]


def test_bit_parallel_lcs_equals_dp_table():
    rng = random.Random(0)
    for _ in range(2000):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == _lcs_dp(a, b)
    assert rouge_l([], ["a"]) == 0.0 and rouge_l(["a"], []) == 0.0


def test_pruning_bounds_never_miss_a_pair():
    """Every pair with F >= t passes the length filter and shares a prefix token."""
    rng = random.Random(1)
    for t in (0.5, 0.7):
        rank = lambda tok: (hash(tok[0]) % 7, tok)  # noqa: E731 - any global total order
        found = 0
        for _ in range(3000):
            a = [rng.choice("abcdefg") for _ in range(rng.randint(1, 14))]
            b = list(a)
            for _ in range(rng.randint(0, 5)):  # perturb
                op = rng.random()
                if op < 0.4 and b:
                    b.pop(rng.randrange(len(b)))
                elif op < 0.8:
                    b.insert(rng.randint(0, len(b)), rng.choice("abcdefgh"))
                elif b:
                    b[rng.randrange(len(b))] = rng.choice("xyz")
            f = rouge_l(a, b)
            if f >= t:
                found += 1
                assert length_compatible(len(a), len(b), t)
                assert lcs_length(a, b) >= min_overlap(len(a), t)
                assert set(prefix_tokens(a, t, rank)) & set(prefix_tokens(b, t, rank))
        assert found > 300
    assert occurrence_tokens("aba") == [("a", 0), ("b", 0), ("a", 1)]
    with pytest.raises(ValueError):
        min_overlap(3, 0.0)


def test_sequential_filter_against_pool_as_it_stands():
    pool = [rouge_tokens("write a poem about the sea", "en")]
    cands = [rouge_tokens(s, "en") for s in (
        "write a poem about the sea please",      # near pool[0] -> dropped
        "explain how a bicycle gear works",       # new -> kept
        "explain how a bicycle gear works well",  # near the kept candidate above -> dropped
        "list three capital cities in asia")]     # new -> kept
    keep, best = sequential_filter(pool, cands)
    assert keep == [False, True, False, True]
    assert best[0] >= 0.7 and best[2] >= 0.7 and best[1] < 0.7 and best[3] < 0.7


def _perturbed(rng, n_base=25, n=600, vocab="abcdefghijklmnopqrstuvwxyz"):
    base = [[rng.choice(vocab) for _ in range(rng.randint(1, 16))] for _ in range(n_base)]
    out = []
    for _ in range(n):
        w = list(rng.choice(base))
        for _ in range(rng.randint(0, 4)):
            op = rng.random()
            if op < 0.3 and w:
                w.pop(rng.randrange(len(w)))
            elif op < 0.7:
                w.insert(rng.randint(0, len(w)), rng.choice(vocab))
            elif w:
                w[rng.randrange(len(w))] = rng.choice(vocab)
        out.append(w)
    return base, out


@pytest.mark.parametrize("floor", [0.5, 0.6, 0.7])
def test_indexed_filter_equals_the_plain_filter(floor):
    """The pruned filter decides exactly as the plain one (pool as it stands), and its maxima
    equal the exhaustive maxima wherever they reach the floor."""
    rng = random.Random(7)
    base, cands = _perturbed(rng)
    cands += [[], ["a"], base[0]]  # empty (kept, never indexed), 1 token, an exact copy
    pool = base[:8]
    keep, _ = sequential_filter(pool, cands)
    k2, pool_max, new_max = indexed_filter(pool, cands, 0.7, floor)
    assert k2 == keep
    assert 100 < sum(keep) < len(keep) - 100  # both decisions well represented
    cur = [list(p) for p in pool]
    for c, k, pm, nm in zip(cands, keep, pool_max, new_max):
        ex_pool = max((rouge_l(p, c) for p in pool), default=0.0)
        ex_new = max((rouge_l(p, c) for p in cur[len(pool):]), default=0.0)
        assert (pm == ex_pool) if ex_pool >= floor else pm < floor
        assert (nm == ex_new) if ex_new >= floor else nm < floor
        if k:
            cur.append(c)
    # grow=False: every candidate against the initial pool only
    k3, pm3, nm3 = indexed_filter(pool, cands, 0.7, floor, grow=False)
    assert k3 == [max((rouge_l(p, c) for p in pool), default=0.0) < 0.7 for c in cands]
    assert set(nm3) == {0.0}
    with pytest.raises(ValueError):
        indexed_filter(pool, cands, 0.7, 0.8)


def test_indexed_filter_prunes_pairs():
    """The index scores far fewer pairs exactly than the plain filter (the speed comes from
    there), on inputs where most pairs share some tokens."""
    rng = random.Random(3)
    base, cands = _perturbed(rng, n_base=40, n=800, vocab=[f"w{i}" for i in range(300)])
    calls = [0]

    def counted(a, b):
        calls[0] += 1
        return lcs_length(a, b)

    keep, _ = sequential_filter(base, cands, lcs=counted)
    plain = calls[0]
    calls[0] = 0
    assert indexed_filter(base, cands, 0.7, 0.5, lcs=counted)[0] == keep
    assert calls[0] * 20 < plain, (calls[0], plain)
