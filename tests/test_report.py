"""report.json / report.html (pipeline/report.py): consistent funnel, per-source view, escaped
examples per reason, and the page as a browser renders it (headless Chromium)."""
from __future__ import annotations

import json
import os

import pytest

from pipeline import report as R
from tests.headless_browser import find_chromium, render


def _counts(kept, removed=None, quarantined=None):
    removed, quarantined = removed or {}, quarantined or {}
    return {"in": kept + sum(removed.values()) + sum(quarantined.values()), "kept": kept,
            "removed": removed, "quarantined": quarantined}


def _stats(stage, per_lang, per_source, seconds=1.0):
    tot = {"in": 0, "kept": 0, "removed": {}, "quarantined": {}}
    for c in per_lang.values():
        tot["in"] += c["in"]
        tot["kept"] += c["kept"]
        for k in ("removed", "quarantined"):
            for r, n in c[k].items():
                tot[k][r] = tot[k].get(r, 0) + n
    return {"stage": stage, "documents_in": tot["in"], "totals": tot, "per_lang": per_lang,
            "per_source": per_source, "extra": {}, "plots": [], "seconds": seconds}


@pytest.fixture()
def small_build(tmp_path):
    """A hand-made output root: stats of ingest -> langid -> rules and a few rejected files.
    At ingest, 30 web pages have no declared language ("und") and 10 declared "en" documents
    are really German: by declared language the de count would *rise* after langid."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    ing = _stats("ingest", {"en": _counts(60), "de": _counts(20), "und": _counts(30, quarantined={"bad_json": 2})},
                 {"web": _counts(30, quarantined={"bad_json": 2}), "news": _counts(80)})
    lid = _stats("langid", {"en": _counts(70), "de": _counts(35), "eo": _counts(0, {"lang_not_target": 5})},
                 {"web": _counts(25, {"lang_not_target": 5}), "news": _counts(80)})
    rules = _stats("rules", {"en": _counts(50, {"gopher_short_doc": 20}), "de": _counts(33, {"c4_curly_bracket": 2})},
                   {"web": _counts(5, {"gopher_short_doc": 20}), "news": _counts(78, {"c4_curly_bracket": 2})})
    (out / "stats").mkdir(parents=True)
    for st in (ing, lid, rules):
        (out / "stats" / f"{st['stage']}.json").write_text(json.dumps(st))
    long_html = "<script>alert('x')</script> Buy cheap watches now!\n" * 40
    for root, stage, reason, texts in (("rejected", "rules", "gopher_short_doc", [long_html, "short", "tiny", "more"]),
                                       ("rejected", "rules", "c4_curly_bracket", ["{x} & {y}"]),
                                       ("rejected", "langid", "lang_not_target", ["Saluton mondo"]),
                                       ("quarantine", "ingest", "bad_json", ["{\"text\": \x01broken"])):
        d = out / root / f"stage={stage}" / f"reason={reason}"
        d.mkdir(parents=True)
        pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "source": ["web"] * len(texts),
                                 "lang": ["en"] * len(texts), "text": texts,
                                 "detail": ['{"n_words": 3}'] * len(texts)}), d / "part-00000.parquet")
    return str(out), {"stages": ["ingest", "langid", "rules"]}


def test_funnel_counts_detected_language_and_never_rises(spark, small_build):
    out, config = small_build
    rep = R.collect(spark, out, config)
    assert rep["chain"] == ["ingest", "langid", "rules"]
    assert rep["funnel_stages"] == ["langid", "rules"]          # per-language counts start at langid
    assert rep["funnel"] == {"en": [70, 50], "de": [35, 33]}    # no "und", no non-target language
    for lang, row in rep["funnel"].items():
        assert all(a >= b for a, b in zip(row, row[1:])), (lang, row)
    assert rep["total_kept"] == [110, 105, 83]
    src = {r["source"]: r for r in rep["per_source"]}
    assert src["web"]["read"] == 32 and src["web"]["quarantined"] == 2 and src["web"]["final"] == 5
    assert src["web"]["removed_by_stage"] == {"langid": 5, "rules": 20}
    s = rep["summary"]
    assert (s["read"], s["final"], s["quarantined"], s["removed"]) == (112, 83, 2, 27)
    assert s["top_reasons"][0] == {"reason": "rules:gopher_short_doc", "count": 20}


def test_examples_truncated_and_escaped(spark, small_build):
    out, config = small_build
    rep = R.collect(spark, out, config)
    ex = rep["examples"]
    assert set(ex) == {"rules/gopher_short_doc", "rules/c4_curly_bracket", "langid/lang_not_target",
                       "ingest/bad_json"}
    assert len(ex["rules/gopher_short_doc"]) == R.EXAMPLES_PER_REASON           # a limit, not the folder
    first = ex["rules/gopher_short_doc"][0]["text"]
    assert len(first) == R.EXAMPLE_CHARS + 1 and first.endswith("…")
    assert "\x01" not in ex["ingest/bad_json"][0]["text"]
    page = R.render_html(rep)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "{x} &amp; {y}" in page
    # summary first, raw JSON only in a collapsed <details> / report.json
    assert page.index("Summary") < page.index("Per language") < page.index("Per source") < page.index("with examples")
    assert '"per_lang"' not in page


def test_report_page_in_headless_chromium(sample_build, tmp_path):
    """Acceptance (issue 16 item 7): the sample build's report renders in a real browser, every
    image loads, no console errors; readable sections and every source present."""
    if find_chromium() is None:
        pytest.fail("no chromium on PATH: run `bash scripts/system_deps.sh` (apt-get install chromium)")
    out, config, stats = sample_build
    path = os.path.join(out, "report.html")
    assert os.path.getsize(path) < 5_000_000
    shot = str(tmp_path / "report.png")
    page = render(path, screenshot=shot)
    assert page["console_errors"] == []
    assert len(page["images"]) >= 2
    assert all(i["complete"] and i["naturalWidth"] > 0 for i in page["images"]), page["images"]
    for h in ("Summary", "Stages", "Per language", "Per source", "Removal and quarantine reasons, with examples",
              "Plots"):
        assert h in page["headings"]
    text = page["text"]
    for src in stats["ingest"]["per_source"]:
        assert src in text
    assert os.path.getsize(shot) > 10_000
    rep = json.load(open(os.path.join(out, "report.json")))
    for lang, row in rep["funnel"].items():
        assert all(a >= b for a, b in zip(row, row[1:])), (lang, row)
    removed_reasons = [(st["stage"], r) for st in rep["stages"] for r, n in st["totals"]["removed"].items() if n]
    assert removed_reasons and all(f"{s}/{r}" in rep["examples"] for s, r in removed_reasons)


def test_per_source_final_counts_skip_a_stage_without_per_source():
    """shard's stats have no per_source: "in corpus" comes from the last stage that has it."""
    a = _stats("dedup", {"en": _counts(7, {"dup_near": 3})}, {"web": _counts(7, {"dup_near": 3})})
    b = _stats("shard", {"en": _counts(7)}, {})
    b.pop("per_source")
    (row,) = R._per_source_rows([a, b])
    assert (row["source"], row["read"], row["final"], row["removed_by_stage"]) == ("web", 10, 7, {"dedup": 3})


