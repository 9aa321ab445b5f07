"""Linear LM mixtures with interpolation weights chosen per utterance (a profile's, or a domain posterior's).

A linear mixture's sentence score is ``Σ_t ln Σ_i λ_i P_i(u_t | h_t)``: the mix happens per prediction,
so it cannot be recovered from the component sentence totals. :func:`unit_logprobs` scores each text
once per model and keeps the per-unit log-probabilities; :func:`mix_scores` then mixes them under any
``λ`` per utterance without re-scoring. Models must share units: pass word and subword LMs through
:func:`fusion.units.bridge_units` first (subword LMs scored per word, as ``lmfusion mix`` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fusion.errors import LMFusionError, WeightsError
from fusion.interpolate import linear_mix_logprobs
from fusion.lm import LanguageModel, check_same_units


def unit_logprobs(models: Sequence[LanguageModel], texts: Sequence[str]) -> list[list[np.ndarray]]:
    """``out[i][j]``: per-unit natural-log probabilities (``</s>`` last) of ``texts[j]`` under ``models[i]``."""
    check_same_units(models)
    toks = [models[0].tokenize(t) for t in texts]
    out = []
    for m in models:
        scores = m.score_sentences(toks)
        out.append([np.asarray(s.logprobs, dtype=np.float64) for s in scores])
    return out


def check_lambdas(lam: Mapping[str, float], names: Sequence[str], where: str = "interpolation") -> np.ndarray:
    """``[M]`` λ in ``names`` order: non-negative, summing to 1 (within 1e-6); a missing name is an error."""
    missing = [n for n in names if n not in lam]
    extra = [k for k in lam if k not in names]
    if missing or extra:
        raise WeightsError(f"{where}: λ must name exactly the models {list(names)}: missing {missing}, unknown {extra}")
    w = np.array([float(lam[n]) for n in names])
    if np.any(~np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1.0) > 1e-6:
        raise WeightsError(f"{where}: λ must be non-negative and sum to 1, got {dict(lam)}")
    return w


def mix_scores(per_model: Sequence[Sequence[np.ndarray]], lambdas: np.ndarray) -> np.ndarray:
    """``[n_texts]`` mixture sentence scores; ``lambdas`` is ``[M]`` (one λ for all) or ``[n_texts, M]``."""
    m = len(per_model)
    n = len(per_model[0]) if m else 0
    lam = np.asarray(lambdas, dtype=np.float64)
    lam = np.broadcast_to(lam, (n, m)) if lam.ndim == 1 else lam
    if lam.shape != (n, m):
        raise LMFusionError(f"mix_scores: λ shape {lam.shape}, expected ({n}, {m})")
    out = np.empty(n)
    for j in range(n):
        lp = np.stack([per_model[i][j] for i in range(m)])
        out[j] = float(linear_mix_logprobs(lp, lam[j]).sum())
    return out
