"""Benchmark: HTML main-content extraction quality and speed, and reader throughput.

1. On ``web-html/evaldata.json`` (178 real pages, real data, not enlarged): for our extraction
   config, trafilatura's library defaults and resiliparse (defaults and main-content mode),
   the share of ``with`` snippets kept and ``without`` snippets dropped, accuracy, F1, and
   pages/s and MB/s of HTML on one core.
2. Reader throughput (:func:`pipeline.readers.read_source_file`, one core, no Spark) per
   source of ``configs/sources/sample.yaml``: records/s and MB/s of input.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("POLY_SHARED_DATA") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data"))
    ap.add_argument("--skip-readers", action="store_true", help="only the extraction comparison")
    args = ap.parse_args()
    root = os.path.abspath(args.data_root)

    from pipeline.extract import DEFAULT_CONFIG, LIBRARY_DEFAULTS, ExtractConfig, evaluate

    ev = os.path.join(root, "web-html", "evaldata.json")
    hd = os.path.join(root, "web-html", "html")
    import json

    with open(ev, encoding="utf-8") as f:
        names = [n for n in json.load(f) if os.path.exists(os.path.join(hd, n))]
    html_mb = sum(os.path.getsize(os.path.join(hd, n)) for n in names) / 1e6
    print(f"extraction on web-html/evaldata.json: {len(names)} real pages, {html_mb:.1f} MB of HTML (not enlarged)")
    for label, cfg in (("ours (trafilatura, comments off)", DEFAULT_CONFIG),
                       ("trafilatura library defaults", LIBRARY_DEFAULTS["trafilatura"]),
                       ("resiliparse main_content=True", ExtractConfig(extractor="resiliparse", main_content=True)),
                       ("resiliparse library defaults", LIBRARY_DEFAULTS["resiliparse"])):
        r = evaluate(ev, hd, cfg)
        s = max(r["seconds"], 1e-9)
        print(f"  {label}: with_kept={r['with_kept']}/{r['with_total']} ({r['with_kept_frac']:.3f}) "
              f"without_dropped={r['without_dropped']}/{r['without_total']} ({r['without_dropped_frac']:.3f}) "
              f"accuracy={r['accuracy']:.4f} f1={r['f1']:.4f} pages_per_sec={r['pages'] / s:.1f} "
              f"mb_per_sec={html_mb / s:.2f} (1 core)", flush=True)
    if args.skip_readers:
        return

    from pipeline.readers import list_source_files, load_sources, read_source_file

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print("reader throughput (1 core, no Spark, real sample files):")
    tot_rec = tot_mb = tot_s = 0.0
    for src in load_sources([os.path.join(repo, "configs", "sources", "sample.yaml")]):
        files = list_source_files(src, root)
        mb = sum(os.path.getsize(p) for p in files) / 1e6
        t0 = time.perf_counter()
        n = q = 0
        for p in files:
            for rec in read_source_file(p, src, root):
                n += 1
                q += bool(rec.get("reason"))
        s = time.perf_counter() - t0
        tot_rec, tot_mb, tot_s = tot_rec + n, tot_mb + mb, tot_s + s
        print(f"  {src['name']} ({src['format']}): records={n} quarantined={q} input_mb={mb:.2f} "
              f"records_per_sec={n / s:,.0f} mb_per_sec={mb / s:.2f}", flush=True)
    print(f"  all sources: records={int(tot_rec)} input_mb={tot_mb:.1f} seconds={tot_s:.1f} "
          f"mb_per_sec={tot_mb / tot_s:.2f}")


if __name__ == "__main__":
    main()
