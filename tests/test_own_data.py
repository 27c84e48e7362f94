"""Your own data in one command (issue 16 items 1, 2, 4, 5, 8) and strict configuration
(issue 14 cause 7): parquet / JSONL input with field mapping, ``--input``/``--set`` without YAML,
outputs that pyarrow, pandas and ``datasets`` open with ``lang``/``source`` columns, one rule for
relative paths, unknown keys rejected with a suggestion, strings never iterated as lists."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def open_with_loaders(path: Path, cols=("lang", "source")) -> dict:
    """Open ``path`` with the usual one-liners; return ``{loader: pandas DataFrame}``; every one
    must give the same rows and the ``cols`` columns."""
    import datasets
    import pandas as pd

    datasets.disable_progress_bars()
    out = {
        "pyarrow": ds.dataset(str(path), partitioning="hive").to_table().to_pandas(),
        "pandas": pd.read_parquet(str(path)),
        "datasets": datasets.load_dataset("parquet", data_dir=str(path), split="train",
                                          cache_dir=str(path.parent / ".hf-cache")).to_pandas(),
        "glob": ds.dataset(sorted(glob.glob(f"{path}/**/*.parquet", recursive=True))).to_table().to_pandas(),
    }
    n = {k: len(v) for k, v in out.items()}
    assert len(set(n.values())) == 1 and n["pyarrow"] > 0, n
    for name, df in out.items():
        for c in cols:
            assert c in df.columns, (name, c, list(df.columns))
            assert df[c].notna().all(), (name, c)
    return out


# ----------------------------------------------------------------------------- config strictness
def _write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_unknown_keys_rejected_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'treshold' \(did you mean 'threshold'\?\)"):
        load_config(overrides=["dedup.treshold=0.7"])
    with pytest.raises(ConfigError, match=r"unknown key 'langauges' \(did you mean 'languages'\?\)"):
        load_config(overrides=["langauges=[en]"])
    src = _write(tmp_path / "s.yaml", "sources:\n  - {name: a, format: jsonl, glob: '*.jsonl', tier: web, "
                                      "optoins: {}}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optoins' \(did you mean 'options'\?\)"):
        load_config(sources_files=[str(src)], use_config_sources=False)
    src.write_text("sources:\n  - {name: a, format: jsonl, glob: '*.jsonl', tier: web, options: {text_feild: x}}\n")
    with pytest.raises(ConfigError, match=r"'text_feild' \(did you mean 'text_field'\?\)"):
        load_config(sources_files=[str(src)], use_config_sources=False)
    filt = _write(tmp_path / "f.yaml", "defaults: {stopwrods: [the]}\n")
    with pytest.raises(ConfigError, match=r"did you mean 'stopwords'\?"):
        load_config(overrides=[f"rules.filters={filt}"])


def test_string_where_a_list_is_expected_is_one_item(tmp_path):
    cfg = load_config(overrides=["stages=ingest", "rules.tiers=web", "languages=de"])
    assert cfg["stages"] == ["ingest"] and cfg["rules"]["tiers"] == ["web"] and cfg["languages"] == ["de"]
    from filters.rules import parse_filter_config

    fc = parse_filter_config({"defaults": {"stopwords": "the", "boilerplate_patterns": "javascript"},
                              "languages": {"en": {"extend_stopwords": "and"}},
                              "tiers": {"web": {"stopwords": "of"}}}, "x.yaml")
    assert fc.defaults.stopwords == ("the",) and fc.defaults.boilerplate_patterns == ("javascript",)
    assert fc.languages["en"].stopwords == ("the", "and")
    assert fc.params("de", "web").stopwords == ("of",)
    with pytest.raises(ConfigError, match="unknown stage 'ingets'"):
        load_config(overrides=["stages=[ingets]"])
    with pytest.raises(ConfigError, match="rules.tiers: unknown tier 'wbe'"):
        load_config(overrides=["rules.tiers=wbe"])


def test_languages_normalised_or_rejected():
    assert load_config(overrides=["languages=[EN, Zh]"])["languages"] == ["en", "zh"]
    assert load_config(overrides=["languages=[eng, zho, pt-BR, deu]"])["languages"] == ["en", "zh", "pt", "de"]
    with pytest.raises(ConfigError, match=r"\['xyz'\] are not language codes"):
        load_config(overrides=["languages=[en, xyz]"])


def test_relative_paths_one_rule(tmp_path, monkeypatch):
    """Inside YAML: relative to that file's folder (include, sources_file, rules.filters);
    command line (--data-root, --input, --sources, --set paths): relative to the current directory."""
    cfgdir = tmp_path / "conf"
    _write(cfgdir / "base.yaml", f"include: {REPO / 'configs' / 'pipeline.yaml'}\nstages: [ingest, langid, shard]\n")
    _write(cfgdir / "src" / "mine.yaml", "sources:\n  - {name: mine, format: jsonl, glob: 'x/*.jsonl', tier: web}\n")
    _write(cfgdir / "f.yaml", "defaults: {}\n")
    main = _write(cfgdir / "main.yaml", "include: base.yaml\nsources_file: src/mine.yaml\nrules: {filters: f.yaml}\n"
                                        "data_root: data\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("POLY_DATA_ROOT", raising=False)
    cfg = load_config(main)
    assert cfg["stages"] == ["ingest", "langid", "shard"] and cfg["dedup"]["threshold"]  # included
    assert [s["name"] for s in cfg["sources"]] == ["mine"]
    assert cfg["rules"]["filters"] == str(cfgdir / "f.yaml")
    assert cfg["data_root"] == str(cfgdir / "data")
    assert load_config(main, "rel/data")["data_root"] == str(work / "rel" / "data")
    cfg = load_config(main, overrides=["rules.filters=f2.yaml"])
    assert cfg["rules"]["filters"] == str(work / "f2.yaml")
    from pipeline.cli import common_parser, config_from_args

    args = common_parser("t").parse_args(["--config", str(main), "--input", "in/*.jsonl"])
    cfg = config_from_args(args)
    assert cfg["sources"][0]["glob"] == [str(work / "in" / "*.jsonl")] and cfg["data_root"] == str(work / "in")


def test_help_names_each_default_once():
    from pipeline.cli import common_parser

    text = common_parser("t").format_help().replace("\n", " ")
    import re

    for opt in re.split(r"\s(?=--)", text):
        assert opt.count("(default") <= 1, opt
    assert "(default: None)" not in text


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for extra, want in ((["--set", "dedup.treshold=0.7"], "did you mean 'threshold'"),
                        (["--set", "languages=[xyz]"], "not language codes"),
                        (["--field", "txt=content"], "did you mean 'text'")):
        r = subprocess.run([sys.executable, "-m", "jobs.build_corpus", "--out", str(tmp_path / "o"),
                            "--input", str(tmp_path / "d.jsonl"), *extra],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert r.returncode == 2, (extra, r.stderr[-2000:])
        assert want in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "jobs.ingest", "--input", str(tmp_path / "none-*.jsonl")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "no files match" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd, want", [
    (["jobs.tokenize", "--profile", "nope"], "profile 'nope'"),
    (["jobs.tokenizer", "--profile", "nope"], "profile 'nope'"),
    (["jobs.lr_find", "--config", "configs/train/sample-small.yaml", "--set", "optim.lrr=1"], "'lrr'"),
    (["jobs.rules", "--set", "rules.tiers=[wbe]"], "unknown tier 'wbe'"),
])
def test_other_job_clis_exit_2_on_bad_config(cmd, want):
    r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, cwd=REPO, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2 and want in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


# ----------------------------------------------------------------------------- parquet reader
def test_parquet_reader_field_mapping_and_bad_rows(tmp_path):
    from pipeline.readers import read_source_file

    p = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"content": ["Ein deutscher Text.", None, "", "Second doc"],
                             "doc_id": ["d1", "d2", "d3", "d4"], "link": ["http://a", None, None, "http://b"],
                             "language": ["deu", "en", "en", "EN"], "extra": [1, 2, 3, 4]}), p)
    src = load_config(inputs=[{"name": "mine", "format": "parquet", "glob": str(p), "tier": "web",
                               "fields": {"text": "content", "id": "doc_id", "url": "link", "lang": "language"}}],
                      use_config_sources=False)["sources"][0]
    recs = list(read_source_file(str(p), src, str(tmp_path)))
    assert [r.get("reason") for r in recs] == [None, "missing_field", "empty_text", None]
    ok = [r for r in recs if not r.get("reason")]
    assert [(r["text"], r["url"], r["lang_declared"], r["meta"]["source_id"]) for r in ok] == [
        ("Ein deutscher Text.", "http://a", "de", "d1"), ("Second doc", "http://b", "en", "d4")]
    assert ok[0]["meta"]["fields"]["extra"] == 1
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    assert [r["reason"] for r in read_source_file(str(bad), src, str(tmp_path))] == ["unreadable_file"]


# ----------------------------------------------------------------------------- acceptance
def _user_folder(root: Path, shared: Path) -> int:
    """25 JSONL lines and 25 parquet rows of real NTREX sentences (5 languages), columns named
    content / doc_id / link, plus one bad line and one null-text row. Returns good documents."""
    langs = {"deu": "de", "fra": "fr", "spa": "es", "rus": "ru", "jpn": "ja"}
    rows = []
    for code, lang in langs.items():
        lines = (shared / "ntrex-128" / f"newstest2019-ref.{code}.txt").read_text(encoding="utf-8").splitlines()
        for i in range(10):
            rows.append({"content": " ".join(lines[i * 4:(i + 1) * 4]), "doc_id": f"{lang}-{i}",
                         "link": f"https://example.org/{lang}/{i}"})
    root.mkdir(parents=True)
    with open(root / "part1.jsonl", "w", encoding="utf-8") as f:
        for r in rows[::2]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.write("{broken json\n")
    pq.write_table(pa.Table.from_pylist(rows[1::2] + [{"content": None, "doc_id": "x", "link": None}]),
                   root / "part2.parquet")
    return len(rows)


@pytest.mark.slow
def test_own_files_one_command_then_every_loader(spark, tmp_path, shared_data, monkeypatch):
    """Acceptance (issue 16): a fresh folder of JSONL + parquet files, one command, no YAML; then
    corpus/ opens with pyarrow, pandas and datasets, lang/source/text/source_id in every row."""
    from pipeline.cli import build_corpus, common_parser, config_from_args

    n = _user_folder(tmp_path / "mydata", shared_data)
    monkeypatch.chdir(tmp_path)
    args = common_parser("t").parse_args(["--input", "mydata/*.jsonl", "--input", "mydata/*.parquet",
                                          "--field", "text=content", "--field", "id=doc_id",
                                          "--field", "url=link", "--set", "stages=[ingest,langid,shard]",
                                          "--out", "out"])
    config = config_from_args(args)
    assert [s["format"] for s in config["sources"]] == ["jsonl", "parquet"]
    build_corpus(spark, str(tmp_path / "out"), config)
    corpus = tmp_path / "out" / "corpus"
    man = json.loads((corpus / ".manifest.json").read_text())
    assert (corpus / ".SUCCESS").exists() and not list(corpus.glob("[!.]*.json"))
    stats = json.loads((tmp_path / "out" / "stats" / "ingest.json").read_text())
    assert stats["totals"]["in"] == n + 2 and sum(stats["totals"]["quarantined"].values()) == 2
    frames = open_with_loaders(corpus, cols=("lang", "source", "text", "source_id"))
    df = frames["datasets"]
    assert len(df) == man["totals"]["documents"] >= n - 3
    assert set(df["source"]) == {"input-jsonl", "input-parquet"}
    assert set(df["lang"]) == {"de", "fr", "es", "ru", "ja"}
    assert set(df["source_id"]) <= {f"{l}-{i}" for l in ("de", "fr", "es", "ru", "ja") for i in range(10)}
    assert (df["text"].str.len() > 0).all()
    for s in man["streams"]:
        for f in s["files"]:
            t = pq.read_table(corpus / f, columns=["lang", "source"])
            assert set(t.column("lang").to_pylist()) == {s["lang"]} and set(t.column("source").to_pylist()) == {s["source"]}


def test_resolved_config_round_trip(tmp_path, monkeypatch):
    """A config built from --input/--set/--fields, written by write_resolved (what each
    spark-submit of a cluster run loads), loads back to the same config."""
    from pipeline.cli import common_parser, config_from_args
    from pipeline.config import write_resolved

    monkeypatch.chdir(tmp_path)
    args = common_parser("t").parse_args(["--input", "d/*.parquet", "--field", "text=content",
                                          "--set", "dedup.threshold=0.7", "--set", "languages=[EN, deu]"])
    cfg = config_from_args(args)
    again = load_config(write_resolved(cfg, tmp_path / "r" / "pipeline.yaml"), cfg["data_root"])
    for k in ("sources", "languages", "stages", "dedup", "rules", "quality", "data_root"):
        assert again[k] == cfg[k], k
    assert again["sources"][0]["options"] == {"text_field": "content"} and again["languages"] == ["en", "de"]


def test_empty_corpus_warning_names_the_reasons_and_the_fix():
    """A build whose input was all removed used to end with exit 0 and no word of it (a new
    user's three-sentence paragraphs all fell under Gopher's 50-word minimum): the build now
    warns, naming the top reasons and, for short texts, --tier reference."""
    from pipeline.cli import empty_corpus_warning

    stats = {
        "ingest": {"totals": {"in": 30, "kept": 28, "removed": {}, "quarantined": {"bad_json": 2}}},
        "langid": {"totals": {"in": 28, "kept": 28, "removed": {}, "quarantined": {}}},
        "rules": {"totals": {"in": 28, "kept": 0, "removed": {"gopher_short_doc": 27, "c4_lorem_ipsum": 1},
                             "quarantined": {}}},
        "shard": {"totals": {"in": 0, "kept": 0, "removed": {}, "quarantined": {}}},
    }
    w = empty_corpus_warning(stats)
    assert w and "all 30 input documents" in w and w.index("gopher_short_doc (27)") < w.index("bad_json (2)")
    assert "--tier reference" in w
    stats["shard"]["totals"]["kept"] = 1
    assert empty_corpus_warning(stats) is None
    assert empty_corpus_warning({"ingest": {"totals": {"in": 0, "kept": 0, "removed": {}, "quarantined": {}}}}) is None
