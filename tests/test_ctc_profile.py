"""The CTC decoder takes a fusion profile wherever it takes weights: weights follow each utterance's tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.emissions import CHAR_LABELS, make_emission_set
from fusion.abilities import LMSpec
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
