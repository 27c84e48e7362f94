"""Hugging Face export: GPT2LMHeadModel logits parity, tokenizer id parity, DCP checkpoint CLI."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn.functional as F

from training.config import ModelConfig
from training.export import export_hf, hf_tokenizer_from_spm, to_hf_state_dict
from training.model import PolyLM

NTREX_FILES = [  # all 18 project languages
    "newstest2019-src.eng.txt", "newstest2019-ref.zho-CN.txt", "newstest2019-ref.rus.txt",
    "newstest2019-ref.spa.txt", "newstest2019-ref.fra.txt", "newstest2019-ref.por.txt",
    "newstest2019-ref.deu.txt", "newstest2019-ref.ita.txt", "newstest2019-ref.nld.txt",
    "newstest2019-ref.pol.txt", "newstest2019-ref.arb.txt", "newstest2019-ref.tur.txt",
    "newstest2019-ref.heb.txt", "newstest2019-ref.jpn.txt", "newstest2019-ref.kor.txt",
    "newstest2019-ref.tha.txt", "newstest2019-ref.vie.txt", "newstest2019-ref.ind.txt",
]
EDGE_CASES = [
    "", " ", "  leading and  double  spaces ", "trailing ", "tab\tand\nnewline",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "ﬁ ligature ① ½", "digits 1234567890 3.14159",
    "emoji 😀🎉👩‍👩‍👧 mixed 中文 English русский عربى עברית ไทย",
    "rare CJK 𠀋𡈽 and 鿕", "<s> literal special </s> <unk> <pad>", "\u200bzero\u200dwidth",
    "control\x01\x07chars", "a   b    c", "\n\nparagraph\n\n  indented", "code:\n    def f(x):\n        return x",
]


@pytest.fixture(scope="module")
def corpus(shared_data):
    """(train lines, held-out lines) of NTREX in 18 languages (first 150 / 50 lines of 1997)."""
    d = shared_data / "ntrex-128"
    train, held = [], []
    for f in NTREX_FILES:
        lines = (d / f).read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1997, f
        train += lines[:150]
        held += lines[1900:1950]
    return train, held


SPM_SETTINGS = {
    # as training/tokenizer.py trains the project tokenizer: no normalisation, whitespace kept
    "project": dict(normalization_rule_name="identity", remove_extra_whitespaces=False,
                    add_dummy_prefix=True, allow_whitespace_only_pieces=True),
    # SentencePiece defaults: NFKC charsmap, whitespace collapsed
    "nfkc": dict(),
}


def _train_spm(path, train, vocab_size: int = 4000, **extra):
    """A small SentencePiece BPE model written to ``path`` (special ids pad 0, unk 1, bos 2,
    eos 3, as the project's tokenizer); ``extra`` adds trainer options (e.g. SPM_SETTINGS)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, num_threads=1, minloglevel=2, **extra)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory, corpus):
    """A small SentencePiece BPE model trained here on NTREX with the project's settings
    (byte fallback, split digits, full character coverage, identity normalisation)."""
    return _train_spm(tmp_path_factory.mktemp("spm") / "spm.model", corpus[0], **SPM_SETTINGS["project"])


def _model(cfg: ModelConfig, seed: int = 0) -> PolyLM:
    torch.manual_seed(seed)
    m = PolyLM(cfg)
    with torch.no_grad():  # non-trivial biases / LayerNorms so every tensor's mapping matters
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.mark.parametrize("setting", sorted(SPM_SETTINGS))
def test_tokenizer_ids_identical_to_sentencepiece(setting, corpus, tmp_path, offline):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    spm_model = _train_spm(tmp_path / "spm.model", corpus[0], **SPM_SETTINGS[setting])
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    hf_tok = hf_tokenizer_from_spm(spm_model)
    hf_tok.save_pretrained(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True)
    _, held = corpus
    texts = held + EDGE_CASES
    mism = [t for t in texts if tok.encode(t) != sp.encode(t)]
    assert not mism, f"{len(mism)} of {len(texts)} differ, e.g. {mism[:3]!r}"
    dec = [t for t in texts if tok.decode(sp.encode(t)) != sp.decode(sp.encode(t))]
    assert not dec, dec[:3]
    # held-out text really exercises merges, byte fallback and all scripts
    assert sum(len(sp.encode(t)) for t in held) < sum(len(t.encode()) for t in held) / 2
    assert any(sp.id_to_piece(i).startswith("<0x") for i in sp.encode("rare CJK 𠀋𡈽"))
    assert tok.eos_token == "</s>" and tok.eos_token_id == sp.eos_id() == 3
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1 and len(tok) == sp.get_piece_size()


def test_export_logits_match_gpt2_within_1e4(spm_model, tmp_path, offline):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    cfg = ModelConfig.from_name("tiny", vocab_size=4000, max_seq_len=64)  # padded to 4096
    m = _model(cfg)
    out = export_hf(m, cfg, spm_model, tmp_path / "hf")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer.model",
            "tokenizer_config.json"} <= names
    assert not (tmp_path / "hf.tmp-export").exists()
    conf = json.loads((out / "config.json").read_text())
    assert conf["architectures"] == ["GPT2LMHeadModel"] and conf["n_positions"] == 64
    assert conf["activation_function"] == "gelu_new" and conf["vocab_size"] == 4000
    assert conf["eos_token_id"] == 3 and conf.get("tie_word_embeddings", True) is True  # default: tied

    hf = GPT2LMHeadModel.from_pretrained(out, local_files_only=True).eval()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    ids = torch.tensor([tok.encode("Die Würde des Menschen ist unantastbar. 人人生而自由 2019")[:40]])
    x = torch.cat([ids, torch.randint(0, 4000, (1, 64 - ids.shape[1]))], 1)
    x = torch.cat([x, torch.randint(0, 4000, (1, 64))])
    with torch.no_grad():
        ours = m(x)
        theirs = hf(x).logits
    assert ours.shape == theirs.shape == (2, 64, 4000)
    err = (ours - theirs).abs().max().item()
    assert err < 1e-4, err
    # the losses agree too (HF shifts labels internally; ours takes shifted labels)
    with torch.no_grad():
        hf_loss = hf(x, labels=x).loss
        our_loss = m(x[:, :-1], x[:, 1:])
    assert abs(hf_loss.item() - our_loss.item()) < 1e-5
    # generation works through the exported tokenizer + model
    gen = hf.generate(ids[:, :5], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert gen.shape == (1, 8)


def test_export_bf16_and_errors(spm_model, tmp_path):
    cfg = ModelConfig.from_name("tiny", vocab_size=4000)
    m = _model(cfg)
    from safetensors.torch import load_file

    out = export_hf(m.state_dict(), cfg, None, tmp_path / "bf16", dtype=torch.bfloat16)
    sd = load_file(out / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in sd.values())
    assert "lm_head.weight" not in sd and sd["transformer.wte.weight"].shape == (4000, 64)
    torch.testing.assert_close(sd["transformer.h.0.mlp.c_fc.weight"],
                               m.layers[0].mlp.fc.weight.t().to(torch.bfloat16))
    # tokenizer larger than the model vocabulary
    small = ModelConfig.from_name("tiny", vocab_size=1000)
    with pytest.raises(ValueError, match="pieces"):
        export_hf(PolyLM(small), small, spm_model, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    # wrong config for the weights: clear error listing the mismatch
    wrong = ModelConfig.from_name("tiny", vocab_size=4000, d_ff=128)
    with pytest.raises(ValueError, match="mlp.fc.weight"):
        to_hf_state_dict(m.state_dict(), wrong)
    with pytest.raises(KeyError, match="missing"):
        to_hf_state_dict({k: v for k, v in m.state_dict().items() if "ln_f" not in k}, cfg)
    # wrapper prefixes (torch.compile / activation-checkpoint wrappers) are tolerated
    wrapped = {k.replace("layers.0.", "layers.0._orig_mod."): v for k, v in m.state_dict().items()}
    assert set(to_hf_state_dict(wrapped, cfg)) == set(to_hf_state_dict(m.state_dict(), cfg))


def test_export_cli_from_trainer_dcp_checkpoint(spm_model, tmp_path, offline, capsys):
    """jobs.export reads a checkpoint written by training.checkpoint (DCP, key "model")."""
    from transformers import GPT2LMHeadModel

    from jobs.export import main
    from training.checkpoint import CheckpointManager

    cfg = ModelConfig.from_name("tiny", vocab_size=4000)
    m = _model(cfg, seed=4)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, 4000, (2, 16))
    m.train()
    F.cross_entropy(m(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    m.eval()
    root = tmp_path / "ckpt"
    CheckpointManager(root, keep_last=2).save(7, m, opt, {"note": "test"})
    (root / "step-00000009.tmp").mkdir()  # an unfinished save must be ignored
    rc = main(["--checkpoint", str(root), "--config", "tiny", "--tokenizer", str(spm_model),
               "--out", str(tmp_path / "hf")])
    assert rc == 0
    log = capsys.readouterr().out
    assert "step-00000007" in log and "wrote" in log
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    with torch.no_grad():
        err = (m(x) - hf(x).logits).abs().max().item()
    assert err < 1e-4
    # a config that does not fit the checkpoint is refused with the reason
    with pytest.raises(ValueError, match="missing for config 'small'"):
        main(["--checkpoint", str(root / "step-00000007"), "--config", "small", "--vocab-size", "4000",
              "--tokenizer", str(spm_model), "--out", str(tmp_path / "hf2")])
    y = tmp_path / "wide.yaml"
    y.write_text("base: tiny\nd_ff: 128\nvocab_size: 4000\n")
    with pytest.raises(ValueError, match=r"disagree.*mlp\.fc\.weight"):
        main(["--checkpoint", str(root / "step-00000007"), "--config", str(y),
              "--tokenizer", str(spm_model), "--out", str(tmp_path / "hf2")])
    assert not (tmp_path / "hf2").exists()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        main(["--checkpoint", str(tmp_path), "--config", "tiny", "--no-tokenizer",
              "--out", str(tmp_path / "hf3")])


def test_export_cli_with_training_config(spm_model, tmp_path, offline):
    """`make export` path: model shape, vocabulary (token manifest), tokenizer and checkpoint dir
    all come from the training config."""
    from transformers import GPT2LMHeadModel

    from jobs.export import main
    from training.checkpoint import CheckpointManager

    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "manifest.json").write_text(json.dumps(
        {"tokenizer": str(spm_model), "vocab_size": 4000, "bos_id": 2, "eos_id": 3, "pad_id": 0,
         "streams": [], "total_tokens": 0}))
    tc = tmp_path / "train.yaml"
    tc.write_text(f"""
model: {{name: tiny, vocab_size: auto, overrides: {{max_seq_len: 48, n_layers: 1}}}}
data: {{tokens_dir: {tokens}, seq_len: 32}}
checkpoint: {{dir: {tmp_path / "ck"}}}
""")
    cfg = ModelConfig.from_name("tiny", vocab_size=4000, max_seq_len=48, n_layers=1)
    m = _model(cfg, seed=2)
    CheckpointManager(tmp_path / "ck").save(1, m, torch.optim.SGD(m.parameters(), lr=0.1), {})
    assert main(["--config", str(tc), "--out", str(tmp_path / "hf")]) == 0
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert hf.config.n_layer == 1 and hf.config.n_positions == 48
    x = torch.randint(0, 4000, (1, 48))
    with torch.no_grad():
        assert (m(x) - hf(x).logits).abs().max().item() < 1e-4
    assert (tmp_path / "hf" / "tokenizer.json").is_file()


def test_export_cli_help(capsys):
    from jobs.export import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--checkpoint" in out and "--tokenizer" in out
    with pytest.raises(SystemExit) as e:  # a model name needs an explicit checkpoint
        main(["--config", "tiny", "--out", "x", "--no-tokenizer"])
    assert e.value.code == 2 and "--checkpoint is required" in capsys.readouterr().err


def test_exported_tokenizer_one_liner_equals_input_ids(spm_model, tmp_path, offline):
    """``model(**tok(x))`` / ``generate(**tok(x))`` on the exported pair equal the calls on
    ``input_ids`` alone: the tokenizer emits no ``token_type_ids`` (GPT-2 would add them)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    cfg = ModelConfig.from_name("tiny", vocab_size=4000, max_seq_len=64)
    out = export_hf(_model(cfg), cfg, spm_model, tmp_path / "hf")
    hf = GPT2LMHeadModel.from_pretrained(out, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = "Die Würde des Menschen ist unantastbar. 人人生而自由 2019"
    enc = tok(text, return_tensors="pt")
    assert set(enc) == {"input_ids", "attention_mask"}
    ids = enc["input_ids"]
    with torch.no_grad():
        one_liner = hf(**enc, labels=enc["input_ids"]).loss
        plain = hf(ids, labels=ids).loss
    assert abs(one_liner.item() - plain.item()) < 1e-6, (one_liner.item(), plain.item())
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(hf.generate(**tok(text, return_tensors="pt"), **kw), hf.generate(ids, **kw))
