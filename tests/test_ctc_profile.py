"""The CTC decoder takes a fusion profile wherever it takes weights: weights follow each utterance's tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.emissions import CHAR_LABELS, make_emission_set
from fusion.abilities import LMSpec
from fusion.errors import WeightsError
from fusion.ngram import KenLM
from fusion.profile import ConditionWeights, FusionProfile, default_buckets

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"
CLEAN = {"am": 1.0, "lm": 0.05, "words": 0.0, "oov": 0.0}
NOISY = {"am": 1.0, "lm": 1.5, "words": 2.0, "oov": 0.0}


def _profile() -> FusionProfile:
    return FusionProfile(
        default=ConditionWeights(CLEAN),
        buckets=default_buckets({"noisy": 5.0, "clean": 40.0}),
        conditions=(ConditionWeights(NOISY, bucket="noisy"), ConditionWeights(CLEAN, bucket="clean")),
        name="ctc-test",
    )


@pytest.fixture(scope="module")
def setup(bible_arpa: Path) -> tuple[KenLM, list[np.ndarray], list[str]]:
    sents = (TEXT / "bible.test.txt").read_text().splitlines()[:8]
    return KenLM(bible_arpa, name="lm"), make_emission_set(sents, config="noisy", seed=3), sents


def _texts(nbs: list) -> list[list[str]]:  # type: ignore[type-arg]
    return [[h.text for h in nb.hyps] for nb in nbs]


def test_profile_weights_follow_tags(setup: tuple[KenLM, list[np.ndarray], list[str]]) -> None:
    lm, ems, _ = setup
    opts = CTCOptions(beam_width=16, nbest=4)
    with_profile = CTCDecoder(CHAR_LABELS, [lm], _profile(), options=opts)
    clean = CTCDecoder(CHAR_LABELS, [lm], CLEAN, options=opts)
    noisy = CTCDecoder(CHAR_LABELS, [lm], NOISY, options=opts)
    tags = [{"snr": 40.0 if i % 2 else 3.0} for i in range(len(ems))]
    got = [with_profile.decode(e, tags=t) for e, t in zip(ems, tags, strict=True)]
    want = [(clean if t["snr"] > 20 else noisy).decode(e) for e, t in zip(ems, tags, strict=True)]
    assert _texts(got) == _texts(want)
    for g, w in zip(got, want, strict=True):
        for hg, hw in zip(g.hyps, w.hyps, strict=True):
            assert hg.scores == pytest.approx(hw.scores)
    assert got[0].tags == {"snr": 3.0}
    # the two conditions really decode differently on these emissions, so the test can fail
    assert _texts([clean.decode(e) for e in ems]) != _texts([noisy.decode(e) for e in ems])
    # no tags: the profile's default weights
    assert _texts([with_profile.decode(ems[0])]) == _texts([clean.decode(ems[0])])
    # batch decoding (sequential and in a spawn pool) and streaming follow the tags too
    assert _texts(with_profile.decode_batch(ems, tags=tags)) == _texts(want)
    s = with_profile.stream(tags=tags[0])
    s.feed(ems[0][:10])
    s.feed(ems[0][10:])
    assert [h.text for h in s.finish().hyps] == [h.text for h in want[0].hyps]


def test_profile_survives_a_spawn_pool(bible_arpa: Path, setup: tuple[KenLM, list[np.ndarray], list[str]]) -> None:
    _, ems, _ = setup
    lm = KenLM(bible_arpa, name="lm")
    dec = CTCDecoder(CHAR_LABELS, [lm], _profile(), options=CTCOptions(beam_width=8, nbest=2))
    assert dec.spec().lms == (LMSpec("lm", path=str(bible_arpa), kind="kenlm"),)
    tags = [{"snr": "noisy"}, {"snr": "clean"}, {}, {"snr": 2.0}]
    seq = dec.decode_batch(ems[:4], tags=tags)
    pooled = dec.decode_batch(ems[:4], tags=tags, processes=2, mp_context="spawn")
    assert _texts(seq) == _texts(pooled)
    assert [nb.tags for nb in pooled] == tags


def _mix_profile() -> FusionProfile:
    w = {"mix": 1.0, "words": 1.0}
    return FusionProfile(
        default=ConditionWeights(w),
        conditions=(ConditionWeights(w, {"b": 0.9, "t": 0.1}, domain="bible"),
                    ConditionWeights(w, {"b": 0.1, "t": 0.9}, domain="tech")),
        name="ctc-mix",
    )


def test_profile_interpolation_weights_reweight_the_mixture(bible_arpa: Path, tech_arpa: Path) -> None:
    from fusion.interpolate import LinearInterpolation

    b, t = KenLM(bible_arpa, name="b"), KenLM(tech_arpa, name="t")
    mix = LinearInterpolation([b, t], [0.5, 0.5], name="mix")
    sents = [s for d in ("bible", "tech") for s in (TEXT / f"{d}.test.txt").read_text().splitlines()[:3]]
    ems = make_emission_set(sents, config="very_noisy", seed=5)
    opts = CTCOptions(beam_width=8, nbest=3)
    dec = CTCDecoder(CHAR_LABELS, [mix], _mix_profile(), options=opts)
    tags = [{"domain": "bible"}, {"domain": "tech"}] * 3
    got = [dec.decode(e, tags=tg) for e, tg in zip(ems, tags, strict=True)]
    for lam in ({"b": 0.9, "t": 0.1}, {"b": 0.1, "t": 0.9}):
        fixed = CTCDecoder(CHAR_LABELS, [LinearInterpolation([b, t], lam, name="mix")], {"mix": 1.0, "words": 1.0},
                           options=opts)
        dom = "bible" if lam["b"] > 0.5 else "tech"
        for g, e, tg in zip(got, ems, tags, strict=True):
            if tg["domain"] != dom:
                continue
            want = fixed.decode(e)
            assert [h.text for h in g.hyps] == [h.text for h in want.hyps]
            for hg, hw in zip(g.hyps, want.hyps, strict=True):
                assert hg.scores == pytest.approx(hw.scores)
    # λ really changes the LM scores (so the test can fail), and one mixture is built per distinct λ
    assert got[0].hyps[0].scores["mix"] != pytest.approx(
        CTCDecoder(CHAR_LABELS, [mix], {"mix": 1.0, "words": 1.0}, options=opts).decode(ems[0]).hyps[0].scores["mix"])
    assert len(dec._mixtures._cache) == 2
    # a λ naming no mixture's components is an error, not silently ignored
    bad = FusionProfile(default=ConditionWeights({"mix": 1.0}, {"x": 0.5, "y": 0.5}), name="bad")
    with pytest.raises(WeightsError, match="match no linear mixture"):
        CTCDecoder(CHAR_LABELS, [mix], bad).decode(ems[0])


def test_weights_have_one_meaning(setup: tuple[KenLM, list[np.ndarray], list[str]]) -> None:
    """A missing LM weight counts 0 (the LM is still scored), ``am`` defaults to 1, unknown names are errors."""
    lm, ems, _ = setup
    opts = CTCOptions(beam_width=8, nbest=3)
    plain = CTCDecoder(CHAR_LABELS, options=opts, lexicon=lm.vocab)  # the LM's words still shape the search
    silent = CTCDecoder(CHAR_LABELS, [lm], options=opts)
    assert silent.weights == {"am": 1.0, "lm": 0.0, "words": 0.0, "oov": 0.0, "hotwords": 0.0}
    for e in ems[:3]:
        a, b = plain.decode(e), silent.decode(e)
        assert [h.text for h in a.hyps] == [h.text for h in b.hyps]
        assert all(h.scores["lm"] < 0 for h in b.hyps)  # computed and written out, unweighted
    with pytest.raises(WeightsError, match=r"'lmm' names no score component \(known: am, lm, words, oov, hotwords\)"):
        CTCDecoder(CHAR_LABELS, [lm], {"lmm": 0.5})
    with pytest.raises(WeightsError, match="'am' must be > 0 for CTC decoding"):
        CTCDecoder(CHAR_LABELS, [lm], {"am": -1.0})


def test_constant_weights_resolved_once_per_decoder(setup: tuple[KenLM, list[np.ndarray], list[str]]) -> None:
    """A constant policy gives the decoder itself for every utterance (resolved once); a copy of it (another
    search width) is not mistaken for the original; a profile still resolves each utterance's weights."""
    lm, ems, _ = setup
    opts = CTCOptions(beam_width=16)
    const = CTCDecoder(CHAR_LABELS, [lm], NOISY, options=opts)
    assert const.for_utterance({"snr": 3.0}) is const
    assert const.for_utterance({"snr": 40.0}) is const
    narrow = const.with_search(beam_width=4)
    assert narrow.for_utterance(None) is narrow
    assert narrow.for_utterance(None).options.beam_width == 4
    prof = CTCDecoder(CHAR_LABELS, [lm], _profile(), options=opts)
    prof.decode_text(ems[0])
    assert prof.for_utterance({"snr": 3.0}).weights["lm"] == NOISY["lm"]
    assert prof.for_utterance({"snr": 40.0}).weights["lm"] == CLEAN["lm"]
    assert prof.for_utterance({"snr": 3.0}).weights["lm"] == NOISY["lm"]
