"""Rule filters on clean text they were never tuned on (issue 14, cause 2): held-out paragraphs
built from the Leipzig sentences (bench/heldout.py; no rule threshold was set on them), and
census / math paragraphs written for this test."""
from __future__ import annotations

import pytest

from bench.heldout import LANGS, heldout_documents, rules_kept
from filters.rules import apply_rules, load_filter_config


@pytest.fixture(scope="module")
def heldout(shared_data):
    docs = heldout_documents(shared_data, per_kind=12)
    return docs, rules_kept(docs, "web")


def test_line_endings_of_one_line_paragraphs_do_not_decide(heldout):
    """A one-line paragraph ending in ')', ':' or a number is kept exactly when the same
    paragraph ending in a full stop is (FineWeb's line-punctuation rule scored it 0 before)."""
    _, res = heldout
    for lang in LANGS:
        bk = res[lang]["by_kind"]
        for kind in ("para_paren", "para_colon", "para_digit"):
            assert bk[kind][1] >= bk["para"][1], (lang, kind, bk)


def test_heldout_kept_by_rules(heldout):
    docs, res = heldout
    kept = sum(d["kept"] for d in res.values())
    assert kept >= 0.97 * len(docs), {l: (d["kept"], d["docs"], d["reasons"]) for l, d in res.items()}
    for lang in LANGS:   # the rest are Leipzig web boilerplate sentences repeated (profile/login lines)
        assert res[lang]["kept"] >= 0.9 * res[lang]["docs"], (lang, res[lang])


CLEAN = {
    "en": "As of the census of 2010, there were 1,847 people, 721 households, and 498 families residing in "
          "the town. The population density was 412.3 inhabitants per square mile (159.2/km2). There were 803 "
          "housing units at an average density of 179.2 per square mile (69.2/km2). The racial makeup of the "
          "town was 94.6% White, 1.2% African American, 0.8% Native American, 0.4% Asian, 1.1% from other "
          "races, and 1.9% from two or more races. Hispanic or Latino of any race were 3.4% of the population. "
          "The median age in the town was 41.7 years; 23.1% of residents were under the age of 18 and 17.9% "
          "were 65 years of age or older.",
    "de": "Laut der Volkszählung von 2011 lebten in der Gemeinde 3.412 Einwohner in 1.538 Haushalten. Die "
          "Bevölkerungsdichte betrug 127,4 Einwohner je Quadratkilometer. 18,2 % der Einwohner waren jünger als "
          "18 Jahre, 21,7 % waren 65 Jahre oder älter. Das Durchschnittsalter lag bei 44,1 Jahren. Von den 1.538 "
          "Haushalten waren 31,5 % Einpersonenhaushalte, in 27,9 % lebten Kinder unter 18 Jahren. Zwischen 1990 "
          "und 2011 sank die Einwohnerzahl um 6,3 %, zwischen 2011 und 2021 stieg sie wieder um 2,1 % auf 3.484.",
    "fr": "Soit f la fonction définie sur R par f(x) = x^3 − 3x + 1. Sa dérivée est f'(x) = 3x^2 − 3 = "
          "3(x − 1)(x + 1), qui s'annule en x = −1 et en x = 1. La fonction est donc croissante sur ]−∞ ; −1], "
          "décroissante sur [−1 ; 1] et croissante sur [1 ; +∞[. On a f(−1) = 3 et f(1) = −1, de sorte que "
          "l'équation f(x) = 0 admet exactement trois solutions réelles. L'ensemble des solutions est noté "
          "{a, b, c}, avec a < −1 < b < 1 < c, et on montre que a + b + c = 0.",
    "es": "Según el censo de 2020, el municipio tenía 12.563 habitantes, de los cuales 6.102 eran hombres y "
          "6.461 mujeres. La densidad de población era de 85,3 habitantes por kilómetro cuadrado. El 24,8 % de "
          "la población tenía menos de 15 años y el 13,2 % tenía 65 años o más. Entre 2010 y 2020 la población "
          "creció un 4,7 %, frente al 1,2 % de la década anterior. En 2020 había 4.388 viviendas, de las cuales "
          "3.905 estaban habitadas, con un promedio de 3,2 ocupantes por vivienda.",
}


@pytest.mark.parametrize("lang", sorted(CLEAN))
def test_census_and_math_paragraphs_pass(lang):
    cfg = load_filter_config()
    r = apply_rules(CLEAN[lang], lang, cfg.params(lang, "web"))
    assert r.reason is None, (lang, r.fired)


def test_code_and_number_tables_still_rejected():
    cfg = load_filter_config()
    p = cfg.params("en", "web")
    code = "\n".join(f"function f{i}(a, b) {{ if (a > b) {{ return {{ x: a, y: b }}; }} return null; }}"
                     for i in range(30))
    assert apply_rules(code, "en", p).reason is not None
    table = " ".join(f"{i} {i * 37 % 1000} {i * 13 % 97}.{i % 10}" for i in range(60))
    r = apply_rules(table, "en", p)
    assert r.reason is not None and ("digit_ratio" in r.fired or "gopher_below_alpha_threshold" in r.fired)
