"""Contextual biasing in the CTC decoder: recovery of a word the LM lacks, exact take-back, no-op when empty."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.emissions import CHAR_LABELS
from fusion.errors import LMFusionError
from fusion.ngram import KenLM

BACKENDS = ["numba", "numpy"] if importlib.util.find_spec("numba") else ["numpy"]
IDX = {lab: i for i, lab in enumerate(CHAR_LABELS)}
W = {"lm": 0.5, "words": 1.0}


def emissions(frames: Sequence[Mapping[str, float] | str]) -> np.ndarray:
    """Log-probs ``[T, V]``: each frame is a label (prob .9) or ``{label: prob}``; a blank frame after each."""
    rows = []
    for f in frames:
        dist = {f: 0.9} if isinstance(f, str) else dict(f)
        for d in (dist, {"<blank>": 0.95} if "<blank>" in IDX else {CHAR_LABELS[0]: 0.95}):
            p = np.full(len(CHAR_LABELS), 1e-4)
            for lab, v in d.items():
                p[IDX[lab]] = v
            rows.append(np.log(p / p.sum()))
    return np.stack(rows)


def kafka_frames(c_prob: float = 0.55) -> list[Mapping[str, float] | str]:
    """ "use kafca here" by the AM; the 4th letter of the middle word is c (c_prob) or k (the rest)."""
    mid: list[Mapping[str, float] | str] = ["k", "a", "f", {"c": c_prob, "k": 0.95 - c_prob}, "a"]
    return [*"use", " ", *mid, " ", *"here"]


@pytest.fixture(scope="module")
def tech_lm(tech_arpa: Path) -> KenLM:
    return KenLM(tech_arpa, name="lm")


@pytest.fixture(scope="module", params=BACKENDS)
def dec(request: pytest.FixtureRequest, tech_lm: KenLM) -> CTCDecoder:
    return CTCDecoder(CHAR_LABELS, [tech_lm], W, options=CTCOptions(backend=request.param, beam_width=16))


def test_lm_lacks_the_word(tech_lm: KenLM) -> None:
    assert tech_lm.is_oov("kafka") and tech_lm.is_oov("kafca")
    assert not tech_lm.is_oov("use") and not tech_lm.is_oov("here")


def test_rare_word_recovered_with_boost_only(dec: CTCDecoder) -> None:
    x = emissions(kafka_frames())
    assert dec.decode_text(x) == "use kafca here"
    nb = dec.decode(x, hotwords=["kafka"], hotword_weight=1.0)
    best = nb.hyps[0]
    assert best.text == "use kafka here"
    assert best.scores["hotwords"] == pytest.approx(5.0)  # 5 letters x boost 1, locked in
    # a weight of 0 (the default without one) changes nothing, and says so
    with pytest.warns(UserWarning, match="weight 'hotwords' is 0"):
        assert dec.decode(x, hotwords=["kafka"]).hyps[0].text == "use kafca here"
    # the weights mapping is the other way to set it
    assert dec.with_weights({**W, "hotwords": 1.0}).decode(x, hotwords=["kafka"]).hyps[0].text == "use kafka here"


def test_abandoned_prefix_bonus_taken_back_exactly(dec: CTCDecoder) -> None:
    """ "kafkaesque" is never completed: every hypothesis' hotword score is 0 and the totals equal the
    unbiased ones, although the prefix "kafka" earned 5 on the way."""
    x = emissions(kafka_frames(c_prob=0.3))
    plain = dec.decode(x)
    biased = dec.decode(x, hotwords={"kafkaesque": 2.0}, hotword_weight=1.0)
    w = {**dec.weights, "hotwords": 1.0}
    assert biased.hyps[0].text == plain.hyps[0].text == "use kafka here"
    for h in biased.hyps:
        assert h.scores["hotwords"] == 0.0
    assert biased.hyps[0].total(w) == pytest.approx(plain.hyps[0].total(dec.weights), abs=1e-9)
    # at the end of the utterance too: "... kafk" ends inside the phrase
    y = emissions([*"use", " ", *"kafk"])
    b = dec.decode(y, hotwords={"kafkaesque": 2.0}, hotword_weight=1.0).hyps[0]
    assert b.text == "use kafk" and b.scores["hotwords"] == 0.0
    # a completed phrase keeps exactly boost x labels (with the space: 2 words = 3 + 1 + 5 labels)
    c = dec.decode(x, hotwords={"use kafka": 0.5}, hotword_weight=2.0).hyps[0]
    assert c.text == "use kafka here" and c.scores["hotwords"] == pytest.approx(0.5 * 9)


def test_empty_list_never_changes_output(dec: CTCDecoder) -> None:
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = emissions(kafka_frames(float(rng.uniform(0.2, 0.8))))
        x = x + rng.normal(0, 0.3, x.shape)
        x = x - np.logaddexp.reduce(x, axis=1, keepdims=True)
        ref = dec.decode(x)
        for hot in ([], None, {}, ["  "]):
            got = dec.decode(x, hotwords=hot, hotword_weight=3.0)
            assert [h.text for h in got.hyps] == [h.text for h in ref.hyps]
            assert [h.scores for h in got.hyps] == [h.scores for h in ref.hyps]


def test_batch_per_utterance_hotwords(dec: CTCDecoder) -> None:
    xs = [emissions(kafka_frames()), emissions(kafka_frames()), emissions([*"use", " ", *"here"])]
    out = dec.decode_batch(xs, hotwords=[["kafka"], [], ["kafka"]], hotword_weight=1.0)
    assert [nb.hyps[0].text for nb in out] == ["use kafka here", "use kafca here", "use here"]
    same = dec.decode_batch(xs[:2], hotwords=["kafka"], hotword_weight=1.0)
    assert [nb.hyps[0].text for nb in same] == ["use kafka here"] * 2
    with pytest.raises(LMFusionError, match="per-utterance hotword lists"):
        dec.decode_batch(xs, hotwords=[["kafka"]])


def test_upper_case_labels_take_lower_case_hotwords(tech_lm: KenLM) -> None:
    labels = [lab.upper() for lab in CHAR_LABELS]
    d = CTCDecoder(labels, None, {"hotwords": 1.0})
    g = d._hot_graphs.graph(["kafka"], 1.0)
    assert g is not None and g.score_units([labels.index(c) for c in "KAFKA"]) == pytest.approx(5.0)
