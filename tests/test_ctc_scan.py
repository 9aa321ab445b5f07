"""The compiled passes over emissions and over the final beam (decoders.ctc.scan), the reuse of a finished search's
arrays, and a 4,000-label piece vocabulary decoded by the compiled search equal to the plain reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.ctc.inputs import as_logprobs
from decoders.ctc.search import token_candidates
from decoders.ctc.vocabulary import CTCVocab
from decoders.emissions import NOISE_LEVELS, make_emission_set, piece_confusions, synth_piece_emissions
from decoders.reference import reference_beam_search
from fusion.errors import InputError
from fusion.ngram import KenLM
from fusion.tokenizers import SentencePieceTokenizer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")
TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


@pytest.mark.parametrize("V", [3, 29, 300, 4000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_candidates_equal_the_numpy_token_pruning(V: int, dtype: type) -> None:
    from decoders.ctc.scan import candidates

    rng = np.random.default_rng(V)
    for trial in range(6):
        a: np.ndarray = rng.normal(-7.0, 3.0, (40, V)).astype(dtype)
        a[rng.random(a.shape) < 0.05] = -np.inf
        a[::7] = -30.0  # frames where nothing passes: the best label (or none, if it is the blank)
        a[::7, trial % V] = -0.5
        for blank in (0, V - 1):
            for min_logp in (-5.0, -5.1, -2.5, -20.0, -np.inf):
                ptr, tok = candidates(a, blank, a.dtype.type(min_logp))
                mask, _ = token_candidates(a, blank, min_logp)
                tt, vv = np.nonzero(mask)
                assert ptr.tolist() == np.searchsorted(tt, np.arange(len(a) + 1)).tolist()
                assert tok.tolist() == vv.tolist()


def test_compiled_row_mass_is_the_sum_of_exponentials() -> None:
    from decoders.ctc.scan import row_mass, row_mass32

    rng = np.random.default_rng(0)
    a = rng.normal(-8.0, 4.0, (30, 5000))
    a[0, :10] = -np.inf
    a[1, 3] = 5.0
    a[2, :] = -200.0
    a[2, 7] = 0.0
    want = np.exp(a).sum(axis=1)
    assert row_mass(a) == pytest.approx(want, rel=1e-8)
    a32 = a.astype(np.float32)
    assert row_mass(a32) == pytest.approx(np.exp(a32.astype(np.float64)).sum(1), rel=1e-8)
    assert row_mass32(a32) == pytest.approx(np.exp(a32.astype(np.float64)).sum(1), rel=1e-6)
    assert row_mass(np.full((1, 3), 800.0))[0] > 1e300  # overflow stays huge (rejected), never NaN
    assert row_mass32(np.full((1, 3), 800.0, np.float32))[0] > 1e38


def test_normalization_check_rejects_what_it_did() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 50))
    lp = (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)
    assert as_logprobs(lp, 50) is lp
    bad = lp.copy()
    bad[7] += 0.01  # logsumexp 0.01: mass 1.01
    with pytest.raises(InputError, match="frame 7"):
        as_logprobs(bad, 50)
    with pytest.raises(InputError, match="log_softmax"):
        as_logprobs(x, 50)


@pytest.mark.parametrize("V", [3, 29, 300, 4000])
def test_one_pass_check_and_candidates_equal_the_separate_passes(V: int) -> None:
    from decoders.ctc.scan import candidates, checked_candidates, row_mass32

    rng = np.random.default_rng(V + 1)
    for trial in range(4):
        a = rng.normal(-7.0, 3.0, (40, V)).astype(np.float32)
        a[rng.random(a.shape) < 0.05] = -np.inf
        a[::7] = -30.0
        a[::7, trial % V] = -0.5
        for blank in (0, V - 1):
            for min_logp in (-5.0, -2.5, -np.inf):
                lo = np.float32(min_logp)
                want_ptr, want_tok = candidates(a, blank, lo)
                for mass in (True, False):
                    ptr, tok, m, bad = checked_candidates(a, blank, lo, mass)
                    if not mass and np.isneginf(a).any():
                        assert bad >= 0  # -inf cells: the caller checks those rows the slow way
                        continue
                    assert bad == -1
                    assert ptr.tolist() == want_ptr.tolist() and tok.tolist() == want_tok.tolist()
                    if mass:
                        assert m == float(np.abs(row_mass32(a) - 1.0).max())
    a = rng.normal(-7.0, 3.0, (12, V)).astype(np.float32)
    for cell, first in ((np.nan, True), (np.inf, False)):
        b = a.copy()
        b[5, V // 2] = cell
        assert checked_candidates(b, 0, np.float32(-5.0), False)[3] == 5
        _, _, m, bad = checked_candidates(b, 0, np.float32(-5.0), True)
        assert bad == 5 if first else not m <= 1e-3  # NaN stops the pass; +inf fails the mass


def _normalized(rng: np.random.Generator, T: int, V: int) -> np.ndarray:
    x = rng.normal(size=(T, V)) * 3.0
    return (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)


def test_checked_candidates_raise_what_the_check_raises() -> None:
    from decoders.ctc import kernels
    from decoders.ctc.inputs import logprobs_and_candidates

    K = kernels.load()
    rng = np.random.default_rng(3)
    lp = _normalized(rng, 30, 300)
    arr, cands = logprobs_and_candidates(lp, 300, K, 0, -5.0)
    assert arr is lp and cands is not None
    assert cands.ptr.tolist() == K.candidates(lp, 0, np.float32(-5.0))[0].tolist()
    nan, inf, zero, off = lp.copy(), lp.copy(), lp.copy(), lp.copy()
    nan[4, 9] = np.nan
    inf[6, 2] = np.inf
    zero[8] = -np.inf
    off[11] += 0.01
    for bad in (nan, inf, zero, off):
        for check in (True, False):
            try:
                as_logprobs(bad, 300, check_normalized=check)
            except InputError as e:
                with pytest.raises(InputError) as got:
                    logprobs_and_candidates(bad, 300, K, 0, -5.0, check_normalized=check)
                assert str(got.value) == str(e)
            else:
                arr, cands = logprobs_and_candidates(bad, 300, K, 0, -5.0, check_normalized=check)
                assert arr is bad
                if cands is not None:
                    assert cands.tok.tolist() == K.candidates(bad, 0, np.float32(-5.0))[1].tolist()
    some_zero = lp.copy()
    some_zero[3, np.argsort(lp[3])[:5]] = -np.inf  # probability zero for a few unlikely labels: fine (checked the
    # slow way without the mass, whose pass doubts every -inf cell)
    assert logprobs_and_candidates(some_zero, 300, K, 0, -5.0)[1] is not None
    assert logprobs_and_candidates(some_zero, 300, K, 0, -5.0, check_normalized=False)[1] is None
    assert logprobs_and_candidates(lp.astype(np.float64), 300, K, 0, -5.0)[1] is None  # float64: two passes
    assert logprobs_and_candidates(lp, 300, None, 0, -5.0)[1] is None


def test_decode_with_one_pass_candidates_equals_decode_without(bible_arpa: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from decoders.emissions import CHAR_LABELS

    ems = make_emission_set(["in the beginning god created", "and the earth was"], config="noisy", seed=4)
    dec = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], {"lm": 0.5, "words": 1.0},
                     options=CTCOptions(beam_width=16, nbest=4))
    if not dec.compiled:
        pytest.skip("no compiled kernels")
    K = dec.K
    separate = K.candidates
    calls: list[int] = []

    def counted(*a: object) -> object:
        calls.append(1)
        return separate(*a)

    monkeypatch.setattr(K, "candidates", counted)
    for e in ems:
        e32 = np.ascontiguousarray(e, dtype=np.float32)
        got = dec.decode(e32)
        assert not calls  # the candidates came from the check's pass
        s = dec._search()
        s.feed_array(e32)  # the search's own pass
        assert calls
        want = s.finish(utt_id="utt", ref=None, tags={}, logprobs=e32)
        dec._recycle(s)
        assert [(h.text, dict(h.scores), h.timesteps) for h in got.hyps] == [
            (h.text, dict(h.scores), h.timesteps) for h in want.hyps]
        calls.clear()
        assert dec.decode_text(e32) == got.hyps[0].text and not calls


def test_text_hashes_are_equal_exactly_for_equal_texts() -> None:
    from decoders.ctc.scan import text_hashes
    from decoders.ctc.vocabulary import text_hash_tables

    labels = ["<blank>", "\u2581", "\u2581ab", "\u2581a", "b", "a", "ab", "\u2581b", "ba"]
    vocab = CTCVocab.from_labels(labels)
    h, pw = text_hash_tables(vocab.text)
    toklen = np.array([len(t) for t in vocab.text], np.int32)
    completes = np.array(vocab.completes, bool)
    rng = np.random.default_rng(2)
    # a random tree: node 0 the root, each other node one label below an earlier node
    n = 3000
    parent = np.zeros(n, np.int32)
    tok = np.zeros(n, np.int32)
    tok[0] = len(labels)
    for i in range(1, n):
        parent[i] = rng.integers(0, i)
        tok[i] = rng.integers(1, len(labels))
    ids = np.arange(n, dtype=np.int64)
    hs = text_hashes(ids, parent, tok, h, pw, toklen, completes).tolist()

    def text(node: int) -> str:
        toks = []
        while node > 0:
            toks.append(int(tok[node]))
            node = int(parent[node])
        return " ".join(w for w, _ in vocab.words_of(toks[::-1]))

    texts = [text(i) for i in range(n)]
    by_text: dict[str, set[int]] = {}
    for t, x in zip(texts, hs, strict=True):
        by_text.setdefault(t, set()).add(x)
    assert all(len(v) == 1 for v in by_text.values())  # one text, one hash
    assert len(set(hs)) == len(by_text)  # and no two texts share one here
    assert sum(1 for i in range(n) if texts.count(texts[i]) > 1) > 100  # many spellings of one text were met


@pytest.fixture(scope="module")
def big_vocab(tiny_spm: SentencePieceTokenizer) -> list[str]:
    """The tiny model's pieces plus made-up ones up to 4,000 labels (a large BPE vocabulary's size)."""
    labels = ["<blank>", *tiny_spm.pieces]
    rng = np.random.default_rng(3)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    seen = set(labels)
    while len(labels) < 4000:
        p = ("\u2581" if rng.random() < 0.5 else "") + "".join(rng.choice(letters, rng.integers(2, 7)))
        if p not in seen:
            seen.add(p)
            labels.append(p)
    return labels


@pytest.mark.slow
def test_large_piece_vocabulary_compiled_equals_reference(
    bible_arpa: Path, tiny_spm: SentencePieceTokenizer, big_vocab: list[str]
) -> None:
    """4,000 labels, the same token pruning (``token_min_logp``) on both sides: the compiled search (candidates
    from one compiled pass, children lists, scratch arrays per call, end of utterance compiled) gives the reference's
    hypotheses and scores."""
    index = {p: i for i, p in enumerate(big_vocab)}
    refs = [s for s in (TEXT / "bible.test.txt").read_text().splitlines() if s.strip() and len(s) < 40][:2]
    conf = piece_confusions(big_vocab)
    ems = [synth_piece_emissions([index[p] for p in tiny_spm.encode(r)], len(big_vocab), confusions=conf,
                                 config=NOISE_LEVELS["very_noisy"], seed=np.random.default_rng([5, i]))
           for i, r in enumerate(refs)]
    lm = KenLM(bible_arpa, name="lm")
    for min_logp in (-5.0,):
        opts = CTCOptions(beam_width=6, nbest=3, token_min_logp=min_logp, beam_prune_logp=-20.0)
        dec = CTCDecoder(big_vocab, [lm], {"lm": 0.5, "words": 1.0}, options=opts)
        assert dec.backend.startswith("compiled") and dec.lm_backend == "compiled-ngram"
        for em in ems:
            nb = dec.decode(em)
            ref = reference_beam_search(dec, em)
            assert [h.text for h in nb.hyps] == [t for t, _, _ in ref]
            for hyp, (_, _, sc) in zip(nb.hyps, ref, strict=True):
                assert {k: hyp.scores[k] for k in sc} == pytest.approx(sc, abs=1e-9, rel=1e-12)
            assert dec.decode_text(em) == nb.hyps[0].text


def test_reused_search_arrays_give_what_a_fresh_decoder_gives(bible_arpa: Path) -> None:
    from decoders.emissions import CHAR_LABELS

    refs = [s for s in (TEXT / "bible.test.txt").read_text().splitlines() if s.strip() and len(s) < 70][:4]
    ems = make_emission_set(refs, config="very_noisy", seed=6)
    long = np.concatenate(ems)  # longer than the others: the reused arrays grow
    lm = KenLM(bible_arpa, name="lm")
    opts = CTCOptions(beam_width=12, nbest=4)
    w = {"lm": 0.5, "words": 1.0}
    dec = CTCDecoder(CHAR_LABELS, [lm], w, options=opts)
    order = [long, ems[0], ems[1], long, ems[2], ems[0], ems[3]]
    got = []
    for i, em in enumerate(order):
        if i == 4:  # another beam, and hotwords, in between: other decoder objects, their own searches
            dec.decode(em, beam_width=5)
            dec.decode(em, hotwords=["lord"], hotword_weight=1.0)
        got.append(dec.decode(em))
        assert dec.decode_text(em) == got[-1].hyps[0].text
    assert dec._spares, "the decoder keeps its last search"
    for em, nb in zip(order, got, strict=True):
        fresh = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], w, options=opts).decode(em)
        assert [h.text for h in nb.hyps] == [h.text for h in fresh.hyps]
        for a, b in zip(nb.hyps, fresh.hyps, strict=True):
            assert a.scores == pytest.approx(b.scores, abs=1e-9, rel=1e-12)
            assert a.words == b.words
