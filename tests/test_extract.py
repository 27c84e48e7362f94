"""HTML decoding and main-content extraction (pipeline.extract)."""
from __future__ import annotations

import pytest

from pipeline.extract import (DEFAULT_CONFIG, LIBRARY_DEFAULTS, DecodeError, ExtractConfig,
                              charset_from_content_type, decode_html, evaluate, extract_main_text,
                              html_lang)

PAGE = """<!doctype html><html lang="de-DE"><head><meta charset="{cs}"><title>T</title></head><body>
<nav><a href="/">Startseite</a> | <a href="/k">Kontakt</a> | <a href="/i">Impressum</a></nav>
<article><h1>Die Straße am Fluss</h1>
<p>Über die Brücke gehen jeden Morgen viele Menschen zur Arbeit, und die Bäckerei an der Ecke
öffnet schon um sechs Uhr. Im Sommer sitzen die Gäste draußen unter den großen Kastanien.</p>
<p>Die Stadt plant, die Straße im nächsten Jahr zu erneuern, damit Radfahrer sicherer fahren.</p>
</article>
<div class="comments"><h3>Kommentare</h3><p>Toller Artikel! Besuchen Sie meine Seite für billige Uhren.</p></div>
<footer>© 2024 Beispiel GmbH · Alle Rechte vorbehalten · Datenschutz</footer></body></html>"""


def test_decode_declared_charsets():
    html = PAGE.format(cs="windows-1252")
    data = html.encode("cp1252")
    d = decode_html(data, http_charset="windows-1252")
    assert d.text == html and d.encoding == "cp1252" and d.encoding_source == "http"
    d = decode_html(data)  # no HTTP header: the meta tag
    assert d.text == html and d.encoding_source == "meta"
    assert charset_from_content_type('text/html; charset="EUC-JP"') == "EUC-JP"
    assert charset_from_content_type("text/html") is None


def test_decode_wrong_declaration_falls_back():
    html = PAGE.format(cs="utf-8")
    d = decode_html(html.encode("utf-8"), http_charset="ISO-8859-1")  # the server's default lies
    assert "Straße" in d.text and d.encoding == "utf-8"  # valid UTF-8 wins: no mojibake
    html_ru = "<html><body><p>" + "Привет, мир! Это обычный русский текст без объявления кодировки. " * 20 + "</p></body></html>"
    d = decode_html(html_ru.encode("cp1251"))
    assert d.encoding_source == "detected" and "Привет" in d.text


def test_decode_utf8_bom_and_lenient():
    d = decode_html(b"\xef\xbb\xbf<p>caf\xc3\xa9</p>", http_charset="iso-8859-1")
    assert d.text == "<p>café</p>" and d.encoding_source == "bom"
    body = ("<html><body><p>" + "Grüße aus Köln " * 500 + "</p></body></html>").encode()
    d = decode_html(body[:-30] + b"\xc3" + body[-30:])  # one stray byte in 8 KB of UTF-8
    assert d.replaced == 1 and "Grüße" in d.text


def test_decode_undecodable_raises_invalid_utf8():
    junk = bytes(range(0x80, 0x100)) * 20
    with pytest.raises(DecodeError) as e:
        decode_html(b"<html><meta charset='utf-8'><body>" + junk, http_charset="utf-8",
                    max_error_ratio=0.0)
    assert e.value.reason == "invalid_utf8" and "tried" in e.value.detail


def test_html_lang():
    assert html_lang(PAGE) == "de-DE"
    assert html_lang("<html><body>x</body></html>") is None
    assert html_lang('<HTML LANG=pt_BR dir="ltr">') == "pt_BR"


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_extract_keeps_content_drops_boilerplate(extractor):
    cfg = DEFAULT_CONFIG if extractor == "trafilatura" else ExtractConfig(extractor="resiliparse")
    text = extract_main_text(PAGE.format(cs="utf-8"), url="http://example.de/a", config=cfg)
    assert "Über die Brücke gehen jeden Morgen" in text
    assert "Radfahrer sicherer" in text
    assert "Impressum" not in text
    if extractor == "trafilatura":
        assert "billige Uhren" not in text  # comments are off in our config
    assert extract_main_text("<html><body></body></html>", config=cfg) == ""


def test_extract_config_from_options():
    assert ExtractConfig.from_options(None) == DEFAULT_CONFIG
    assert ExtractConfig.from_options({"extractor": "resiliparse"}).extractor == "resiliparse"
    with pytest.raises(ValueError, match="unknown extract option"):
        ExtractConfig.from_options({"favour_precision": True})
    with pytest.raises(ValueError, match="extractor must be"):
        ExtractConfig.from_options({"extractor": "boilerpipe"})


def test_evaldata_ours_at_least_as_good_as_library_default(shared_data):
    """Acceptance: on web-html/evaldata.json our configuration keeps "with" snippets and drops
    "without" snippets at least as well as trafilatura's own defaults (both figures printed)."""
    ev = str(shared_data / "web-html" / "evaldata.json")
    hd = str(shared_data / "web-html" / "html")
    ours = evaluate(ev, hd, DEFAULT_CONFIG)
    lib = evaluate(ev, hd, LIBRARY_DEFAULTS[DEFAULT_CONFIG.extractor])
    for label, r in (("ours", ours), ("library default", lib)):
        print(f"\nevaldata {label}: with kept {r['with_kept']}/{r['with_total']} ({r['with_kept_frac']:.3f}), "
              f"without dropped {r['without_dropped']}/{r['without_total']} ({r['without_dropped_frac']:.3f}), "
              f"accuracy {r['accuracy']:.4f}, f1 {r['f1']:.4f}, {r['seconds']:.1f}s")
    assert ours["pages"] == lib["pages"] >= 170
    assert ours["accuracy"] >= lib["accuracy"]
    assert ours["f1"] >= lib["f1"]
    assert ours["without_dropped"] >= lib["without_dropped"]
    assert ours["with_kept_frac"] >= 0.93 and ours["without_dropped_frac"] >= 0.88
