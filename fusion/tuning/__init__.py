"""Tuning fusion weights over cached component scores: no search or LM is ever re-run per trial.

One job per module:

* :mod:`fusion.tuning.problem`: :class:`TuningProblem` (scores ``[n_u, C]`` and error counts per
  utterance) and the pure functions that pick 1-bests and count errors;
* :mod:`fusion.tuning.prune`, :mod:`fusion.tuning.linesearch`: dominated-hypothesis pruning and Och's
  exact line search;
* :mod:`fusion.tuning.optimisers`: :func:`tune` (MERT, grid, coordinate descent, optuna TPE, and the
  smoothed expected-error objective);
* :mod:`fusion.tuning.smooth`: the expected error under the fused posterior (minimum-risk style);
* :mod:`fusion.tuning.stable`: seeds pooled and their spread, k-fold CV, scale-aware bounds and the
  warning when a weight ends on a bound, the default choice of components;
* :mod:`fusion.tuning.conditions`: per-condition weights shrunk toward the global ones, and weights as a
  smooth function of the SNR;
* :mod:`fusion.tuning.mbr`: minimum-Bayes-risk selection over an n-best under the fused posterior.
"""

from __future__ import annotations

from fusion.tuning.linesearch import LineSearchResult, line_search, line_search_reference
from fusion.tuning.optimisers import tune
from fusion.tuning.problem import (
    Ragged,
    TuningProblem,
    best_indices,
    combine,
    combine_cm,
    error_rate,
    error_rate_reference,
    first_argmax,
    total_errors,
    total_errors_batch,
)
from fusion.tuning.prune import dominated_reference, prune_dominated
from fusion.tuning.space import (
    DEFAULT_FIXED,
    LENGTH_COMPONENTS,
    METHODS,
    PRUNE_AFTER,
    SUBTRACTED_COMPONENTS,
    Method,
    TuningResult,
    default_bounds,
)

__all__ = [
    "DEFAULT_FIXED",
    "LENGTH_COMPONENTS",
    "METHODS",
    "PRUNE_AFTER",
    "SUBTRACTED_COMPONENTS",
    "LineSearchResult",
    "Method",
    "Ragged",
    "TuningProblem",
    "TuningResult",
    "best_indices",
    "combine",
    "combine_cm",
    "default_bounds",
    "dominated_reference",
    "error_rate",
    "error_rate_reference",
    "first_argmax",
    "line_search",
    "line_search_reference",
    "prune_dominated",
    "total_errors",
    "total_errors_batch",
    "tune",
]
