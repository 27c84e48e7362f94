"""``report.json`` and ``report.html``: what the build did, readable in two minutes.

The HTML page, top to bottom: a summary (documents read, in the corpus, removed, quarantined,
top removal reasons, slowest stage); the stage table; per language (detected language, from
langid on) and per source tables; every removal / quarantine reason with its count and a few
truncated examples read from ``rejected/`` and ``quarantine/``; plots (matplotlib via
:mod:`pipeline.plots`, embedded as PNG data URIs so the page is one self-contained file); the
stages' raw figures stay in ``report.json`` (the HTML links it and keeps a collapsed excerpt).
When ``<out>/instruct/stats.json`` exists (``make instruct``), a self-instruct section follows
the reasons: per language generated, dropped by reason, kept (:func:`instruct_section`).

Counting rule of the funnel: ingest knows only the *declared* language (``und`` for web pages),
langid assigns the *detected* one, so per-language counts start at langid ("detected") and
only fall after it; the stages before langid appear as totals.
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
from urllib.parse import unquote

from pipeline import fs

#: Examples shown per removal / quarantine reason, and characters kept of each.
EXAMPLES_PER_REASON = 3
EXAMPLE_CHARS = 300
#: Stage that assigns the detected language; per-language funnel columns start there.
LANG_STAGE = "langid"

_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _stage_reasons(st: dict) -> list[tuple[str, str, int]]:
    """``[(kind, reason, count)]`` of a stats dict, kind ``removed`` or ``quarantined``."""
    t = st["totals"]
    return ([("removed", r, n) for r, n in t["removed"].items()]
            + [("quarantined", r, n) for r, n in t["quarantined"].items()])


def _funnel(stages: list[dict], manifest: dict | None) -> tuple[list[str], dict, list[int]]:
    """``(funnel_stages, per-lang kept counts, total kept counts)``.

    ``funnel_stages`` are the chain's stages from :data:`LANG_STAGE` on (all stages when the chain
    has no langid: then languages are the declared ones). ``total`` has one entry per stage of the
    chain (documents kept after it).
    """
    chain = [s["stage"] for s in stages]
    start = chain.index(LANG_STAGE) if LANG_STAGE in chain else 0
    fstages = stages[start:]
    langs = sorted({l for s in fstages for l, c in s.get("per_lang", {}).items() if c["kept"]})
    funnel = {l: [s.get("per_lang", {}).get(l, {}).get("kept", 0) for s in fstages] for l in langs}
    return [s["stage"] for s in fstages], funnel, [s["totals"]["kept"] for s in stages]


def _per_lang_rows(stages: list[dict], fstages: list[str], funnel: dict, manifest: dict | None) -> list[dict]:
    man = (manifest or {}).get("per_lang") or {}
    rows = []
    for lang, kept in funnel.items():
        first, last = kept[0], kept[-1]
        removed = {}
        by_name = {s["stage"]: s for s in stages}
        for name in fstages[1:]:
            for r, n in by_name[name].get("per_lang", {}).get(lang, {}).get("removed", {}).items():
                removed[f"{name}:{r}"] = removed.get(f"{name}:{r}", 0) + n
        top = max(removed.items(), key=lambda kv: kv[1]) if removed else None
        m = man.get(lang) or {}
        rows.append({"lang": lang, "kept": kept, "detected": first, "final": last,
                     "retained": last / first if first else 0.0,
                     "top_reason": f"{top[0]} ({top[1]:,})" if top else "",
                     "corpus_bytes": m.get("bytes") or m.get("text_bytes"),
                     "corpus_tokens": m.get("tokens_est") or m.get("tokens")})
    rows.sort(key=lambda r: (-r["final"], r["lang"]))
    return rows


def _per_source_rows(stages: list[dict]) -> list[dict]:
    if not stages:
        return []
    sources = sorted({s_ for st in stages for s_ in st.get("per_source", {})})
    # the last stage that counts per source (shard does not: it removes nothing, only writes)
    last = next((st for st in reversed(stages) if st.get("per_source")), stages[-1])
    rows = []
    for src in sources:
        read = stages[0].get("per_source", {}).get(src, {}).get("in", 0)
        final = last.get("per_source", {}).get(src, {}).get("kept", 0)
        removed_by_stage, quarantined, reasons = {}, 0, {}
        for st in stages:
            c = st.get("per_source", {}).get(src)
            if not c:
                continue
            rem = sum(c["removed"].values())
            if rem:
                removed_by_stage[st["stage"]] = rem
            quarantined += sum(c["quarantined"].values())
            for kind in ("removed", "quarantined"):
                for r, n in c[kind].items():
                    reasons[f"{st['stage']}:{r}"] = n
        top = max(reasons.items(), key=lambda kv: kv[1]) if reasons else None
        rows.append({"source": src, "read": read, "quarantined": quarantined,
                     "removed_by_stage": removed_by_stage, "final": final,
                     "retained": final / read if read else 0.0,
                     "top_reason": f"{top[0]} ({top[1]:,})" if top else ""})
    rows.sort(key=lambda r: (-r["read"], r["source"]))
    return rows


def _local(path: str) -> str | None:
    """Local filesystem path of ``path`` (plain or ``file:``), or None for a remote URI."""
    if path.startswith("file:"):
        return re.sub(r"^file:(//)?", "", path) or "/"
    return None if "://" in path else path


def _first_rows_arrow(path: str, n: int, chars: int) -> list[dict]:
    """First ``n`` rows of one local parquet file with pyarrow (reads one batch, not the file)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    cols = [c for c in ("id", "source", "lang", "lang_declared", "url", "text", "detail") if c in names]
    batch = next(pf.iter_batches(batch_size=n, columns=cols), None)
    rows = batch.to_pylist()[:n] if batch is not None else []
    out = []
    for r in rows:
        d = {k: (None if r.get(k) is None else str(r.get(k))) for k in ("id", "source", "url", "text", "detail")}
        d["lang"] = r.get("lang") or r.get("lang_declared")
        for k in ("text", "detail"):
            if d[k] is not None:
                d[k] = d[k][:chars + 1]
        out.append(d)
    return out


