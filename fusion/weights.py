"""The one meaning of fusion weights, and the weight policies every decoder applies.

**Weights** are one mapping ``component -> float`` with ESPnet's meaning, everywhere (CTC, seq2seq,
Hugging Face ``generate()``, n-best rescoring, tuning):

* the score of a hypothesis is ``Σ_k w[k] * score_k`` over its unweighted, natural-log components;
* a component without a weight counts 0 (it is still computed and written out, unweighted);
* ``"am"`` (the recogniser's or translation model's own score) defaults to 1 and always appears in the
  resolved weights;
* a weight naming no component is an error that lists the known components;
* weights are finite numbers; a negative weight is a plain subtraction (density ratio, internal-LM
  subtraction).

:func:`check_weights` applies these rules; nothing else in lmfusion fills in defaults.

A **weight policy** turns what is known about one utterance (an :class:`UtteranceContext`: tags, an
estimated SNR, the audio, run-time features such as acoustic confidence or a domain posterior) into
its weights, and optionally into the interpolation weights λ of a linear LM mixture
(:meth:`WeightPolicy.interpolation_for`). Constant weights (:class:`ConstantWeights`) and a
:class:`~fusion.profile.FusionProfile` (:class:`ProfileWeights`) are two policies; a learned adaptive map
is a third. :func:`as_policy` accepts any of them, a plain mapping, or a profile path, so every decoder
takes "weights or a profile or a policy" through one argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fusion.errors import LMFusionError, WeightsError
from fusion.profile import FusionProfile

__all__ = [
    "AM",
    "ConstantWeights",
    "ProfileWeights",
    "UtteranceContext",
    "WeightPolicy",
    "as_policy",
    "check_finite_scores",
    "check_weights",
    "combine_scores",
    "resolve_per_utterance",
    "weight_arrays",
    "weighted",
]

AM = "am"
"""The component name of the recogniser's or translation model's own score (default weight 1)."""


# ----------------------------------------------------------------------------------------------
# One meaning of a weights mapping
# ----------------------------------------------------------------------------------------------
def check_weights(
    weights: Mapping[str, Any] | None, components: Iterable[str], *, where: str = "weights"
) -> dict[str, float]:
    """Resolve a weights mapping against the known components (see the module docstring).

    Args:
        weights: ``{component: weight}``; ``None`` means no weights given (``am`` = 1, the rest 0).
        components: every component name the caller computes (``am`` is added when missing).
        where: what to call the mapping in error messages (a file name, a CLI flag, a field).

    Returns:
        ``{component: weight}`` for ``am`` and every component, in that order, as floats.

    Raises:
        WeightsError: a weight that is not a finite number, or a name that is no component.
    """
    known = list(dict.fromkeys([AM, *components]))
    out = dict.fromkeys(known, 0.0)
    out[AM] = 1.0
    for k, w in (weights or {}).items():
        if k not in out:
            raise WeightsError(f"{where}: weight {k!r} names no score component (known: {', '.join(known)})")
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
            raise WeightsError(f"{where}: weight {k!r} must be a number, got {w!r}")
        if not math.isfinite(float(w)):
            raise WeightsError(f"{where}: weight {k!r} must be finite, got {w!r}")
        out[k] = float(w)
    return out


def weighted(w: np.ndarray | float, scores: np.ndarray) -> np.ndarray:
    """``w * scores`` where a zero weight contributes exactly 0 (even against ``-inf``)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.asarray(w) == 0.0, 0.0, np.asarray(w) * scores)


