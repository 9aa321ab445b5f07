"""Error metrics for recognisers: WER, CER, oracle error of an n-best list, paired bootstrap.

Conventions:

* corpus-level rates: ``Σ edit distance / Σ reference length`` (not a mean of per-utterance rates);
* words are whitespace-separated; characters are the characters of the whitespace-normalised
  text, spaces included (as jiwer's ``cer`` counts them);
* an empty reference with a non-empty hypothesis contributes insertions and no reference length;
  a corpus whose references are all empty has an undefined rate and raises.

The fast edit distance is rapidfuzz's Levenshtein over token sequences (a jiwer dependency);
:func:`edit_distance_reference` is the plain dynamic programme it is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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


def units_of(text: str, unit: Unit = "word") -> list[str]:
    """Split ``text`` into scoring units: whitespace words, or the characters of the normalised text."""
    if unit == "word":
        return text.split()
    if unit == "char":
        return list(" ".join(text.split()))
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
    """Corpus error rate over ``unit`` (``"word"`` -> WER, ``"char"`` -> CER)."""
    return _rate(*error_counts(refs, hyps, unit))


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate: total word edits / total reference words."""
    return error_rate_of(refs, hyps, "word")


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus character error rate (spaces count as characters)."""
    return error_rate_of(refs, hyps, "char")


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
