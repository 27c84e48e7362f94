"""Inputs for the benchmarks: the real NTREX documents, and enlarged inputs built by
replicating and perturbing them (always announced as such in the benchmark output)."""
from __future__ import annotations

import os
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: NTREX-128 file codes -> ISO 639-1.
NTREX_FILES = {"arb": "ar", "deu": "de", "fra": "fr", "heb": "he", "ind": "id", "ita": "it", "jpn": "ja",
               "kor": "ko", "nld": "nl", "pol": "pl", "por": "pt", "rus": "ru", "spa": "es", "tha": "th",
               "tur": "tr", "vie": "vi", "zho-CN": "zh"}


def data_root() -> Path:
    """The sample data root (../shared/data or $POLY_SHARED_DATA)."""
    return Path(os.environ.get("POLY_SHARED_DATA") or REPO.parent / "shared" / "data")


def ntrex_documents(root: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """NTREX-128 documents (123 per language, 18 languages), sentences joined by newlines.

    Returns:
        list of (lang, doc_id, text), grouped by ``DOCUMENT_IDS.tsv``.
    """
    root = Path(root or data_root()) / "ntrex-128"
    doc_ids = [l.strip() for l in (root / "DOCUMENT_IDS.tsv").read_text(encoding="utf-8").splitlines()]
    files = {"en": root / "newstest2019-src.eng.txt"}
    files.update({iso: root / f"newstest2019-ref.{code}.txt" for code, iso in NTREX_FILES.items()})
    out = []
    for lang, path in files.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) != len(doc_ids):
            raise ValueError(f"{path}: {len(lines)} lines but {len(doc_ids)} document ids")
        cur, buf = None, []
        for did, line in zip(doc_ids, lines):
            if did != cur and buf:
                out.append((lang, cur, "\n".join(buf)))
                buf = []
            cur = did
            buf.append(line)
        if buf:
            out.append((lang, cur, "\n".join(buf)))
    return out


def enlarge(docs: list[tuple[str, str]], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Replicate and perturb ``docs`` ((lang, text) pairs) up to ``n`` documents.

    Each copy drops a random sentence and shuffles the order of two sentences, so copies
    are near-duplicates rather than exact ones. This is synthetic data: callers must say so.
    """
    rng = random.Random(seed)
    out = list(docs[:n])
    while len(out) < n:
        lang, text = docs[rng.randrange(len(docs))]
        lines = text.split("\n")
        if len(lines) > 2:
            lines.pop(rng.randrange(len(lines)))
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        out.append((lang, "\n".join(lines)))
    return out
