"""Evaluation of a causal LM checkpoint per language (PolyLM paper, arXiv 2307.06018, sec. 4).

Three kinds of measurement, all on local files (nothing is downloaded):

* **Held-out language modelling**: bits per byte (``bpb``, comparable across tokenizers and
  languages) and token perplexity (``ppl``) per language on text the model never trained on.
* **Multiple-choice tasks** scored by log-likelihood the way EleutherAI's lm-evaluation-harness
  scores them (``output_type: multiple_choice``): each choice's continuation log-likelihood given
  the prompt, the highest wins, accuracy over the items; K-shot prompts drawn with
  ``random.Random(1234)`` (the harness's default ``fewshot_random_seed``) from the same split,
  leaving the item itself out. XCOPA prompts are the harness's (premise without its final
  punctuation, a cause/effect connective, the choice with its first letter lower-cased), so the
  accuracies equal ``lm-eval``'s on the same files (checked in ``tests/test_evaluate.py``).
  XStoryCloze, XWinograd (partial scoring: the context differs per choice), XNLI and PAWS-X
  (the harness's "premise, right? Yes/Also/No, hypothesis" choices with an empty context)
  follow the harness's published prompt shapes with this module's own connective words.
* **Generation**: greedy decoding for TyDiQA-GoldP (SQuAD F1 / exact match) and translation
  (NTREX-128 or FLORES files; chrF and BLEU with ``sacrebleu``).

The scorer wraps a Hugging Face ``PreTrainedModel`` + tokenizer (the project's HF export, or a
DCP checkpoint converted in memory by :func:`load_model`), so the numbers are those of the
exported model, the same object ``lm-eval`` loads.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

__all__ = [
    "CausalLMScorer", "MCItem", "XCOPA_CONNECTIVES", "bits_per_byte", "score_multiple_choice",
    "xcopa_items", "xstorycloze_items", "xwinograd_items", "xnli_items", "pawsx_items",
    "read_jsonl", "squad_f1_em", "translation_scores", "tydiqa_scores", "FEWSHOT_SEED",
    "NTREX_FILES", "ntrex_pairs", "flores_pairs", "LANG_NAMES",
]

#: lm-evaluation-harness's default ``fewshot_random_seed`` (``simple_evaluate``).
FEWSHOT_SEED = 1234

#: Cause / effect connectives of the XCOPA prompt, per language (the words the harness uses for
#: its 11 XCOPA languages; the other project languages get their common equivalents so a
#: user's XCOPA-format file in any of the 18 languages can be scored).
XCOPA_CONNECTIVES: dict[str, tuple[str, str]] = {
    "id": ("karena", "maka"), "it": ("perché", "quindi"), "th": ("เพราะ", "ดังนั้น"),
    "tr": ("çünkü", "bu yüzden"), "vi": ("bởi vì", "vì vậy"), "zh": ("因为", "所以"),
    "en": ("because", "therefore"), "ru": ("потому что", "поэтому"), "es": ("porque", "por lo tanto"),
    "fr": ("parce que", "donc"), "pt": ("porque", "portanto"), "de": ("weil", "deshalb"),
    "nl": ("omdat", "daarom"), "pl": ("ponieważ", "dlatego"), "ar": ("لأن", "لذلك"),
    "he": ("כי", "לכן"), "ja": ("なぜなら", "だから"), "ko": ("왜냐하면", "그래서"),
}

#: "right?" / "Yes" / "Also" / "No" words of the XNLI and PAWS-X prompts per language.
NLI_WORDS: dict[str, tuple[str, str, str, str]] = {
    "en": ("right?", "Yes", "Also", "No"), "zh": ("正确？", "是的", "所以", "不是的"),
    "ru": ("не так ли?", "Да", "Так", "Нет"), "es": ("¿correcto?", "Sí", "Asi que", "No"),
    "fr": ("correct?", "Oui", "Aussi", "Non"), "pt": ("certo?", "Sim", "Também", "Não"),
    "de": ("richtig?", "Ja", "Auch", "Nein"), "it": ("giusto?", "Sì", "Inoltre", "No"),
    "nl": ("juist?", "Ja", "Ook", "Nee"), "pl": ("prawda?", "Tak", "Także", "Nie"),
    "ar": ("صحيح؟", "نعم", "لذا", "لا"), "tr": ("değil mi?", "Evet", "Ayrıca", "Hayır"),
    "he": ("נכון?", "כן", "גם", "לא"), "ja": ("ですね？", "はい", "それで", "いいえ"),
    "ko": ("맞죠?", "예", "그래서", "아니요"), "th": ("ใช่ไหม?", "ใช่", "ดังนั้น", "ไม่"),
    "vi": ("đúng không?", "Vâng", "Vì vậy", "Không"), "id": ("benar?", "Ya", "Jadi", "Tidak"),
}

#: Language names used in translation prompts ("English: ...\\nGerman: ").
LANG_NAMES = {
    "en": "English", "zh": "Chinese", "ru": "Russian", "es": "Spanish", "fr": "French",
    "pt": "Portuguese", "de": "German", "it": "Italian", "nl": "Dutch", "pl": "Polish",
    "ar": "Arabic", "tr": "Turkish", "he": "Hebrew", "ja": "Japanese", "ko": "Korean",
    "th": "Thai", "vi": "Vietnamese", "id": "Indonesian",
}

#: NTREX-128 reference files per ISO 639-1 code (the source side is ``newstest2019-src.eng.txt``).
NTREX_FILES = {
    "en": "newstest2019-src.eng.txt", "zh": "newstest2019-ref.zho-CN.txt",
    "ru": "newstest2019-ref.rus.txt", "es": "newstest2019-ref.spa.txt", "fr": "newstest2019-ref.fra.txt",
    "pt": "newstest2019-ref.por.txt", "de": "newstest2019-ref.deu.txt", "it": "newstest2019-ref.ita.txt",
    "nl": "newstest2019-ref.nld.txt", "pl": "newstest2019-ref.pol.txt", "ar": "newstest2019-ref.arb.txt",
    "tr": "newstest2019-ref.tur.txt", "he": "newstest2019-ref.heb.txt", "ja": "newstest2019-ref.jpn.txt",
    "ko": "newstest2019-ref.kor.txt", "th": "newstest2019-ref.tha.txt", "vi": "newstest2019-ref.vie.txt",
    "id": "newstest2019-ref.ind.txt",
}

#: FLORES-200 file stems (``<code>.dev`` / ``<code>.devtest``) per ISO 639-1 code.
FLORES_CODES = {
    "en": "eng_Latn", "zh": "zho_Hans", "ru": "rus_Cyrl", "es": "spa_Latn", "fr": "fra_Latn",
    "pt": "por_Latn", "de": "deu_Latn", "it": "ita_Latn", "nl": "nld_Latn", "pl": "pol_Latn",
    "ar": "arb_Arab", "tr": "tur_Latn", "he": "heb_Hebr", "ja": "jpn_Jpan", "ko": "kor_Hang",
    "th": "tha_Thai", "vi": "vie_Latn", "id": "ind_Latn",
}


# --------------------------------------------------------------------------------------------
# the scorer


class CausalLMScorer:
    """Log-likelihoods, rolling token losses and greedy generations of a causal LM.

    Args:
        model: a Hugging Face causal LM (``GPT2LMHeadModel`` for the project's exports); put in
            eval mode here.
        tokenizer: its tokenizer; ``encode`` is called with the tokenizer's default special-token
            handling, as the harness's HF backend does (the project's tokenizer adds none).
        device: torch device for the forward passes.
        max_length: context window in tokens; default the model config's ``n_positions`` (or
            ``max_position_embeddings``), else 2048. Longer inputs are cut from the left, as
            the harness does.
        batch_size: requests per forward pass (right-padded with an attention mask). ``1`` gives
            bit-identical numbers to the harness at its batch size 1; larger batches can differ
            in the last float bits.
    """

    def __init__(self, model, tokenizer, *, device: str | torch.device = "cpu",
                 max_length: int | None = None, batch_size: int = 1):
        self.model = model.eval().to(device)
        self.tok = tokenizer
        self.device = torch.device(device)
        cfg = getattr(model, "config", None)
        self.max_length = int(max_length or getattr(cfg, "n_positions", 0)
                              or getattr(cfg, "max_position_embeddings", 0) or 2048)
        self.batch_size = max(1, int(batch_size))
        eos = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id
        #: token conditioning an empty context (the harness's ``prefix_token_id``: BOS, else EOS)
        self.prefix_id = int(bos if bos is not None else eos)
        #: token a document starts after in training (documents are separated by EOS)
        self.doc_start_id = int(eos if eos is not None else self.prefix_id)

    # ---- tokenization ---------------------------------------------------------------------
    def encode(self, s: str) -> list[int]:
        return list(self.tok.encode(s, verbose=False))  # long documents: no max-length warning

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) split as the harness splits them: trailing spaces of
        the context move to the continuation, the whole string is encoded once and the
        continuation is what follows the context's own encoding; an empty context becomes
        ``[prefix_id]``."""
        if context == "":
            cont = self.encode(continuation)
            return [self.prefix_id], cont
        n_sp = len(context) - len(context.rstrip())
        if n_sp:
            continuation = context[-n_sp:] + continuation
            context = context[:-n_sp]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    # ---- forward passes -------------------------------------------------------------------
    @torch.no_grad()
    def _target_logprobs(self, seqs: list[list[int]], targets: list[tuple[int, list[int]]]
                         ) -> list[tuple[torch.Tensor, bool]]:
        """For each input sequence and its ``(offset, target ids)``: the fp32 log-probabilities
        of the targets at positions ``offset .. offset + len(targets) - 1`` (``[len(targets)]``,
        on the host) and whether each target is the argmax there. The log-softmax and the gather
        run on the model's device; only the selected values come back (a full ``[T, V]`` row is
        2 GiB at T = 2048, V = 256,000)."""
        out: list[tuple[torch.Tensor, bool]] = []
        for i in range(0, len(seqs), self.batch_size):
            chunk = seqs[i:i + self.batch_size]
            n = max(len(s) for s in chunk)
            ids = torch.zeros(len(chunk), n, dtype=torch.long)
            mask = torch.zeros(len(chunk), n, dtype=torch.long)
            for j, s in enumerate(chunk):
                ids[j, :len(s)] = torch.tensor(s, dtype=torch.long)
                mask[j, :len(s)] = 1
            kw = {"attention_mask": mask.to(self.device)} if len(chunk) > 1 else {}
            logits = self.model(ids.to(self.device), **kw).logits
            for j, (off, tgt) in enumerate(targets[i:i + self.batch_size]):
                lp = torch.log_softmax(logits[j, off:off + len(tgt)].float(), dim=-1)
                t = torch.tensor(tgt, dtype=torch.long, device=lp.device)
                vals = lp.gather(1, t[:, None])[:, 0]
                greedy = (lp.argmax(-1) == t).all()
                out.append((vals.cpu(), bool(greedy)))
        return out

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Sum of log p (nats) of each continuation given its context, and whether greedy
        decoding would have produced it; ``requests`` are ``(context, continuation)`` strings.

        Raises:
            ValueError: a continuation encodes to no token.
        """
        pairs = [self.encode_pair(c, x) for c, x in requests]
        seqs, conts = [], []
        for (ctx, cont), (c, x) in zip(pairs, requests):
            if not cont:
                raise ValueError(f"continuation {x!r} (context {c[-40:]!r}) encodes to no token")
            seqs.append((ctx + cont)[-(self.max_length + 1):][:-1])
            conts.append(cont)
        targets = [(len(s) - len(c), c) for s, c in zip(seqs, conts)]
        return [(float(vals.sum().item()), greedy) for vals, greedy in self._target_logprobs(seqs, targets)]

    def rolling_nll(self, text: str) -> tuple[float, int]:
        """(negative log-likelihood in nats, tokens scored) of a whole document, the first token
        conditioned on ``doc_start_id`` (EOS: how documents follow each other in training),
        then disjoint windows of ``max_length`` tokens, each conditioned on everything of its
        own window before it."""
        ids = [self.doc_start_id] + self.encode(text)
        if len(ids) < 2:
            return 0.0, 0
        seqs, labels = [], []
        for start in range(0, len(ids) - 1, self.max_length):
            seqs.append(ids[start:start + self.max_length])
            labels.append(ids[start + 1:start + self.max_length + 1])
        scored = self._target_logprobs(seqs, [(0, lab) for lab in labels])
        return -sum(float(vals.sum().item()) for vals, _ in scored), len(ids) - 1

    @torch.no_grad()
    def greedy(self, prompt: str, *, max_new_tokens: int = 64, stop: str = "\n") -> str:
        """Greedy continuation of ``prompt`` up to ``max_new_tokens`` tokens, cut at the first
        ``stop`` string (the harness's ``until``); the prompt is cut from the left to leave
        room for the new tokens."""
        ids = self.encode(prompt) or [self.prefix_id]
        ids = ids[-max(1, self.max_length - max_new_tokens):]
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.doc_start_id
        out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                  do_sample=False, pad_token_id=pad, eos_token_id=self.tok.eos_token_id)
        text = self.tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
        return text.split(stop)[0] if stop else text


# --------------------------------------------------------------------------------------------
# held-out language modelling


def bits_per_byte(scorer: CausalLMScorer, docs: Iterable[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Per-language bits per byte and token perplexity of ``(lang, text)`` documents.

    bits per byte = sum over tokens of -log2 p / UTF-8 bytes of the text (Gao et al. 2020, The
    Pile, sec. 4: comparable across tokenizers); ``ppl`` = exp(mean token NLL in nats).

    Returns:
        ``{lang: {"bpb", "ppl", "docs", "tokens", "bytes"}}``.
    """
    acc: dict[str, list[float]] = {}
    for lang, text in docs:
        if not text:
            continue
        nll, n = scorer.rolling_nll(text)
        a = acc.setdefault(lang, [0.0, 0, 0, 0])
        a[0] += nll; a[1] += n; a[2] += len(text.encode("utf-8")); a[3] += 1
    return {lang: {"bpb": a[0] / math.log(2) / a[2], "ppl": math.exp(a[0] / max(a[1], 1)),
                   "docs": int(a[3]), "tokens": int(a[1]), "bytes": int(a[2])}
            for lang, a in sorted(acc.items()) if a[2] > 0}


# --------------------------------------------------------------------------------------------
# multiple choice


@dataclass
class MCItem:
    """One multiple-choice item.

    ``contexts`` has one prompt shared by every choice, or one per choice (XWinograd's partial
    scoring); ``continuations`` one string per choice (already starting with the target
    delimiter where the task has one); ``gold`` the right index; ``shot`` the text this item
    contributes as a few-shot example (prompt + delimiter + right answer); ``doc`` the source
    record (few-shot sampling leaves out records equal to the item's)."""

    contexts: list[str]
    continuations: list[str]
    gold: int
    shot: str
    doc: dict = field(default_factory=dict)


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file (blank lines skipped).

    Raises:
        FileNotFoundError: no such file. ValueError: a line is not a JSON object (with its number).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"task file not found: {p}")
    out = []
    with p.open(encoding="utf-8-sig") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{i}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{p}:{i}: expected a JSON object")
            out.append(rec)
    return out


