"""Metrics: WER, CER (as jiwer counts them), BLEU and chrF (sacrebleu), oracle error, paired bootstrap.

Conventions:

* corpus-level rates: ``Σ edit distance / Σ reference length`` (not a mean of per-utterance rates);
* tokenisation is jiwer's default (``jiwer.wer_default`` / ``jiwer.cer_default``): for words, runs of
  two or more whitespace characters become one space, the text is stripped and split on single spaces
  (so a lone tab or no-break space does not split a word, as in jiwer); for characters, the text is
  stripped and every character counts, spaces included and repeated spaces too;
* an empty reference with a non-empty hypothesis contributes insertions and no reference length; when
  every reference is empty, :func:`wer`/:func:`cer` return the number of insertions, as jiwer does
  (oracle and bootstrap rates raise instead: they compare rates, and there is none);
* BLEU and chrF are sacrebleu's corpus scores (0-100, one reference per segment, sacrebleu's default
  tokenisation ``13a``); :func:`sentence_stats` gives their per-segment sufficient statistics, which sum
  over a corpus (:func:`score_from_stats`), so tuning over n-best lists can optimise them.

The fast edit distance is rapidfuzz's Levenshtein over token sequences (a jiwer dependency);
:func:`edit_distance_reference` is the plain dynamic programme it is tested against.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fusion.errors import LMFusionError

Unit = Literal["word", "char"]

try:  # rapidfuzz ships with jiwer; the pure-Python programme below is the fallback and the reference
    from rapidfuzz.distance import Levenshtein as _Lev

    def _fast_distance(a: Sequence[str], b: Sequence[str]) -> int:
        return int(_Lev.distance(a, b))

except ImportError:  # pragma: no cover - jiwer always brings rapidfuzz

    def _fast_distance(a: Sequence[str], b: Sequence[str]) -> int:
        return edit_distance_reference(a, b)


def edit_distance_reference(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance (unit costs) by the textbook dynamic programme: the slow reference."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two unit sequences (substitutions, insertions, deletions cost 1)."""
    return _fast_distance(ref, hyp)


_MULTIPLE_SPACES = re.compile(r"\s\s+")


def units_of(text: str, unit: Unit = "word") -> list[str]:
    """Split ``text`` into scoring units as jiwer's default transforms do (see the module docstring)."""
    if unit == "word":
        words = _MULTIPLE_SPACES.sub(" ", text).strip()
        return words.split(" ") if words else []
    if unit == "char":
        return list(text.strip())
    raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")


def error_counts(refs: Sequence[str], hyps: Sequence[str], unit: Unit = "word") -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance ``(edit distances [U], reference lengths [U])`` as int64 arrays."""
    if len(refs) != len(hyps):
        raise LMFusionError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errs = np.empty(len(refs), dtype=np.int64)
    lens = np.empty(len(refs), dtype=np.int64)
    for i, (r, h) in enumerate(zip(refs, hyps, strict=True)):
        ru = units_of(r, unit)
        errs[i] = edit_distance(ru, units_of(h, unit))
        lens[i] = len(ru)
    return errs, lens


def _rate(errs: np.ndarray, lens: np.ndarray) -> float:
    total = int(lens.sum())
    if total <= 0:
        raise LMFusionError("error rate is undefined: the references are empty")
    return float(errs.sum()) / total


def error_rate_of(refs: Sequence[str], hyps: Sequence[str], unit: Unit = "word") -> float:
    """Corpus error rate over ``unit`` (``"word"`` -> WER, ``"char"`` -> CER), jiwer's value included when
    every reference is empty (the number of inserted units)."""
    errs, lens = error_counts(refs, hyps, unit)
    if int(lens.sum()) == 0:
        return float(errs.sum())
    return _rate(errs, lens)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate: total word edits / total reference words."""
    return error_rate_of(refs, hyps, "word")


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus character error rate (spaces count as characters)."""
    return error_rate_of(refs, hyps, "char")


# ----------------------------------------------------------------------------------------------
# BLEU and chrF (sacrebleu)
# ----------------------------------------------------------------------------------------------
MTMetric = Literal["bleu", "chrf"]


def _sacrebleu_metric(metric: MTMetric, **options: Any) -> Any:
    from sacrebleu.metrics import BLEU, CHRF

    if metric == "bleu":
        return BLEU(**options)
    if metric == "chrf":
        return CHRF(**options)
    raise ValueError(f"metric must be 'bleu' or 'chrf', got {metric!r}")


def _check_pairs(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise LMFusionError(f"{len(refs)} references but {len(hyps)} hypotheses")


def bleu(refs: Sequence[str], hyps: Sequence[str], **options: Any) -> float:
    """Corpus BLEU (0-100) by sacrebleu; ``options`` go to ``sacrebleu.metrics.BLEU`` (e.g. ``tokenize``)."""
    _check_pairs(refs, hyps)
    return float(_sacrebleu_metric("bleu", **options).corpus_score(list(hyps), [list(refs)]).score)


def chrf(refs: Sequence[str], hyps: Sequence[str], **options: Any) -> float:
    """Corpus chrF (0-100) by sacrebleu; ``word_order=2`` gives chrF++."""
    _check_pairs(refs, hyps)
    return float(_sacrebleu_metric("chrf", **options).corpus_score(list(hyps), [list(refs)]).score)


def sentence_stats(metric: MTMetric, refs: Sequence[str], hyps: Sequence[str], **options: Any) -> np.ndarray:
    """Per-segment sufficient statistics ``[U, k]`` of BLEU or chrF (n-gram matches and totals, lengths).

    Summed over any choice of one hypothesis per segment, they give that corpus's score through
    :func:`score_from_stats` (what :func:`bleu`/:func:`chrf` compute on the same segments).
    """
    _check_pairs(refs, hyps)
    m = _sacrebleu_metric(metric, **options)
    stats = m._extract_corpus_statistics(list(hyps), [list(refs)])
    return np.asarray(stats, dtype=np.float64).reshape(len(hyps), -1)


def score_from_stats(metric: MTMetric, stats: np.ndarray, **options: Any) -> float:
    """The corpus BLEU or chrF of summed :func:`sentence_stats` (a ``[k]`` vector, or ``[U, k]`` to sum)."""
    arr = np.asarray(stats, dtype=np.float64)
    total = arr.sum(axis=0) if arr.ndim == 2 else arr
    m = _sacrebleu_metric(metric, **options)
    as_int = [round(float(x)) for x in total]  # counts: integers
    return float(m._compute_score_from_stats(as_int).score)


def oracle_error_rate(errors: Sequence[np.ndarray], ref_lengths: np.ndarray) -> float:
    """Error rate when every utterance picks its best hypothesis (an empty list counts all deletions).

    Args:
        errors: per utterance, the edit distance of each hypothesis ``[n_i]``.
        ref_lengths: ``[U]`` reference lengths.
    """
    lens = np.asarray(ref_lengths, dtype=np.int64)
    best = np.array([e.min() if len(e) else lens[i] for i, e in enumerate(errors)], dtype=np.int64)
    return _rate(best, lens)


# ----------------------------------------------------------------------------------------------
# Paired bootstrap (Koehn 2004; Bisani & Ney 2004 for ASR)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ``delta = rate(B) - rate(A)`` (negative: B makes fewer errors).

    Attributes:
        delta: the observed difference on the full set.
        lo, hi: the ``(1 - alpha)`` percentile confidence interval of the difference.
        p_b_not_better: share of resamples in which B is not better than A (``delta >= 0``): a
            one-sided bootstrap p-value for "B is better".
        rate_a, rate_b: the observed rates.
        n: resamples; n_utts: utterances.
    """

    delta: float
    lo: float
    hi: float
    p_b_not_better: float
    rate_a: float
    rate_b: float
    n: int
    n_utts: int
    alpha: float

    def __str__(self) -> str:
        ci = round(100 * (1 - self.alpha))
        return (
            f"{self.rate_b:.4f} - {self.rate_a:.4f} = {self.delta:+.4f} "
            f"({ci}% CI [{self.lo:+.4f}, {self.hi:+.4f}], p(B not better) = {self.p_b_not_better:.3f})"
        )


