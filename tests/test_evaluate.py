"""Evaluation (PolyLM sec. 4): per-language bits per byte, XCOPA log-likelihood scoring that
agrees with EleutherAI's lm-eval on the same HF export and files, translation chrF, and a model
that knows the answers scoring well above chance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from tests.test_export import SPM_SETTINGS, _train_spm
from training.config import ModelConfig
from training.data import write_token_shards
from training.export import export_hf
from training.model import PolyLM

XCOPA_LANGS = ["id", "it", "th", "tr", "vi", "zh"]
NTREX = {"en": "newstest2019-src.eng.txt", "de": "newstest2019-ref.deu.txt", "zh": "newstest2019-ref.zho-CN.txt",
         "id": "newstest2019-ref.ind.txt", "th": "newstest2019-ref.tha.txt", "tr": "newstest2019-ref.tur.txt",
         "vi": "newstest2019-ref.vie.txt", "it": "newstest2019-ref.ita.txt"}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def _spm(path: Path, lines: list[str]) -> Path:
    return _train_spm(path, lines, vocab_size=3000, **SPM_SETTINGS["project"])


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_data):
    """A miniature `make corpus` + `make tokenize` + `make train` output: NTREX documents of 8
    languages as a corpus (lang=xx/source=ntrex), a SentencePiece model, token shards whose ids
    are the corpus ids, and a tiny PolyLM trained 30 steps by the real trainer CLI."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("evalworld")
    lines = {l: (shared_data / "ntrex-128" / f).read_text(encoding="utf-8").splitlines() for l, f in NTREX.items()}
    xcopa_text = []
    for l in XCOPA_LANGS:
        for r in map(json.loads, (shared_data / "xcopa" / f"val.{l}.jsonl").read_text(encoding="utf-8").splitlines()):
            xcopa_text += [r["premise"], r["choice1"], r["choice2"]]
    model_path = _spm(root / "spm.model", [x for v in lines.values() for x in v[:300]] + xcopa_text)
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    docs, corpus_rows = {}, {}
    for lang, ls in lines.items():
        texts = [" ".join(ls[i:i + 8]) for i in range(0, 400, 8)]  # 50 documents of 8 sentences
        docs[(lang, "ntrex")] = [sp.encode(t) for t in texts]
        corpus_rows[lang] = texts
    tokens = write_token_shards(root / "tokens", docs, vocab_size=sp.get_piece_size(), eos_id=3, bos_id=2,
                                pad_id=0, tiers={"ntrex": "reference"})
    man = json.loads((tokens / "manifest.json").read_text())
    man["tokenizer"] = str(model_path)
    (tokens / "manifest.json").write_text(json.dumps(man))
    for lang, texts in corpus_rows.items():  # ids as write_token_shards names them
        d = root / "corpus" / f"lang={lang}" / "source=ntrex"
        d.mkdir(parents=True)
        pq.write_table(pa.table({"id": [f"{lang}-ntrex-{i}" for i in range(len(texts))], "text": texts}),
                       d / "part-00000.parquet")
    cfg = root / "train.yaml"
    cfg.write_text(f"""
run_name: eval-test
out_dir: {root / 'train'}
model: {{name: tiny, vocab_size: auto, overrides: {{max_seq_len: 128}}}}
data: {{tokens_dir: {tokens}, seq_len: 128, val_fraction: 0.1, val_files_per_stream: 1}}
curriculum:
  stages:
    - {{name: stage1, start_step: 0, lang_weights: natural}}
    - {{name: stage2, start_step: 20, lang_weights: natural}}
optim: {{lr: 3.0e-3, warmup_steps: 5}}
training: {{steps: 30, global_batch_size: 8, micro_batch_size: 4, device: cpu, mixed_precision: false}}
checkpoint: {{dir: {root / 'ckpt'}, interval: 30}}
metrics: {{log_every: 10, tensorboard: false, validate: false}}
""")
    from training.train import main as train_main

    assert train_main(["--config", str(cfg)]) == 0
    return {"root": root, "config": cfg, "tokens": tokens, "spm": model_path}


@pytest.fixture(scope="module")
def hf_export(world):
    from jobs.export import main as export_main

    out = world["root"] / "hf"
    assert export_main(["--config", str(world["config"]), "--out", str(out)]) == 0
    return out


