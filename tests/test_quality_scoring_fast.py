"""Batched quality scoring (issue 19, item 2) against a straightforward reference implementation.

The fast path (:meth:`filters.quality.PerplexityModel.score_texts`, used by the quality stage's
:class:`pipeline.quality.QualityScoreBatch` and by model training) encodes all paragraphs of a
batch to ids in one SentencePiece call, scores each paragraph's joined pieces with KenLM and
assembles the classifier line from those strings. Here small SentencePiece + KenLM models of
en, zh, ja and th (languages with and without spaces) are trained from the real Leipzig
sentences, and every document of a multilingual set (Leipzig and NTREX in those and other
scripts, so many pieces are unknown to a model of another language) is scored both ways:
ppl, token counts and classifier lines must agree.
"""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from filters import quality as Q
from filters.normalize import normalize

LANGS = ("en", "zh", "ja", "th")


def _reference_score(sp, lm, text: str, max_tokens: int, max_chars: int = Q.DEFAULT_MAX_PARAGRAPH_CHARS):
    """The recipe written out plainly, one paragraph and one piece at a time: normalise, split
    into non-empty lines (long ones chunked), SentencePiece pieces per paragraph with every piece
    outside the vocabulary split into characters (a leading word-boundary mark kept as its own
    token), KenLM log10 p with <s> and </s>, ppl = 10 ** (-sum / (pieces + one </s> per
    paragraph)); classifier tokens = structure tokens, then per paragraph its pieces and its
    paragraph token, the first max_tokens joined by spaces."""
    vocab = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    pars = []
    for line in normalize(text or "").split("\n"):
        if line:
            pars.extend(Q.chunk_paragraph(line, max_chars))
    lp, n, feats, unknown = 0.0, 0, list(Q.structure_tokens(pars)), 0
    for par in pars:
        pieces = []
        for p in sp.encode(par, out_type=str):
            if p in vocab:
                pieces.append(p)
                continue
            unknown += 1
            if p.startswith("\u2581") and len(p) > 1:
                pieces.append("\u2581")
                p = p[1:]
            pieces.extend(list(p))
        lp += lm.score(" ".join(pieces), bos=True, eos=True)
        n += len(pieces) + 1
        feats.extend(pieces)
        feats.append(Q.paragraph_token(par))
    ppl = None if n == 0 else 10.0 ** (-lp / n)
    return ppl, n, " ".join(feats[:max_tokens]), unknown


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_data):
    """Per language (en zh ja th): a unigram SentencePiece model (vocab <= 2000) and a 4-gram
    KenLM trained on the first 300 normalised Leipzig sentences, pieces written by the
    reference tokenisation above (not by the code under test)."""
    import kenlm
    import sentencepiece as spm

    from pipeline.quality_models import find_tool, train_kenlm, train_sentencepiece

    d = tmp_path_factory.getbasetemp() / "quality_fast_scoring_models"
    d.mkdir(exist_ok=True)
    out = {}
    for lang in LANGS:
        sp_prefix, lm_path = str(d / f"{lang}.sp"), str(d / f"{lang}.kenlm.binary")
        if not os.path.exists(lm_path):
            lines = (shared_data / "leipzig-sentences" / f"{lang}.txt").read_text(encoding="utf-8").split("\n")
            text = "\n".join(x for x in (normalize(x) for x in lines[:300]) if x)
            txt = d / f"{lang}.txt"
            txt.write_text(text + "\n", encoding="utf-8")
            train_sentencepiece(str(txt), sp_prefix, lang, 2000, 0)
            sp = spm.SentencePieceProcessor(model_file=sp_prefix + ".model")
            vocab = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
            with open(d / f"{lang}.pieces", "w", encoding="utf-8") as f:
                for line in text.split("\n"):
                    ps = [c for p in sp.encode(line, out_type=str) for c in ([p] if p in vocab else list(p))]
                    f.write(" ".join(ps) + "\n")
            train_kenlm(str(d / f"{lang}.pieces"), lm_path, 4, find_tool("lmplz"), find_tool("build_binary"))
        out[lang] = (sp_prefix + ".model", lm_path, spm.SentencePieceProcessor(model_file=sp_prefix + ".model"),
                     kenlm.Model(lm_path))
    return out


