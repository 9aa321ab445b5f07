"""Blind SNR estimation: the noise-floor estimator is within 3 dB on real (flite) speech + white noise."""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import numpy as np
import pytest

from fusion.reference import noise_floor_snr_reference, wada_snr_reference
from fusion.snr import (
    SNR_MAX_DB,
    estimate_snr,
    noise_floor_snr,
    wada_snr,
    wada_table,
)

SPEECH = Path(__file__).parent / "data" / "speech_kal16.wav"


def _speech() -> np.ndarray:
    with wave.open(str(SPEECH), "rb") as w:
        assert w.getframerate() == 16000
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0


def _mix(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(len(x))
    n *= np.sqrt(np.mean(x**2) / (np.mean(n**2) * 10 ** (snr_db / 10)))
    return x + n


@pytest.mark.parametrize("snr", [10.0, 5.0, 0.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_estimate_within_3db_on_speech_plus_white_noise(snr: float, seed: int) -> None:
    est = estimate_snr(_mix(_speech(), snr, seed), 16000)
    assert abs(est - snr) <= 3.0, (snr, est)


def test_estimates_are_monotone_in_true_snr_for_both_methods() -> None:
    x = _speech()
    for method in ("noise_floor", "wada"):
        ests = [estimate_snr(_mix(x, s, 3), 16000, method=method) for s in (-5, 0, 5, 10, 20, 30)]
        assert all(a < b for a, b in itertools.pairwise(ests)), (method, ests)


def test_scale_invariance_and_clean_speech_saturates_high() -> None:
    y = _mix(_speech(), 5.0, 0)
    assert noise_floor_snr(y) == pytest.approx(noise_floor_snr(1000 * y), abs=1e-9)
    assert wada_snr(y) == pytest.approx(wada_snr(0.01 * y), abs=0.05)
    assert estimate_snr(np.zeros(16000)) == SNR_MAX_DB
    assert estimate_snr(_speech()) > 25.0


def test_fast_paths_match_plain_references() -> None:
    y = _mix(_speech(), 7.0, 5)[:20000]
    assert noise_floor_snr(y) == pytest.approx(noise_floor_snr_reference(y), abs=1e-6)
    assert wada_snr(y) == pytest.approx(wada_snr_reference(y), abs=1e-6)


def test_wada_table_is_monotone_and_starts_at_gaussian_value() -> None:
    snrs, g = wada_table()
    assert np.all(np.diff(g) >= 0)
    # pure Gaussian noise: ln E|x| - E ln|x| = ln(sqrt(2/pi)) - (-(gamma + ln 2)/2) ~ 0.4092
    assert g[0] == pytest.approx(0.5 * np.log(2 / np.pi) + (np.euler_gamma + np.log(2)) / 2, abs=0.01)
    assert snrs[0] == -20 and snrs[-1] == 100


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        estimate_snr(np.array([0.1, np.nan] * 1000))
    with pytest.raises(ValueError, match="method"):
        estimate_snr(np.ones(1000), method="magic")
