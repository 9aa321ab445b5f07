"""The search space of :func:`~fusion.tuning.tune`: free weights, their bounds, and the result record."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from fusion.errors import WeightsError
from fusion.tuning.problem import TuningProblem

Method = Literal["mert", "smooth", "grid", "coordinate", "optuna"]
METHODS: tuple[str, ...] = ("mert", "smooth", "grid", "coordinate", "optuna")

DEFAULT_FIXED: Mapping[str, float] = MappingProxyType({"am": 1.0})
LENGTH_COMPONENTS = ("words", "tokens", "chars")
PRUNE_AFTER = 32
"""MERT with ``prune="auto"`` drops dominated hypotheses after this many line searches."""
SUBTRACTED_COMPONENTS = ("ilm", "source_lm")


def default_bounds(component: str) -> tuple[float, float]:
    """Search range for a free weight when none is given: length bonuses ``[-5, 5]``, subtracted
    terms (``ilm``, ``source_lm``) ``[-1, 0]``, every other (LM-like) component ``[0, 2]``."""
    if component in LENGTH_COMPONENTS:
        return (-5.0, 5.0)
    if component in SUBTRACTED_COMPONENTS:
        return (-1.0, 0.0)
    return (0.0, 2.0)


# ----------------------------------------------------------------------------------------------
# Results and the tune() entry point
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuningResult:
    """What :func:`tune` found.

    Attributes:
        weights: every component's weight (fixed ones included).
        error_rate: the dev error rate at ``weights`` (re-evaluated with :func:`error_rate`).
        method: the optimiser.
        start_weights, start_error_rate: the starting point and its error rate.
        n_evals: weight vectors evaluated (MERT: line searches plus point checks).
        seconds: wall time.
        trace: ``(n_evals, best error rate so far)`` steps.
        extra: method-specific details.
    """

    weights: dict[str, float]
    error_rate: float
    method: str
    start_weights: dict[str, float]
    start_error_rate: float
    n_evals: int
    seconds: float
    trace: tuple[tuple[int, float], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


class Space:
    """The free weights: their indices, bounds and the fixed part of the vector."""

    def __init__(
        self,
        problem: TuningProblem,
        fixed: Mapping[str, float],
        bounds: Mapping[str, tuple[float, float]] | None,
        init: Mapping[str, float] | None,
    ) -> None:
        comps = problem.components
        unknown = [k for k in fixed if k not in comps]
        if unknown:
            raise WeightsError(
                f"fixed weights name components {unknown} the problem lacks (it has {list(comps)}); "
                "pass fixed= naming one of them, e.g. fixed={'" + comps[0] + "': 1.0}"
            )
        bounds = dict(bounds or {})
        bad = [k for k in bounds if k not in comps or k in fixed]
        if bad:
            raise WeightsError(f"bounds given for {bad}, which are unknown or fixed")
        self.free = [i for i, k in enumerate(comps) if k not in fixed]
        if not self.free:
            raise WeightsError("every component is fixed: nothing to tune")
        self.names = [comps[i] for i in self.free]
        self.lo = np.empty(len(self.free))
        self.hi = np.empty(len(self.free))
        for j, k in enumerate(self.names):
            lo, hi = bounds.get(k, default_bounds(k))
            lo, hi = float(lo), float(hi)
            if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
                raise WeightsError(f"bounds of {k!r} must be finite with lo <= hi, got ({lo}, {hi})")
            self.lo[j], self.hi[j] = lo, hi
        self.base = np.zeros(len(comps))
        for k, v in fixed.items():
            if not math.isfinite(float(v)):
                raise WeightsError(f"fixed weight {k!r} is {v}")
            self.base[comps.index(k)] = float(v)
        init = dict(init or {})
        extra = [k for k in init if k not in comps]
        if extra:
            raise WeightsError(f"init names unknown components {extra}")
        for k, v in init.items():
            if k in fixed and float(v) != float(fixed[k]):
                raise WeightsError(f"init {k}={v} contradicts fixed {k}={fixed[k]}")
        x0 = np.array([float(init.get(k, 0.0)) for k in self.names])
        # a start outside the bounds is kept as the reference point; searches start from its clip
        self.init_raw = x0
        self.problem = problem

    def full(self, x: np.ndarray) -> np.ndarray:
        w = self.base.copy()
        w[self.free] = x
        return w

    def clip(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.lo, self.hi)

    def random(self, rng: np.random.Generator) -> np.ndarray:
        return self.lo + (self.hi - self.lo) * rng.random(len(self.free))


_Out = tuple[np.ndarray, int, list[tuple[int, int]], dict[str, Any]]
"""What each optimiser returns: best free weights, evaluations, trace, method details."""
