"""N-best lists under a weight policy: per-utterance linear mixtures and MBR 1-bests.

* :func:`add_utterance_mix` adds one component, a linear mixture of ``models`` whose λ each list gets from
  ``policy.interpolation_for`` (a profile's λ for the list's tags, or an adaptive policy's domain
  posterior from the list's own scores). Models over different units are viewed per word first
  (:func:`fusion.units.bridge_units`, as ``lmfusion mix`` does), so word n-grams and subword neural LMs mix.
* :func:`mbr_choices` picks each list's minimum-Bayes-risk hypothesis under the fused posterior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from decoders.hypothesis import NBestList
from decoders.nbest import list_context, weights_per_list
from fusion.errors import LMFusionError
from fusion.lm import LanguageModel
from fusion.metrics import Unit
from fusion.tuning.mbr import mbr_select, score_spread
from fusion.tuning.problem import TuningProblem
from fusion.units import bridge_units
from fusion.utterance_mix import check_lambdas, mix_scores, unit_logprobs
from fusion.weights import PolicyLike, as_policy


def add_utterance_mix(
    nbests: Sequence[NBestList], models: Mapping[str, LanguageModel], policy: PolicyLike, name: str
) -> list[NBestList]:
    """Each list with component ``name``: the λ-mixture of ``models`` (λ from ``policy`` per list).

    Raises:
        WeightsError: a list's λ does not name exactly the models, or is not on the simplex.
    """
    if len(models) < 2:
        raise LMFusionError("a mixture needs at least two models")
    names = list(models)
    mixed = bridge_units(list(models.values()), "auto")
    pol = as_policy(policy)
    out = []
    for nb in nbests:
        if not nb.hyps:  # nothing to score
            out.append(nb)
            continue
        lam = pol.interpolation_for(list_context(nb, pol))
        if not lam:
            raise LMFusionError(f"utterance {nb.utt_id!r}: the policy gives no interpolation weights")
        w = check_lambdas(lam, names, where=f"interpolation of utterance {nb.utt_id}")
        texts = [h.text for h in nb.hyps]
        scores = mix_scores(unit_logprobs(mixed, texts), w)
        hyps = tuple(h.with_scores(**{name: float(s)}) for h, s in zip(nb.hyps, scores, strict=True))
        out.append(NBestList(nb.utt_id, hyps, nb.ref, nb.tags))
    return out


def mbr_choices(
    nbests: Sequence[NBestList], weights: PolicyLike, *, scale: float | None = None, unit: Unit = "word"
) -> list[int]:
    """Index of each list's MBR hypothesis (-1 for an empty list) under per-list weights from ``weights``.

    ``scale`` multiplies the fused scores in the posterior; by default ``1 / median within-list std`` of
    the fused scores (one value for the whole set).
    """
    wl = weights_per_list(nbests, weights if isinstance(weights, Mapping) else as_policy(weights))
    fused = []
    for nb, w in zip(nbests, wl, strict=True):
        fused.append(np.array([sum(float(v) * h.scores[k] for k, v in w.items() if v) for h in nb.hyps]))
    if scale is None:
        prob = TuningProblem(
            ("s",),
            [f.reshape(-1, 1) for f in fused],
            [np.zeros(len(f)) for f in fused],
            np.ones(len(fused), dtype=np.int64),
        )
        scale = 1.0 / score_spread(prob, {"s": 1.0})
    return [mbr_select([h.text for h in nb.hyps], f, scale, unit) for nb, f in zip(nbests, fused, strict=True)]