def combine_scores(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``Σ_k weights[k] * scores[k]``; a component without a weight, or with weight 0, adds exactly 0.

    ``scores`` maps components to same-shaped arrays (or floats); the result has their shape.
    """
    total: np.ndarray | None = None
    for k, s in scores.items():
        w = float(weights.get(k, 0.0))
        if w == 0.0:
            continue
        term = w * np.asarray(s, dtype=np.float64)
        total = term if total is None else total + term
    if total is None:
        first = next(iter(scores.values()), 0.0)
        return np.zeros_like(np.asarray(first, dtype=np.float64))
    return total


def check_finite_scores(name: str, scores: np.ndarray) -> None:
    """Raise when a component's scores hold NaN (``-inf`` is allowed: an impossible unit)."""
    if np.isnan(scores).any():
        raise LMFusionError(f"score component {name!r} returned NaN scores")


# ----------------------------------------------------------------------------------------------
# Weight policies
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UtteranceContext:
    """What a decoder knows about one utterance when it asks a policy for weights.

    Attributes:
        utt_id: the utterance id, if any.
        tags: free tags (``domain``, ``snr`` as a number or bucket name, ``noise``, ...).
        snr: an SNR estimate in dB (overrides ``tags["snr"]``).
        audio: the waveform (mono float), for a policy that estimates the SNR itself.
        sample_rate: of ``audio``.
        features: run-time features (e.g. ``confidence``, ``entropy``, ``p_domain=tech``) for adaptive
            policies; names are the policy's business.
    """

    utt_id: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    snr: float | None = None
    audio: np.ndarray | None = field(default=None, repr=False, compare=False)
    sample_rate: int = 16000
    features: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class WeightPolicy(Protocol):
    """Turns an utterance's context into its fusion weights (and interpolation λ)."""

    def weights_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        """The fusion weights of one utterance (unresolved: :func:`check_weights` applies the rules)."""
        ...

    def interpolation_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        """λ per component LM of a linear mixture (names of the mixture's models); empty for none."""
        ...


@dataclass(frozen=True)
class ConstantWeights:
    """The same weights (and λ) for every utterance."""

    weights: Mapping[str, float] = field(default_factory=dict)
    interpolation: Mapping[str, float] = field(default_factory=dict)

    def weights_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        return self.weights

    def interpolation_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        return self.interpolation


@dataclass(frozen=True)
class ProfileWeights:
    """A :class:`~fusion.profile.FusionProfile` as a policy: weights by domain tag and SNR (tag or estimate)."""

    profile: FusionProfile

    def _select(self, ctx: UtteranceContext) -> Any:
        return self.profile.select(ctx.tags, snr=ctx.snr, audio=ctx.audio, sample_rate=ctx.sample_rate)

    def weights_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        return self._select(ctx).fusion

    def interpolation_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        return self._select(ctx).interpolation


PolicyLike = WeightPolicy | FusionProfile | Mapping[str, float] | str | Path | None


def as_policy(obj: PolicyLike) -> WeightPolicy:
    """Any accepted form of weights as a :class:`WeightPolicy`.

    A mapping becomes :class:`ConstantWeights`; a profile (object, or the path of its JSON file) becomes
    :class:`ProfileWeights`; ``None`` means no weights (``am`` = 1, every other component 0).
    """
    if obj is None:
        return ConstantWeights()
    if isinstance(obj, (str, Path)):
        return ProfileWeights(FusionProfile.load(obj))
    if isinstance(obj, FusionProfile):
        return ProfileWeights(obj)
    if isinstance(obj, Mapping):
        return ConstantWeights(dict(obj))
    if isinstance(obj, WeightPolicy):
        return obj
    raise WeightsError(f"weights must be a mapping, a FusionProfile, a profile path or a WeightPolicy, got {obj!r}")


def resolve_per_utterance(
    policy: PolicyLike,
    components: Iterable[str],
    contexts: Sequence[UtteranceContext],
) -> list[dict[str, float]]:
    """Checked weights (:func:`check_weights`) of each utterance; identical mappings are checked once."""
    pol = as_policy(policy)
    names = list(components)
    out: list[dict[str, float]] = []
    memo: dict[int, dict[str, float]] = {}
    for ctx in contexts:
        raw = pol.weights_for(ctx)
        w = memo.get(id(raw))
        if w is None:
            w = check_weights(raw, names, where=f"weights of utterance {ctx.utt_id}" if ctx.utt_id else "weights")
            memo[id(raw)] = w
        out.append(w)
    return out


def weight_arrays(per_utt: Sequence[Mapping[str, float]], components: Iterable[str]) -> dict[str, np.ndarray]:
    """``{component: array [n_utts]}`` from resolved per-utterance weights (for batched searches)."""
    names = list(dict.fromkeys([AM, *components]))
    return {n: np.array([float(w.get(n, 0.0)) for w in per_utt], dtype=np.float64) for n in names}
