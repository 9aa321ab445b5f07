"""Scorers: cached token/word LM scorers agree with the full-prefix references and with the LMs themselves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fusion.errors import LMFusionError, UnitMismatchError, WeightsError
from fusion.reference import FullPrefixLMScorer
from fusion.scorers import (
    LengthBonus,
    TokenLMScorer,
    WordBonus,
    WordLMScorer,
    lm_scorer,
    units_from_pieces,
)
from fusion.weights import check_weights, combine_scores

TEXT_DIR = Path(__file__).resolve().parents[1] / "data" / "text"
NNLM_CFG = {"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0}


@pytest.fixture(scope="module")
def nnlm(tiny_spm):  # type: ignore[no-untyped-def]
    from fusion.neural import NeuralLM

    return NeuralLM.from_config(NNLM_CFG, tiny_spm, seed=1)


@pytest.fixture(scope="module")
def kenlm(bible_arpa):  # type: ignore[no-untyped-def]
    from fusion.ngram import KenLM

    return KenLM(bible_arpa, name="ngram")


@pytest.fixture(scope="module")
def dec_units(tiny_spm):  # type: ignore[no-untyped-def]
    """Decoder vocabulary = the spm pieces (unk -> not scored) + </s> as the last id."""
    units = units_from_pieces(tiny_spm.pieces, specials=[tiny_spm.sp.unk_id()])
    return [*units, None]


def walk(scorer, ids, eos):  # type: ignore[no-untyped-def]
    """Sum of a scorer's scores along a token sequence ending in eos (one hypothesis, step by step)."""
    st = scorer.init_state()
    total = 0.0
    for t in [*ids, eos]:
        sc, ctx = scorer.score([[]], [st], None if not scorer.is_partial else np.array([[t]]))
        total += float(sc[0, t] if not scorer.is_partial else sc[0, 0])
        st = scorer.select_state(ctx, [0], [t])[0]
    return total


def encode(tiny_spm, text):  # type: ignore[no-untyped-def]
    return [tiny_spm.piece_to_id[p] for p in tiny_spm.encode(text)]


def test_token_scorer_matches_lm_sentence_score(nnlm, tiny_spm, dec_units) -> None:
    eos = len(dec_units) - 1
    sc = TokenLMScorer(nnlm, dec_units, eos)
    assert not sc.is_partial  # a neural LM offers logprobs_all: full scorer
    for text in ["in the beginning god created the heaven", "the module defines the following functions"]:
        ids = encode(tiny_spm, text)
        expect = nnlm.score_sentence([tiny_spm.pieces[i] for i in ids]).total
        assert walk(sc, ids, eos) == pytest.approx(expect, abs=1e-5)
        part = TokenLMScorer(nnlm, dec_units, eos, partial=True)
        assert walk(part, ids, eos) == pytest.approx(expect, abs=1e-5)


def test_full_and_partial_agree_on_candidates(nnlm, kenlm, tiny_spm, dec_units) -> None:
    eos = len(dec_units) - 1
    rng = np.random.default_rng(0)
    prefixes = [encode(tiny_spm, "and the lord said"), encode(tiny_spm, "the function returns"), []]
    cand = rng.integers(0, len(dec_units), size=(3, 7))
    cand[:, 0] = eos
    for full_s, part_s in [
        (TokenLMScorer(nnlm, dec_units, eos), TokenLMScorer(nnlm, dec_units, eos, partial=True)),
        (WordLMScorer(kenlm, dec_units, eos), WordLMScorer(kenlm, dec_units, eos, partial=True)),
    ]:
        states_f, states_p = [], []
        for p in prefixes:
            sf, sp = full_s.init_state(), part_s.init_state()
            for t in p:
                _, c = full_s.score([[]], [sf])
                sf = full_s.select_state(c, [0], [t])[0]
                _, c = part_s.score([[]], [sp], np.array([[t]]))
                sp = part_s.select_state(c, [0], [t])[0]
            states_f.append(sf)
            states_p.append(sp)
        full, _ = full_s.score(prefixes, states_f)
        part, _ = part_s.score(prefixes, states_p, cand)
        np.testing.assert_allclose(np.take_along_axis(full, cand, axis=1), part, atol=1e-6)
        ref, _ = FullPrefixLMScorer(
            full_s.lm, dec_units, eos, mode="token" if isinstance(full_s, TokenLMScorer) else "word"
        ).score(prefixes, [None] * 3)
        finite = np.isfinite(ref)
        np.testing.assert_allclose(full[finite], ref[finite], atol=1e-5)


def test_word_scorer_equals_kenlm_sentence_score(kenlm, tiny_spm, dec_units) -> None:
    eos = len(dec_units) - 1
    sc = WordLMScorer(kenlm, dec_units, eos)
    for text in ["and god said let there be light", "the function returns a new list", "zzyzx unknownword here"]:
        ids = encode(tiny_spm, text)
        words = tiny_spm.decode([tiny_spm.pieces[i] for i in ids]).split()
        expect = kenlm.score_sentence(words).total
        assert walk(sc, ids, eos) == pytest.approx(expect, abs=1e-6)
        # only word-closing tokens are scored: a non-initial piece scores exactly 0
        assert math.isfinite(expect)