def _texts(shared) -> list[str]:
    """Multilingual documents from the sample: Leipzig (7-line documents) in 8 languages of 6
    scripts, NTREX documents, plus edge cases (empty, whitespace, one very long line, mixed
    scripts, controls)."""
    texts = []
    for lang in ("en", "zh", "ja", "th", "ko", "ru", "ar", "de"):
        ls = [x for x in (shared / "leipzig-sentences" / f"{lang}.txt").read_text(encoding="utf-8").split("\n")
              if x.strip()]
        texts += ["\n".join(ls[i:i + 7]) for i in range(300, 370, 7)]  # not the models' training lines
    ids = (shared / "ntrex-128" / "DOCUMENT_IDS.tsv").read_text().split("\n")
    for name in ("newstest2019-ref.zho-CN.txt", "newstest2019-ref.jpn.txt", "newstest2019-ref.tha.txt",
                 "newstest2019-src.eng.txt"):
        lines = (shared / "ntrex-128" / name).read_text(encoding="utf-8").split("\n")
        docs: dict[str, list[str]] = {}
        for doc_id, line in zip(ids, lines):
            if doc_id.strip() and line.strip():
                docs.setdefault(doc_id.strip(), []).append(line)
        texts += ["\n".join(v) for v in list(docs.values())[:4]]
    texts += ["", " \n\t\n ", "\x00\x01\u200b", "abc " * 9000, "x" * 45_000,
              "東京 Tokyo กรุงเทพ Bangkok 北京", "The price rose 3.5% in 2019.\n\n\nไทย ok"]
    return texts


def test_score_texts_equals_reference(models, shared_data):
    texts = _texts(shared_data)
    unknown_docs = 0
    for lang, (sp_path, lm_path, sp, lm) in models.items():
        pm = Q.PerplexityModel(sp_path, lm_path)
        for max_tokens in (Q.DEFAULT_CLASSIFIER_MAX_TOKENS, 37):
            got = pm.score_texts(texts, max_tokens=max_tokens, num_threads=2)
            assert len(got.ppl) == len(got.n_tokens) == len(got.lines) == len(texts)
            for i, text in enumerate(texts):
                ppl, n, line, unknown = _reference_score(sp, lm, text, max_tokens)
                assert got.n_tokens[i] == n, (lang, i)
                if ppl is None:
                    assert got.ppl[i] is None, (lang, i)
                else:
                    assert got.ppl[i] == pytest.approx(ppl, rel=1e-9), (lang, i)
                assert got.lines[i] == line, (lang, i, max_tokens)
                unknown_docs += max_tokens == 37 and unknown > 0
        # the single-document API gives the same figures
        for text in texts[::9]:
            r = pm.perplexity(text)
            b = pm.score_texts([text])
            assert (r.ppl, r.n_tokens) == (b.ppl[0], b.n_tokens[0])
            assert Q.classifier_line(r.features) == b.lines[0]
    assert unknown_docs > 50  # the unknown-piece path (other scripts) was exercised


def test_thread_count_does_not_change_scores(models, shared_data):
    texts = _texts(shared_data)
    sp_path, lm_path, _, _ = models["ja"]
    pm = Q.PerplexityModel(sp_path, lm_path)
    one = pm.score_texts(texts, num_threads=1)
    two = pm.score_texts(texts, num_threads=2)
    assert one.ppl == two.ppl and one.n_tokens == two.n_tokens and one.lines == two.lines