def test_eval_on_train_checkpoint_bpb_xcopa_ntrex(world, shared_data, tmp_path):
    """The `make eval` path on the trainer's DCP checkpoint: bits per byte per language on the
    held-out documents, XCOPA for the 6 languages, NTREX en->xx chrF; outputs written."""
    from jobs.eval import main

    out = tmp_path / "eval"
    rc = main(["--config", str(world["config"]), "--tasks", "heldout,xcopa,ntrex", "--limit", "12", "--max-new-tokens", "16",
               "--langs", "id,it,th,tr,vi,zh", "--data-root", str(shared_data), "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["checkpoint"]["kind"] == "dcp" and res["checkpoint"]["step"] == 30
    assert res["checkpoint"]["curriculum_stage"] == {"index": 1, "name": "stage2"}
    held = res["heldout"]
    assert set(held) == set(NTREX)  # every language has held-out documents (val_fraction 0.1 of 50)
    for lang, r in held.items():
        assert r["docs"] == 5 and 0 < r["bpb"] < 20 and r["ppl"] > 1, (lang, r)
    assert set(res["tasks"]["xcopa"]) == set(XCOPA_LANGS)
    assert all(r["n"] == 12 and 0 <= r["acc"] <= 1 for r in res["tasks"]["xcopa"].values())
    nt = res["tasks"]["ntrex"]
    assert set(nt) == {f"en-{l}" for l in XCOPA_LANGS} and all(r["n"] == 12 for r in nt.values())
    assert all(0 <= r["chrf"] <= 100 for r in nt.values())
    table = (out / "results.txt").read_text()
    assert "heldout" in table and "xcopa" in table and "chrf" in table
    assert (out / "results.png").stat().st_size > 1000


def test_bits_per_byte_matches_model_loss(world, hf_export):
    """bpb = summed token NLL / ln 2 / UTF-8 bytes, recomputed here from the model's own
    cross-entropy on the same token sequence."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from training.evaluate import CausalLMScorer, bits_per_byte

    model = GPT2LMHeadModel.from_pretrained(hf_export, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(hf_export, local_files_only=True)
    text = "Die Würde des Menschen ist unantastbar. 人人生而自由"
    r = bits_per_byte(CausalLMScorer(model, tok), [("de", text)])["de"]
    ids = torch.tensor([[tok.eos_token_id] + tok.encode(text)])
    with torch.no_grad():
        nll = F.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:], reduction="sum").item()
    assert r["tokens"] == ids.shape[1] - 1 and r["bytes"] == len(text.encode())
    assert math.isclose(r["bpb"], nll / math.log(2) / len(text.encode()), rel_tol=1e-5)
    # a document longer than the window is scored in windows, every token once
    long = " ".join([text] * 40)
    r2 = bits_per_byte(CausalLMScorer(model, tok, max_length=32), [("de", long)])["de"]
    assert r2["tokens"] == len(tok.encode(long))


def _lm_eval_xcopa(hf_dir: Path, data: Path, langs, shots: int, limit: int | None, tmp: Path) -> dict:
    """lm-eval's own xcopa tasks (its installed YAML + prompt functions), pointed at the local
    validation files."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    xdir = Path(lm_eval.__file__).parent / "tasks" / "xcopa"
    tdir = tmp / "lm_eval_tasks"
    tdir.mkdir(exist_ok=True)
    names = []
    for l in langs:
        name = f"poly_xcopa_{l}"
        (tdir / f"{name}.yaml").write_text(
            f"include: {xdir / f'default_{l}.yaml'}\ntask: {name}\ndataset_path: json\n"
            f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    validation: {data / 'xcopa' / f'val.{l}.jsonl'}\n"
            "validation_split: validation\ntest_split: validation\nfewshot_split: validation\n")
        names.append(name)
    res = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={hf_dir},dtype=float32", tasks=names, num_fewshot=shots,
        batch_size=1, device="cpu", limit=limit, task_manager=TaskManager(include_path=str(tdir)),
        log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=1234)
    out = {}
    for l, name in zip(langs, names):
        samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
        preds = [max(range(len(s["filtered_resps"])), key=lambda j: (s["filtered_resps"][j][0], -j))
                 for s in samples]
        out[l] = {"acc": res["results"][name]["acc,none"], "preds": preds,
                  "lls": [[float(x[0]) for x in s["filtered_resps"]] for s in samples]}
    return out


@pytest.mark.parametrize("shots,limit,langs", [(0, None, XCOPA_LANGS), (3, 30, ["zh", "th", "it"])])
def test_xcopa_agrees_with_lm_eval(hf_export, shared_data, tmp_path, shots, limit, langs):
    """Same HF export, same local files: the accuracies agree exactly, item by item, zero-shot
    on all 6 languages and 3-shot on three of them."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from training.evaluate import CausalLMScorer, read_jsonl, score_multiple_choice, xcopa_items

    theirs = _lm_eval_xcopa(hf_export, shared_data, langs, shots, limit, tmp_path)
    scorer = CausalLMScorer(GPT2LMHeadModel.from_pretrained(hf_export, local_files_only=True),
                            AutoTokenizer.from_pretrained(hf_export, local_files_only=True))
    for l in langs:
        items = xcopa_items(read_jsonl(shared_data / "xcopa" / f"val.{l}.jsonl"), l)
        ours = score_multiple_choice(scorer, items, shots=shots, limit=limit)
        assert ours["predictions"] == theirs[l]["preds"], l
        assert ours["acc"] == theirs[l]["acc"], (l, ours["acc"], theirs[l]["acc"])
        for a, b in zip(ours["loglikelihoods"], theirs[l]["lls"]):
            assert a == pytest.approx(b, abs=1e-4), l


def test_model_that_knows_the_answers_scores_above_chance(world, shared_data, tmp_path):
    """A tiny PolyLM trained on the XCOPA zh items with their right answers scores far above
    chance through the whole `jobs.eval` path (HF export), so the scorer can fail."""
    import sentencepiece as spm

    from jobs.eval import main
    from training.evaluate import read_jsonl, xcopa_items

    sp = spm.SentencePieceProcessor(model_file=str(world["spm"]))
    items = xcopa_items(read_jsonl(shared_data / "xcopa" / "val.zh.jsonl"), "zh")[:40]
    seqs = [[3] + sp.encode(it.shot) + [3] for it in items]
    n = max(map(len, seqs))
    x = torch.tensor([s + [0] * (n - len(s)) for s in seqs])
    y = torch.tensor([s[1:] + [-100] * (n - len(s) + 1) for s in seqs])
    cfg = ModelConfig.from_name("tiny", vocab_size=sp.get_piece_size(), max_seq_len=128)
    torch.manual_seed(0)
    m = PolyLM(cfg)
    m.init_weights(seed=0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(120):
        loss = F.cross_entropy(m(x[:, :-1]).flatten(0, 1), y[:, :-1].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    hf = export_hf(m.eval(), cfg, world["spm"], tmp_path / "hf")
    out = tmp_path / "eval"
    assert main(["--checkpoint", str(hf), "--tasks", "xcopa", "--langs", "zh", "--data-root", str(shared_data),
                 "--limit", "40", "--out", str(out)]) == 0
    acc = json.loads((out / "results.json").read_text())["tasks"]["xcopa"]["zh"]["acc"]
    assert acc >= 0.85, acc


def test_task_formats_and_errors(world, hf_export, tmp_path, capsys):
    """XStoryCloze / XWinograd / XNLI / PAWS-X / TyDiQA files in their published field names
    score; a missing file or unknown task exits 2 naming what to pass."""
    from jobs.eval import main
    from training.evaluate import squad_f1_em

    (tmp_path / "sc.de.tsv").write_text(
        "InputStoryid\tInputSentence1\tInputSentence2\tInputSentence3\tInputSentence4\t"
        "RandomFifthSentenceQuiz1\tRandomFifthSentenceQuiz2\tAnswerRightEnding\n"
        "1\tAnna ging.\tSie lief.\tEs regnete.\tSie wurde nass.\tSie trocknete sich ab.\tSie flog zum Mond.\t1\n")
    (tmp_path / "wg.de.jsonl").write_text(json.dumps(
        {"sentence": "Der Pokal passt nicht in den Koffer, weil _ zu groß ist.", "option1": "der Pokal",
         "option2": "der Koffer", "answer": "1"}) + "\n")
    (tmp_path / "nli.de.jsonl").write_text(json.dumps({"premise": "Es regnet.", "hypothesis": "Es ist nass.", "label": 0}) + "\n")
    (tmp_path / "px.de.jsonl").write_text(json.dumps({"sentence1": "A b.", "sentence2": "B a.", "label": 1}) + "\n")
    (tmp_path / "qa.de.jsonl").write_text(json.dumps(
        {"context": "Berlin ist die Hauptstadt.", "question": "Was ist die Hauptstadt?",
         "answers": {"text": ["Berlin"], "answer_start": [0]}}) + "\n")
    out = tmp_path / "eval"
    args = ["--checkpoint", str(hf_export), "--langs", "de", "--out", str(out),
            "--tasks", "xstorycloze,xwinograd,xnli,pawsx,tydiqa",
            "--task-file", f"xstorycloze={tmp_path}/sc.{{lang}}.tsv", "--task-file", f"xwinograd={tmp_path}/wg.{{lang}}.jsonl",
            "--task-file", f"xnli={tmp_path}/nli.{{lang}}.jsonl", "--task-file", f"pawsx={tmp_path}/px.{{lang}}.jsonl",
            "--task-file", f"tydiqa={tmp_path}/qa.{{lang}}.jsonl"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())["tasks"]
    assert {k: v["de"]["n"] for k, v in res.items()} == {
        "xstorycloze": 1, "xwinograd": 1, "xnli": 1, "pawsx": 1, "tydiqa": 1}
    capsys.readouterr()
    assert main(["--checkpoint", str(hf_export), "--tasks", "xnli", "--langs", "de", "--out", str(out)]) == 2
    assert "--task-file" in capsys.readouterr().err
    assert main(["--checkpoint", str(hf_export), "--tasks", "mmlu", "--out", str(out)]) == 2
    assert main(["--checkpoint", str(hf_export), "--tasks", "xcopa", "--langs", "zh",
                 "--task-file", f"xcopa={tmp_path}/none.{{lang}}.jsonl", "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    # SQuAD F1 / EM, with per-character tokens for scripts written without spaces
    assert squad_f1_em("The Berlin", ["berlin"]) == (1.0, 1.0)
    assert squad_f1_em("北京市", ["北京"])[0] == pytest.approx(0.8)
    assert squad_f1_em("Paris", ["Berlin"]) == (0.0, 0.0)


def test_training_validation_logs_heldout_bits_per_byte(world, tmp_path):
    """During training, every validation (`metrics.val_every`) logs held-out bits per byte per
    language next to val_loss (metrics.jsonl and TensorBoard's val/val_bpb/<lang>): summed NLL /
    ln 2 / the UTF-8 bytes of the held-out windows' label tokens, byte counts checked here
    against SentencePiece's own decoding."""
    import sentencepiece as spm

    from training.data import CurriculumLoader, IGNORE_INDEX
    from training.train import main as train_main, token_bytes_table

    sp = spm.SentencePieceProcessor(model_file=str(world["spm"]))
    table = token_bytes_table(world["spm"], 3072)
    text = "Die Würde des Menschen ist unantastbar. 人人生而自由 𠀋 2019"
    ids = sp.encode(text)
    assert any(sp.is_byte(i) for i in ids)  # byte fallback exercised
    assert table[ids].sum().item() == len(sp.decode(ids).encode("utf-8")) + 1  # + the dummy-prefix space
    assert table[3].item() == 0 and table[3071].item() == 0  # </s>, ids past the tokenizer

    out = tmp_path / "run"
    assert train_main(["--config", str(world["config"]), "--set", f"out_dir={out}",
                       "--set", f"checkpoint.dir={out / 'ck'}", "--set", "metrics.validate=true",
                       "--set", "metrics.val_every=10", "--set", "training.steps=10",
                       "--set", "checkpoint.enabled=false"]) == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("kind") == "val" or "val_bpb" in r]
    assert val and all(set(r["val_bpb"]) == set(NTREX) for r in val), val[:1]
    last = val[-1]
    loader = CurriculumLoader(world["tokens"], seq_len=128, global_batch_size=8, micro_batch_size=4,
                              val_fraction=0.1, val_files_per_stream=1)
    vs = loader.validation_set()
    for li, lang in enumerate(loader.languages):
        lab = vs.labels[vs.lang_ids == li]
        keep = lab != IGNORE_INDEX
        nbytes = table[lab[keep]].sum().item()
        bpb = last["val_loss"][lang] * keep.sum().item() / math.log(2) / nbytes
        assert last["val_bpb"][lang] == pytest.approx(bpb, rel=1e-6), lang


def test_results_table_shows_polylm_published_scores_beside_ours():
    """The table puts PolyLM-13B's published score (arXiv 2307.06018, tables 19-22) beside ours,
    marks a shot mismatch, and leaves tasks the paper does not report blank."""
    import training.evaluate as ev

    results = {"shots": 0, "tasks": {
        "xcopa": {"zh": {"acc": 0.55, "acc_norm": 0.55, "n": 100, "shots": 0},
                  "th": {"acc": 0.5, "acc_norm": 0.5, "n": 100, "shots": 3}},
        "tydiqa": {"ko": {"f1": 10.0, "em": 5.0, "n": 10, "shots": 1}},
        "ntrex": {"de": {"chrf": 20.0, "bleu": 3.0, "n": 10}}}}
    rows = {tuple(line.split()[:3]): line for line in ev.results_table(results).splitlines()}
    assert "polylm-13b (paper)" in ev.results_table(results).splitlines()[0]
    assert rows[("xcopa", "zh", "acc")].rstrip().endswith("67.0")
    assert rows[("xcopa", "th", "acc")].rstrip().endswith("58.6 (0-shot)")
    assert rows[("tydiqa", "ko", "f1")].rstrip().endswith("53.8")
    assert rows[("tydiqa", "ko", "em")].rstrip().endswith("10")
    assert rows[("ntrex", "de", "chrf")].rstrip().endswith("10")
