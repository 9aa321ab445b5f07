"""Unit views: word-level view of a subword LM (vs the slow reference and the piece product), mixing it
with a word KenLM, and the token-level view through a decoder's vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fusion.errors import LMFusionError, UnitMismatchError
from fusion.interpolate import LinearInterpolation
from fusion.io import read_sentences
from fusion.lm import Units
from fusion.loading import load_lm
from fusion.neural import NeuralLM
from fusion.ngram import KenLM
from fusion.reference import SlowWordLevelLM, score_unit_by_unit
from fusion.units import TokenLevelLM, WordLevelLM

torch.set_num_threads(1)

CFG = {"arch": "transformer", "d_model": 32, "layers": 1, "heads": 2, "d_ff": 64, "dropout": 0.0, "max_len": 128}


@pytest.fixture(scope="module")
def rand_lm(tiny_spm) -> NeuralLM:  # type: ignore[no-untyped-def]
    return NeuralLM.from_config(CFG, tiny_spm, seed=4, name="nn")


@pytest.fixture(scope="module")
def trained(tiny_nnlm: Path) -> NeuralLM:
    return load_lm(tiny_nnlm, name="nn")


def _piece_reference(lm: NeuralLM, history: list[str], word: str) -> float:
    """Σ ln P(piece) + ln B(after) − ln B(before), straight from full-vocabulary distributions."""
    mask = lm.boundary_mask()
    st = lm.extend(lm.begin(), [p for w in history for p in lm.tokenize(w)])
    d0 = lm.logprobs_tensor([st])[0].double()
    total = -float(torch.logsumexp(d0[mask], 0))
    for p in lm.tokenize(word):
        total += float(lm.logprobs_tensor([st])[0].double()[lm.unit_id(p)])
        st = lm.extend(st, [p])
    return total + float(torch.logsumexp(lm.logprobs_tensor([st])[0].double()[mask], 0))


def test_word_view_declares_word_units(rand_lm: NeuralLM) -> None:
    w = WordLevelLM(rand_lm)
    assert w.units == Units.word() and w.name == "nn"
    assert w.tokenize(" in  the beginning ") == ["in", "the", "beginning"]
    assert not w.is_oov("beginning")
    with pytest.raises(LMFusionError, match="whitespace"):
        w.score(w.begin(), "two words")


def test_word_score_is_product_of_piece_probabilities(rand_lm: NeuralLM) -> None:
    w = WordLevelLM(rand_lm)
    hist = ["and", "the"]
    st = w.begin()
    for x in hist:
        _, st = w.score(st, x)
    words = ["lord", "function", "zygomorphic", "a"]
    lp, _ = w.score_batch([st], words)
    for k, word in enumerate(words):
        assert lp[0, k] == pytest.approx(_piece_reference(rand_lm, hist, word), abs=1e-5)
    assert any(len(rand_lm.tokenize(x)) > 2 for x in words)  # multi-piece words are exercised


def test_fast_view_equals_slow_reference(rand_lm: NeuralLM) -> None:
    fast, slow = WordLevelLM(rand_lm), SlowWordLevelLM(rand_lm)
    hist = "in the beginning".split()
    sf, ss = fast.begin(), slow.begin()
    for x in hist:
        a, sf = fast.score(sf, x)
        b, ss = slow.score(ss, x)
        assert a == pytest.approx(b, abs=1e-5)
    words = ["was", "the", "python", "unthinkable"]
    lp, _ = fast.score_batch([sf, fast.begin()], words)
    for k, x in enumerate(words):
        assert lp[0, k] == pytest.approx(slow.score(ss, x)[0], abs=1e-5)
        assert lp[1, k] == pytest.approx(slow.score(slow.begin(), x)[0], abs=1e-5)
    assert fast.end(sf) == pytest.approx(slow.end(ss), abs=1e-5)


def test_batched_equals_unbatched_and_uses_few_forwards(rand_lm: NeuralLM) -> None:
    w = WordLevelLM(rand_lm)
    states = [w.begin()]
    for text in ("the lord", "import the module", "how do i"):
        st = w.begin()
        for x in text.split():
            _, st = w.score(st, x)
        states.append(st)
    words = "the of a function returns lord unbelievably".split()
    rand_lm.clear_cache()
    before = rand_lm.forward_calls
    lp, nxt = w.score_batch(states, words)
    max_pieces = max(len(rand_lm.tokenize(x)) for x in words)
    assert rand_lm.forward_calls - before <= max_pieces + 1 + len(states)  # not B*K*pieces
    for b, st in enumerate(states):
        for k, x in enumerate(words):
            one, ns = w.score(st, x)
            assert one == pytest.approx(lp[b, k], abs=1e-6)
            assert ns == nxt[b][k]
    pl, pn = w.score_pairs(states[:2], ["of", "lord"])
    assert pl[0] == pytest.approx(lp[0, 1], abs=1e-6) and pl[1] == pytest.approx(lp[1, 5], abs=1e-6)
    assert pn[1] == nxt[1][5]


def test_sentence_scores_full_equal_incremental_and_telescope(rand_lm: NeuralLM) -> None:
    w = WordLevelLM(rand_lm)
    sents = [s.split() for s in ("in the beginning was the word", "a", "how do i debug an extension module")]
    full = w.score_sentences(sents)
    for s, f in zip(sents, full, strict=True):
        inc = score_unit_by_unit(w, s)
        np.testing.assert_allclose(f.logprobs, inc.logprobs, atol=1e-5)
        # word-level total = subword sentence total − ln B(<s>)
        sub = rand_lm.score_sentence([p for x in s for p in rand_lm.tokenize(x)]).total
        d0 = rand_lm.logprobs_tensor([rand_lm.begin()])[0].double()
        b0 = float(torch.logsumexp(d0[rand_lm.boundary_mask()], 0))
        assert f.total == pytest.approx(sub - b0, abs=1e-4)
    assert full[0].logprobs.shape == (7,)
    assert w.score_sentences(sents[:1], eos=False)[0].logprobs.shape == (6,)


def _closed_words(text_dir: Path) -> list[str]:
    words = set()
    for f in ("bible.dev.txt", "tech.dev.txt", "bible.train.txt"):
        for s in read_sentences(text_dir / f):
            words.update(s.split())
    return sorted(words)


def test_word_view_sums_to_at_most_one(trained: NeuralLM, text_dir: Path) -> None:
    w = WordLevelLM(trained)
    words = _closed_words(text_dir)
    for hist in ([], ["the"], ["and", "the", "lord"], ["the", "function"]):
        st = w.begin()
        for x in hist:
            _, st = w.score(st, x)
        lp, _ = w.score_batch([st], words)
        total = float(np.logaddexp.reduce(np.append(lp[0], w.end(st))))
        assert total <= 1e-6, hist
        assert total > np.log(0.3), hist  # a trained LM puts real mass on the closed list


def test_word_view_mixes_with_word_kenlm_into_a_distribution(trained: NeuralLM, bible_arpa: Path,
                                                            text_dir: Path) -> None:
    ken = KenLM(bible_arpa, name="ngram")
    w = WordLevelLM(trained)
    mix = LinearInterpolation([ken, w], {"ngram": 0.6, "nn": 0.4})
    assert mix.units == Units.word()
    vocab = sorted(ken.vocab)  # type: ignore[arg-type]
    for hist in ([], ["and", "the"]):
        st = mix.begin()
        for x in hist:
            _, st = mix.score(st, x)
        lp, _ = mix.score_batch([st], vocab)
        total = float(np.logaddexp.reduce(np.append(lp[0], mix.end(st))))
        # KenLM sums to one over its vocabulary + </s>; the word view adds at most 0.4 more
        assert np.log(0.6) < total <= 1e-6
    # EM over the pair runs and improves on the worse model
    from fusion.em import estimate_weights

    est = estimate_weights([ken, w], read_sentences(text_dir / "tech.dev.txt")[:60])
    assert est.ppl["mix"] <= min(est.ppl["ngram"], est.ppl["nn"]) + 1e-6
    assert abs(sum(est.weights.values()) - 1) < 1e-9


def test_word_view_refuses_word_lms(tiny_arpa: Path) -> None:
    with pytest.raises(UnitMismatchError, match="subword"):
        SlowWordLevelLM(KenLM(tiny_arpa))
    with pytest.raises(UnitMismatchError):
        WordLevelLM(KenLM(tiny_arpa))  # type: ignore[arg-type]


def test_token_view_reorders_to_decoder_vocab(rand_lm: NeuralLM) -> None:
    pieces = [p for p in rand_lm.pieces if not rand_lm.is_oov(p)]
    rng = np.random.default_rng(0)
    dec = ["<blank>", "<unk>", *[pieces[i] for i in rng.permutation(len(pieces))], "<sos/eos>"]
    tv = TokenLevelLM(rand_lm, dec, eos_token="<sos/eos>")
    assert tv.units == rand_lm.units
    st = rand_lm.extend(rand_lm.begin(), ["▁the"])
    la = tv.logprobs_all([st])
    assert la.shape == (1, len(dec)) and la[0, 0] == -np.inf
    for j in (2, 10, len(dec) - 2):
        assert la[0, j] == pytest.approx(tv.score(st, dec[j])[0], abs=1e-6)
    assert la[0, -1] == pytest.approx(tv.end(st), abs=1e-6)
    assert np.logaddexp.reduce(la[0, 1:]) == pytest.approx(0.0, abs=1e-5)  # every symbol exactly once


def test_token_view_refuses_other_vocabulary(rand_lm: NeuralLM) -> None:
    with pytest.raises(UnitMismatchError, match="does not share the decoder's vocabulary"):
        TokenLevelLM(rand_lm, ["<blank>", "a", "b", "c", "zz-not-a-piece"])