def test_word_scorer_final_score_closes_the_word(kenlm, tiny_spm, dec_units) -> None:
    eos = len(dec_units) - 1
    sc = WordLMScorer(kenlm, dec_units, eos)
    ids = encode(tiny_spm, "and god said")
    st = sc.init_state()
    total = 0.0
    for t in ids:
        s, ctx = sc.score([[]], [st])
        total += s[0, t]
        st = sc.select_state(ctx, [0], [t])[0]
    total += sc.final_score(st)
    assert total == pytest.approx(kenlm.score_sentence(["and", "god", "said"]).total, abs=1e-6)


def test_reread_forward_reference_equals_cached(nnlm, tiny_spm, dec_units) -> None:
    eos = len(dec_units) - 1
    cached = TokenLMScorer(nnlm, dec_units, eos)
    reread = FullPrefixLMScorer(nnlm, dec_units, eos, reread_forward=True)
    prefixes = [encode(tiny_spm, "in the beginning"), encode(tiny_spm, "import the module"), []]
    states = [nnlm.extend(nnlm.begin(), [tiny_spm.pieces[i] for i in p]) for p in prefixes]
    a, _ = cached.score(prefixes, states)
    b, _ = reread.score(prefixes, [None] * 3)
    mapped = np.array([u is not None for u in dec_units])
    mapped[eos] = True
    np.testing.assert_allclose(a[:, mapped], b[:, mapped], atol=1e-5)


def test_bonuses_count(tiny_spm, dec_units) -> None:
    eos = len(dec_units) - 1
    ids = encode(tiny_spm, "and god said let there be light")
    assert walk(LengthBonus(len(dec_units), eos), ids, eos) == len(ids)
    assert walk(WordBonus(dec_units, eos), ids, eos) == 7


def test_density_ratio_is_a_weighted_difference() -> None:
    tgt = np.log(np.array([[0.5, 0.3, 0.2]]))
    src = np.log(np.array([[0.2, 0.3, 0.5]]))
    am = np.zeros((1, 3))
    comb = combine_scores({"am": am, "lm": tgt, "source_lm": src}, {"am": 1.0, "lm": 0.5, "source_lm": -0.5})
    np.testing.assert_allclose(comb, 0.5 * (tgt - src))
    assert int(comb.argmax()) == 0


def test_bad_inputs(nnlm, kenlm, tiny_spm, dec_units) -> None:
    eos = len(dec_units) - 1
    with pytest.raises(UnitMismatchError, match="WordLMScorer"):
        TokenLMScorer(kenlm, dec_units, eos)
    with pytest.raises(UnitMismatchError, match="word-unit"):
        WordLMScorer(nnlm, dec_units, eos)
    with pytest.raises(UnitMismatchError, match="tokenizer"):
        TokenLMScorer(nnlm, dec_units, eos, tokenizer_identity="spm:other@00000000")
    # an LM whose tokenizer cannot encode the decoder's units
    foreign = ["▁zebra_piece", "▁other", *dec_units[2:]]
    with pytest.raises(UnitMismatchError, match="cannot encode"):
        TokenLMScorer(nnlm, foreign, eos)
    with pytest.raises(LMFusionError, match="eos_id"):
        TokenLMScorer(nnlm, dec_units, len(dec_units) + 3)
    with pytest.raises(WeightsError, match="finite"):
        check_weights({"am": 1.0, "lm": float("nan")}, ["am", "lm"])
    with pytest.raises(WeightsError, match="names no score"):
        check_weights({"am": 1.0, "nmt": 0.3}, ["am", "lm"])
    assert isinstance(lm_scorer(kenlm, dec_units, eos), WordLMScorer)
    assert isinstance(lm_scorer(nnlm, dec_units, eos), TokenLMScorer)


def test_units_from_byte_bpe() -> None:
    assert units_from_pieces(["Ġthe", "re", "<|eot|>"], specials=[2], byte_bpe=True) == ["▁the", "re", None]


def test_vocabulary_bridging_through_word_level_view(tiny_spm, dec_units, tmp_path) -> None:
    """An LM over another tokenizer fuses at word boundaries via fusion.units.WordLevelLM."""
    from fusion.neural import NeuralLM
    from fusion.tokenizers import train_sentencepiece
    from fusion.units import WordLevelLM

    other = train_sentencepiece([TEXT_DIR / "bible.train.txt"], tmp_path / "other150", vocab_size=150)
    assert other.identity != tiny_spm.identity
    sub = NeuralLM.from_config(NNLM_CFG, other, seed=4, name="other")
    eos = len(dec_units) - 1
    with pytest.raises(UnitMismatchError, match="tokenizer"):
        TokenLMScorer(sub, dec_units, eos, tokenizer_identity=tiny_spm.identity)
    with pytest.raises(UnitMismatchError, match="cannot encode"):
        TokenLMScorer(sub, dec_units, eos)
    word_lm = WordLevelLM(sub)
    sc = lm_scorer(word_lm, dec_units, eos)
    assert isinstance(sc, WordLMScorer)
    for text in ["and god said let there be light", "the function returns a list"]:
        ids = encode(tiny_spm, text)
        words = tiny_spm.decode([tiny_spm.pieces[i] for i in ids]).split()
        assert walk(sc, ids, eos) == pytest.approx(word_lm.score_sentence(words).total, abs=1e-4)
