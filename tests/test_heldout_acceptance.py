"""Issue 14 acceptance: clean paragraphs the quality models never trained on, in all 18
languages, run as tier ``web`` through langid + rules + quality with the sample build's models
and configuration (tests/heldout_clean.py): >= 98% kept in every language. Prints the losses
per stage, so the share due to LID/quality and the share due to the rules can be told apart."""
from __future__ import annotations

from tests.heldout_clean import heldout_clean_docs, run_chain, table

LANGS = ["zh", "en", "ru", "es", "fr", "pt", "de", "it", "nl", "pl", "ar", "tr", "he", "ja", "ko", "th", "vi", "id"]


def test_heldout_clean_paragraphs_kept_end_to_end(sample_build):
    out, config, _ = sample_build
    docs = heldout_clean_docs(out)
    res = run_chain(out, config, docs)
    print("\n" + table(res))
    failures = []
    for lang in LANGS:
        r = res.get(lang)
        assert r and r["n"] >= 20, f"{lang}: too few held-out clean documents ({r and r['n']})"
        lid_quality = sum(r["langid"].values()) + sum(r["quality"].values())
        if lid_quality > 0.02 * r["n"]:
            failures.append(f"{lang}: langid+quality remove {lid_quality}/{r['n']} ({dict(r['langid'])}, "
                            f"{dict(r['quality'])})")
        if r["kept"] < 0.98 * r["n"]:
            failures.append(f"{lang}: {r['kept']}/{r['n']} kept end to end")
    assert not failures, "; ".join(failures)
