"""Inputs for the benchmarks: the real NTREX documents, and enlarged inputs built by
replicating and perturbing them (always announced as such in the benchmark output)."""
from __future__ import annotations

import json
import os
import sys
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
#: NTREX-128 file codes -> ISO 639-1.
NTREX_FILES = {"arb": "ar", "deu": "de", "fra": "fr", "heb": "he", "ind": "id", "ita": "it", "jpn": "ja",
               "kor": "ko", "nld": "nl", "pol": "pl", "por": "pt", "rus": "ru", "spa": "es", "tha": "th",
               "tur": "tr", "vie": "vi", "zho-CN": "zh"}


def data_root() -> Path:
    """The sample data root (../shared/data or $POLY_SHARED_DATA)."""
    return Path(os.environ.get("POLY_SHARED_DATA") or REPO.parent / "shared" / "data")


def ntrex_documents(root: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """NTREX-128 documents (123 per language, 18 languages), sentences joined by newlines,
    read by the pipeline's own ``ntrex`` reader (:func:`pipeline.readers.read_source_file`).

    Returns:
        list of (lang, doc_id, text), grouped by ``DOCUMENT_IDS.tsv``.

    Raises:
        ValueError: the reader returned a quarantine record (a damaged sample file).
    """
    from pipeline.readers import read_source_file

    root = Path(root or data_root())
    files = {"en": root / "ntrex-128" / "newstest2019-src.eng.txt"}
    files.update({iso: root / "ntrex-128" / f"newstest2019-ref.{code}.txt" for code, iso in NTREX_FILES.items()})
    source = {"name": "ntrex", "format": "ntrex", "tier": "reference"}
    out = []
    for lang, path in files.items():
        for rec in read_source_file(str(path), source, str(root)):
            if rec.get("reason"):
                raise ValueError(f"{path}: {rec['reason']}: {rec.get('detail')}")
            meta = rec["meta"] if isinstance(rec["meta"], dict) else json.loads(rec["meta"])
            out.append((lang, meta["doc_id"], rec["text"]))
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


def short_sentences(split: str, root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Short sentences of known language for LID threshold tuning and measurement (18 languages).

    ``split="tune"``: Leipzig Wortschatz sentences (news/web, ~1000 per language) and the UD
    ``*-dev`` / ``*-train`` files (native treebanks: nl, he, id, ja, ko, vi, zh).
    ``split="measure"``: NTREX-128 sentences (1,997 per language, plus the English source) and
    the UD ``*-test`` files (PUD and native treebanks). The two share no file.

    Returns:
        list of (ISO 639-1 language, sentence), in file order.

    Raises:
        ValueError: unknown split.
    """
    root = Path(root or data_root())
    out: list[tuple[str, str]] = []
    if split == "tune":
        for path in sorted((root / "leipzig-sentences").glob("*.txt")):
            if path.stem == "LICENSE":
                continue
            out.extend((path.stem, ln.split("\t")[-1].strip()) for ln in path.read_text(encoding="utf-8").splitlines()
                       if ln.strip())
        ud = [p for p in sorted((root / "ud").glob("*.text.tsv")) if "-ud-test" not in p.name]
    elif split == "measure":
        files = {"en": root / "ntrex-128" / "newstest2019-src.eng.txt"}
        files.update({iso: root / "ntrex-128" / f"newstest2019-ref.{c}.txt" for c, iso in NTREX_FILES.items()})
        for lang, path in files.items():
            out.extend((lang, ln.strip()) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
        ud = [p for p in sorted((root / "ud").glob("*.text.tsv")) if "-ud-test" in p.name]
    else:
        raise ValueError(f"split must be 'tune' or 'measure', got {split!r}")
    for path in ud:
        lang = path.name.split("_")[0]
        for ln in path.read_text(encoding="utf-8").splitlines():
            parts = ln.split("\t")
            if len(parts) >= 2 and parts[1].strip():
                out.append((lang, parts[1].strip()))
    return out


def ratios_path() -> Path:
    """Where the benchmarks append their headline ratios: ``$BENCH_RATIOS`` or
    ``build/bench/ratios.jsonl`` (``make bench`` empties it first, then prints it with
    ``bench/summary.py``)."""
    return Path(os.environ.get("BENCH_RATIOS") or REPO / "build" / "bench" / "ratios.jsonl")


def record_ratio(bench: str, step: str, ours: str, reference: str, ratio: float, target: float,
                 unit: str = "x", note: str = "") -> None:
    """Append one headline ratio of a benchmark run to :func:`ratios_path` (one JSON line).

    Args:
        bench: the benchmark's file stem (``bench_quality``).
        step: what is compared, in issue 19's words (``tokenize job``).
        ours: our figure with its unit, as printed (``"1,234 docs/s per core"``).
        reference: the raw primitive or peer measured in the same run, with its unit.
        ratio: ours / reference (a float; ``unit="%"`` prints it as a percentage).
        target: the ratio issue 19 asks for (ratio >= target is "met").
        unit: ``"x"`` or ``"%"``, how the ratio and target are printed.
        note: how it was measured (rounds, median, load), shown under the table.

    Raises:
        ValueError: ``unit`` is neither ``"x"`` nor ``"%"``.
    """
    if unit not in ("x", "%"):
        raise ValueError(f"unit must be 'x' or '%', got {unit!r}")
    path = ratios_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"bench": bench, "step": step, "ours": ours, "reference": reference, "ratio": float(ratio),
           "target": float(target), "unit": unit, "note": note}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and every live descendant, each
    with the children it reaped (``children_user``/``children_system``): under a local Spark master
    the JVM is this driver's child and pyspark's daemon and Python workers are the JVM's, so the
    difference of two readings is a whole Spark run's CPU on every core. On a shared machine
    (this one's scheduler splits the CPU between sessions) documents per CPU-second compare the
    work itself where wall time x cores would not.

    Returns:
        seconds (float); a process that exits between listing and reading is skipped.
    """
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def stage_input_rows(n: int, seed: int) -> list[tuple]:
    """``n`` SYNTHETIC ingest rows for the Spark stage benchmarks: NTREX replicated and perturbed
    (:func:`enlarge`), every fifth a two-line web page (the rules remove a share of them). Each
    row: ``(id, source, tier, url, text, meta, lang_declared, doc_key, ts)`` as strings/None."""
    docs = enlarge([(lang, text) for lang, _, text in ntrex_documents()], n, seed=seed)
    rows = []
    for k, (lang, text) in enumerate(docs):
        web = k % 5 == 0
        if web:
            text = "\n".join(text.split("\n")[:2])
        rows.append((f"b{k}", "bench", "web" if web else "reference", None, text,
                     json.dumps({"path": "bench", "key": k}), lang, f"b{k}", None))
    return rows
