"""CTC weights, resolved only through :mod:`fusion.weights` (one meaning of a weights mapping).

The CTC score components are ``am``, one per LM (its name), ``words`` (words in the hypothesis: the word
bonus β), ``oov`` (out-of-lexicon words) and ``hotwords`` (contextual biasing, :mod:`decoders.ctc.hotwords`).
:func:`resolve_ctc_weights` is :func:`fusion.weights.check_weights` plus the one constraint of the CTC search
(``am > 0``). :class:`MixtureVariants` applies a policy's per-utterance interpolation λ to the decoder's linear
mixtures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fusion.biasing import HOTWORDS
from fusion.errors import WeightsError
from fusion.interpolate import LinearInterpolation
from fusion.lm import LanguageModel
from fusion.weights import AM, check_weights

WORDS = "words"
OOV = "oov"
FIXED_COMPONENTS = (AM, WORDS, OOV, HOTWORDS)
"""Score components every CTC hypothesis carries, besides one per LM name."""


def ctc_components(lm_names: Sequence[str]) -> tuple[str, ...]:
    """The score components of a CTC hypothesis, in output order."""
    return (AM, *lm_names, WORDS, OOV, HOTWORDS)


def resolve_ctc_weights(
    weights: Mapping[str, Any] | None, lm_names: Sequence[str], *, where: str = "weights"
) -> dict[str, float]:
    """:func:`fusion.weights.check_weights` over the CTC components, and ``am > 0``.

    ``am > 0`` is a real constraint of the search: it scales the emissions by ``am`` before summing a
    prefix's alignments, and reports the ``am`` component unscaled (divided by it).

    Raises:
        WeightsError: an unknown name (the known ones are listed), a non-finite value, ``am <= 0``.
    """
    w = check_weights(weights, ctc_components(lm_names)[1:], where=where)
    if w[AM] <= 0:
        raise WeightsError(
            f"{where}: weight 'am' must be > 0 for CTC decoding, got {w[AM]} (the prefix search scales the "
            "emissions by it before summing alignments)"
        )
    return w


class MixtureVariants:
    """Re-weighted copies of a decoder's linear mixtures, one per distinct λ (built once, cached).

    A λ mapping applies to every :class:`~fusion.interpolate.LinearInterpolation` among the LMs whose
    component names are exactly its keys; a λ that matches no mixture is an error.
    """

    def __init__(self, lms: Sequence[LanguageModel]) -> None:
        self.lms = tuple(lms)
        self._cache: dict[tuple[int, tuple[tuple[str, float], ...]], LanguageModel] = {}

    def apply(self, lam: Mapping[str, float]) -> tuple[LanguageModel, ...]:
        """The LMs with λ applied to the matching mixtures (the LMs themselves for an empty λ).

        Raises:
            WeightsError: λ names no mixture's components.
        """
        if not lam:
            return self.lms
        key = tuple(sorted((str(k), float(v)) for k, v in lam.items()))
        out = list(self.lms)
        matched = False
        for k, lm in enumerate(self.lms):
            if not isinstance(lm, LinearInterpolation) or {m.name for m in lm.models} != set(lam):
                continue
            matched = True
            mix = self._cache.get((k, key))
            if mix is None:
                mix = self._cache[(k, key)] = LinearInterpolation(lm.models, dict(key), name=lm.name)
            out[k] = mix
        if not matched:
            mixes = [sorted(m.name for m in lm.models) for lm in self.lms if isinstance(lm, LinearInterpolation)]
            raise WeightsError(
                f"interpolation weights for {sorted(lam)} match no linear mixture's components "
                f"(mixtures among the LMs: {mixes or 'none'})"
            )
        return tuple(out)
