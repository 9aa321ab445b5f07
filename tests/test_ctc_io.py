"""CTC input/output conveniences: [B, T, V] with lengths, logits, per-call search options, seconds, case warning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.ctc.output import word_times
from decoders.emissions import CHAR_LABELS, make_emission_set
from fusion.errors import InputError
from fusion.ngram import KenLM

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


@pytest.fixture(scope="module")
def setup(tech_arpa: Path):  # type: ignore[no-untyped-def]
    lm = KenLM(tech_arpa, name="lm")
    refs = [s.strip() for s in (TEXT / "tech.test.txt").read_text().splitlines() if 0 < len(s.strip()) < 60][:4]
    ems = make_emission_set(refs, config="noisy", seed=3)
    dec = CTCDecoder(CHAR_LABELS, [lm], {"lm": 0.5, "words": 1.5}, options=CTCOptions(beam_width=16, nbest=3))
    return dec, ems


def _pad(ems: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    T = max(len(e) for e in ems)
    rng = np.random.default_rng(0)
    out = np.empty((len(ems), T, len(CHAR_LABELS)))
    for b, e in enumerate(ems):
        junk = rng.normal(0, 3, (T, len(CHAR_LABELS)))  # padding that would change the result if read
        out[b] = junk - np.logaddexp.reduce(junk, axis=1, keepdims=True)
        out[b, : len(e)] = e
    return out, np.array([len(e) for e in ems])


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert [[(h.text, h.scores, h.words) for h in nb.hyps] for nb in a] == \
        [[(h.text, h.scores, h.words) for h in nb.hyps] for nb in b]


def test_batch_with_lengths_equals_rows_cut(setup) -> None:  # type: ignore[no-untyped-def]
    dec, ems = setup
    x, lengths = _pad(ems)
    rows = dec.decode_batch(ems)
    _same(dec.decode_batch(x, lengths=lengths), rows)
    _same(dec.decode_batch(torch.from_numpy(x), lengths=torch.from_numpy(lengths)), rows)
    assert len(set(lengths.tolist())) > 1  # the padding really differs per row
    with pytest.raises(InputError, match="lengths"):
        dec.decode_batch(x, lengths=lengths[:2])
    with pytest.raises(InputError, match="outside"):
        dec.decode_batch(x, lengths=lengths + x.shape[1])


def test_logits_option(setup) -> None:  # type: ignore[no-untyped-def]
    dec, ems = setup
    raw = ems[0] * 1.0 + 7.5  # shifted rows: logits, not log-probs
    with pytest.raises(InputError, match="log_softmax"):
        dec.decode(raw)
    want = dec.decode(torch.log_softmax(torch.from_numpy(raw), -1).numpy())
    for got in (dec.decode(raw, logits=True), dec.decode_batch([raw], logits=True)[0]):
        assert [h.text for h in got.hyps] == [h.text for h in want.hyps]
        for a, b in zip(got.hyps, want.hyps, strict=True):
            assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_per_call_search_overrides(setup) -> None:  # type: ignore[no-untyped-def]
    dec, ems = setup
    narrow = CTCDecoder(CHAR_LABELS, list(dec.lms), dec.weights, options=CTCOptions(beam_width=2, nbest=3,
                                                                                     beam_prune_logp=-4.0))
    for e in ems:
        _same([dec.decode(e, beam_width=2, beam_prune_logp=-4.0)], [narrow.decode(e)])
    _same(dec.decode_batch(ems, beam_width=2, beam_prune_logp=-4.0), narrow.decode_batch(ems))
    assert dec.options.beam_width == 16  # the decoder itself is unchanged


def test_word_seconds_are_frames_times_shift(setup) -> None:  # type: ignore[no-untyped-def]
    dec, ems = setup
    h = dec.decode(ems[1]).hyps[0]
    assert h.words
    for (w, s, e), (w2, fs, fe) in zip(word_times(h, 0.04), h.words, strict=True):
        assert w == w2 and s == pytest.approx(fs * 0.04) and e == pytest.approx(fe * 0.04)
        assert s < e


def test_case_mismatch_warns(tech_arpa: Path) -> None:
    lm = KenLM(tech_arpa, name="lm")
    with pytest.warns(UserWarning, match="upper-case but the LM's words are lower-case"):
        CTCDecoder([lab.upper() for lab in CHAR_LABELS], [lm], {"lm": 0.5})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CTCDecoder(CHAR_LABELS, [lm], {"lm": 0.5})