def bootstrap_from_counts(
    errs_a: np.ndarray,
    errs_b: np.ndarray,
    lens: np.ndarray,
    *,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    chunk: int = 256,
) -> BootstrapResult:
    """Paired bootstrap over utterances from per-utterance error counts (the pure core).

    Every resample draws ``U`` utterance indices with replacement and recomputes both corpus rates on
    the same draw, so the interval reflects the paired difference, not two independent ones.
    """
    ea = np.asarray(errs_a, dtype=np.float64)
    eb = np.asarray(errs_b, dtype=np.float64)
    ln = np.asarray(lens, dtype=np.float64)
    if not (ea.shape == eb.shape == ln.shape) or ea.ndim != 1:
        raise LMFusionError(f"bootstrap: shapes differ: {ea.shape}, {eb.shape}, {ln.shape}")
    u = len(ln)
    if u == 0:
        raise LMFusionError("bootstrap: no utterances")
    if n < 1:
        raise LMFusionError(f"bootstrap: n must be >= 1, got {n}")
    if not 0.0 < alpha < 1.0:
        raise LMFusionError(f"bootstrap: alpha must be in (0, 1), got {alpha}")
    rate_a, rate_b = _rate(ea, ln), _rate(eb, ln)
    rng = np.random.default_rng(seed)
    deltas = np.empty(n, dtype=np.float64)
    diff = eb - ea
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        idx = rng.integers(0, u, size=(m, u))
        tot = ln[idx].sum(axis=1)
        tot = np.where(tot > 0, tot, np.nan)  # a draw of only empty references has no rate
        deltas[start : start + m] = diff[idx].sum(axis=1) / tot
    deltas = deltas[np.isfinite(deltas)]
    if len(deltas) == 0:
        raise LMFusionError("bootstrap: every resample had empty references")
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(
        delta=rate_b - rate_a,
        lo=float(lo),
        hi=float(hi),
        p_b_not_better=float(np.mean(deltas >= 0)),
        rate_a=rate_a,
        rate_b=rate_b,
        n=len(deltas),
        n_utts=u,
        alpha=alpha,
    )


def paired_bootstrap(
    refs: Sequence[str],
    hyps_a: Sequence[str],
    hyps_b: Sequence[str],
    n: int = 1000,
    seed: int = 0,
    *,
    unit: Unit = "word",
    alpha: float = 0.05,
) -> BootstrapResult:
    """Paired bootstrap confidence interval of ``WER(B) - WER(A)`` (or CER with ``unit="char"``)."""
    if not (len(refs) == len(hyps_a) == len(hyps_b)):
        raise LMFusionError(f"paired_bootstrap: {len(refs)} refs, {len(hyps_a)} A hyps, {len(hyps_b)} B hyps")
    ea, lens = error_counts(refs, hyps_a, unit)
    eb, _ = error_counts(refs, hyps_b, unit)
    return bootstrap_from_counts(ea, eb, lens, n=n, seed=seed, alpha=alpha)
