"""The Spanish -> English MT recipe's data: verse alignment from SWORD modules, normalisation, held-out books."""

from __future__ import annotations

import pytest

from fusion.errors import InputError
from recipes.mt.make_es_en import (
    ADAPT_TARGET,
    DEV_BOOKS,
    SOURCE,
    TEST_BOOKS,
    TRAIN_TARGET,
    normalise_en,
    normalise_es,
    parse_osis,
    read_module,
)


def test_parse_osis_drops_headings_and_markup() -> None:
    lines = [
        "<w>David’s</w> Psalm of <w>praise</w>.   Psalms 145:1: I will <w>extol</w> thee, my <w>God</w>. <milestone/>",
        "I Thessalonians 1:2: We give <w>thanks</w> to God always",
        "(engKJV2006eb)",
    ]
    v = parse_osis(lines)
    assert v == {
        ("Psalms", 145, 1): "I will extol thee, my God .",
        ("I Thessalonians", 1, 2): "We give thanks to God always",
    }


def test_normalisation() -> None:
    assert normalise_en("God’s Spirit, “Let there be light,”") == "god's spirit let there be light"
    assert normalise_es("Y dijo Dios: Sea la luz: y fué la luz.") == "y dijo dios sea la luz y fué la luz"


def test_held_out_books_are_disjoint() -> None:
    assert not set(DEV_BOOKS) & set(TEST_BOOKS)


def test_modules_align_by_reference() -> None:
    key = "Ruth 1:1-3"
    es, web, kjv = (read_module(m, key, min_verses=3) for m in (SOURCE, TRAIN_TARGET, ADAPT_TARGET))
    assert set(es) == set(web) == set(kjv) == {("Ruth", 1, i) for i in (1, 2, 3)}
    assert "elimelech" in normalise_en(kjv[("Ruth", 1, 2)])
    assert "elimelec" in normalise_es(es[("Ruth", 1, 2)])


def test_missing_module_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="noSuchModule"):
        read_module("noSuchModule", "Ruth 1:1", min_verses=1)


def test_implausible_pairs_are_dropped() -> None:
    from recipes.mt.make_es_en import plausible_pair

    assert plausible_pair("la gracia sea con todos", "the grace be with all")
    assert not plausible_pair("amén", "amen " + "glossary " * 200)
    assert not plausible_pair("", "x")


def test_kjv_lm_text_and_references_share_units() -> None:
    """The KJV LM text, the KJV references and the model's WEB-trained output meet in one unit space: lower
    case, ``LORD`` = ``lord``, curly apostrophes folded, hyphenated WEB compounds split like KJV's spaced
    ones, pilcrows and markup dropped (a mismatch would mute the LM: its words would never match the output)."""
    kjv = parse_osis(["Ruth 1:8: ¶ the <w>LORD</w> deal kindly with you, as ye have with the <w>mother’s</w> "
                      "daughters in <w>law</w>."])
    web = parse_osis(["Ruth 1:8: “May <w>Yahweh</w> deal kindly with you... your mother's daughters-in-law."])
    k, w = normalise_en(kjv[("Ruth", 1, 8)]), normalise_en(web[("Ruth", 1, 8)])
    assert k == "the lord deal kindly with you as ye have with the mother's daughters in law"
    assert w.endswith("your mother's daughters in law")
    assert set("".join(k.split())) | set("".join(w.split())) <= set("abcdefghijklmnopqrstuvwxyz'")
