"""Bilingual training documents from parallel-tier documents.

PolyLM mixes about 100 million bilingual sentence pairs (OPUS) into pretraining so that the
languages align (arXiv 2307.06018, sec. 2.1, "Bilingual data"). Here the ``parallel`` tier of
the corpus (PUD pairs, NTREX alignments) is turned into plain training documents with
configurable templates; the tokenize job files them under ``source=parallel``.

Input (one parallel-tier corpus document, conventions in the project briefs):
``meta`` is a JSON string ``{"src_lang": "en", "tgt_lang": "xx", "pairs": [[en, xx], ...]}``.

A *template* is a dict:

* ``name``: label (str), recorded in nothing but useful in configs.
* ``unit``: ``"pair"`` - ``format`` is applied to each sentence pair and the results are joined
  with ``join``; ``"document"`` - ``format`` is applied once, ``{src}``/``{tgt}`` being all
  source/target sentences joined with ``join``.
* ``format``: a :meth:`str.format` string with the fields ``{src}``, ``{tgt}`` (text),
  ``{src_name}``, ``{tgt_name}`` (English language names), ``{src_native}``, ``{tgt_native}``
  (endonyms) and ``{src_lang}``, ``{tgt_lang}`` (ISO 639-1 codes).
* ``header`` (optional, ``unit: pair`` only): a format string put once before the pairs,
  followed by ``join``.

``direction`` picks which side is the "source" of the rendered document:
``"src2tgt"`` (as in the data, English first), ``"tgt2src"``, ``"both"`` (two documents per
parallel document, one per direction) or ``"hash"`` (one document, the direction chosen by a
stable hash of the document id, so both directions occur without duplicating text). The
template is also chosen by a stable hash of the id (CRC-32, so reruns and other machines agree).
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

# ISO 639-1 -> English name / endonym, for the 18 PolyLM languages (arXiv 2307.06018, table 1).
LANGUAGE_NAMES: dict[str, str] = {
    "zh": "Chinese", "en": "English", "ru": "Russian", "es": "Spanish", "fr": "French",
    "pt": "Portuguese", "de": "German", "it": "Italian", "nl": "Dutch", "pl": "Polish",
    "ar": "Arabic", "tr": "Turkish", "he": "Hebrew", "ja": "Japanese", "ko": "Korean",
    "th": "Thai", "vi": "Vietnamese", "id": "Indonesian",
}
NATIVE_NAMES: dict[str, str] = {
    "zh": "中文", "en": "English", "ru": "Русский", "es": "Español", "fr": "Français",
    "pt": "Português", "de": "Deutsch", "it": "Italiano", "nl": "Nederlands", "pl": "Polski",
    "ar": "العربية", "tr": "Türkçe", "he": "עברית", "ja": "日本語", "ko": "한국어",
    "th": "ไทย", "vi": "Tiếng Việt", "id": "Bahasa Indonesia",
}

DEFAULT_TEMPLATES: list[dict] = [
    {"name": "names_per_pair", "unit": "pair", "format": "{src_name}: {src}\n{tgt_name}: {tgt}",
     "join": "\n\n"},
    {"name": "translate_block", "unit": "document",
     "format": "Translate from {src_name} to {tgt_name}.\n{src_name}:\n{src}\n{tgt_name}:\n{tgt}",
     "join": "\n"},
    {"name": "native_per_pair", "unit": "pair", "format": "{src_native}: {src}\n{tgt_native}: {tgt}",
     "join": "\n\n"},
]

DIRECTIONS = ("src2tgt", "tgt2src", "both", "hash")
_FIELDS = {"src", "tgt", "src_name", "tgt_name", "src_native", "tgt_native", "src_lang", "tgt_lang"}


class BilingualError(ValueError):
    """A parallel document cannot be rendered (bad ``meta`` JSON, no pairs, unknown language)."""


@dataclass
class BilingualConfig:
    """How parallel documents become training text (the ``bilingual:`` config section).

    Attributes:
        templates: list of template dicts (see module docstring); at least one.
        direction: one of :data:`DIRECTIONS`.
        language_names / native_names: ISO 639-1 -> name maps; merged over the defaults.
        seed: salt of the stable hashes that choose direction and template.
    """

    templates: list[dict] = field(default_factory=lambda: [dict(t) for t in DEFAULT_TEMPLATES])
    direction: str = "hash"
    language_names: dict[str, str] = field(default_factory=dict)
    native_names: dict[str, str] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"bilingual.direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not self.templates:
            raise ValueError("bilingual.templates must list at least one template")
        for t in self.templates:
            validate_template(t)
        self.language_names = {**LANGUAGE_NAMES, **(self.language_names or {})}
        self.native_names = {**NATIVE_NAMES, **(self.native_names or {})}

    @classmethod
    def from_dict(cls, d: dict | None) -> "BilingualConfig":
        """Build from the ``bilingual:`` YAML section (unknown keys raise ``ValueError``)."""
        d = dict(d or {})
        known = {"templates", "direction", "language_names", "native_names", "seed"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown keys in bilingual config: {sorted(unknown)}")
        return cls(**d)


def validate_template(t: dict) -> None:
    """Check a template dict.

    Raises:
        ValueError: missing/invalid ``unit`` or ``format``, or a format field that is not one
            of ``{src} {tgt} {src_name} {tgt_name} {src_native} {tgt_native} {src_lang} {tgt_lang}``.
    """
    import string

    if t.get("unit") not in ("pair", "document"):
        raise ValueError(f"template {t.get('name')!r}: unit must be 'pair' or 'document'")
    for key in ("format", "header"):
        if key not in t:
            continue
        if not isinstance(t[key], str):
            raise ValueError(f"template {t.get('name')!r}: {key} must be a string")
        names = {f for _, f, _, _ in string.Formatter().parse(t[key]) if f is not None}
        bad = names - _FIELDS
        if bad:
            raise ValueError(f"template {t.get('name')!r}: unknown fields {sorted(bad)} in {key}")
    if "format" not in t:
        raise ValueError(f"template {t.get('name')!r} has no format")


def parse_pairs(meta: str | dict | None) -> tuple[str, str, list[tuple[str, str]]]:
    """Read ``(src_lang, tgt_lang, pairs)`` from a parallel document's ``meta``.

    Pairs with an empty side are dropped (they carry no alignment).

    Raises:
        BilingualError: meta is not JSON / not an object, languages missing, or no usable pair.
    """
    if meta is None:
        raise BilingualError("meta is null")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as e:
            raise BilingualError(f"meta is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise BilingualError("meta is not a JSON object")
    src, tgt = meta.get("src_lang"), meta.get("tgt_lang")
    if not src or not tgt:
        raise BilingualError("meta has no src_lang/tgt_lang")
    raw = meta.get("pairs")
    if not isinstance(raw, list):
        raise BilingualError("meta has no pairs list")
    pairs = []
    for p in raw:
        if (isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
                and isinstance(p[1], str) and p[0].strip() and p[1].strip()):
            pairs.append((p[0], p[1]))
    if not pairs:
        raise BilingualError("meta has no non-empty [src, tgt] pair")
    return src, tgt, pairs


def _stable(doc_id: str, salt: str, seed: int) -> int:
    return zlib.crc32(f"{seed}:{salt}:{doc_id}".encode("utf-8"))


def render(doc_id: str, meta: str | dict | None, cfg: BilingualConfig) -> list[tuple[str, str, str]]:
    """Render one parallel document into bilingual training documents.

    Args:
        doc_id: the corpus document id (drives the stable direction/template choice).
        meta: the document's ``meta`` (JSON string or dict) holding the pairs.
        cfg: templates and direction.

    Returns:
        list of ``(new_id, text, direction)``; ``new_id`` is ``"{doc_id}#{a}-{b}"`` with ``a``
        the language written first; one element, or two for ``direction="both"``.

    Raises:
        BilingualError: see :func:`parse_pairs`; or a language without a configured name.
    """
    src, tgt, pairs = parse_pairs(meta)
    for code in (src, tgt):
        if code not in cfg.language_names or code not in cfg.native_names:
            raise BilingualError(f"no language name configured for {code!r}")
    if cfg.direction == "both":
        dirs = ["src2tgt", "tgt2src"]
    elif cfg.direction == "hash":
        dirs = ["src2tgt" if _stable(doc_id, "dir", cfg.seed) % 2 == 0 else "tgt2src"]
    else:
        dirs = [cfg.direction]
    out = []
    for d in dirs:
        a, b = (src, tgt) if d == "src2tgt" else (tgt, src)
        sents = pairs if d == "src2tgt" else [(y, x) for x, y in pairs]
        tmpl = cfg.templates[_stable(doc_id, "tmpl:" + d, cfg.seed) % len(cfg.templates)]
        names = {"src_name": cfg.language_names[a], "tgt_name": cfg.language_names[b],
                 "src_native": cfg.native_names[a], "tgt_native": cfg.native_names[b],
                 "src_lang": a, "tgt_lang": b}
        join = tmpl.get("join", "\n")
        if tmpl["unit"] == "pair":
            parts = [tmpl["format"].format(src=x, tgt=y, **names) for x, y in sents]
            if tmpl.get("header"):
                parts.insert(0, tmpl["header"].format(src="", tgt="", **names))
            text = join.join(parts)
        else:
            text = tmpl["format"].format(src=join.join(x for x, _ in sents),
                                         tgt=join.join(y for _, y in sents), **names)
        out.append((f"{doc_id}#{a}-{b}", text, d))
    return out


def bilingual_config(cfg: dict[str, Any] | None) -> BilingualConfig:
    """Shorthand for :meth:`BilingualConfig.from_dict`."""
    return BilingualConfig.from_dict(cfg)
