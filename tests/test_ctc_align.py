"""Per-token timesteps, word frames and word confidences of CTC hypotheses (decoders/ctc/align.py)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.ctc.align import align_nbest, best_path, token_confidences
from decoders.emissions import CHAR_LABELS, make_emission_set
from decoders.hypothesis import parse_nbest_line
from fusion.errors import LMFusionError


def _owners(path: tuple[int, ...], blank: int) -> list[int]:
    """Per frame, the position of the token it emits in the collapsed sequence (-1: blank)."""
    out, k, prev = [], -1, blank
    for lab in path:
        if lab == blank:
            out.append(-1)
        else:
            if lab != prev:
                k += 1
            out.append(k)
        prev = lab
    return out


def _collapse(path: tuple[int, ...], blank: int) -> list[int]:
    return [lab for i, lab in enumerate(path) if lab != blank and (i == 0 or path[i - 1] != lab)]


@pytest.mark.parametrize("tokens", [[1, 2], [1, 1], [2, 1, 2], [3]])
def test_viterbi_is_the_best_of_all_alignments(tokens: list[int]) -> None:
    rng = np.random.default_rng(len(tokens) * 7 + tokens[0])
    T, V = 6, 4
    x = rng.normal(0, 2, (T, V))
    lp = x - np.logaddexp.reduce(x, axis=1, keepdims=True)
    best, arg = -math.inf, None
    for path in itertools.product(sorted({0, *tokens}), repeat=T):
        if _collapse(path, 0) == tokens:
            s = float(sum(lp[t, lab] for t, lab in enumerate(path)))
            if s > best:
                best, arg = s, path
    assert arg is not None
    owner, total = best_path(lp, tokens, 0)
    assert total == pytest.approx(best)
    assert owner.tolist() == _owners(arg, 0)


def test_no_alignment_is_an_error() -> None:
    lp = np.log(np.full((2, 3), 1 / 3))
    with pytest.raises(LMFusionError, match="no CTC alignment"):
        best_path(lp, [1, 1], 0)  # a repeat needs a blank between: 3 frames


def _peaked(words: list[tuple[str, float]], blank_p: float = 0.9) -> tuple[np.ndarray, list[int]]:
    """One frame per character with probability q (its word's), blank frames between; the peak frames."""
    V = len(CHAR_LABELS)
    rows, peaks = [], []

    def row(label: int, p: float) -> None:
        r = np.full(V, (1.0 - p) / (V - 1))
        r[label] = p
        rows.append(np.log(r))

    row(0, blank_p)
    text = " ".join(w for w, _ in words)
    qs = [q for w, q in words for _ in w + " "][: len(text)]
    for ch, q in zip(text, qs, strict=True):
        peaks.append(len(rows))
        row(CHAR_LABELS.index(ch), 0.9 if ch == " " else q)
        row(0, blank_p)
    return np.stack(rows), peaks


def test_timesteps_words_and_confidence_on_constructed_emissions() -> None:
    lp, peaks = _peaked([("cat", 0.95), ("dog", 0.55)])
    dec = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=8, nbest=2))
    h = dec.decode(lp).hyps[0]
    assert h.text == "cat dog"
    assert list(h.timesteps) == peaks  # each token at its peak frame
    assert h.words == (("cat", peaks[0], peaks[2] + 1), ("dog", peaks[4], peaks[6] + 1))
    # one frame per token: a token's confidence is its frame's posterior, a word's the lowest of its tokens
    assert h.confidence == pytest.approx((0.95, 0.55))
    assert h.confidence[0] > h.confidence[1]


def test_confidence_is_geometric_mean_over_the_tokens_frames() -> None:
    lp = np.log(np.array([[0.1, 0.9 - 1e-9, 1e-9], [0.4, 0.6 - 1e-9, 1e-9], [0.9, 0.1 - 1e-9, 1e-9]]))
    owner, _ = best_path(lp, [1], 0)
    assert owner.tolist() == [0, 0, -1]  # the token holds frames 0 and 1 on the best path
    assert token_confidences(lp, owner, [1])[0] == pytest.approx(math.sqrt(0.9 * 0.6))


