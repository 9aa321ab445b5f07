"""Blind SNR estimation from a waveform: WADA-SNR (numpy only).

WADA-SNR (Kim & Stern, "Robust signal-to-noise ratio estimation based on waveform amplitude
distribution analysis", Interspeech 2008) assumes the amplitude of clean speech follows a Gamma
distribution with shape 0.4 and the noise is Gaussian. The statistic

    G(x) = ln E|x| - E ln|x|

grows monotonically with the SNR of speech + noise, so a table of its expected value at known SNRs
inverts it. We do not copy a published table: :func:`wada_table` computes it from the model itself
(Monte Carlo with a fixed seed, cached), and :func:`wada_statistic` / :func:`wada_snr` apply it.

WADA is biased on synthetic (flite) speech whose amplitude is not Gamma(0.4): measured 3-7 dB low at
0-10 dB white-noise SNR. :func:`noise_floor_snr` is the other classic blind estimator (frame-energy
noise floor, as in NIST's STNR and minimum-statistics noise trackers): the noise power is the mean
energy of the quietest frames and the speech power is what the rest adds. It needs a few pauses (any
utterance has them at its edges) and was within 1 dB on the same audio; it is the default of
:func:`estimate_snr`. Their plain-loop references are in :mod:`fusion.reference`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    "SNR_MAX_DB",
    "SNR_MIN_DB",
    "estimate_snr",
    "noise_floor_snr",
    "wada_snr",
    "wada_statistic",
    "wada_table",
]

SNR_MIN_DB = -20.0
"""Lowest SNR the estimator reports (the table starts here)."""
SNR_MAX_DB = 100.0
"""Highest SNR the estimator reports (clean or digitally silent audio saturates here)."""

_GAMMA_SHAPE = 0.4
_EPS = 1e-10


def _g_of(abs_x: np.ndarray) -> float:
    """``ln mean|x| - mean ln|x|`` of non-negative amplitudes (clamped away from zero)."""
    a = np.maximum(abs_x, _EPS)
    return float(math.log(float(np.mean(a))) - float(np.mean(np.log(a))))


@functools.lru_cache(maxsize=4)
def wada_table(step_db: float = 1.0, n: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The expected WADA statistic at SNRs from -20 to 100 dB: ``(snr_db [K], g [K])``.

    Computed from the WADA model: speech ~ random sign x Gamma(0.4) amplitude, noise ~ N(0, σ²) with σ
    set for each SNR; ``g`` is made non-decreasing (Monte Carlo noise at high SNR is tiny but nonzero)
    so the table can be inverted by interpolation.
    """
    rng = np.random.default_rng(seed)
    speech = rng.gamma(_GAMMA_SHAPE, 1.0, size=n) * rng.choice(np.array([-1.0, 1.0]), size=n)
    noise = rng.standard_normal(n)
    ps = float(np.mean(speech**2))
    snrs = np.arange(SNR_MIN_DB, SNR_MAX_DB + step_db / 2, step_db)
    g = np.empty_like(snrs)
    for i, snr in enumerate(snrs):
        sigma = math.sqrt(ps / 10.0 ** (snr / 10.0))
        g[i] = _g_of(np.abs(speech + sigma * noise))
    g = np.maximum.accumulate(g)
    return snrs, g


def wada_statistic(x: np.ndarray) -> float:
    """``ln E|x| - E ln|x|`` of a waveform scaled to peak 1 (scale-invariant apart from the clamp)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("empty waveform")
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform has NaN or infinite samples")
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        return math.inf
    return _g_of(np.abs(x / peak))


def _invert(g: float) -> float:
    snrs, table = wada_table()
    if not math.isfinite(g) or g >= table[-1]:
        return SNR_MAX_DB
    if g <= table[0]:
        return SNR_MIN_DB
    return float(np.interp(g, table, snrs))


def wada_snr(x: np.ndarray) -> float:
    """Blind WADA-SNR estimate of a mono waveform, in dB, clamped to [-20, 100].

    Any sample scale works (int16 or float). Digital silence or noise-free synthetic speech gives
    the top of the range.
    """
    return _invert(wada_statistic(x))


def _clamp(db: float) -> float:
    return float(min(max(db, SNR_MIN_DB), SNR_MAX_DB))


def frame_energies(x: np.ndarray, sample_rate: int, frame_ms: float = 25.0) -> np.ndarray:
    """Mean power of consecutive non-overlapping frames (a tail shorter than a frame is dropped)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform has NaN or infinite samples")
    f = max(1, round(frame_ms * sample_rate / 1000.0))
    n = len(x) // f
    if n == 0:
        raise ValueError(f"waveform shorter than one {frame_ms} ms frame")
    return np.asarray(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1))


def noise_floor_snr(x: np.ndarray, sample_rate: int = 16000, *, quantile: float = 0.1, frame_ms: float = 25.0) -> float:
    """Blind SNR from the frame-energy noise floor, in dB, clamped to [-20, 100].

    noise power = mean of the lowest ``quantile`` of frame energies; speech power = total power minus
    noise power. Digital silence (zero floor) gives the top of the range.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    e = np.sort(frame_energies(x, sample_rate, frame_ms))
    k = max(1, int(quantile * len(e)))
    pn = float(np.mean(e[:k]))
    pt = float(np.mean(e))
    if pn <= 0.0:
        return SNR_MAX_DB
    ps = pt - pn
    if ps <= 0.0:
        return SNR_MIN_DB
    return _clamp(10.0 * math.log10(ps / pn))


def estimate_snr(x: np.ndarray, sample_rate: int = 16000, method: str = "noise_floor") -> float:
    """Blind SNR of a mono waveform in dB: ``method`` is ``"noise_floor"`` (default) or ``"wada"``."""
    if method == "noise_floor":
        return noise_floor_snr(x, sample_rate)
    if method == "wada":
        return wada_snr(x)
    raise ValueError(f"unknown SNR method {method!r} (expected 'noise_floor' or 'wada')")
