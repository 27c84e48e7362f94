"""Instruction fine-tuning (`make sft`, training/sft.py, jobs/sft.py): the PolyLM-MultiAlpaca
prompt template, loss on response tokens only, loss falling on a small instruction set, exact
resume, and the exported model answering through `generate` (tiny sizes, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.test_export import SPM_SETTINGS, _train_spm
from training.config import ModelConfig
from training.data import IGNORE_INDEX
from training.export import export_hf
from training.model import PolyLM

NTREX = {"en": "newstest2019-src.eng.txt", "de": "newstest2019-ref.deu.txt"}
CITIES = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
          ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"), ("Turkey", "Ankara")]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def _instructions() -> list[dict]:
    """16 tiny tasks: 8 without input, 8 with an input (the MultiAlpaca columns)."""
    rows = [{"instruction": f"What is the capital of {c}?", "input": "", "output": f"The capital is {t}.",
             "lang": "en"} for c, t in CITIES]
    rows += [{"instruction": "Name the country of this city.", "input": t, "output": f"{t} is in {c}.",
              "lang": "de" if i % 2 else "en"} for i, (c, t) in enumerate(CITIES)]
    return rows


@pytest.fixture(scope="module")
def base(tmp_path_factory, shared_data):
    """A SentencePiece model trained on NTREX lines, a tiny PolyLM (random init) exported to HF
    (the `make export` layout), and the 16 tasks as `make instruct` output parquet."""
    root = tmp_path_factory.mktemp("sft")
    lines = [x for f in NTREX.values()
             for x in (shared_data / "ntrex-128" / f).read_text(encoding="utf-8").splitlines()[:300]]
    spm_path = _train_spm(root / "spm.model", lines, vocab_size=1000, **SPM_SETTINGS["project"])
    cfg = ModelConfig.from_name("tiny", vocab_size=1000, max_seq_len=64)
    torch.manual_seed(0)
    model = PolyLM(cfg)
    model.init_weights(seed=1)
    hf = export_hf(model, cfg, spm_path, root / "base-hf")
    rows = _instructions()
    for lang in ("en", "de"):
        d = root / "instruct" / f"lang={lang}"
        d.mkdir(parents=True)
        sel = [r for r in rows if r["lang"] == lang]
        pq.write_table(pa.table({"instruction": [r["instruction"] for r in sel], "input": [r["input"] for r in sel],
                                 "output": [r["output"] for r in sel], "lang": [lang] * len(sel),
                                 "seed_ids": [["s1"]] * len(sel), "round": [1] * len(sel),
                                 "rouge_max": [0.1] * len(sel)}), d / "part-00000.parquet")
    return {"root": root, "spm": spm_path, "hf": hf, "instruct": root / "instruct", "cfg": cfg}


def _args(base, out: Path, steps: int, *extra: str) -> list[str]:
    repo = Path(__file__).resolve().parent.parent
    return ["--config", str(repo / "configs" / "train" / "sft-tiny.yaml"),
            "--set", f"base.path={base['hf']}", "--set", f"data.instruct_dir={base['instruct']}",
            "--set", f"out_dir={out}", "--set", f"checkpoint.dir={out / 'ckpt'}",
            "--set", "data.seq_len=64", "--set", f"training.steps={steps}", "--set", "training.device=cpu",
            "--set", "training.num_threads=1", "--set", "optim.lr=3.0e-3", *extra]


def _losses(out: Path) -> dict[int, float]:
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind", "train") == "train":
            rows[r["step"]] = r["loss"]
    return rows


def test_template_and_prompt_labels(base):
    """The PolyLM-MultiAlpaca query (instruction [\\n input] \\n\\n), and labels == -100 exactly
    where the next token is a prompt token; response tokens and EOS carry loss."""
    import sentencepiece as spm

    from training.sft import SFTDataset, encode_example, format_prompt

    assert format_prompt("Say hi.", "") == "Say hi.\n\n"
    assert format_prompt("Say hi.", None) == "Say hi.\n\n"
    assert format_prompt("Name the city.", "Paris") == "Name the city.\nParis\n\n"
    sp = spm.SentencePieceProcessor(model_file=str(base["spm"]))
    p = sp.encode(format_prompt("Name the country of this city.", "Rome"))
    r = sp.encode("Rome is in Italy.")
    x, y = encode_example(sp.encode, 3, "Name the country of this city.", "Rome", "Rome is in Italy.")
    assert x == p + r  # EOS is the last target, never an input
    assert y == [IGNORE_INDEX] * (len(p) - 1) + r + [3]
    assert len(x) == len(y)
    # in a padded batch: prompt positions and padding are ignored, nothing else
    ds = SFTDataset(_instructions(), sp.encode, eos_id=3, pad_id=0, seq_len=64, seed=1)
    assert ds.counts == {"rows": 16, "kept": 16, "too_long": 0, "empty": 0}
    xb, yb, lid, pad_frac = ds.batch(0, global_batch=8, micro_batch=4)
    assert xb.shape[:2] == (2, 4) and xb.shape[-1] % 8 == 0 and 0 <= pad_frac < 1
    idx = ds.indices(0, 8)
    for m in range(2):
        for b in range(4):
            i = idx[m * 4 + b]
            k = len(ds.input_ids[i])
            assert (yb[m, b, k:] == IGNORE_INDEX).all() and (xb[m, b, k:] == 0).all()
            assert yb[m, b, :k].tolist() == ds.labels[i].tolist()
    # too long examples are dropped and counted, not cut
    lens = sorted(len(a) for a in ds.input_ids)
    short = SFTDataset(_instructions(), sp.encode, eos_id=3, pad_id=0, seq_len=lens[7], seed=1)
    assert short.counts["too_long"] == sum(n > lens[7] for n in lens) > 0
    assert short.counts["kept"] + short.counts["too_long"] == 16


def test_sft_loss_falls_exports_and_answers(base, tmp_path):
    """`make sft` path on the HF base: 120 steps (~2 s) on 16 tasks, loss falls, metrics/checkpoints
    written, and the exported model answers a training prompt through the usual one-liner."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from jobs.sft import main

    out = tmp_path / "run"
    assert main(_args(base, out, 120)) == 0
    losses = _losses(out)
    assert sorted(losses) == list(range(1, 121))
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(116, 121)) / 5
    assert last < 0.5 * first, (first, last)
    assert (out / "ckpt").is_dir() and (out / "summary.json").is_file()
    tok = AutoTokenizer.from_pretrained(out / "hf", local_files_only=True)
    model = GPT2LMHeadModel.from_pretrained(out / "hf", local_files_only=True).eval()
    prompt = "What is the capital of France?\n\n"
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=16, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    answer = tok.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer == "The capital is Paris.", answer  # the trained response, then EOS