def _need(rec: dict, keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise ValueError(f"{where}: record lacks {missing} (has {sorted(rec)})")


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def xcopa_items(records: Sequence[dict], lang: str) -> list[MCItem]:
    """XCOPA (Ponti et al. 2020) items: ``premise, choice1, choice2, question (cause|effect),
    label`` -> prompt ``premise[:-1] + " " + connective``, choices ``" " + choice`` with the
    first letter lower-cased (the harness's ``xcopa`` task).

    Raises:
        ValueError: unknown language (no connectives), a record without the fields, or a
            ``question`` other than cause/effect.
    """
    if lang not in XCOPA_CONNECTIVES:
        raise ValueError(f"XCOPA: no connectives for language {lang!r}; known: {sorted(XCOPA_CONNECTIVES)}")
    cause, effect = XCOPA_CONNECTIVES[lang]
    items = []
    for i, r in enumerate(records):
        _need(r, ("premise", "choice1", "choice2", "question", "label"), f"XCOPA {lang} item {i}")
        if r["question"] not in ("cause", "effect"):
            raise ValueError(f"XCOPA {lang} item {i}: question must be cause or effect, got {r['question']!r}")
        ctx = r["premise"].strip()[:-1] + " " + (cause if r["question"] == "cause" else effect)
        ch = [_lower_first(r["choice1"]), _lower_first(r["choice2"])]
        gold = int(r["label"])
        items.append(MCItem([ctx], [" " + c for c in ch], gold, ctx + " " + ch[gold], r))
    return items


def _pick(r: dict, *names: str):
    for n in names:
        if n in r:
            return r[n]
    raise KeyError(names[0])


def xstorycloze_items(records: Sequence[dict], lang: str) -> list[MCItem]:
    """XStoryCloze (Lin et al. 2022) items: four story sentences, two endings, the right one
    (1 or 2). Accepts the published CSV/TSV column names (``InputSentence1``...,
    ``RandomFifthSentenceQuiz1``, ``AnswerRightEnding``) and their snake_case forms."""
    items = []
    for i, r in enumerate(records):
        try:
            sents = [_pick(r, f"input_sentence_{k}", f"InputSentence{k}") for k in range(1, 5)]
            e1 = _pick(r, "sentence_quiz1", "RandomFifthSentenceQuiz1")
            e2 = _pick(r, "sentence_quiz2", "RandomFifthSentenceQuiz2")
            gold = int(_pick(r, "answer_right_ending", "AnswerRightEnding")) - 1
        except KeyError as e:
            raise ValueError(f"XStoryCloze {lang} item {i}: missing field {e.args[0]!r}") from None
        ctx = " ".join(s.strip() for s in sents)
        items.append(MCItem([ctx], [" " + e1, " " + e2], gold, ctx + " " + (e1, e2)[gold], r))
    return items


def xwinograd_items(records: Sequence[dict], lang: str) -> list[MCItem]:
    """XWinograd (Tikhonov & Ryabinin 2021) items: ``sentence`` with one ``_``, ``option1``,
    ``option2``, ``answer`` (1 or 2). Partial scoring as in the harness's winogrande tasks: the
    context is the sentence up to the blank with each option filled in, the continuation (the
    same for both) is the rest."""
    items = []
    for i, r in enumerate(records):
        _need(r, ("sentence", "option1", "option2", "answer"), f"XWinograd {lang} item {i}")
        s = r["sentence"]
        if "_" not in s:
            raise ValueError(f"XWinograd {lang} item {i}: sentence has no '_' blank")
        k = s.index("_")
        rest = s[k + 1:].strip()
        ctxs = [s[:k] + r["option1"], s[:k] + r["option2"]]
        gold = int(r["answer"]) - 1
        items.append(MCItem(ctxs, [" " + rest] * 2, gold, ctxs[gold] + " " + rest, r))
    return items


def _nli_items(records, lang, a_key, b_key, labels: Sequence[int], task: str) -> list[MCItem]:
    if lang not in NLI_WORDS:
        raise ValueError(f"{task}: no prompt words for language {lang!r}; known: {sorted(NLI_WORDS)}")
    right, yes, also, no = NLI_WORDS[lang]
    words = {0: yes, 1: also, 2: no} if len(labels) == 3 else {1: yes, 0: no}
    items = []
    for i, r in enumerate(records):
        _need(r, (a_key, b_key, "label"), f"{task} {lang} item {i}")
        gold_label = int(r["label"])
        if gold_label not in words:
            raise ValueError(f"{task} {lang} item {i}: label {gold_label} not in {sorted(words)}")
        order = list(labels)
        conts = [f"{r[a_key]}, {right} {words[lab]}, {r[b_key]}" for lab in order]
        gold = order.index(gold_label)
        items.append(MCItem([""], conts, gold, conts[gold], r))
    return items


def xnli_items(records: Sequence[dict], lang: str) -> list[MCItem]:
    """XNLI (Conneau et al. 2018) items: ``premise, hypothesis, label`` (0 entailment,
    1 neutral, 2 contradiction); choices "premise, right? Yes|Also|No, hypothesis" scored with
    an empty context, as the harness's ``xnli`` task."""
    return _nli_items(records, lang, "premise", "hypothesis", (0, 1, 2), "XNLI")


def pawsx_items(records: Sequence[dict], lang: str) -> list[MCItem]:
    """PAWS-X (Yang et al. 2019) items: ``sentence1, sentence2, label`` (1 paraphrase,
    0 not); choices "sentence1, right? Yes|No, sentence2" with an empty context (harness
    ``paws_x``)."""
    return _nli_items(records, lang, "sentence1", "sentence2", (1, 0), "PAWS-X")


def _fewshot_prefix(items: Sequence[MCItem], i: int, k: int, rnd: random.Random) -> str:
    """The K-shot prefix of item ``i`` as the harness draws it: ``rnd.sample`` of K + 1 records
    of the split, the item's own record removed, the first K kept (re-drawn from the split
    without it if duplicates of the item were removed)."""
    if k <= 0:
        return ""
    docs = [it.doc for it in items]
    if k >= len(docs):
        raise ValueError(f"{k}-shot needs more than {k} items in the split (have {len(docs)})")
    idx = list(range(len(docs)))
    drawn = rnd.sample(idx, k + 1)
    keep = [j for j in drawn if docs[j] != docs[i]][:k]
    if len(keep) < k:
        keep = rnd.sample([j for j in idx if docs[j] != docs[i]], k)
    return "".join(items[j].shot + "\n\n" for j in keep)


def score_multiple_choice(scorer: CausalLMScorer, items: Sequence[MCItem], *, shots: int = 0,
                          seed: int = FEWSHOT_SEED, limit: int | None = None) -> dict[str, Any]:
    """Accuracy of ``items`` by log-likelihood (the harness's ``acc``: the choice with the
    highest summed log-likelihood; ties go to the first) and ``acc_norm`` (log-likelihood per
    UTF-8 byte of the continuation). ``limit`` scores the first N items only (the harness's
    ``--limit``); few-shot examples are still drawn from all of them.

    Returns:
        ``{"acc", "acc_norm", "n", "shots", "predictions": [int], "loglikelihoods": [[float]]}``.
    """
    rnd = random.Random(seed)
    requests, spans = [], []
    pool, items = items, list(items)[: limit or None]
    for i, it in enumerate(items):
        prefix = _fewshot_prefix(pool, i, shots, rnd)
        ctxs = it.contexts if len(it.contexts) == len(it.continuations) else it.contexts * len(it.continuations)
        start = len(requests)
        requests.extend((prefix + c, x) for c, x in zip(ctxs, it.continuations))
        spans.append((start, len(requests)))
    lls = [ll for ll, _ in scorer.loglikelihood(requests)] if requests else []
    preds, preds_norm, table = [], [], []
    for it, (a, b) in zip(items, spans):
        row = lls[a:b]
        table.append(row)
        preds.append(max(range(len(row)), key=lambda j: (row[j], -j)))
        norm = [ll / max(len(x.encode("utf-8")), 1) for ll, x in zip(row, it.continuations)]
        preds_norm.append(max(range(len(norm)), key=lambda j: (norm[j], -j)))
    n = len(items)
    return {"acc": sum(p == it.gold for p, it in zip(preds, items)) / n if n else float("nan"),
            "acc_norm": sum(p == it.gold for p, it in zip(preds_norm, items)) / n if n else float("nan"),
            "n": n, "shots": shots, "predictions": preds, "loglikelihoods": table}


# --------------------------------------------------------------------------------------------
# generation tasks


_PUNCT = set(string.punctuation) | {"。", "、", "，", "！", "？", "：", "；", "「", "」", "『", "』", "（", "）"}


def _squad_tokens(s: str) -> list[str]:
    """SQuAD normalisation (Rajpurkar et al. 2016: lower case, no punctuation, no English
    articles, whitespace tokens) with one change for scripts written without spaces: every
    Han, kana, Hangul-less CJK or Thai character is its own token (as MLQA/TyDiQA evaluations
    do for zh/ja/th)."""
    s = unicodedata.normalize("NFKC", s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT and not unicodedata.category(ch).startswith("P"))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    out = []
    for w in s.split():
        buf = ""
        for ch in w:
            if re.match(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]", ch):
                if buf:
                    out.append(buf); buf = ""
                out.append(ch)
            else:
                buf += ch
        if buf:
            out.append(buf)
    return out


def squad_f1_em(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """(F1, exact match) of a prediction against its gold answers, the max over answers."""
    p = _squad_tokens(prediction)
    best_f1, best_em = 0.0, 0.0
    for a in answers:
        g = _squad_tokens(a)
        best_em = max(best_em, float(p == g))
        common = sum((Counter(p) & Counter(g)).values())
        if common:
            prec, rec = common / len(p), common / len(g)
            best_f1 = max(best_f1, 2 * prec * rec / (prec + rec))
    return best_f1, best_em


def tydiqa_scores(scorer: CausalLMScorer, records: Sequence[dict], *, shots: int = 0,
                  max_new_tokens: int = 32, seed: int = FEWSHOT_SEED) -> dict[str, Any]:
    """TyDiQA-GoldP (Clark et al. 2020) F1 / exact match in percent: prompt
    ``context\\n\\nQuestion: q\\nAnswer:``, greedy answer to the end of the line. Records:
    ``context, question, answers`` (``answers`` a list of strings or SQuAD's
    ``{"text": [...]}``)."""
    rnd = random.Random(seed)
    f1s, ems = [], []
    for i, r in enumerate(records):
        _need(r, ("context", "question", "answers"), f"TyDiQA item {i}")
    def gold(r):
        a = r["answers"]
        return list(a["text"]) if isinstance(a, dict) else [a] if isinstance(a, str) else list(a)
    for i, r in enumerate(records):
        prefix = ""
        if shots:
            pool = [j for j in range(len(records)) if j != i]
            for j in rnd.sample(pool, min(shots, len(pool))):
                s = records[j]
                prefix += f"{s['context']}\n\nQuestion: {s['question']}\nAnswer: {gold(s)[0]}\n\n"
        pred = scorer.greedy(f"{prefix}{r['context']}\n\nQuestion: {r['question']}\nAnswer:",
                             max_new_tokens=max_new_tokens).strip()
        f1, em = squad_f1_em(pred, gold(r))
        f1s.append(f1); ems.append(em)
    n = len(records)
    return {"f1": 100 * sum(f1s) / n if n else float("nan"), "em": 100 * sum(ems) / n if n else float("nan"), "n": n}


def ntrex_pairs(ntrex_dir: str | Path, src: str, tgt: str, *, start: int = 0, n: int = 50) -> list[tuple[str, str]]:
    """Aligned (source, reference) lines ``start .. start+n`` of NTREX-128 for two of the 18
    languages.

    Raises:
        FileNotFoundError: the directory or a language's file is missing (names the file).
    """
    d = Path(ntrex_dir)
    for lang in (src, tgt):
        if lang not in NTREX_FILES:
            raise ValueError(f"NTREX: unknown language {lang!r}; known: {sorted(NTREX_FILES)}")
        if not (d / NTREX_FILES[lang]).is_file():
            raise FileNotFoundError(f"NTREX file {d / NTREX_FILES[lang]} not found (pass --ntrex DIR)")
    a = (d / NTREX_FILES[src]).read_text(encoding="utf-8").splitlines()
    b = (d / NTREX_FILES[tgt]).read_text(encoding="utf-8").splitlines()
    if len(a) != len(b):
        raise ValueError(f"NTREX {src}/{tgt}: {len(a)} vs {len(b)} lines (not aligned)")
    return list(zip(a, b))[start:start + n]


def flores_pairs(flores_dir: str | Path, src: str, tgt: str, *, split: str = "devtest",
                 n: int | None = None) -> list[tuple[str, str]]:
    """Aligned lines of FLORES-200 files ``<dir>/<code>.<split>`` (e.g. ``eng_Latn.devtest``)."""
    d = Path(flores_dir)
    paths = [d / f"{FLORES_CODES[x]}.{split}" for x in (src, tgt)]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"FLORES file {p} not found (pass --flores DIR holding "
                                    f"<code>.{split} files, e.g. eng_Latn.{split})")
    a, b = (p.read_text(encoding="utf-8").splitlines() for p in paths)
    if len(a) != len(b):
        raise ValueError(f"FLORES {src}/{tgt}: {len(a)} vs {len(b)} lines (not aligned)")
    pairs = list(zip(a, b))
    return pairs[:n] if n else pairs


#: sacrebleu BLEU tokenizer per target language: 13a, except the scripts without spaces.
BLEU_TOKENIZE = {"zh": "zh", "ja": "char", "th": "char", "ko": "char"}


def translation_scores(scorer: CausalLMScorer, pairs: Sequence[tuple[str, str]], src: str, tgt: str, *,
                       shots: Sequence[tuple[str, str]] = (), max_new_tokens: int = 128) -> dict[str, Any]:
    """Greedy translation of ``pairs`` with the prompt ``"<Src>: s\\n<Tgt>:"`` (preceded by the
    ``shots`` pairs), scored with sacrebleu's chrF (Popovic 2015) and BLEU (Papineni et al.
    2002; tokenizer per :data:`BLEU_TOKENIZE`).

    Returns:
        ``{"chrf", "bleu", "n", "examples": [(src, hyp, ref) x 3]}``.
    """
    import sacrebleu

    s_name, t_name = LANG_NAMES[src], LANG_NAMES[tgt]
    prefix = "".join(f"{s_name}: {a}\n{t_name}: {b}\n\n" for a, b in shots)
    hyps = [scorer.greedy(f"{prefix}{s_name}: {a}\n{t_name}:", max_new_tokens=max_new_tokens).strip()
            for a, _ in pairs]
    refs = [b for _, b in pairs]
    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize=BLEU_TOKENIZE.get(tgt, "13a")).score
    return {"chrf": chrf, "bleu": bleu, "n": len(pairs),
            "examples": [(a, h, b) for (a, b), h in list(zip(pairs, hyps))[:3]]}


