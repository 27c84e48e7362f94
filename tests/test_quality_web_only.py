"""Issue 16 item 3: web-only input (no reference-tier documents) no longer breaks the default
chain. By default the quality stage passes such documents unscored and its stats say why and
what to do; with ``quality.web_fallback`` each language's KenLM is trained on its own web text
and removes only extreme perplexity outliers."""
from __future__ import annotations

import json
import os

from filters import quality as Q
from tests.test_quality import _ref_docs, _web_docs_en
from tests.test_quality_stage import _config, _read, _write_langid

WRONG_SCRIPT = ["国务院总理今天在北京会见了来访的代表团，双方就合作问题交换了意见。" * 20,
                "Правительство объявило новые меры поддержки фермеров на северо-востоке страны. " * 20]


def _user_web_docs(shared) -> list[dict]:
    """A user's web crawl: news pages and dolma web pages, all tier web, no reference tier."""
    docs = [dict(d, tier="web", id="user/" + d["id"]) for d in _ref_docs(shared, "en", "eng")] + _web_docs_en(shared)
    for d in docs:
        d["source"] = "user"
        d.setdefault("url", None)
        d["lang_declared"], d["lang_score"] = None, 0.9
    return docs


def test_web_only_input_passes_quality_unscored_and_says_why(spark, tmp_path, shared_data):
    from pipeline.cli import run_stages

    docs = _user_web_docs(shared_data)[:60]
    out = str(tmp_path / "out")
    _write_langid(out, docs)
    mdir = str(tmp_path / "models")
    cfg = _config(mdir)
    cfg["quality"]["train_if_missing"] = True
    stats = run_stages(spark, out, cfg, ["quality"])["quality"]
    t = stats["totals"]
    assert t["in"] == len(docs) == t["kept"]
    assert stats["extra"]["models"]["status"] == "none"
    reason = stats["extra"]["models"]["reason"]
    assert "no reference-tier documents" in reason and "make quality-models" in reason and "web_fallback" in reason
    kept = _read(os.path.join(out, "quality"))
    assert all(r["ppl"] is None and r["quality_score"] is None for r in kept)
    assert not os.path.exists(os.path.join(mdir, Q.MANIFEST))


def test_web_fallback_trains_on_own_web_text_and_removes_only_outliers(tmp_path, shared_data):
    from pipeline.quality_models import train_quality_models

    docs = _user_web_docs(shared_data)
    mdir = str(tmp_path / "models")
    man = train_quality_models([dict(d) for d in docs], mdir, vocab_size=4000, web_fallback=True)
    lm = man["languages"]["en"]
    assert lm["lm_trained_on"] == "web" and man["classifier"] is None and lm.get("min_quality_score") is None
    der = lm["thresholds_derivation"]["max_ppl"]
    assert der["source"] == "reference_fence" and der["n_docs"] == lm["heldout_ref_docs"] >= 11
    model = Q.load_lm(*Q.model_paths(mdir)[0]["en"])
    # mislabelled pages in another script: far beyond the fence; the held-out pages: below it
    for text in WRONG_SCRIPT:
        assert model.perplexity(text).ppl > lm["max_ppl"]
    frac = man["split"]["heldout_fraction"]
    held = [d for d in docs if Q.is_heldout(Q.split_key(d["id"], d["source"], "en", d["meta"]), frac)]
    over = [d["id"] for d in held if (model.perplexity(d["text"]).ppl or 0) > lm["max_ppl"]]
    assert len(held) >= 11 and len(over) <= 0.02 * len(held), over
    with open(os.path.join(mdir, Q.MANIFEST)) as f:
        assert json.load(f)["languages"]["en"]["lm_trained_on"] == "web"
    # without the fallback there is nothing to train on
    try:
        train_quality_models([dict(d) for d in docs], str(tmp_path / "m2"), vocab_size=4000)
    except ValueError as e:
        assert "no reference-tier" in str(e)
    else:
        raise AssertionError("training on web-only input without web_fallback must fail")
