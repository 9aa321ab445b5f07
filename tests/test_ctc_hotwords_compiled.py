"""Hotwords inside the compiled CTC search: the numba back end gives the numpy search's hypotheses and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.emissions import CHAR_LABELS
from decoders.hypothesis import NBestList
from fusion.biasing import ContextGraph, Hotwords, label_tokenizer, normalize_hotwords
from fusion.ngram import KenLM

pytest.importorskip("numba")

IDX = {lab: i for i, lab in enumerate(CHAR_LABELS)}
BLANK = 0 if CHAR_LABELS[0] in ("", "<blank>", "_", "<pad>") else IDX.get("<blank>", 0)
TEXTS = ["use kafka here", "the module imports kafkaesque code", "import the fast module here"]
HOT = {"kafka": 1.5, "kafkaesque": 0.7, "afk": 2.0, "the mod": 0.4, "here": 0.3, "fast module": 1.0,
       "aesq": 0.9, "module": 0.2}


def noisy_emissions(text: str, rng: np.random.Generator) -> np.ndarray:
    """Log-probs ``[T, V]`` of ``text`` (a blank frame after each label) with random confusions."""
    rows = []
    for ch in text:
        for lab in (ch, None):
            logits = rng.normal(0.0, 1.5, len(CHAR_LABELS))
            logits[IDX[lab] if lab is not None else BLANK] += 4.0
            rows.append(logits - np.logaddexp.reduce(logits))
    return np.stack(rows)


def assert_same(a: NBestList, b: NBestList) -> None:
    assert [h.text for h in a.hyps] == [h.text for h in b.hyps]
    for ha, hb in zip(a.hyps, b.hyps, strict=True):
        assert set(ha.scores) == set(hb.scores)
        for k in ha.scores:
            assert ha.scores[k] == pytest.approx(hb.scores[k], abs=1e-9), k


@pytest.fixture(scope="module")
def decoders(tech_arpa: Path) -> dict[str, CTCDecoder]:
    lm = KenLM(tech_arpa, name="lm")
    return {b: CTCDecoder(CHAR_LABELS, [lm], {"lm": 0.5, "words": 1.0},
                          options=CTCOptions(backend=b, beam_width=12, token_min_logp=-6.0))
            for b in ("numba", "numpy")}


def test_graph_arrays_step_like_the_graph() -> None:
    """The kernel's look-up over the flat arrays moves and scores exactly as :meth:`ContextGraph.step`."""
    from decoders.ctc.kernel import _hot_step

    tok = label_tokenizer(CHAR_LABELS, " " if " " in IDX else None)
    g = ContextGraph(normalize_hotwords(HOT), tok, len(CHAR_LABELS))
    arrs = g.arrays()
    rng = np.random.default_rng(1)
    units = [IDX[c] for c in "kafkaesque the module here afk"]
    for _ in range(400):
        s = int(rng.integers(len(g)))
        u = int(rng.choice(units)) if rng.random() < 0.8 else int(rng.integers(len(CHAR_LABELS)))
        n, d = _hot_step(*arrs, s, u)  # type: ignore[call-arg]
        n2, d2 = g.step(s, u)
        assert (int(n), float(d)) == (n2, pytest.approx(d2, abs=1e-12))


@pytest.mark.parametrize("weight", [1.0, 3.0, -0.5])
def test_compiled_equals_numpy_with_hotwords(decoders: dict[str, CTCDecoder], weight: float) -> None:
    rng = np.random.default_rng(int(weight * 10) + 7)
    changed = 0
    for text in TEXTS:
        x = noisy_emissions(text, rng)
        got = decoders["numba"].decode(x, hotwords=HOT, hotword_weight=weight)
        want = decoders["numpy"].decode(x, hotwords=HOT, hotword_weight=weight)
        assert_same(got, want)
        plain = decoders["numba"].decode(x)
        changed += [h.text for h in got.hyps] != [h.text for h in plain.hyps]
    assert changed > 0  # the hotwords did something on these emissions


def test_compiled_equals_numpy_per_utterance_batch(decoders: dict[str, CTCDecoder]) -> None:
    rng = np.random.default_rng(3)
    xs = [noisy_emissions(t, rng) for t in TEXTS]
    lists: list[Hotwords] = [["kafka", "afk"], [], {"fast module": 2.0, "here": 1.0}]
    got = decoders["numba"].decode_batch(xs, hotwords=lists, hotword_weight=2.0)
    want = decoders["numpy"].decode_batch(xs, hotwords=lists, hotword_weight=2.0)
    for a, b in zip(got, want, strict=True):
        assert_same(a, b)
    alone = decoders["numba"].decode(xs[2], hotwords=lists[2], hotword_weight=2.0)
    assert_same(got[2], alone)
    assert decoders["numba"].biased(["kafka"], 1.0).backend.startswith("compiled")


def test_graph_cache_follows_the_list_contents() -> None:
    """A list given again is found as it was; changed in place, it gets its own graph; the same phrases
    written differently share one graph."""
    d = CTCDecoder(CHAR_LABELS)
    hw = ["kafka", "afk"]
    g1 = d._hot_graphs.graph(hw, 1.0)
    assert g1 is not None and d._hot_graphs.graph(list(hw), 1.0) is g1
    assert d._hot_graphs.graph(hw, 2.0) is not g1  # another boost
    hw.append("here")
    g2 = d._hot_graphs.graph(hw, 1.0)
    assert g2 is not None and g2 is not g1 and len(g2) > len(g1)
    assert d._hot_graphs.graph({" kafka ": 1.0, "afk": 1.0}, 1.0) is g1
    assert d._hot_graphs.graph(["  "], 1.0) is None and d._hot_graphs.graph(["  "], 1.0) is None
