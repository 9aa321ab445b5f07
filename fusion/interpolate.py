"""Combining LMs over the same units.

* :class:`LinearInterpolation`: ``P(u|h) = Σ_i λ_i P_i(u|h)``, λ on the simplex, computed in log
  space with logsumexp (a proper distribution when every component is one);
* :class:`LogLinearInterpolation`: ``Σ_i β_i ln P_i(u|h)`` (unnormalised; β may be negative, e.g. a
  density-ratio term).

The math lives in the pure functions :func:`linear_mix_logprobs` and :func:`loglinear_mix_logprobs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from fusion.abilities import LMSpec, spec_of
from fusion.errors import WeightsError
from fusion.lm import LanguageModel, SentenceScore, State, check_same_units

SIMPLEX_TOL = 1e-6


def linear_mix_logprobs(component_logprobs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``ln Σ_i λ_i exp(component_logprobs[i, ...])`` along axis 0, stably.

    Args:
        component_logprobs: ``[N, ...]`` natural-log probabilities of N models (``-inf`` allowed).
        weights: ``[N]`` non-negative weights summing to one (zeros allowed).
    """
    lp = np.asarray(component_logprobs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logw = np.log(w).reshape((-1,) + (1,) * (lp.ndim - 1))
    a = lp + logw
    m = np.max(a, axis=0)
    finite = np.isfinite(m)
    m_safe = np.where(finite, m, 0.0)
    with np.errstate(divide="ignore"):
        out = m_safe + np.log(np.sum(np.exp(a - m_safe), axis=0))
    return np.where(finite, out, m)


def loglinear_mix_logprobs(component_logprobs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σ_i β_i component_logprobs[i, ...]`` along axis 0; a zero weight ignores its component."""
    lp = np.asarray(component_logprobs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape((-1,) + (1,) * (lp.ndim - 1))
    return np.sum(np.where(w == 0.0, 0.0, w * lp), axis=0)


def _weights_array(
    models: Sequence[LanguageModel], weights: Sequence[float] | Mapping[str, float]
) -> np.ndarray:
    names = [m.name for m in models]
    if isinstance(weights, Mapping):
        missing = [n for n in names if n not in weights]
        extra = [k for k in weights if k not in names]
        if missing or extra:
            raise WeightsError(f"weights must name exactly the models {names}: missing {missing}, unknown {extra}")
        arr = np.array([float(weights[n]) for n in names])
    else:
        arr = np.array([float(x) for x in weights])
        if len(arr) != len(models):
            raise WeightsError(f"{len(models)} models but {len(arr)} weights")
    for n, x in zip(names, arr, strict=True):
        if not math.isfinite(x):
            raise WeightsError(f"weight of {n!r} is {x}")
    return arr


def validate_simplex(
    models: Sequence[LanguageModel], weights: Sequence[float] | Mapping[str, float]
) -> np.ndarray:
    """Weights for a linear mix: one per model, each >= 0, summing to 1 (to 1e-6)."""
    arr = _weights_array(models, weights)
    for m, x in zip(models, arr, strict=True):
        if x < 0:
            raise WeightsError(f"interpolation weight of {m.name!r} is negative ({x})")
    if abs(arr.sum() - 1.0) > SIMPLEX_TOL:
        raise WeightsError(f"interpolation weights must sum to 1, they sum to {arr.sum():.8g}")
    return arr


class _Mixture(LanguageModel):
    """Shared machinery: a state is the tuple of the component states.

    Subclasses set ``_prefix`` (their default name), ``_check_weights`` and ``_mix`` (a pure function
    of ``[N, ...]`` component log-probabilities and the weights).
    """

    _prefix: str
    _check_weights: Callable[[Sequence[LanguageModel], Sequence[float] | Mapping[str, float]], np.ndarray]
    _mix: Callable[[np.ndarray, np.ndarray], np.ndarray]
    weights: np.ndarray

    def __init__(
        self,
        models: Sequence[LanguageModel],
        weights: Sequence[float] | Mapping[str, float],
        *,
        name: str | None = None,
    ) -> None:
        arr = type(self)._check_weights(models, weights)
        if len(models) < 2:
            raise ValueError("a mixture needs at least two models")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"models in a mixture need distinct names, got {names}")
        units = check_same_units(models)
        super().__init__(name or f"{self._prefix}({','.join(names)})", units)
        self.models = list(models)
        self.weights = arr

    def _combine(self, component_logprobs: np.ndarray) -> np.ndarray:
        return type(self)._mix(component_logprobs, self.weights)

    def spec(self) -> LMSpec:
        """The components' specs and weights (:class:`~fusion.abilities.Reloadable`; raises when a component
        cannot be reopened)."""
        kind = "linear" if isinstance(self, LinearInterpolation) else "loglinear"
        mix = tuple((spec_of(m), float(w)) for m, w in zip(self.models, self.weights, strict=True))
        return LMSpec(self.name, mix=mix, mix_kind=kind)

    def begin(self) -> State:
        return tuple(m.begin() for m in self.models)

    def score(self, state: State, unit: str) -> tuple[float, State]:
        assert isinstance(state, tuple)
        res = [m.score(s, unit) for m, s in zip(self.models, state, strict=True)]
        lp = self._combine(np.array([r[0] for r in res]))
        return float(lp), tuple(r[1] for r in res)

    def end(self, state: State) -> float:
        assert isinstance(state, tuple)
        return float(self._combine(np.array([m.end(s) for m, s in zip(self.models, state, strict=True)])))

    def score_batch(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]:
        per = [
            m.score_batch([s[i] for s in states], candidates)  # type: ignore[index]
            for i, m in enumerate(self.models)
        ]
        lp = self._combine(np.stack([p[0] for p in per]))
        nxt = [
            [tuple(p[1][b][k] for p in per) for k in range(len(candidates))] for b in range(len(states))
        ]
        return lp, nxt  # type: ignore[return-value]

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> tuple[np.ndarray, list[State]]:
        per = [m.score_pairs([s[i] for s in states], units) for i, m in enumerate(self.models)]  # type: ignore[index]
        lp = self._combine(np.stack([p[0] for p in per]))
        return lp, [tuple(p[1][j] for p in per) for j in range(len(units))]

    def end_batch(self, states: Sequence[State]) -> np.ndarray:
        per = [m.end_batch([s[i] for s in states]) for i, m in enumerate(self.models)]  # type: ignore[index]
        return self._combine(np.stack(per))

    @property
    def vocab(self) -> frozenset[str] | None:
        vs = [m.vocab for m in self.models]
        if any(v is None for v in vs):
            return None
        return frozenset().union(*vs)  # type: ignore[arg-type]

    def is_oov(self, unit: str) -> bool:
        return all(m.is_oov(unit) for m in self.models)

    def tokenize(self, text: str) -> list[str]:
        return self.models[0].tokenize(text)

    def component_scores(self, units: Sequence[str], *, eos: bool = True) -> list[SentenceScore]:
        """Each component's :class:`SentenceScore` of the sentence (in model order)."""
        return [m.score_sentence(units, eos=eos) for m in self.models]

    def score_sentence(self, units: Sequence[str], *, eos: bool = True) -> SentenceScore:
        comps = self.component_scores(units, eos=eos)
        lp = self._combine(np.stack([c.logprobs for c in comps]))
        oov = tuple(all(c.oov[i] for c in comps) for i in range(len(units)))
        self.oov_seen += sum(oov)
        return SentenceScore(tuple(units), lp, oov)

    def score_sentences(self, sentences: Iterable[Sequence[str]], *, eos: bool = True) -> list[SentenceScore]:
        sents = [list(s) for s in sentences]
        per = [m.score_sentences(sents, eos=eos) for m in self.models]
        out = []
        for j, units in enumerate(sents):
            comps = [p[j] for p in per]
            lp = self._combine(np.stack([c.logprobs for c in comps]))
            oov = tuple(all(c.oov[i] for c in comps) for i in range(len(units)))
            out.append(SentenceScore(tuple(units), lp, oov))
        return out


class LinearInterpolation(_Mixture):
    """``P(u|h) = Σ_i λ_i P_i(u|h)`` for N >= 2 models on the same units.

    Args:
        models: the component LMs (distinct names, same :class:`~fusion.lm.Units`).
        weights: λ, one per model (a sequence in model order or a ``name -> λ`` mapping),
            non-negative and summing to one; see :func:`fusion.em.estimate_weights`.
        name: the mixture's name (default ``mix(a,b,...)``).
    """

    _prefix = "mix"
    _check_weights = staticmethod(validate_simplex)
    _mix = staticmethod(linear_mix_logprobs)


class LogLinearInterpolation(_Mixture):
    """``score(u|h) = Σ_i β_i ln P_i(u|h)``: unnormalised, β any finite reals (negative allowed).

    Args: as :class:`LinearInterpolation`, but the weights need not be on the simplex.
    """

    _prefix = "loglinear"
    _check_weights = staticmethod(_weights_array)
    _mix = staticmethod(loglinear_mix_logprobs)
