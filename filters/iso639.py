"""ISO 639 language codes: ISO 639-2/3 codes and tags mapped to ISO 639-1 (pure Python).

Used by the readers (declared languages of sources, JSONL ``lang`` fields, ``<html lang>``) and
by :mod:`filters.langid` (labels of GlotLID-style LID models, ``__label__eng_Latn``).
"""
from __future__ import annotations

import re

#: ISO 639-2/3 codes (and a few names used by NTREX / UDHR files) -> ISO 639-1.
ISO3_TO_1 = {
    "ara": "ar", "arb": "ar", "zho": "zh", "chi": "zh", "cmn": "zh", "yue": "zh", "eng": "en",
    "rus": "ru", "spa": "es", "fra": "fr", "fre": "fr", "por": "pt", "deu": "de", "ger": "de",
    "ita": "it", "nld": "nl", "dut": "nl", "pol": "pl", "tur": "tr", "heb": "he", "jpn": "ja",
    "kor": "ko", "tha": "th", "vie": "vi", "ind": "id", "fin": "fi", "hun": "hu", "nor": "no",
    "nob": "nb", "nno": "nn", "swe": "sv", "dan": "da", "ces": "cs", "cze": "cs", "slk": "sk",
    "ukr": "uk", "bul": "bg", "ell": "el", "gre": "el", "ron": "ro", "rum": "ro", "hin": "hi",
    "ben": "bn", "fas": "fa", "per": "fa", "pes": "fa", "msa": "ms", "zsm": "ms", "cat": "ca",
    "arg": "an", "afr": "af", "est": "et", "lav": "lv", "lit": "lt", "slv": "sl", "hrv": "hr",
    "srp": "sr", "tgl": "tl", "urd": "ur", "tam": "ta", "eus": "eu", "glg": "gl",
}
OLD_ISO1 = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv"}


def to_iso639_1(code: str | None) -> str | None:
    """Map a language code or tag to ISO 639-1.

    Accepts ISO 639-1 (``"de"``, ``"de-DE"``, ``"pt_BR"``), ISO 639-2/3 with region or script
    (``"arb"``, ``"zho-CN"``, ``"eng-GB"``, ``"deu_1996"``, ``"cmn_hans"``) and the deprecated
    ``iw``/``in``. Returns None for unknown or empty codes (``"?"``, ``"xx"``, ``"und"``).
    """
    if not code:
        return None
    head = re.split(r"[-_\s.]", code.strip().lower(), maxsplit=1)[0]
    if len(head) == 2 and head.isalpha() and head not in ("xx", "zz"):
        return OLD_ISO1.get(head, head)
    if len(head) == 3:
        return ISO3_TO_1.get(head)
    return None
