"""KenLM n-grams scored inside the compiled CTC search (decoders.ctc.lmkernel): same transcripts and scores as
the LMs asked from Python and as the plain reference, with no exit from compiled code."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.emissions import CHAR_LABELS, make_emission_set
from decoders.hypothesis import NBestList
from decoders.reference import reference_beam_search
from fusion.lm import Units
from fusion.ngram import KenLM, build_ngram
from fusion.tokenizers import Tokenizer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")
TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


class Chars(Tokenizer):
    """Characters as units (a token-level n-gram over the CTC labels; the space is ``|`` in the LM)."""

    @property
    def units(self) -> Units:
        return Units.token("test-chars")

    def encode(self, text: str) -> list[str]:
        return list(text.replace(" ", "|"))

    def decode(self, units: Sequence[str]) -> str:
        return "".join(units).replace("|", " ")


def _emissions(n: int, seed: int) -> list[np.ndarray]:
    refs = [s for s in (TEXT / "bible.test.txt").read_text().splitlines() if s.strip() and len(s) < 60][:n]
    return make_emission_set(refs, config="very_noisy", seed=seed)


def _same(a: NBestList, b: NBestList) -> None:
    assert [h.text for h in a.hyps] == [h.text for h in b.hyps]
    for x, y in zip(a.hyps, b.hyps, strict=True):
        assert x.scores == pytest.approx(y.scores, abs=1e-9, rel=1e-12)


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ngk")
    words = build_ngram([TEXT / "bible.train.txt"], d / "w.arpa", order=3, progress=False)
    binary = build_ngram([TEXT / "bible.train.txt"], d / "w.bin", order=3, progress=False, keep_arpa=False)
    chars_txt = d / "chars.txt"
    tok = Chars()
    lines = (TEXT / "bible.train.txt").read_text().splitlines()[:400]
    chars_txt.write_text("\n".join(" ".join(tok.encode(s)) for s in lines) + "\n")
    chars = build_ngram([chars_txt], d / "c.arpa", order=5, progress=False)
    return {"words": words, "binary": binary, "chars": chars}


@pytest.mark.parametrize("lexicon", [False, True])
def test_word_ngram_in_kernel_equals_python_path_and_reference(lms: dict[str, Path], lexicon: bool) -> None:
    opts = CTCOptions(beam_width=8, nbest=4, lexicon_constrained=lexicon, beam_prune_logp=-25.0 if lexicon else -10.0)
    w = {"lm": 0.6, "words": 1.2, "oov": -4.0}
    fast = CTCDecoder(CHAR_LABELS, [KenLM(lms["words"], name="lm")], w, options=opts)
    with pytest.warns(UserWarning, match="no readable ARPA"):  # same model, without its ARPA: said, not silent
        slow = CTCDecoder(CHAR_LABELS, [KenLM(lms["binary"], name="lm")], w, options=opts)
    assert fast.lm_backend == "compiled-ngram" and fast.backend.startswith("compiled")
    assert slow.lm_backend == "python" and "ARPA" in slow.lm_backend_reason
    for em in _emissions(4, seed=3):
        a, b = fast.decode(em), slow.decode(em)
        _same(a, b)
        ref = reference_beam_search(fast, em)
        assert [h.text for h in a.hyps] == [t for t, _, _ in ref]
        for h, (_, _, sc) in zip(a.hyps, ref, strict=True):
            assert {k: h.scores[k] for k in sc} == pytest.approx(sc, abs=1e-9, rel=1e-12)
    assert fast._shared is not None and fast._shared.python_batches == 0  # never left compiled code for the LM
    assert slow._shared is not None and slow._shared.python_batches > 0
    assert fast.lm_calls[0] > 0


def test_word_and_token_ngrams_together_equal_reference(lms: dict[str, Path]) -> None:
    lm = KenLM(lms["words"], name="lm")
    chars = KenLM(lms["chars"], name="chars", tokenizer=Chars())
    assert chars.units.kind == "token"
    w = {"lm": 0.5, "chars": 0.3, "words": 1.0, "oov": -2.0}
    dec = CTCDecoder(CHAR_LABELS, [lm, chars], w, options=CTCOptions(beam_width=6, nbest=3))
    assert dec.lm_backend == "compiled-ngram"
    for em in _emissions(2, seed=5):
        nb = dec.decode(em)
        ref = reference_beam_search(dec, em)
        assert [h.text for h in nb.hyps] == [t for t, _, _ in ref]
        for h, (_, _, sc) in zip(nb.hyps, ref, strict=True):
            assert {k: h.scores[k] for k in sc} == pytest.approx(sc, abs=1e-9, rel=1e-12)
    assert dec._shared is not None and dec._shared.python_batches == 0


def test_a_lexicon_missing_lm_words_keeps_the_python_path_and_says_why(lms: dict[str, Path]) -> None:
    lm = KenLM(lms["words"], name="lm")
    with pytest.warns(UserWarning, match="from Python"):
        dec = CTCDecoder(CHAR_LABELS, [lm], {"lm": 0.5}, lexicon=["the", "lord"])
    assert dec.lm_backend == "python" and "outside the given lexicon" in dec.lm_backend_reason
    nb = dec.decode(_emissions(1, seed=2)[0])
    assert nb.hyps
