"""The pyctcdecode-shaped front door: pyctcdecode's README usage with only the import changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decoders.emissions import CHAR_LABELS, make_emission_set

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
    assert hyp.words == tuple(text0.split()) and len(hyp.timesteps) == len(hyp.words)
    assert "".join(README_LABELS[t] if t < len(README_LABELS) else "" for t in hyp.tokens).split() == list(hyp.words)