def test_self_instruct_section_in_headless_chromium(spark, small_build, tmp_path):
    """With instruct/stats.json (make instruct) the report gets a self-instruct section: per
    language generated, dropped by reason, kept, a total row; the page renders in Chromium.
    Without the file there is no section."""
    out, config = small_build
    assert "instruct" not in R.collect(spark, out, config, examples=False)
    stats = {"status": "complete", "threshold": 0.7,
             "languages": {"ja": {"generated": 17, "kept": 10, "dropped": {"similar_in_round": 7}, "requests": 1},
                           "de": {"generated": 34, "kept": 20, "requests": 2,
                                  "dropped": {"similar_to_pool": 9, "wrong_language": 3, "cut_by_length_limit": 2}}},
             "seeds": {"dropped": 14, "dropped_by_reason": {"code": 13, "idiom": 1}}}
    os.makedirs(os.path.join(out, "instruct"))
    with open(os.path.join(out, "instruct", "stats.json"), "w") as f:
        json.dump(stats, f)
    sec = R.collect(spark, out, config, examples=False)["instruct"]
    assert sec["reasons"] == ["cut_by_length_limit", "wrong_language", "similar_to_pool", "similar_in_round"]
    assert [r["lang"] for r in sec["rows"]] == ["de", "ja"] and all(r["accounted"] for r in sec["rows"])
    t = sec["total"]
    assert (t["generated"], t["kept"], t["requests"], t["dropped"]["similar_to_pool"]) == (51, 30, 3, 9)
    stats["languages"]["ja"]["kept"] = 11  # counts that do not add up are flagged
    assert not R.instruct_section(stats)["total"]["accounted"]
    if find_chromium() is None:
        pytest.fail("no chromium on PATH: run `bash scripts/system_deps.sh` (apt-get install chromium)")
    path = tmp_path / "report.html"
    path.write_text(R.render_html(R.collect(spark, out, config, examples=False)))
    page = render(str(path))
    assert page["console_errors"] == []
    assert "Self-instruct (MultiAlpaca)" in page["headings"]
    text = page["text"]
    assert "similar_to_pool" in text and "cut_by_length_limit" in text and "code 13" in text
    assert "Counts do not add up" not in text
