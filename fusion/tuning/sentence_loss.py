"""BLEU and chrF as tuning objectives (sacrebleu), through a decomposable per-sentence loss.

Tuning reads per-hypothesis error counts that add up over the corpus. Corpus BLEU does not decompose
that way, so for ``--metric bleu|chrf`` each hypothesis gets the loss ``1 - sentence score / 100``
(sacrebleu's ``sentence_bleu`` with its default smoothing, or ``sentence_chrf``), in units of
``1 / RESOLUTION``, and every utterance weighs ``RESOLUTION``: the tuned quantity is one minus the mean
sentence score. The reported figure is the corpus score (:func:`corpus_score`) of the chosen 1-bests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusion.errors import LMFusionError
from fusion.metrics import bleu, chrf
from fusion.tuning.problem import TuningProblem

RESOLUTION = 10_000
SENTENCE_METRICS = ("bleu", "chrf")


def _check(metric: str) -> None:
    if metric not in SENTENCE_METRICS:
        raise LMFusionError(f"unknown sentence metric {metric!r}; choose one of {', '.join(SENTENCE_METRICS)}")


def sentence_score(metric: str, hyp: str, ref: str) -> float:
    """sacrebleu's sentence BLEU or chrF (0-100) of one hypothesis."""
    import sacrebleu

    _check(metric)
    if metric == "bleu":
        return float(sacrebleu.sentence_bleu(hyp, [ref]).score)
    return float(sacrebleu.sentence_chrf(hyp, [ref]).score)


def corpus_score(metric: str, hyps: Sequence[str], refs: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU or chrF (0-100): :func:`fusion.metrics.bleu` / :func:`fusion.metrics.chrf`."""
    _check(metric)
    return bleu(refs, hyps) if metric == "bleu" else chrf(refs, hyps)


def loss_problem(
    problem: TuningProblem, texts: Sequence[Sequence[str]], refs: Sequence[str], metric: str
) -> TuningProblem:
    """``problem``'s scores with errors replaced by the sentence loss of each hypothesis (module docstring)."""
    _check(metric)
    if len(texts) != problem.n_utts or len(refs) != problem.n_utts:
        raise LMFusionError(f"loss_problem: {len(texts)} lists and {len(refs)} refs for {problem.n_utts} utterances")
    errors = []
    for ts, ref in zip(texts, refs, strict=True):
        cache: dict[str, int] = {}
        e = np.empty(len(ts), dtype=np.int64)
        for i, t in enumerate(ts):
            if t not in cache:
                cache[t] = round(RESOLUTION * (1.0 - sentence_score(metric, t, ref) / 100.0))
            e[i] = cache[t]
        errors.append(e)
    lens = np.full(problem.n_utts, RESOLUTION, dtype=np.int64)
    return TuningProblem(problem.components, problem.feats, errors, lens, problem.utt_ids)
