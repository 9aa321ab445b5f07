"""The pyctcdecode-shaped front door: pyctcdecode's README usage with only the import changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decoders.emissions import CHAR_LABELS, make_emission_set
from fusion.lm import LanguageModel
from fusion.units import Units

pyctcdecode = pytest.importorskip("pyctcdecode")

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"
# README "Quick Start" labels: no blank; both libraries take the last index as the blank
README_LABELS = [" ", *"abcdefghijklmnopqrstuvwxyz"]


def _logits(n: int) -> tuple[list[str], list[np.ndarray]]:
    refs = [s.strip() for s in (TEXT / "bible.test.txt").read_text().splitlines() if 0 < len(s.strip()) < 70][:n]
    ems = make_emission_set(refs, config="noisy", seed=5)
    # reorder CHAR_LABELS' columns (blank first, then " ", a-z, "'") to the README's labels + blank last
    order = [CHAR_LABELS.index(c) for c in README_LABELS] + [0]
    out = []
    for e in ems:
        x = e[:, order]
        out.append(x - np.logaddexp.reduce(x, axis=1, keepdims=True))  # the dropped "'" column renormalised
    return refs, out


def test_readme_quick_start_and_hotwords_same_transcripts(bible_arpa: Path) -> None:
    from decoders.ctc.compat import build_ctcdecoder  # the one changed line

    _refs, logits_list = _logits(12)
    ours = build_ctcdecoder(README_LABELS, kenlm_model_path=str(bible_arpa), alpha=0.5, beta=1.0)
    theirs = pyctcdecode.build_ctcdecoder(README_LABELS, kenlm_model_path=str(bible_arpa), alpha=0.5, beta=1.0)
    same = 0
    for logits in logits_list:
        text = ours.decode(logits)
        same += text == theirs.decode(logits)
        assert isinstance(text, str)
    # prefix merging differs by design (see tests/test_ctc_pyctcdecode.py): most transcripts are identical
    assert same >= 0.75 * len(logits_list)
    hotwords = ["looney tunes", "anthropomorphic"]
    text = ours.decode(logits_list[0], hotwords=hotwords, hotword_weight=10.0)
    assert text == ours.decode(logits_list[0])  # words not in the audio are not forced in
    beams = ours.decode_beams(logits_list[0])
    tb = theirs.decode_beams(logits_list[0])
    assert len(beams[0]) == len(tb[0]) == 5
    text0, _, frames, logit_score, lm_score = beams[0]
    assert [w for w, _ in frames] == text0.split()
    assert all(isinstance(s, int) and s < e for _, (s, e) in frames)
    assert np.isfinite(logit_score) and np.isfinite(lm_score)
    # batch: the pool argument is accepted; results equal one-by-one decoding
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        text_list = ours.decode_batch(pool, logits_list[:3])
    assert text_list == [ours.decode(x) for x in logits_list[:3]]
    hyp = ours.hypotheses(logits_list[0])[0]
    assert hyp.words == tuple(text0.split()) and len(hyp.timesteps) == len(hyp.tokens)  # one per token
    assert len(hyp.confidence) == len(hyp.words)
    assert "".join(README_LABELS[t] if t < len(README_LABELS) else "" for t in hyp.tokens).split() == list(hyp.words)


def _tiny_logits(n: int) -> list[np.ndarray]:
    refs = [" ".join(s.split()[:6]) for s in (Path(__file__).resolve().parent / "data" / "tiny.txt").read_text()
            .splitlines() if s.strip()][:n]
    ems = make_emission_set(refs, config="noisy", seed=8)
    order = [CHAR_LABELS.index(c) for c in README_LABELS] + [0]
    return [e[:, order] - np.logaddexp.reduce(e[:, order], axis=1, keepdims=True) for e in ems]


class _RecordingPool:
    """A stand-in pool: records that ``map`` was called, then maps here."""

    def __init__(self) -> None:
        self.calls = 0

    def map(self, fn, items):  # type: ignore[no-untyped-def]
        self.calls += 1
        return [fn(x) for x in items]


def test_decode_batch_maps_over_the_pool_fork_and_spawn(tiny_arpa: Path) -> None:
    import multiprocessing

    from decoders.ctc.compat import build_ctcdecoder

    logits_list = _tiny_logits(4)
    dec = build_ctcdecoder(README_LABELS, kenlm_model_path=str(tiny_arpa), alpha=0.5, beta=1.0)
    serial = [dec.decode(x) for x in logits_list]
    rec = _RecordingPool()
    assert dec.decode_batch(rec, logits_list) == serial and rec.calls == 1
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert dec.decode_batch(pool, logits_list) == serial
        beams = dec.decode_beams_batch(pool, logits_list[:2], hotwords=["god"], hotword_weight=5.0)
    assert beams == [[(t, f, a, b) for t, _, f, a, b in dec.decode_beams(x, hotwords=["god"], hotword_weight=5.0)]
                     for x in logits_list[:2]]
    # a spawned worker has no copy of the decoder: it rebuilds it from the decoder's spec
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert dec.decode_batch(pool, logits_list[:2]) == serial[:2]
    assert dec.decode_batch(None, logits_list) == serial


class _FlatLM(LanguageModel):
    """A word LM built in memory (no spec(): another process cannot reopen it)."""

    def __init__(self) -> None:
        super().__init__("flat", Units.word())
        self.calls = 0

    def begin(self) -> tuple[()]:
        return ()

    def score(self, state: tuple[()], unit: str) -> tuple[float, tuple[()]]:
        self.calls += 1
        return -2.0, ()

    def end(self, state: tuple[()]) -> float:
        return -1.0


def test_spawn_pool_without_a_spec_falls_back_with_a_warning() -> None:
    import multiprocessing

    from decoders.ctc.compat import BeamSearchDecoderCTC
    from decoders.ctc.decoder import CTCDecoder

    labels = [*README_LABELS, "<blank>"]
    lm = _FlatLM()
    dec = BeamSearchDecoderCTC(CTCDecoder(labels, [lm], {"flat": 0.5}, blank=len(labels) - 1), README_LABELS)
    logits_list = _tiny_logits(2)
    with multiprocessing.get_context("spawn").Pool(1) as pool, pytest.warns(UserWarning, match="spawned pool"):
        out = dec.decode_batch(pool, logits_list)
    assert out == [dec.decode(x) for x in logits_list] and lm.calls > 0


BPE_LABELS = ["<unk>", "▁bug", "s", "▁bunny"]


def _bpe_logits() -> np.ndarray:
    """Emissions spelling ▁bunny ▁bug s (blank appended last, as both libraries assume)."""
    seq = [4, 3, 3, 4, 1, 1, 4, 2, 2, 4]
    x = np.full((len(seq), 5), -12.0)
    for t, k in enumerate(seq):
        x[t, k] = 2.0
    return x - np.logaddexp.reduce(x, axis=1, keepdims=True)


def test_readme_bpe_and_no_lm_examples(tiny_arpa: Path) -> None:
    from decoders.ctc.compat import build_ctcdecoder

    logits = _bpe_logits()
    kenlm_model_path = str(tiny_arpa)
    # README: BPE vocabulary (the LM is still word-based)
    labels = BPE_LABELS
    decoder = build_ctcdecoder(
        labels,
        kenlm_model_path,
    )
    text = decoder.decode(logits)
    theirs = pyctcdecode.build_ctcdecoder(labels, kenlm_model_path)
    assert text == theirs.decode(logits) == "bunny bugs"
    # README (NeMo): a BPE vocabulary and no LM
    decoder = build_ctcdecoder(BPE_LABELS)
    assert decoder.decode(logits) == pyctcdecode.build_ctcdecoder(BPE_LABELS).decode(logits) == "bunny bugs"
