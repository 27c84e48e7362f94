"""Held-out acceptance check (issue 14): clean reference paragraphs the quality models never
trained on, run as tier ``web`` through langid + rules + quality with the build's own models
and configuration. Used by tests/test_heldout_acceptance.py and runnable on any build::

    PYTHONPATH=$PWD .venv/bin/python tests/heldout_clean.py <out> [<models dir>]

Documents: the reference-tier documents of the langid output (NTREX news documents, UD
documents, Leipzig sentence groups, UDHR) whose group key falls in the quality models'
HELD-OUT split (``filters.quality.split_key`` / ``is_heldout`` with the manifest's fraction) and
whose text is not among the LM training hashes; so neither KenLM nor the classifier saw them.
(They did enter the threshold calibration as held-out scores, one score per source document;
here they are re-formatted, so the scores differ.) Re-formatted as web text: every 4
consecutive lines (sentences) become one paragraph (joined by a space, or nothing for zh/ja),
as in a Wikipedia or news page; source documents shorter than MIN_CHARS characters (Leipzig
sentences, short UD documents) are merged, in id order, with the next ones of their source (a short remainder is dropped).
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter

import pyarrow as pa

SOURCES = ("ntrex", "ud", "leipzig", "udhr")
#: Fewest characters of a held-out document (space-delimited scripts; zh/ja/ko: MIN_CHARS_CJK).
MIN_CHARS = 600
MIN_CHARS_CJK = 250


def heldout_clean_docs(out: str, models_dir: str | None = None) -> list[dict]:
    """The held-out clean documents of a build, as web-tier paragraphs.

    Returns:
        dicts ``id, source, tier="web", lang (the language of the original), text, meta``.

    Raises:
        FileNotFoundError: no models manifest under ``<out>/models/quality``.
    """
    import pyarrow.dataset as ds

    from filters import quality as Q

    mdir = models_dir or os.path.join(out, "models", "quality")
    man = Q.load_manifest(mdir)
    frac = float(man["split"]["heldout_fraction"])
    hpath = os.path.join(mdir, (man.get("lm_train_hashes") or {}).get("path") or Q.LM_TRAIN_HASHES)
    hashes = Q.load_text_hashes(hpath) if os.path.exists(hpath) else None
    t = ds.dataset(os.path.join(out, "langid"), format="parquet", partitioning="hive").to_table(
        columns=["id", "source", "tier", "lang", "text", "meta"], filter=ds.field("source").isin(list(SOURCES)))
    groups: dict[tuple[str, str], list[list[str]]] = {}
    for r in sorted(t.to_pylist(), key=lambda r: r["id"]):
        if r["tier"] != "reference" or not r["lang"] or not r["text"]:
            continue
        key = Q.split_key(r["id"], r["source"], r["lang"], r["meta"])
        if not Q.is_heldout(key, frac):
            continue
        if hashes is not None and Q.hashes_contain(hashes, [Q.text_hash(r["lang"], r["text"])])[0]:
            continue
        groups.setdefault((r["lang"], r["source"]), []).append([ln.strip() for ln in r["text"].split("\n")
                                                                 if ln.strip()])
    docs = []
    for (lang, source), texts in sorted(groups.items()):
        # short source documents (Leipzig sentences, UD documents of 1-5 sentences) are merged in id
        # order into documents of at least MIN_CHARS characters (a web page, not a sentence)
        sep = "" if lang in ("zh", "ja") else " "
        lines: list[str] = []
        for k, ls in enumerate(texts):
            lines.extend(ls)
            if sum(map(len, lines)) >= (MIN_CHARS_CJK if lang in ("zh", "ja", "ko") else MIN_CHARS):
                paras = [sep.join(lines[i:i + 4]) for i in range(0, len(lines), 4)]
                docs.append({"id": f"heldout/{lang}/{source}/{len(docs)}", "source": source, "tier": "web",
                             "lang": lang, "text": "\n".join(paras), "meta": "{}"})
                lines = []
    return docs


def run_chain(out: str, config: dict, docs: list[dict], models_dir: str | None = None) -> dict:
    """langid + rules + quality (the stages' own batch functions, the build's models and
    resolved thresholds) on ``docs``.

    Returns:
        ``{lang: {"n", "kept", "langid": Counter of reasons, "rules": Counter, "quality": Counter}}``.
    """
    from filters import quality as Q
    from filters.langid import default_model_path
    from pipeline.config import repo_path
    from pipeline.langid import LangIDBatch
    from pipeline.quality import QualityDecideBatch, QualityScoreBatch, resolve_thresholds
    from pipeline.rules import RulesBatch

    langs = list(config["languages"])
    lcfg = config.get("langid") or {}
    qcfg = config.get("quality") or {}
    rcfg = config.get("rules") or {}
    batch = pa.RecordBatch.from_pylist([{k: d[k] for k in ("id", "source", "tier", "text", "meta")} for d in docs])
    truth = [d["lang"] for d in docs]
    res: dict[str, dict] = {}
    for lang in truth:
        res.setdefault(lang, {"n": 0, "kept": 0, "langid": Counter(), "rules": Counter(), "quality": Counter()})
        res[lang]["n"] += 1
    b = LangIDBatch(lcfg.get("model") or default_model_path(), int(lcfg.get("max_chars", 20000)), langs,
                    float(lcfg.get("default_threshold", 0.5)), lcfg.get("thresholds") or {})(batch)
    alive = list(range(len(docs)))

    def step(b, stage: str, alive: list[int]):
        reasons = b.column("reason").to_pylist()
        keep = [j for j, r in enumerate(reasons) if r is None]
        for j, r in enumerate(reasons):
            if r is not None:
                res[truth[alive[j]]][stage][r] += 1
        b = b.take(pa.array(keep, pa.int64())).drop_columns(["reason", "detail"])
        return b, [alive[j] for j in keep]

    b, alive = step(b, "langid", alive)
    for j, (i, lang) in enumerate(zip(alive, b.column("lang").to_pylist())):
        if lang != truth[i]:
            res[truth[i]]["langid"]["wrong_lang"] += 1
    fpath = repo_path(rcfg.get("filters") or "configs/filters.yaml")
    b, alive = step(RulesBatch(str(fpath), rcfg.get("tiers"))(b), "rules", alive)
    mdir = models_dir or os.path.join(out, "models", "quality")
    models, clf, man = Q.model_paths(mdir, qcfg.get("models") or {}, qcfg.get("classifier"))
    scored = QualityScoreBatch(models, clf, int(qcfg.get("max_paragraph_chars", 20000)),
                               int(qcfg.get("classifier_max_tokens", 4096)))(b)
    thr = resolve_thresholds(qcfg, man, sorted(models))
    dec = QualityDecideBatch({}, thr, qcfg.get("missing_model", "keep"))(scored)
    reasons = dec.column("reason").to_pylist()
    for i, r in zip(alive, reasons):
        if r is None:
            res[truth[i]]["kept"] += 1
        else:
            res[truth[i]]["quality"][r] += 1
    return res


def table(res: dict) -> str:
    """Per-language kept share and losses per stage, as text."""
    rows = [f"{'lang':4} {'n':>4} {'kept%':>6} {'lid':>4} {'rules':>5} {'qual':>4}  reasons"]
    for lang, r in sorted(res.items()):
        rows.append(f"{lang:4} {r['n']:4d} {100 * r['kept'] / r['n']:6.1f} {sum(r['langid'].values()):4d} "
                    f"{sum(r['rules'].values()):5d} {sum(r['quality'].values()):4d}  "
                    + json.dumps({k: dict(r[k]) for k in ("langid", "rules", "quality") if r[k]}))
    n = sum(r["n"] for r in res.values())
    rows.append(f"all  {n:4d} {100 * sum(r['kept'] for r in res.values()) / n:6.1f} "
                f"{sum(sum(r['langid'].values()) for r in res.values()):4d} "
                f"{sum(sum(r['rules'].values()) for r in res.values()):5d} "
                f"{sum(sum(r['quality'].values()) for r in res.values()):4d}")
    return "\n".join(rows)


if __name__ == "__main__":
    from pipeline.config import load_config

    out = sys.argv[1]
    mdir = sys.argv[2] if len(sys.argv) > 2 else None
    config = load_config(None, os.environ.get("POLY_SHARED_DATA"))
    docs = heldout_clean_docs(out, mdir)
    print(table(run_chain(out, config, docs, mdir)))