def test_score_batch_mixed_languages(models, shared_data, tmp_path):
    """QualityScoreBatch on one Arrow batch with rows of four languages (and one without a
    model) interleaved: per row the reference ppl, same columns plus the scores."""
    from pipeline.quality import QualityScoreBatch

    texts = _texts(shared_data)[::3]
    langs = [LANGS[i % len(LANGS)] for i in range(len(texts))] + ["fr"]
    texts = texts + ["Le conseil s'est réuni lundi."]
    n = len(texts)
    batch = pa.RecordBatch.from_pydict({
        "id": [f"d{i}" for i in range(n)], "source": ["t"] * n, "tier": ["web"] * n, "lang": langs,
        "text": texts, "meta": [json.dumps({})] * n})
    fn = QualityScoreBatch({lang: (m[0], m[1]) for lang, m in models.items()}, None,
                           Q.DEFAULT_MAX_PARAGRAPH_CHARS, Q.DEFAULT_CLASSIFIER_MAX_TOKENS)
    out = fn(batch)
    assert out.schema.names == batch.schema.names + ["ppl", "quality_score", "_n_tokens", "_q_error", "_lm_seen"]
    ppl, ntok = out.column("ppl").to_pylist(), out.column("_n_tokens").to_pylist()
    assert out.column("_q_error").to_pylist() == [None] * n
    for i, (lang, text) in enumerate(zip(langs, texts)):
        if lang == "fr":
            assert ntok[i] == -1 and ppl[i] is None
            continue
        _, _, sp, lm = models[lang]
        rp, rn, _, _ = _reference_score(sp, lm, text, Q.DEFAULT_CLASSIFIER_MAX_TOKENS)
        assert ntok[i] == rn and (ppl[i] is None if rp is None else ppl[i] == pytest.approx(rp, rel=1e-9)), i


def test_has_url_equals_the_url_pattern(shared_data):
    """The structure token's URL test (:func:`filters.quality.has_url`) answers as the pattern
    it replaces (``_URL_RE.search``) on real web text, reference text and edge cases."""
    import gzip

    pars = []
    for f in sorted((shared_data / "web-html").glob("*.html"))[:40]:
        pars += [p for p in normalize(f.read_text(encoding="utf-8", errors="replace")).split("\n") if p]
    for f in sorted((shared_data / "dolma-tests").glob("*.json*.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            pars += [p for line in fh for p in normalize(json.loads(line)["text"]).split("\n") if p]
    pars += [p for p in normalize((shared_data / "leipzig-sentences" / "ja.txt").read_text(encoding="utf-8"))
             .split("\n") if p]
    pars += ["a.com", ".com", "-.com", "x.comx", "x.com.", "mail a@b", "@b", "a@", "http:x", "www.", "A.com",
             "é.com", "x.html", "x.htm", "x.aspx", "x.asp", "3.5 percent", "see data.wien.gv.at"]
    got = [Q.has_url(p) for p in pars]
    assert got == [Q._URL_RE.search(p) is not None for p in pars]
    assert 20 < sum(got) < len(pars)


def test_parallel_training_gives_the_same_models(tmp_path, shared_data):
    """Languages trained in a pool of 2 processes (classifier and cv folds fitted concurrently)
    give the same model files and manifest figures as one after the other in this process.
    (A SentencePiece .model records the path of its training text, which lives in each run's own
    temporary folder; its pieces and scores are compared instead of its bytes.)"""
    import sentencepiece as spm

    from pipeline.quality_models import train_quality_models
    from tests.test_quality import _ref_docs, _web_docs_en

    docs = _ref_docs(shared_data, "en", "eng")[:120] + _ref_docs(shared_data, "de", "deu")[:100] \
        + _web_docs_en(shared_data)[:30]
    runs = {}
    for workers in (1, 2):
        d = str(tmp_path / f"w{workers}")
        runs[workers] = (d, train_quality_models([dict(x) for x in docs], d, vocab_size=1000, cv_folds=2,
                                                 workers=workers, input_desc="test"))
    (d1, m1), (d2, m2) = runs[1], runs[2]
    assert m1["languages"] == m2["languages"] and m1["classifier"] == m2["classifier"]
    assert m1["classifier"]["train_neg"] > 0 and set(m1["languages"]) == {"en", "de"}
    names = sorted(os.listdir(d1))
    assert names == sorted(os.listdir(d2)) and "quality-classifier.bin" in names
    for name in names:
        a, b = os.path.join(d1, name), os.path.join(d2, name)
        if name.endswith(".sp.model"):
            sa, sb = spm.SentencePieceProcessor(model_file=a), spm.SentencePieceProcessor(model_file=b)
            assert [(sa.id_to_piece(i), sa.get_score(i)) for i in range(sa.get_piece_size())] == \
                [(sb.id_to_piece(i), sb.get_score(i)) for i in range(sb.get_piece_size())]
        elif name != "manifest.json":
            with open(a, "rb") as fa, open(b, "rb") as fb:
                assert fa.read() == fb.read(), name