@pytest.fixture(scope="module")
def noisy() -> list[np.ndarray]:
    return make_emission_set(["the module defines", "use kafka here"], config="noisy", seed=4)


def test_timesteps_consistent_and_backends_agree(noisy: list[np.ndarray]) -> None:
    outs = []
    for backend in ("numpy", "numba"):
        dec = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=16, nbest=4, backend=backend))
        outs.append(dec.decode_batch(noisy))
        for nb in outs[-1]:
            for h in nb.hyps:
                assert len(h.timesteps) == len(h.tokens)
                assert list(h.timesteps) == sorted(set(h.timesteps))  # one frame per token, increasing
                assert len(h.confidence) == len(h.words) and all(0 < c <= 1 for c in h.confidence)
                starts = [i for i, t in enumerate(h.tokens) if t != " " and (i == 0 or h.tokens[i - 1] == " ")]
                assert [s for _, s, _ in h.words] == [h.timesteps[i] for i in starts]
    assert [[(h.text, h.timesteps, h.words, h.confidence) for h in nb.hyps] for nb in outs[0]] == \
        [[(h.text, h.timesteps, h.words, h.confidence) for h in nb.hyps] for nb in outs[1]]


def test_stream_and_json_keep_timesteps(noisy: list[np.ndarray]) -> None:
    dec = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=16, nbest=3))
    whole = dec.decode(noisy[1])
    st = dec.stream()
    for a in range(0, len(noisy[1]), 7):
        st.feed(noisy[1][a: a + 7])
    streamed = st.finish()
    assert [(h.timesteps, h.words, h.confidence) for h in streamed.hyps] == \
        [(h.timesteps, h.words, h.confidence) for h in whole.hyps]
    back = parse_nbest_line(json.dumps(whole.to_json()))
    assert back.hyps[0].timesteps == whole.hyps[0].timesteps
    assert back.hyps[0].confidence == pytest.approx(whole.hyps[0].confidence)


def test_ctc_hypothesis_view(noisy: list[np.ndarray]) -> None:
    dec = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=16, nbest=2))
    nb = dec.decode(noisy[0])
    views = dec.ctc_hypotheses(nb)
    v, h = views[0], nb.hyps[0]
    assert [CHAR_LABELS[i] for i in v.tokens] == list(h.tokens)
    assert v.words == tuple(h.text.split()) and v.timesteps == h.timesteps
    assert v.score == pytest.approx(h.total(dec.weights))
    assert views[0].score >= views[1].score


def test_align_off_same_hypotheses_without_timesteps(noisy: list[np.ndarray]) -> None:
    on = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=16, nbest=3)).decode(noisy[0])
    off = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=16, nbest=3, align=False)).decode(noisy[0])
    assert [(h.text, h.scores, h.tokens) for h in on.hyps] == [(h.text, h.scores, h.tokens) for h in off.hyps]
    assert all(h.timesteps == () and h.confidence == () and len(h.words) == len(h.text.split()) for h in off.hyps)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_aligned_in_finish_equals_aligning_the_finished_list(noisy: list[np.ndarray], backend: str) -> None:
    """``finish(logprobs=...)`` builds each hypothesis aligned in one pass: the same list as
    :func:`~decoders.ctc.align.align_nbest` over the unaligned one (words, timesteps, confidences, scores)."""
    dec = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=16, nbest=4, backend=backend))
    for em in noisy[:3]:
        s = dec._search()
        s.feed_array(em)
        plain = s.finish(utt_id="u")
        at_once = s.finish(utt_id="u", logprobs=em)
        afterwards = align_nbest(plain, em, dec.vocab)
        assert at_once.to_json() == afterwards.to_json()
        assert any(h.timesteps for h in at_once.hyps) and not any(h.timesteps for h in plain.hyps)
        assert dec.decode(em, utt_id="u").to_json() == at_once.to_json()
        assert dec.decode_text(em) == at_once.hyps[0].text  # built alone, unaligned: the same text