def test_sft_resume_is_exact(base, tmp_path):
    """Stop at step 5, resume to 12: same per-step losses and the same final weights as an
    uninterrupted 12-step run."""
    from safetensors.torch import load_file

    from jobs.sft import main

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_args(base, a, 12, "--set", "checkpoint.interval=0")) == 0
    assert main(_args(base, b, 12, "--set", "checkpoint.interval=0", "--stop-at-step", "5")) == 0
    assert not (b / "hf").exists()  # no export before the last step
    assert sorted(_losses(b)) == [1, 2, 3, 4, 5]
    assert main(_args(base, b, 12, "--set", "checkpoint.interval=0")) == 0
    la, lb = _losses(a), _losses(b)
    assert sorted(lb) == list(range(1, 13))
    assert all(la[s] == lb[s] for s in la), (la, lb)
    wa, wb = load_file(str(a / "hf" / "model.safetensors")), load_file(str(b / "hf" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sft_from_dcp_checkpoint_and_bad_config(base, tmp_path, capsys):
    """A DCP base (model name config + tokenizer) gives the same weights as its HF export;
    unknown keys / a missing base exit 2 with a message."""
    from training.checkpoint import CheckpointManager
    from training.sft import load_sft_config, polylm_state_from_hf

    from jobs.sft import main, resolve_base

    cfg, sd = polylm_state_from_hf(base["hf"])
    model = PolyLM(cfg)
    model.load_state_dict(sd)
    opt = torch.optim.AdamW(model.parameters())
    CheckpointManager(tmp_path / "dcp").save(3, model, opt, {"loader": {}})
    mfile = tmp_path / "model.yaml"
    mfile.write_text("base: tiny\nmax_seq_len: 64\n")
    sc = load_sft_config(None, [f"base.path={tmp_path / 'dcp'}", f"base.config={mfile}",
                                f"base.tokenizer={base['spm']}"])
    mcfg2, sd2, tok = resolve_base(sc.base)
    assert mcfg2.vocab_size == cfg.vocab_size and tok == str(base["spm"])
    assert all(torch.equal(sd[k], sd2[k]) for k in ("tok_emb.weight", "layers.0.attn.qkv.weight"))
    assert main(["--set", "data.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["--set", "base.path=null"]) == 2
    assert "base.path" in capsys.readouterr().err
    assert load_sft_config(None, ["data.languages=de"]).data.languages == ["de"]  # a string = one code
    assert main([f"--set=base.path={base['hf']}", f"--set=data.instruct_dir={tmp_path / 'none'}",
                 "--set=training.device=cpu", "--set=data.seq_len=64"]) == 2
    assert "make instruct" in capsys.readouterr().err


def test_packed_rows_compute_each_example_as_alone(base):
    """Packed rows (several examples per row, segment ids): each example's logits and per-token
    losses equal those of the example run alone; labels are -100 exactly on prompt positions
    and padding. The same row without segment ids (attention and positions leaking across
    examples) does not match, so the check can fail."""
    import sentencepiece as spm

    from training.model import segment_attention_mask, segment_positions
    from training.sft import SFTDataset

    sp = spm.SentencePieceProcessor(model_file=str(base["spm"]))
    cfg = base["cfg"]
    model = PolyLM(cfg)
    model.init_weights(seed=3)
    model.eval()
    ds = SFTDataset(_instructions(), sp.encode, eos_id=3, pad_id=0, seq_len=64, seed=1, packing=True)
    x, y, seg, lid, pad_frac, n_ex = ds.packed_batch(0, global_batch=4, micro_batch=2)
    assert x.shape[:2] == (2, 2) and 0 <= pad_frac < 1
    rows = ds.packed_rows(0, 4)
    assert n_ex == sum(len(r) for r in rows) > 4  # several examples per row
    # every example appears once per epoch, in the epoch's permutation order
    ep = [i for r in ds.epoch_rows(0) for i in r]
    assert sorted(ep) == list(range(16)) and ep == ds.indices(0, 16).tolist()
    assert segment_positions(torch.tensor([[1, 1, 1, 2, 2, 0]])).tolist() == [[0, 1, 2, 0, 1, 0]]
    m = segment_attention_mask(torch.tensor([[1, 1, 2]]))[0, 0]
    assert m.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    checked = leaked = later = 0
    with torch.no_grad():
        for impl in ("sdpa", "eager"):
            for blk in model.layers:
                blk.attn.impl = impl
            for a in range(2):
                for b in range(2):
                    xr, yr, sr = x[a, b:b + 1], y[a, b:b + 1], seg[a, b:b + 1]
                    logits = model(xr, segment_ids=sr)
                    tok = model(xr, yr, loss_reduction="none", segment_ids=sr)
                    plain = model(xr)  # no segment ids: one sequence
                    at = 0
                    for s_, i in enumerate(rows[a * 2 + b], start=1):
                        k = len(ds.input_ids[i])
                        xi = torch.from_numpy(ds.input_ids[i])[None]
                        yi = torch.from_numpy(ds.labels[i])[None]
                        assert (sr[0, at:at + k] == s_).all()
                        assert yr[0, at:at + k].tolist() == ds.labels[i].tolist()  # -100 on the prompt
                        alone = model(xi)
                        torch.testing.assert_close(logits[:, at:at + k], alone, rtol=1e-5, atol=1e-5)
                        torch.testing.assert_close(tok[:, at:at + k], model(xi, yi, loss_reduction="none"),
                                                   rtol=1e-5, atol=1e-5)
                        assert (tok[0, at:at + k][yi[0] == IGNORE_INDEX] == 0).all()  # prompt: no loss
                        if at > 0:
                            later += 1
                            leaked += not torch.allclose(plain[:, at:at + k], alone, rtol=1e-3, atol=1e-3)
                        checked += 1
                        at += k
                    assert (sr[0, at:] == 0).all() and (yr[0, at:] == IGNORE_INDEX).all()
        for blk in model.layers:
            blk.attn.impl = cfg.attention
    assert checked == 2 * n_ex and leaked == later > 0


def test_packed_sft_resume_is_exact(base, tmp_path):
    """With packing (the make sft config): stop at 3, resume to 7 = an uninterrupted 7-step run,
    losses and final weights bit-equal; rows hold several examples."""
    from safetensors.torch import load_file

    from jobs.sft import main

    a, b = tmp_path / "a", tmp_path / "b"
    extra = ("--set", "checkpoint.interval=0", "--set", "data.packing=true", "--set", "training.global_batch_size=2",
             "--set", "training.micro_batch_size=1")
    assert main(_args(base, a, 7, *extra)) == 0
    assert main(_args(base, b, 7, *extra, "--stop-at-step", "3")) == 0
    assert main(_args(base, b, 7, *extra)) == 0
    la, lb = _losses(a), _losses(b)
    assert sorted(lb) == list(range(1, 8)) and all(la[s] == lb[s] for s in la), (la, lb)
    wa, wb = load_file(str(a / "hf" / "model.safetensors")), load_file(str(b / "hf" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rec = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    assert all(r["examples"] > 2 for r in rec if r.get("kind", "train") == "train")