def _first_rows_spark(spark, path: str, n: int, chars: int) -> list[dict]:
    """First ``n`` rows of one parquet file on a remote filesystem, through Spark."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(path)
    cols = set(df.columns)

    def col(name, cut=False):
        if name not in cols:
            return F.lit(None).cast("string").alias(name)
        c = F.col(name).cast("string")
        return (F.substring(c, 1, chars + 1) if cut else c).alias(name)

    lang = col("lang") if "lang" in cols else col("lang_declared").alias("lang")
    return [r.asDict() for r in df.select(col("id"), col("source"), lang, col("url"), col("text", True),
                                          col("detail", True)).limit(n).collect()]


def sample_examples(spark, out: str, stages: list[dict], per_reason: int = EXAMPLES_PER_REASON,
                    chars: int = EXAMPLE_CHARS) -> dict:
    """A few documents per removal / quarantine reason, read cheaply from ``<out>/rejected`` and
    ``<out>/quarantine``: only the first parquet file (by name) of each ``stage=S/reason=R``
    folder and only ``per_reason`` rows of it (with pyarrow, one record batch, for a local
    output root: milliseconds per reason; through Spark for a remote one). Not a random
    sample: a look at what the reason removed.

    Returns:
        ``{"<stage>/<reason>": [{"id", "source", "lang", "url", "text", "detail"}, ...]}``
        (strings or None; ``text`` / ``detail`` cut to ``chars`` characters plus "…", control
        characters replaced by U+FFFD). Reasons whose folder is missing or unreadable are left
        out (never raises for them).
    """
    wanted = {(st["stage"], kind, r) for st in stages for kind, r, n in _stage_reasons(st) if n}
    local_out = _local(out)
    ex: dict[str, list] = {}
    for stage in sorted({s for s, _, _ in wanted}):
        for kind, root in (("removed", "rejected"), ("quarantined", "quarantine")):
            base = f"{out}/{root}/stage={stage}"
            if local_out is not None:
                lbase = os.path.join(local_out, root, f"stage={stage}")
                dirs = sorted(os.listdir(lbase)) if os.path.isdir(lbase) else []
            else:
                dirs = fs.list_dir(spark, base)
            for d in dirs:
                reason = unquote(d[len("reason="):]) if d.startswith("reason=") else None
                if reason is None or (stage, kind, reason) not in wanted:
                    continue
                try:
                    if local_out is not None:
                        files = sorted(f for f in os.listdir(os.path.join(lbase, d))
                                       if f.endswith(".parquet") and not f.startswith((".", "_")))
                        rows = _first_rows_arrow(os.path.join(lbase, d, files[0]), per_reason, chars) if files else []
                    else:
                        files = sorted(f for f in fs.list_dir(spark, f"{base}/{d}")
                                       if f.endswith(".parquet") and not f.startswith((".", "_")))
                        rows = _first_rows_spark(spark, f"{base}/{d}/{files[0]}", per_reason, chars) if files else []
                except Exception:  # an unreadable file: the report still renders, without examples
                    continue
                for r in rows:
                    for k in ("text", "detail"):
                        if r.get(k) is not None:
                            v = _CTRL_RE.sub("\ufffd", r[k])
                            r[k] = v[:chars] + "…" if len(v) > chars else v
                if rows:
                    ex[f"{stage}/{reason}"] = rows
    return ex


def collect(spark, out: str, config: dict, examples: bool = True) -> dict:
    """Gather ``stats/<stage>.json`` for the configured stages into one report dict.

    Args:
        spark: SparkSession (reads the stats, the manifest and the example documents).
        out: output root of the build.
        config: pipeline configuration (its ``stages`` give the chain).
        examples: read :func:`sample_examples` (False: skip, e.g. for a quick JSON rewrite).

    Returns:
        dict with ``created``, ``out``, ``chain`` (stages that have stats), ``stages`` (the stats
        dicts), ``funnel_stages`` and ``funnel`` (detected language -> documents kept after each
        of ``funnel_stages``), ``total_kept`` (kept after each stage of ``chain``), ``reasons``
        (stage -> reason -> count; quarantine reasons as ``quarantine:<reason>``), ``per_lang``
        and ``per_source`` (table rows), ``summary``, ``examples`` (see :func:`sample_examples`)
        and ``corpus`` (manifest totals) when the corpus manifest exists.
    """
    stages = []
    for name in config["stages"]:
        p = f"{out}/stats/{name}.json"
        if fs.exists(spark, p):
            stages.append(fs.read_json(spark, p))
    from pipeline.shard import MANIFEST

    manifest = None
    mp = f"{out}/corpus/{MANIFEST}"
    if fs.exists(spark, mp):
        manifest = fs.read_json(spark, mp)
    fstages, funnel, total_kept = _funnel(stages, manifest)
    reasons = {s["stage"]: {**s["totals"]["removed"], **{f"quarantine:{k}": v for k, v in
                                                          s["totals"]["quarantined"].items()}} for s in stages}
    rep = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "out": out,
           "chain": [s["stage"] for s in stages], "stages": stages, "funnel_stages": fstages,
           "funnel": funnel, "total_kept": total_kept, "reasons": reasons,
           "per_lang": _per_lang_rows(stages, fstages, funnel, manifest),
           "per_source": _per_source_rows(stages)}
    if manifest is not None:
        rep["corpus"] = {"totals": manifest.get("totals"), "per_lang": manifest.get("per_lang")}
    rep["examples"] = sample_examples(spark, out, stages) if examples and stages else {}
    ip = f"{out}/instruct/stats.json"
    if fs.exists(spark, ip):
        rep["instruct"] = instruct_section(fs.read_json(spark, ip))
    rep["summary"] = _summary(rep)
    return rep


def instruct_section(stats: dict) -> dict:
    """The report's self-instruct section from ``instruct/stats.json`` (written by
    :func:`pipeline.instruct.run_instruct`).

    Returns:
        dict with ``reasons`` (drop reasons that occur, in :data:`pipeline.instruct.CANDIDATE_REASONS`
        order, unknown ones after), ``rows`` (per language: ``lang, generated, kept, kept_frac,
        dropped`` (reason -> count), ``requests``, ``accounted`` = generated equals kept +
        dropped), ``total`` (the same summed), ``seeds_dropped`` (reason -> count), ``status``,
        ``threshold``.
    """
    from pipeline.instruct import CANDIDATE_REASONS

    langs = stats.get("languages") or {}
    seen = {r for v in langs.values() for r, n in (v.get("dropped") or {}).items() if n}
    reasons = [r for r in CANDIDATE_REASONS if r in seen] + sorted(seen - set(CANDIDATE_REASONS))
    rows = []
    tot = {"lang": "all", "generated": 0, "kept": 0, "dropped": {r: 0 for r in reasons}, "requests": 0}
    for lang in sorted(langs):
        v = langs[lang]
        g, k = int(v.get("generated", 0)), int(v.get("kept", 0))
        d = {r: int((v.get("dropped") or {}).get(r, 0)) for r in reasons}
        rows.append({"lang": lang, "generated": g, "kept": k, "kept_frac": k / g if g else None, "dropped": d,
                     "requests": int(v.get("requests", 0)), "accounted": g == k + sum(d.values())})
        tot["generated"] += g
        tot["kept"] += k
        tot["requests"] += rows[-1]["requests"]
        for r in reasons:
            tot["dropped"][r] += d[r]
    tot["kept_frac"] = tot["kept"] / tot["generated"] if tot["generated"] else None
    tot["accounted"] = all(r["accounted"] for r in rows)
    return {"reasons": reasons, "rows": rows, "total": tot,
            "seeds_dropped": dict((stats.get("seeds") or {}).get("dropped_by_reason") or {}),
            "status": stats.get("status"), "threshold": stats.get("threshold")}


def _summary(rep: dict) -> dict:
    stages = rep["stages"]
    if not stages:
        return {"read": 0, "final": 0, "final_frac": 0.0, "languages": 0, "removed": 0, "quarantined": 0,
                "top_reasons": [], "seconds": 0.0, "slowest": None}
    allr = [(f"{st['stage']}:{r}", n, kind) for st in stages for kind, r, n in _stage_reasons(st)]
    allr.sort(key=lambda x: -x[1])
    read = stages[0]["totals"]["in"]
    final = stages[-1]["totals"]["kept"]
    slow = max(stages, key=lambda s: s.get("seconds") or 0)
    return {"read": read, "final": final, "final_frac": final / read if read else 0.0,
            "languages": sum(1 for row in rep["per_lang"] if row["final"]),
            "removed": sum(n for _, n, k in allr if k == "removed"),
            "quarantined": sum(n for _, n, k in allr if k == "quarantined"),
            "top_reasons": [{"reason": r, "count": n} for r, n, _ in allr[:3]],
            "seconds": round(sum(s.get("seconds") or 0 for s in stages), 1),
            "slowest": {"stage": slow["stage"], "seconds": slow.get("seconds")}}


# ------------------------------------------------------------------ plots
def _plots(rep: dict) -> list[tuple[str, str, bytes]]:
    """``[(title, caption, png bytes)]``: the per-language funnel and the removal reasons."""
    from pipeline.plots import OTHER_COLOUR, colours, count_axis, png_bytes, pyplot

    plt = pyplot()
    out = []
    fstages, funnel = rep["funnel_stages"], rep["funnel"]
    if funnel:
        langs = sorted(funnel, key=lambda l: funnel[l][0])  # largest at the top of a barh chart
        segs = [("in corpus", [funnel[l][-1] for l in langs])]
        for j in range(1, len(fstages)):
            segs.append((f"removed by {fstages[j]}", [funnel[l][j - 1] - funnel[l][j] for l in langs]))
        segs = [s for s in segs if any(s[1])]
        fig, ax = plt.subplots(figsize=(10, 0.32 * len(langs) + 1.6))
        left = [0] * len(langs)
        for (label, vals), c in zip(segs, colours(len(segs))):
            ax.barh(langs, vals, left=left, color=c, label=label)
            left = [a + b for a, b in zip(left, vals)]
        for y, tot in enumerate(left):
            ax.text(tot, y, f" {tot:,}", va="center", fontsize=9)
        count_axis(ax.xaxis)
        ax.set_xlabel(f"documents (detected language, after {fstages[0]})")
        ax.set_title("Per-language funnel: where each language's documents went")
        ax.legend(loc="lower right", frameon=False)
        ax.margins(x=0.08)
        out.append(("Per-language funnel",
                    f"One bar per detected language: documents kept after {fstages[0]}, split into "
                    "those in the corpus and those each later stage removed.", png_bytes(fig)))
    rows = [(st["stage"], r, n) for st in rep["stages"] for _, r, n in _stage_reasons(st) if n]
    if rows:
        rows.sort(key=lambda x: x[2])
        stage_names = [s for s in rep["chain"] if any(r[0] == s for r in rows)]
        cmap = dict(zip(stage_names, colours(len(stage_names)) if len(stage_names) <= 18
                        else [OTHER_COLOUR] * len(stage_names)))
        fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.4))
        labels = [f"{s}: {r}" for s, r, _ in rows]
        ax.barh(labels, [n for _, _, n in rows], color=[cmap[s] for s, _, _ in rows])
        for y, (_, _, n) in enumerate(rows):
            ax.text(n, y, f" {n:,}", va="center", fontsize=9)
        count_axis(ax.xaxis)
        ax.set_xlabel("documents")
        ax.set_title("Documents removed or quarantined, by stage and reason")
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=cmap[s], label=s) for s in stage_names], loc="lower right",
                  frameon=False, title="stage")
        ax.margins(x=0.1)
        out.append(("Removal reasons", "Every reason of every stage (linear scale; counts at the bar ends).",
                    png_bytes(fig)))
    return out


def _stage_plots(rep: dict) -> list[tuple[str, bytes]]:
    """The PNGs the stages registered (``stats.plots``), when readable from this machine."""
    out = []
    for s in rep["stages"]:
        for p in s.get("plots") or []:
            local = p[len("file:"):] if p.startswith("file:") else p
            if "://" not in local and os.path.exists(local):
                with open(local, "rb") as f:
                    out.append((f"{s['stage']}: {os.path.basename(local)}", f.read()))
    return out


# ------------------------------------------------------------------ HTML
_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>polycorpus report: {{ out }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;margin:1.5em auto;
 max-width:1150px;padding:0 1em;color:#222;line-height:1.4;font-size:15px}
h1{margin-bottom:.1em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5em 0;font-size:14px}
td,th{border-bottom:1px solid #e4e4e4;padding:3px 9px;text-align:right;vertical-align:top}
th{background:#f5f5f5;position:sticky;top:0} td.l,th.l{text-align:left} td:first-child{white-space:nowrap}
tr:hover td{background:#fafafa}
.cards{display:flex;flex-wrap:wrap;gap:.7em;margin:.8em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.4em .8em;min-width:7.5em}
.card b{display:block;font-size:1.5em} .card span{color:#555;font-size:.9em}
.bad{color:#b00020} .muted{color:#777}
.ex{font-size:13px;white-space:pre-wrap;
 word-break:break-word;background:#f7f7f7;border-left:3px solid #ccc;padding:4px 8px;margin:4px 0;text-align:left}
details{margin:.3em 0} summary{cursor:pointer}
img{max-width:100%;height:auto;border:1px solid #eee}
figure{margin:1em 0} figcaption{color:#555;font-size:.9em}
pre.json{max-height:30em;overflow:auto;background:#f7f7f7;padding:.5em;font-size:12px}
</style></head><body>
<h1>Corpus build report</h1>
<p class="meta">{{ out }} · {{ created }} · chain: {{ chain|join(" → ") }} · raw figures: <a href="report.json">report.json</a></p>

<h2>Summary</h2>
<div class="cards">
 <div class="card"><b>{{ "{:,}".format(s.read) }}</b><span>documents read</span></div>
 <div class="card"><b>{{ "{:,}".format(s.final) }}</b><span>{{ final_label }} ({{ pct(s.final_frac) }})</span></div>
 <div class="card"><b>{{ s.languages }}</b><span>languages in the corpus</span></div>
 <div class="card"><b>{{ "{:,}".format(s.removed) }}</b><span>removed by filters</span></div>
 <div class="card"><b class="{{ 'bad' if s.quarantined else '' }}">{{ "{:,}".format(s.quarantined) }}</b><span>quarantined (bad input)</span></div>
 <div class="card"><b>{{ dur(s.seconds) }}</b><span>build time{% if s.slowest %}; slowest: {{ s.slowest.stage }}{% endif %}</span></div>
</div>
{% if s.top_reasons %}<p>Top removal reasons: {% for r in s.top_reasons %}<b>{{ r.reason }}</b> ({{ "{:,}".format(r.count) }}){{ ", " if not loop.last }}{% endfor %}.
{% if corpus_totals %}Corpus: {% for k, v in corpus_totals %}{{ k }} {{ v }}{{ ", " if not loop.last }}{% endfor %}.{% endif %}</p>{% endif %}

<h2>Stages</h2>
<table><tr><th class="l">stage</th><th>in</th><th>kept</th><th>kept %</th><th>removed</th><th>quarantined</th><th>seconds</th><th>docs/s</th></tr>
{% for r in stage_rows %}<tr><td class="l">{{ r.stage }}</td><td>{{ "{:,}".format(r["in"]) }}</td><td>{{ "{:,}".format(r.kept) }}</td>
<td>{{ pct(r.kept_frac) }}</td><td>{{ "{:,}".format(r.removed) }}</td><td>{{ "{:,}".format(r.quarantined) }}</td>
<td>{{ r.seconds }}</td><td>{{ r.rate }}</td></tr>
{% endfor %}</table>

{% if per_lang %}<h2>Per language</h2>
<p class="muted">Detected language (from {{ funnel_stages[0] }} on); documents kept after each stage. Before {{ funnel_stages[0] }} only the declared language is known, so those stages count as totals above.</p>
<table><tr><th class="l">lang</th>{% for st in funnel_stages %}<th>{{ "detected" if loop.first else "after " ~ st }}</th>{% endfor %}<th>retained</th><th class="l">top removal reason</th>{% if has_bytes %}<th>corpus MB</th>{% endif %}{% if has_tokens %}<th>tokens (est.)</th>{% endif %}</tr>
{% for r in per_lang %}<tr><td class="l"><b>{{ r.lang }}</b></td>{% for v in r.kept %}<td>{{ "{:,}".format(v) }}</td>{% endfor %}
<td>{{ pct(r.retained) }}</td><td class="l">{{ r.top_reason }}</td>{% if has_bytes %}<td>{{ mb(r.corpus_bytes) }}</td>{% endif %}{% if has_tokens %}<td>{{ num(r.corpus_tokens) }}</td>{% endif %}</tr>
{% endfor %}</table>{% endif %}

{% if per_source %}<h2>Per source</h2>
<table><tr><th class="l">source</th><th>read</th><th>quarantined</th>{% for st in source_stages %}<th>removed by {{ st }}</th>{% endfor %}<th>in corpus</th><th>retained</th><th class="l">top reason</th></tr>
{% for r in per_source %}<tr><td class="l"><b>{{ r.source }}</b></td><td>{{ "{:,}".format(r.read) }}</td><td class="{{ 'bad' if r.quarantined else '' }}">{{ "{:,}".format(r.quarantined) }}</td>
{% for st in source_stages %}<td>{{ "{:,}".format(r.removed_by_stage.get(st, 0)) }}</td>{% endfor %}<td>{{ "{:,}".format(r.final) }}</td><td>{{ pct(r.retained) }}</td><td class="l">{{ r.top_reason }}</td></tr>
{% endfor %}</table>{% endif %}

{% if reason_rows %}<h2>Removal and quarantine reasons, with examples</h2>
<p class="muted">Up to {{ n_examples }} documents per reason, first {{ n_chars }} characters (⏎ marks a line break), taken from the first file of <code>rejected/stage=…/reason=…/</code> or <code>quarantine/…</code> (not a random sample).</p>
<table><tr><th class="l">stage</th><th class="l">reason</th><th>documents</th><th>% of stage input</th><th class="l" style="width:58%">examples</th></tr>
{% for r in reason_rows %}<tr><td class="l">{{ r.stage }}</td><td class="l"><b>{{ r.reason }}</b>{% if r.kind == "quarantined" %} <span class="bad">(quarantine)</span>{% endif %}</td>
<td>{{ "{:,}".format(r.count) }}</td><td>{{ pct(r.frac) }}</td><td class="l">
{% if r.examples %}<div class="ex">{{ oneline(r.examples[0].text) }}</div><span class="muted">{{ r.examples[0].lang or "?" }} · {{ r.examples[0].source or "?" }}{% if r.examples[0].detail %} · {{ r.examples[0].detail }}{% endif %}</span>
{% if r.examples|length > 1 %}<details><summary>{{ r.examples|length - 1 }} more</summary>{% for e in r.examples[1:] %}<div class="ex">{{ oneline(e.text) }}</div><span class="muted">{{ e.lang or "?" }} · {{ e.source or "?" }}{% if e.detail %} · {{ e.detail }}{% endif %}</span>{% endfor %}</details>{% endif %}
{% else %}<span class="muted">no example read</span>{% endif %}</td></tr>
{% endfor %}</table>{% endif %}

{% if instruct %}<h2>Self-instruct (MultiAlpaca)</h2>
<p class="muted">Generated instruction tasks per language (<code>instruct/stats.json</code>; status {{ instruct.status }}): dropped by the format checks and the Rouge-L diversity filter (F &ge; {{ instruct.threshold }} against the pool as it stands), kept = written to <code>instruct/lang=xx/</code>.{% if instruct.seeds_dropped %} Seed tasks dropped before translation: {% for r, n in instruct.seeds_dropped.items() %}{{ r }} {{ n }}{{ ", " if not loop.last }}{% endfor %}.{% endif %}</p>
<table><tr><th class="l">lang</th><th>requests</th><th>generated</th>{% for r in instruct.reasons %}<th>{{ r }}</th>{% endfor %}<th>kept</th><th>kept %</th></tr>
{% for r in instruct.rows + [instruct.total] %}<tr><td class="l"><b>{{ r.lang }}</b></td><td>{{ "{:,}".format(r.requests) }}</td><td>{{ "{:,}".format(r.generated) }}</td>
{% for x in instruct.reasons %}<td>{{ "{:,}".format(r.dropped[x]) }}</td>{% endfor %}<td class="{{ '' if r.accounted else 'bad' }}">{{ "{:,}".format(r.kept) }}</td><td>{{ pct(r.kept_frac) }}</td></tr>
{% endfor %}</table>
{% if not instruct.total.accounted %}<p class="bad">Counts do not add up: generated != kept + dropped for some language.</p>{% endif %}{% endif %}

{% if plots %}<h2>Plots</h2>
{% for title, caption, src in plots %}<figure><h3>{{ title }}</h3><img src="{{ src }}" alt="{{ title }}">{% if caption %}<figcaption>{{ caption }}</figcaption>{% endif %}</figure>
{% endfor %}{% endif %}

<h2>Raw figures</h2>
<p>Every stage's full statistics are in <a href="report.json">report.json</a> (and <code>stats/&lt;stage&gt;.json</code>).</p>
{% for name, text in extras %}<details><summary>{{ name }}: stage details ({{ text|length }} characters)</summary><pre class="json">{{ text }}</pre></details>
{% endfor %}
</body></html>
"""