# --------------------------------------------------------------------------------------------
# held-out documents, curriculum stage, outputs


def heldout_documents(tokens_dir: str | Path, corpus_dir: str | Path, *, val_fraction: float,
                      val_files_per_stream: int = 1, max_docs_per_lang: int | None = None,
                      sources: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``(lang, text)`` of the corpus documents the trainer held out of training: per token
    stream, the rows :func:`training.data.select_validation_rows` picks (the same ``id`` CRC32
    rule, fraction and files the trainer's ``data.val_fraction`` / ``val_files_per_stream``
    use), looked up by ``id`` in the corpus parquet under ``corpus_dir``. ``sources`` keeps only
    those sources (e.g. ``["ntrex"]``).

    Raises:
        FileNotFoundError: no token manifest or no corpus parquet.
        ValueError: ``val_fraction`` is 0 (nothing was held out: pass ``--heldout`` files).
    """
    import pyarrow.parquet as pq

    from training.data import load_manifest, select_validation_rows

    if val_fraction <= 0:
        raise ValueError("data.val_fraction is 0: the trainer held nothing out; pass --heldout FILES")
    man = load_manifest(tokens_dir)
    want: dict[str, str] = {}  # id -> lang
    for s in man.streams:
        if sources and s.source not in sources:
            continue
        for f in s.files[:val_files_per_stream]:
            t = pq.read_table(f, columns=["id"]) if "id" in pq.read_schema(f).names else None
            if t is None:
                continue
            ids = [str(x) for x in t.column("id").to_pylist()]
            for r in select_validation_rows(ids, val_fraction):
                want[ids[int(r)]] = s.lang
    files = sorted(Path(corpus_dir).rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no corpus parquet under {corpus_dir}")
    out: list[tuple[str, str]] = []
    per_lang: Counter = Counter()
    for f in files:
        names = pq.read_schema(f).names
        if "id" not in names or "text" not in names:
            continue
        t = pq.read_table(f, columns=["id", "text"])
        for i, text in zip(t.column("id").to_pylist(), t.column("text").to_pylist()):
            lang = want.get(str(i))
            if lang is None or (max_docs_per_lang and per_lang[lang] >= max_docs_per_lang):
                continue
            per_lang[lang] += 1
            out.append((lang, text))
    return out


def read_heldout_file(path: str | Path, lang: str | None = None) -> list[tuple[str, str]]:
    """``(lang, text)`` documents of a ``--heldout`` file: JSON lines with ``text`` and ``lang``
    (or ``language``) fields, or plain text (one document per blank-line-separated paragraph
    block) whose language is ``lang`` (``LANG=path`` on the command line).

    Raises:
        ValueError: a JSONL record without text/lang and no ``lang`` given; plain text without ``lang``.
    """
    p = Path(path)
    if p.suffix in (".jsonl", ".json"):
        out = []
        for i, r in enumerate(read_jsonl(p)):
            l = r.get("lang", r.get("language", lang))
            if "text" not in r or not l:
                raise ValueError(f"{p} record {i}: needs 'text' and 'lang' (or pass LANG={p})")
            out.append((str(l), str(r["text"])))
        return out
    if not lang:
        raise ValueError(f"{p}: plain-text held-out files need their language: pass LANG={p}")
    if not p.is_file():
        raise FileNotFoundError(f"held-out file not found: {p}")
    blocks = [b.strip() for b in re.split(r"\n\s*\n", p.read_text(encoding="utf-8")) if b.strip()]
    return [(lang, b) for b in blocks]


def curriculum_stage(step: int, stages, *, total_steps: int, tokens_per_step: int) -> tuple[int, str]:
    """(index, name) of the curriculum stage in force at optimizer step ``step`` (the trainer's
    rule: the last stage whose resolved start is <= step)."""
    idx = 0
    for i, s in enumerate(stages):
        if step >= s.resolve_start(total_steps=total_steps, tokens_per_step=tokens_per_step):
            idx = i
    return idx, stages[idx].name


#: PolyLM-13B's published scores (Wei et al. 2023, "PolyLM", arXiv 2307.06018, appendix C):
#: ``{task: (metric, shots, {lang: score in percent})}``. Tables 18 (XNLI), 19 (PAWS-X),
#: 20 (XWinograd), 21 (XCOPA): accuracy, zero-shot; table 22 (TyDiQA-GoldP): F1, one-shot. The
#: paper's translation figures are WMT20 BLEU (table 24), a different test set from NTREX/FLORES,
#: so no translation row is compared here. A score is comparable with ours only at the same shots
#: and on the same split (the paper: XNLI/PAWS-X/XCOPA test sets, XWinograd all items).
POLYLM_13B_PUBLISHED: dict[str, tuple[str, int, dict[str, float]]] = {
    "xnli": ("acc", 0, {"en": 54.6, "zh": 35.9, "ar": 33.6, "es": 50.0, "fr": 52.1, "ru": 49.0,
                        "th": 44.6, "tr": 44.5, "vi": 46.7, "de": 50.2, "bg": 36.3, "el": 33.8,
                        "hi": 34.9, "sw": 34.4, "ur": 33.5}),
    "pawsx": ("acc", 0, {"en": 60.9, "zh": 56.0, "es": 59.7, "fr": 56.6, "ja": 51.0, "ko": 46.8,
                         "de": 60.3}),
    "xwinograd": ("acc", 0, {"en": 84.6, "zh": 76.6, "ja": 65.7, "pt": 74.9, "ru": 65.1, "fr": 73.5}),
    "xcopa": ("acc", 0, {"id": 70.2, "it": 66.0, "th": 58.6, "tr": 57.8, "vi": 70.8, "zh": 67.0,
                         "et": 49.8, "ht": 50.4, "qu": 50.4, "sw": 51.8, "ta": 55.0}),
    "tydiqa": ("f1", 1, {"ar": 44.9, "en": 58.0, "id": 48.6, "ko": 53.8, "ru": 39.5, "fi": 20.9,
                         "bn": 2.9, "sw": 22.0, "te": 3.7}),
}


def published_reference(task: str, lang: str, metric: str, shots: int | None) -> str:
    """PolyLM-13B's published score for ``(task, lang, metric)`` as a table cell: ``"67.0"`` (same
    shots), ``"67.0 (0-shot)"`` when this run used other shots (or did not record them), ``""`` when
    the paper has no such figure. Scores in percent (ours: accuracy in [0, 1], F1 in percent)."""
    ref = POLYLM_13B_PUBLISHED.get(task)
    if ref is None or ref[0] != metric or lang not in ref[2]:
        return ""
    cell = f"{ref[2][lang]:.1f}"
    return cell if shots == ref[1] else f"{cell} ({ref[1]}-shot)"


def results_table(results: dict[str, Any]) -> str:
    """Plain-text table (one row per task and language) of an ``eval/results.json`` dict, with
    PolyLM-13B's published score beside ours where the paper has one (``POLYLM_13B_PUBLISHED``)."""
    rows = [("task", "lang", "metric", "value", "n", "polylm-13b (paper)")]
    for lang, r in sorted(results.get("heldout", {}).items()):
        rows.append(("heldout", lang, "bpb", f"{r['bpb']:.4f}", str(r["docs"]), ""))
        rows.append(("heldout", lang, "ppl", f"{r['ppl']:.2f}", str(r["tokens"]), ""))
    shots = results.get("shots")
    for task, per in sorted(results.get("tasks", {}).items()):
        for lang, r in sorted(per.items()):
            for m in ("acc", "acc_norm", "f1", "em", "chrf", "bleu"):
                if m in r:
                    rows.append((task, lang, m, f"{r[m]:.4f}" if m.startswith("acc") else f"{r[m]:.2f}",
                                 str(r.get("n", "")), published_reference(task, lang, m, r.get("shots", shots))))
    w = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(r)).rstrip()
                     for r in rows)


def plot_results(results: dict[str, Any], path: str | Path) -> Path | None:
    """Bar charts of per-language scores: held-out bits per byte, then each task's main metric
    (accuracy, F1 or chrF). Returns the PNG path, or None when there is nothing to plot."""
    panels = []
    if results.get("heldout"):
        panels.append(("held-out bits per byte (lower is better)", {l: r["bpb"] for l, r in results["heldout"].items()}))
    for task, per in sorted(results.get("tasks", {}).items()):
        for m in ("acc", "f1", "chrf"):
            vals = {l: r[m] for l, r in per.items() if m in r}
            if vals:
                panels.append((f"{task} {m}", vals))
                break
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for ax, (title, vals) in zip(axes[:, 0], panels):
        langs = sorted(vals)
        ax.bar(langs, [vals[l] for l in langs], color="#4C72B0")
        ax.set_title(title, fontsize=11)
        ax.tick_params(labelsize=10)
        if "acc" in title and " acc" in title:
            ax.axhline(results.get("chance", {}).get(title.split()[0], 0.5), color="#C44E52",
                       linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
