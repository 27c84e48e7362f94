"""``report.json`` and ``report.html``: per-language funnel, removal reasons per stage,
the corpus manifest totals, and every plot the stages registered (embedded as PNG).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import time

from pipeline import fs


def collect(spark, out: str, config: dict) -> dict:
    """Gather ``stats/<stage>.json`` for the configured stages into one report dict.

    Returns:
        dict with ``stages`` (list of stats dicts in chain order), ``funnel``
        (lang -> [docs in at first stage, kept after each stage]), ``reasons``
        (stage -> reason -> count) and ``corpus`` (manifest totals) when present.
    """
    stages = []
    for name in config["stages"]:
        p = f"{out}/stats/{name}.json"
        if fs.exists(spark, p):
            stages.append(fs.read_json(spark, p))
    # "und": documents whose language is not known yet (web pages before langid) or at all.
    langs = sorted({l for s in stages for l in s.get("per_lang", {})})
    funnel = {}
    for lang in langs:
        row = []
        for s in stages:
            c = s.get("per_lang", {}).get(lang)
            row.append(c["kept"] if c else 0)
        funnel[lang] = row
    reasons = {s["stage"]: {**s["totals"]["removed"], **{f"quarantine:{k}": v for k, v in
                                                          s["totals"]["quarantined"].items()}} for s in stages}
    rep = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "out": out,
           "chain": [s["stage"] for s in stages], "stages": stages, "funnel": funnel, "reasons": reasons}
    from pipeline.shard import MANIFEST

    mp = f"{out}/corpus/{MANIFEST}"
    if fs.exists(spark, mp):
        man = fs.read_json(spark, mp)
        rep["corpus"] = {"totals": man.get("totals"), "per_lang": man.get("per_lang")}
    return rep


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(rep: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    chain = rep["chain"]
    if rep["funnel"]:
        langs = list(rep["funnel"])
        fig, ax = plt.subplots(figsize=(12, 4.5))
        width = 0.8 / max(1, len(chain))
        for j, st in enumerate(chain):
            ax.bar([i + j * width for i in range(len(langs))], [rep["funnel"][l][j] for l in langs],
                   width=width, label=f"after {st}")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(langs))], langs)
        ax.set_ylabel("documents kept")
        ax.set_yscale("log")
        ax.set_title("Per-language funnel: documents kept after each stage")
        ax.legend(fontsize=8, ncol=len(chain))
        out.append(("Per-language funnel", _png(fig)))
        plt.close(fig)
    for st in rep["stages"]:
        per_lang = st.get("per_lang", {})
        reasons = sorted({r for c in per_lang.values() for r in list(c["removed"]) +
                          [f"quarantine:{q}" for q in c["quarantined"]]})
        if not reasons:
            continue
        langs = sorted(per_lang)
        fig, ax = plt.subplots(figsize=(12, 4))
        bottom = [0] * len(langs)
        for r in reasons:
            vals = [per_lang[l]["quarantined"].get(r.split(":", 1)[1], 0) if r.startswith("quarantine:")
                    else per_lang[l]["removed"].get(r, 0) for l in langs]
            ax.bar(langs, vals, bottom=bottom, label=r)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("documents removed")
        ax.set_title(f"Stage {st['stage']}: removals by reason and language")
        ax.legend(fontsize=7, ncol=3)
        out.append((f"{st['stage']}: removal reasons", _png(fig)))
        plt.close(fig)
    return out


def write_report(spark, out: str, config: dict) -> dict:
    """Write ``<out>/report.json`` and ``<out>/report.html``.

    Returns:
        {"json": path, "html": path}
    """
    rep = collect(spark, out, config)
    fs.write_json(spark, f"{out}/report.json", rep)
    parts = ["<!doctype html><meta charset='utf-8'><title>polycorpus report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>",
             f"<h1>Corpus build report</h1><p>{html.escape(out)} — {rep['created']}</p>"]
    parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>in</th><th>kept</th><th>removed</th>"
                 "<th>quarantined</th><th>seconds</th></tr>")
    for s in rep["stages"]:
        t = s["totals"]
        parts.append(f"<tr><td>{s['stage']}</td><td>{t['in']}</td><td>{t['kept']}</td>"
                     f"<td>{sum(t['removed'].values())}</td><td>{sum(t['quarantined'].values())}</td>"
                     f"<td>{s.get('seconds', '')}</td></tr>")
    parts.append("</table>")
    if rep["funnel"]:
        parts.append("<h2>Funnel (documents kept)</h2><table><tr><th>lang</th>"
                     + "".join(f"<th>{c}</th>" for c in rep["chain"]) + "</tr>")
        for l, row in rep["funnel"].items():
            parts.append(f"<tr><td>{l}</td>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    for title, b64 in _plots(rep):
        parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{b64}'>")
    for s in rep["stages"]:
        for p in s.get("plots") or []:
            local = p.replace("file:", "") if p.startswith("file:") else p
            if os.path.exists(local):
                with open(local, "rb") as f:
                    b64 = base64.b64encode(f.read()).decode()
                parts.append(f"<h3>{html.escape(s['stage'])}: {html.escape(os.path.basename(p))}</h3>"
                             f"<img src='data:image/png;base64,{b64}'>")
        if s.get("extra"):
            parts.append(f"<h3>{html.escape(s['stage'])}: details</h3><pre>"
                         f"{html.escape(json.dumps(s['extra'], indent=1, ensure_ascii=False)[:20000])}</pre>")
    fs.write_text(spark, f"{out}/report.html", "\n".join(parts))
    return {"json": f"{out}/report.json", "html": f"{out}/report.html"}