def _oneline(text) -> str:
    """An example's text on one line: line breaks shown as " ⏎ " (so 300 characters take ~3 lines)."""
    if not text:
        return "(no text)"
    return re.sub(r"\s*\n\s*", " ⏎ ", text.strip())


def _fmt_pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _fmt_dur(sec) -> str:
    sec = int(round(sec or 0))
    return f"{sec // 60}m{sec % 60:02d}s" if sec >= 60 else f"{sec}s"


def render_html(rep: dict) -> str:
    """The report page for a :func:`collect` dict (self-contained: plots are data URIs).

    Text from the data (examples, reasons, sources) is HTML-escaped by the template engine
    (Jinja2 with autoescaping).
    """
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    tpl = env.from_string(_TEMPLATE)
    stage_rows = []
    for st in rep["stages"]:
        t = st["totals"]
        secs = st.get("seconds")
        stage_rows.append({"stage": st["stage"], "in": t["in"], "kept": t["kept"],
                           "kept_frac": t["kept"] / t["in"] if t["in"] else None,
                           "removed": sum(t["removed"].values()), "quarantined": sum(t["quarantined"].values()),
                           "seconds": f"{secs:,.1f}" if secs is not None else "",
                           "rate": f"{t['in'] / secs:,.0f}" if secs else ""})
    ins = {st["stage"]: st["totals"]["in"] for st in rep["stages"]}
    reason_rows = sorted(
        ({"stage": st["stage"], "kind": kind, "reason": r, "count": n,
          "frac": n / ins[st["stage"]] if ins[st["stage"]] else None,
          "examples": rep.get("examples", {}).get(f"{st['stage']}/{r}", [])}
         for st in rep["stages"] for kind, r, n in _stage_reasons(st) if n),
        key=lambda x: (rep["chain"].index(x["stage"]), -x["count"]))
    plots = [(t, c, "data:image/png;base64," + base64.b64encode(png).decode()) for t, c, png in _plots(rep)]
    plots += [(t, "", "data:image/png;base64," + base64.b64encode(png).decode()) for t, png in _stage_plots(rep)]
    extras = []
    for st in rep["stages"]:
        if st.get("extra"):
            text = json.dumps(st["extra"], indent=1, ensure_ascii=False)
            extras.append((st["stage"], text[:20000] + ("\n… (truncated; see report.json)" if len(text) > 20000 else "")))
    totals = ((rep.get("corpus") or {}).get("totals")) or {}
    corpus_totals = [(k, f"{v:,}" if isinstance(v, int) else v) for k, v in totals.items()
                     if isinstance(v, (int, float, str))][:6]
    per_lang = rep["per_lang"]
    source_stages = [st["stage"] for st in rep["stages"]
                     if any(r["removed_by_stage"].get(st["stage"]) for r in rep["per_source"])]
    return tpl.render(
        out=rep["out"], created=rep["created"], chain=rep["chain"], s=rep["summary"],
        stage_rows=stage_rows, per_lang=per_lang, funnel_stages=rep["funnel_stages"],
        has_bytes=any(r["corpus_bytes"] for r in per_lang), has_tokens=any(r["corpus_tokens"] for r in per_lang),
        per_source=rep["per_source"], source_stages=source_stages, reason_rows=reason_rows,
        n_examples=EXAMPLES_PER_REASON, n_chars=EXAMPLE_CHARS, plots=plots, extras=extras,
        final_label="in the corpus" if rep.get("corpus") or not rep["chain"] else f"kept after {rep['chain'][-1]}",
        corpus_totals=corpus_totals, instruct=rep.get("instruct"), pct=_fmt_pct, dur=_fmt_dur, oneline=_oneline,
        mb=lambda b: f"{b / 1e6:,.2f}" if b else "", num=lambda v: f"{v:,}" if isinstance(v, int) else (v or ""))


def write_report(spark, out: str, config: dict) -> dict:
    """Write ``<out>/report.json`` and ``<out>/report.html``.

    Returns:
        {"json": path, "html": path}
    """
    rep = collect(spark, out, config)
    fs.write_json(spark, f"{out}/report.json", rep)
    fs.write_text(spark, f"{out}/report.html", render_html(rep))
    return {"json": f"{out}/report.json", "html": f"{out}/report.html"}
