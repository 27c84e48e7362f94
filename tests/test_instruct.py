"""Multilingual self-instruct: seed selection, parsing/format checks, the generator (retries,
budget, raw responses on disk, resume) against a canned OpenAI server on 127.0.0.1, the Spark
diversity filter against the plain sequential one, and the job end to end."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pandas as pd
import pytest

from filters.rouge import rouge_tokens, sequential_filter
from filters.selfinstruct import (Task, build_prompt, check_task, load_seeds, parse_response,
                                  sample_examples, select_seeds)
from pipeline.generator import BudgetExhausted, GenerationError, Generator, OpenAIBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from canned_openai_server import CannedServer  # noqa: E402


@pytest.fixture(scope="module")
def seeds(shared_data):
    s, bad = load_seeds((shared_data / "self-instruct" / "seed_tasks.jsonl").read_text().splitlines())
    assert len(s) == 175 and not bad
    return s


def test_seed_selection_records_a_reason_per_dropped_seed(seeds):
    kept, dropped = select_seeds(seeds)
    assert len(kept) + len(dropped) == 175
    by_name = {d["name"]: d["reason"] for d in dropped}
    assert by_name["idiom_meaning"] == "idiom"
    assert by_name["complete_the_lyrics"] == "lyrics"
    assert by_name["english_to_chinese_translation"] == "translation"
    assert by_name["multipe_choice_qa"] == "multiple_choice"
    assert by_name["bias_identification"] == "bias_detection"
    assert by_name["python_code_generation"] == "code"
    assert by_name["knock_knock_joke"] == "wordplay"
    assert "breakfast_suggestion" not in by_name and "cooking_recipe" not in by_name
    assert 20 <= len(dropped) <= 45  # PolyLM: 13 dropped + 23 adapted
    _, bad = load_seeds(['{"id": 1}', "not json", ""])
    assert [b["line"] for b in bad] == [1, 2]


def test_prompt_and_parsing():
    rng = random.Random(0)
    seeds = [{"instruction": f"seed {i} instruction here", "input": "", "output": "o", "seed_ids": [f"s{i}"]}
             for i in range(5)]
    ex = sample_examples(rng, seeds, [])
    assert len(ex) == 3  # no generated task yet: 3 seeds
    ex = sample_examples(rng, seeds, [{"instruction": "gen", "input": "", "output": "x"}])
    assert len(ex) == 3 and ex[-1]["instruction"] == "gen"
    p = build_prompt("fr", ex)
    assert "in French" in p and "List of 20 tasks" in p and p.endswith("###\n4. Instruction:")
    text = (" Écrivez un poème sur la mer.\n4. Input:\n<noinput>\n4. Output:\nLa mer...\n###\n"
            "5. Instruction: Donnez trois idées.\n5. Input:\n\n###\n"  # no output part
            "6. Instruction: Résumez le texte.\n6. Input:\nTexte long\n6. Output:\nRésumé\n###\n"
            "7. Instruction: Expliquez pourquoi le ciel est bleu.\n7. Input:\n<noinput>\n7. Out")
    tasks, drops = parse_response(text, "length", first_number=4)
    assert [t.instruction for t in tasks] == ["Écrivez un poème sur la mer.", "Résumez le texte."]
    assert tasks[0].input == "" and tasks[1].input == "Texte long"
    assert sorted(r for r, _ in drops) == ["cut_by_length_limit", "missing_part"]
    # not cut: the last task is kept; a chat reply restarting the numbered block is not doubled
    tasks, drops = parse_response("4. Instruction: Un deux trois quatre.\n4. Input:\n\n4. Output:\nx", "stop", 4)
    assert len(tasks) == 1 and not drops


def test_format_checks_each_have_a_reason():
    assert check_task(Task("Écrivez un poème sur la mer calme.", "", "La mer."), "fr", "fr") is None
    assert check_task(Task("Écrivez un poème sur la mer calme.", "", " "), "fr", "fr") == "empty"
    assert check_task(Task("Un poème", "", "x"), "fr", "fr") == "too_short"
    assert check_task(Task("mot " * 151, "", "x"), "fr", "fr") == "too_long"
    assert check_task(Task("Write a poem about the calm sea.", "", "x"), "fr", "en") == "wrong_language"
    assert check_task(Task("请写一首关于大海的诗。", "", "大海"), "zh", "zh") is None  # segmented words


def test_generator_retries_stores_raw_and_resumes(shared_data, tmp_path):
    sleeps = []
    with CannedServer(shared_data, fail_first=2) as srv:
        gen = Generator(OpenAIBackend(srv.url, "m", max_tokens=100), tmp_path / "raw", max_requests=3,
                        backoff_s=0.5, sleep=sleeps.append)
        prompt = build_prompt("de", [{"instruction": "Schreibe ein Gedicht über das Meer.",
                                      "input": "", "output": "x"}])
        c = gen.complete("lang=de/round=0000/req-0000", prompt)
        assert gen.stats["retries"] == 2 and len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9
        rec = json.loads((tmp_path / "raw" / "lang=de" / "round=0000" / "req-0000.json").read_text())
        assert rec["prompt"] == prompt and rec["attempts"] == 3
        assert rec["response"]["choices"][0]["message"]["content"] == c.text and not c.cached
        gen.complete("k2", prompt)
        served = srv.requests
        with pytest.raises(BudgetExhausted):  # 2 responses on disk + 1 more would be 3 >= 3
            Generator(OpenAIBackend(srv.url, "m"), tmp_path / "raw", max_requests=2).complete("k3", prompt)
        assert srv.requests == served
    # the server is gone: a resumed run is answered from disk, without a request
    again = Generator(OpenAIBackend(srv.url, "m"), tmp_path / "raw", max_retries=0)
    c2 = again.complete("lang=de/round=0000/req-0000", prompt)
    assert c2.cached and c2.text == c.text and again.stats["requests"] == 0
    with pytest.raises(GenerationError):
        again.complete("new-key", prompt)  # connection refused, no retries left
    assert not (tmp_path / "raw" / "new-key.json").exists()


def test_spark_diversity_filter_equals_sequential(spark):
    from pipeline.instruct import diversity_filter

    rng = random.Random(0)
    vocab = {"en": "write a poem story about the sea sky cat dog list three five capital cities explain how why".split(),
             "zh": list("写一首关于大海天空猫狗列出三个五个首都城市解释为什么")}
    pool_rows, cand_rows, expect = [], [], {}
    for lang, voc in vocab.items():
        sep = "" if lang == "zh" else " "
        base = [sep.join(rng.choice(voc) for _ in range(rng.randint(4, 10))) for _ in range(12)]
        cands = []
        for _ in range(120):
            w = list(rng.choice(base).split() if sep else rng.choice(base))
            for _ in range(rng.randint(0, 3)):
                op = rng.random()
                if op < .4 and len(w) > 1:
                    w.pop(rng.randrange(len(w)))
                elif op < .8:
                    w.insert(rng.randint(0, len(w)), rng.choice(voc))
                else:
                    w[rng.randrange(len(w))] = rng.choice(voc)
            cands.append(sep.join(w))
        cands.append("")  # no words: never similar, kept (format checks drop it before)
        pool = base[:4]
        pool_rows += [(lang, i, s) for i, s in enumerate(pool)]
        cand_rows += [(lang, 1000 + i, i, s) for i, s in enumerate(cands)]
        keep, best = sequential_filter([rouge_tokens(s, lang) for s in pool], [rouge_tokens(s, lang) for s in cands])
        expect[lang] = (keep, best)
    P = spark.createDataFrame(pool_rows, "lang string, id long, text string")
    C = spark.createDataFrame(cand_rows, "lang string, id long, ord long, text string")
    res = diversity_filter(spark, P, C, threshold=0.7, report_floor=0.5)
    # the step against the pool cut into 3 shards per language: the same decisions
    res3 = diversity_filter(spark, P, C, threshold=0.7, report_floor=0.5, shards=3)
    pd.testing.assert_frame_equal(res.sort_values("id").reset_index(drop=True),
                                  res3.sort_values("id").reset_index(drop=True))
    for lang, (keep, best) in expect.items():
        r = res[res.lang == lang].sort_values("id")
        assert list(r.keep) == keep, lang
        assert 0 < sum(keep) < len(keep)
        assert set(r.reason.dropna()) == {"similar_to_pool", "similar_in_round"}
        for k, got, want in zip(keep, r.rouge_max, best):
            if k and want >= 0.5:
                assert got == pytest.approx(want)  # exact above the report floor
            if k and want < 0.5:
                assert got is None or got != got  # None / NaN: below the floor, not computed
            if not k:
                assert got >= 0.7


def test_instruct_job_end_to_end_and_resume(spark, shared_data, tmp_path):
    from pipeline.instruct import run_instruct, validate_config

    cfg = validate_config({"languages": ["fr", "ja", "th"], "target_per_language": 10,
                           "requests_per_round": 1, "max_rounds": 1})
    with CannedServer(shared_data) as srv:
        cfg["generator"] = {**cfg["generator"], "base_url": srv.url}
        stats = run_instruct(spark, str(tmp_path), cfg, str(shared_data), log=lambda m: None)
        served = srv.requests
    out = tmp_path / "instruct"
    import pyarrow.dataset as ds

    df = ds.dataset(out, format="parquet", partitioning="hive", exclude_invalid_files=True).to_table().to_pandas()
    assert list(pd.read_parquet(next(out.glob("lang=fr/part-*.parquet"))).columns) == [
        "instruction", "input", "output", "seed_ids", "round", "rouge_max"]
    assert set(df["lang"].astype(str)) == {"fr", "ja", "th"}
    assert (df.rouge_max.dropna() < 0.7).all() and df.seed_ids.map(len).min() >= 1
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk["languages"] == stats["languages"]
    for lang, s in stats["languages"].items():
        assert s["generated"] == s["kept"] + sum(s["dropped"].values())
        assert s["kept"] == int((df.lang == lang).sum()) > 0
        assert {"missing_part", "wrong_language", "similar_in_round"} <= set(s["dropped"])
    # a run killed during its round: the unfinished round is redone from the raw responses
    (tmp_path / "instruct_work" / "rounds" / "round=0000" / "_DONE").unlink()
    again = run_instruct(spark, str(tmp_path), cfg, str(shared_data), log=lambda m: None)
    assert again["languages"] == stats["languages"] and again["generator"]["requests"] == 0
    assert served == again["generator"]["cached"]


def test_config_is_strict_and_cli_exits_2(tmp_path, capsys):
    from jobs.instruct import main
    from pipeline.instruct import validate_config

    with pytest.raises(ValueError, match="unknown"):
        validate_config({"langauges": ["fr"]})
    with pytest.raises(ValueError, match="ISO 639-1"):
        validate_config({"languages": ["xx"]})
    assert validate_config({"languages": "fr"})["languages"] == ["fr"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("instruct:\n  threshold: 2\n")
    assert main(["--config", str(cfg), "--out", str(tmp_path)]) == 2
    assert "threshold" in capsys.readouterr().err


def test_transformers_backend_with_the_tiny_export(shared_data, tmp_path, monkeypatch):
    """The local backend answers through our own HF export (tiny random PolyLM + a small
    SentencePiece model), stored raw like the HTTP backend's responses."""
    import io

    import sentencepiece as spm
    import torch

    from pipeline.generator import TransformersBackend
    from training.config import ModelConfig
    from training.export import export_hf
    from training.model import PolyLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = []
    for f in ("newstest2019-ref.fra.txt", "newstest2019-src.eng.txt"):
        lines += (shared_data / "ntrex-128" / f).read_text(encoding="utf-8").splitlines()[:150]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=1000,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   pad_id=0, unk_id=1, bos_id=2, eos_id=3, num_threads=1, minloglevel=2)
    (tmp_path / "spm.model").write_bytes(buf.getvalue())
    cfg = ModelConfig.from_name("tiny", vocab_size=1000, max_seq_len=128)
    torch.manual_seed(0)
    out = export_hf(PolyLM(cfg).eval(), cfg, tmp_path / "spm.model", tmp_path / "hf")
    backend = TransformersBackend(str(out), max_new_tokens=8, temperature=1.0, seed=0)
    gen = Generator(backend, tmp_path / "raw")
    prompt = build_prompt("fr", [{"instruction": "Écrivez un poème sur la mer.", "input": "", "output": "x"}])
    c = gen.complete("lang=fr/round=0000/req-0000", prompt)
    rec = json.loads((tmp_path / "raw" / "lang=fr" / "round=0000" / "req-0000.json").read_text())
    assert rec["response"]["choices"][0]["text"] == c.text and c.finish_reason in ("stop", "length")
    assert rec["response"]["usage"]["completion_tokens"] <= 8
    # a prompt longer than the context keeps its tail (no error)
    long = backend.request("mot " * 500)
    assert long["usage"]["prompt_tokens"] <= 128 - 1
