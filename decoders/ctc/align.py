"""Token timesteps and word confidences of CTC hypotheses, by forced alignment after the search.

The search keeps, for each prefix, only the frame its last token was first emitted in (any alignment); the
frames of the *best* alignment are found afterwards, for each output hypothesis, by Viterbi over the CTC
topology of its own token sequence (blank, y1, blank, y2, ..., blank; a repeated token needs a blank between
its two copies). This is exact for the best path and costs ``O(T x (2L + 1))`` per hypothesis (compiled).

From the best path:

* **token timestep**: the first frame of each token (torchaudio's ``CTCHypothesis.timesteps``: one per token);
* **word frames**: ``(first frame of its first token, last frame of its last token + 1)``;
* **token confidence**: ``exp(mean ln p_t(token))`` over the frames the path gives the token (the geometric
  mean of its frame posteriors, in ``(0, 1]``);
* **word confidence**: the lowest token confidence among the word's tokens (a word is as sure as its least
  sure unit; word delimiters are not part of a word).

The posteriors are the emissions' own (before the acoustic weight), so the confidence does not depend on
the fusion weights.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from decoders.ctc import kernels
from decoders.ctc.vocabulary import CTCVocab
from decoders.hypothesis import NBestList, ScoredHypothesis
from fusion.errors import LMFusionError


def best_path(logprobs: np.ndarray, token_ids: Sequence[int], blank: int) -> tuple[np.ndarray, float]:
    """The best CTC alignment of ``token_ids`` over ``logprobs [T, V]``: per frame, the position of the token
    it emits in ``token_ids`` (``-1``: blank), and the path's log-probability.

    Raises:
        LMFusionError: no alignment has a non-zero probability (too few frames, or a token at ``-inf``).
    """
    lp = np.ascontiguousarray(logprobs, dtype=np.float64)
    owner, total = kernels.load().viterbi(lp, np.asarray(token_ids, dtype=np.int64), int(blank))
    if not np.isfinite(total):
        raise LMFusionError(f"no CTC alignment of {len(token_ids)} tokens over {len(lp)} frames has probability > 0")
    return owner, float(total)


def token_confidences(logprobs: np.ndarray, owner: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """Each token's ``exp(mean ln p_t(token))`` over its frames on the path ``owner`` (see the module docstring)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    V = logprobs.shape[1]
    lp = np.ascontiguousarray(logprobs, dtype=np.float64)
    _, conf, _ = kernels.load().summaries(lp, ids, np.asarray(owner, np.int64), np.ones(V, bool), np.zeros(V, bool))
    return conf


@functools.lru_cache(maxsize=16)
def vocab_tables(vocab: CTCVocab) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Label -> id over the non-blank labels, and per label: appends text / completes the open word."""
    index = {lab: i for i, lab in enumerate(vocab.labels) if i != vocab.blank}
    return index, np.array([bool(t) for t in vocab.text]), np.array(vocab.completes, dtype=bool)


def align_tokens(text: str, token_ids: Sequence[int], words: Sequence[str], logprobs: np.ndarray,
                 vocab: CTCVocab) -> tuple[tuple[tuple[str, int, int], ...], tuple[int, ...], tuple[float, ...]]:
    """The best path of a hypothesis' tokens: its ``words`` with their frames, per-token timesteps and per-word
    confidences. ``logprobs`` are float64 and C-contiguous; ``text`` names the hypothesis in errors.

    Raises:
        LMFusionError: no alignment has a non-zero probability, or the tokens hold another number of words.
    """
    if not len(token_ids):
        return (), (), ()
    ids = np.array(token_ids, dtype=np.int64)
    owner, total = kernels.load().viterbi(logprobs, ids, int(vocab.blank))
    if not np.isfinite(total):
        raise LMFusionError(f"no CTC alignment of {text!r} over {len(logprobs)} frames has probability > 0")
    _, has_text, completes = vocab_tables(vocab)
    start, _, w = kernels.load().summaries(logprobs, ids, owner, has_text, completes)
    if len(w) != len(words):
        raise LMFusionError(f"alignment of {text!r}: {len(w)} words in its tokens, {len(words)} given")
    rows = w.tolist()
    framed = tuple((name, int(a), int(b)) for name, (a, b, _) in zip(words, rows, strict=True))
    return framed, tuple(start.tolist()), tuple(r[2] for r in rows)


def align_hypothesis(hyp: ScoredHypothesis, logprobs: np.ndarray, vocab: CTCVocab) -> ScoredHypothesis:
    """``hyp`` with per-token ``timesteps``, word frames from the best path and per-word ``confidence``."""
    if not hyp.tokens:
        return replace(hyp, timesteps=(), confidence=())
    index, _, _ = vocab_tables(vocab)
    lp = np.ascontiguousarray(logprobs, dtype=np.float64)
    words, timesteps, confidence = align_tokens(hyp.text, [index[t] for t in hyp.tokens],
                                                [name for name, _, _ in hyp.words], lp, vocab)
    return replace(hyp, words=words, timesteps=timesteps, confidence=confidence)


def align_nbest(nb: NBestList, logprobs: np.ndarray, vocab: CTCVocab, enabled: bool = True) -> NBestList:
    """Every hypothesis of ``nb`` aligned (:func:`align_hypothesis`) over the utterance's ``logprobs``
    (``enabled=False``: ``nb`` as it is, see ``CTCOptions.align``). A search aligns its own output when its
    ``finish`` is given the log-probabilities (one pass, no copies of the hypotheses)."""
    if not enabled:
        return nb
    lp = np.ascontiguousarray(logprobs, dtype=np.float64)
    return replace(nb, hyps=tuple(align_hypothesis(h, lp, vocab) for h in nb.hyps))
