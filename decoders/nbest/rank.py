"""Ranking n-best lists: weights -> 1-best, ties, error rates, and the tuning-problem export.

Weights have one meaning (:mod:`fusion.weights`): ``am`` defaults to 1 and always counts, a component
without a weight counts 0, an unknown name is an error. A profile or any weight policy picks each list's
weights from its tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from decoders.hypothesis import NBestList
from fusion.adaptive import NBestFeatures
from fusion.errors import LMFusionError
from fusion.metrics import Unit, edit_distance, units_of
from fusion.tuning import TuningProblem, combine
from fusion.weights import PolicyLike, UtteranceContext, as_policy, check_weights

__all__ = [
    "WeightsLike",
    "apply_weights",
    "best_indices",
    "count_ties",
    "list_context",
    "onebest_error_counts",
    "onebest_error_rates",
    "rates_of_counts",
    "to_tuning_problem",
    "weights_per_list",
]


# ----------------------------------------------------------------------------------------------
# Weights -> 1-best; tuning problems
# ----------------------------------------------------------------------------------------------
def _feats(nb: NBestList, names: Sequence[str]) -> np.ndarray:
    f = np.empty((len(nb.hyps), len(names)), dtype=np.float64)
    for i, h in enumerate(nb.hyps):
        for j, k in enumerate(names):
            try:
                f[i, j] = h.scores[k]
            except KeyError:
                raise LMFusionError(
                    f"utterance {nb.utt_id!r}, hypothesis {i} ({h.text!r}) has no {k!r} score "
                    f"(has {sorted(h.scores)}); rescore it first"
                ) from None
    return f


WeightsLike = PolicyLike
"""Fusion weights: a mapping, a :class:`~fusion.profile.FusionProfile`, a profile path or any
:class:`~fusion.weights.WeightPolicy` (e.g. a learned :class:`~fusion.adaptive.AdaptiveWeights`); resolved
per list by :func:`fusion.weights.check_weights`."""


def _components(nb: NBestList) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k for h in nb.hyps for k in h.scores))


def list_context(nb: NBestList, policy: object = None) -> UtteranceContext:
    """What a policy knows about one list: its id and tags, and the run-time features a policy that
    computes them (:class:`~fusion.adaptive.NBestFeatures`) reads from the list's scores."""
    feats: dict[str, float] = {}
    if isinstance(policy, NBestFeatures) and nb.hyps:
        names = set.intersection(*(set(h.scores) for h in nb.hyps))
        feats = policy.nbest_features({k: np.array([h.scores[k] for h in nb.hyps]) for k in names}, nb.tags)
    return UtteranceContext(nb.utt_id, dict(nb.tags), features=feats)


def weights_per_list(nbests: Iterable[NBestList], weights: WeightsLike) -> list[dict[str, float]]:
    """The checked weights each n-best list is ranked with (the policy's pick for the list's tags).

    ``am`` defaults to 1 and always counts, a component without a weight counts 0, and a weight naming
    no component of the list's hypotheses is an error (:func:`fusion.weights.check_weights`). A list
    without hypotheses gets its weights unchecked (nothing to rank).
    """
    pol = as_policy(weights)
    memo: dict[tuple[int, tuple[str, ...]], dict[str, float]] = {}
    out = []
    for nb in nbests:
        raw = pol.weights_for(list_context(nb, pol))
        comps = _components(nb)
        key = (id(raw), comps)
        w = memo.get(key)
        if w is None:
            w = check_weights(raw if nb.hyps else {}, comps, where=f"weights of utterance {nb.utt_id!r}")
            memo[key] = w
        out.append(w)
    return out


def _ranked(nbests: Sequence[NBestList], weights: WeightsLike) -> Iterator[tuple[NBestList, np.ndarray | None]]:
    """Each list with its combined hypothesis scores (None when no weight is non-zero)."""
    for nb, wmap in zip(nbests, weights_per_list(nbests, weights), strict=True):
        names = [k for k, v in wmap.items() if v != 0.0]
        w = np.array([wmap[k] for k in names], dtype=np.float64)
        yield nb, (combine(_feats(nb, names), w) if names and nb.hyps else None)


def best_indices(nbests: Sequence[NBestList], weights: WeightsLike) -> list[int]:
    """Index of each list's best hypothesis under ``weights`` (first on exact ties; -1 for an empty list).

    ``weights`` may be a :class:`~fusion.profile.FusionProfile`: each list is then ranked with the weights
    the profile selects for its ``tags`` (domain, SNR bucket or measured SNR).
    """
    return [-1 if not nb.hyps else 0 if s is None else int(np.argmax(s)) for nb, s in _ranked(nbests, weights)]


def apply_weights(nbests: Sequence[NBestList], weights: WeightsLike) -> list[str]:
    """1-best texts under ``weights`` (``Σ_k w_k score_k``, or a profile); an empty list gives ``""``."""
    return ["" if i < 0 else nb.hyps[i].text for nb, i in zip(nbests, best_indices(nbests, weights), strict=True)]


def count_ties(nbests: Sequence[NBestList], weights: WeightsLike) -> int:
    """Utterances whose top score is shared by hypotheses with different texts (first one wins)."""
    n = 0
    for nb, s in _ranked(nbests, weights):
        if s is None or len(nb.hyps) < 2:
            continue
        top = s == s.max()
        if len({h.text for h, t in zip(nb.hyps, top, strict=True) if t}) > 1:
            n += 1
    return n


def to_tuning_problem(nbests: Iterable[NBestList], components: Sequence[str], unit: Unit = "word") -> TuningProblem:
    """Cache component scores and edit distances of every hypothesis as a :class:`TuningProblem`.

    Every list needs a reference; every hypothesis needs every component. An empty list is kept (it
    counts its reference length as errors under any weights). ``nbests`` may be a stream (read once):
    only the score matrix and error counts are kept, not the lists.
    """
    comps = tuple(components)
    if not comps:
        raise LMFusionError("to_tuning_problem: no components")
    feats, errors, lens, ids = [], [], [], []
    for nb in nbests:
        ids.append(nb.utt_id)
        if nb.ref is None:
            raise LMFusionError(f"utterance {nb.utt_id!r} has no reference: cannot count errors")
        ref = units_of(nb.ref, unit)
        feats.append(_feats(nb, comps).reshape(len(nb.hyps), len(comps)))
        cache: dict[str, int] = {}
        e = np.empty(len(nb.hyps), dtype=np.int64)
        for i, h in enumerate(nb.hyps):
            if h.text not in cache:
                cache[h.text] = edit_distance(ref, units_of(h.text, unit))
            e[i] = cache[h.text]
        errors.append(e)
        lens.append(len(ref))
    return TuningProblem(comps, feats, errors, np.array(lens, dtype=np.int64), tuple(ids))


def onebest_error_counts(
    nbests: Sequence[NBestList], weights: WeightsLike | None = None, unit: Unit = "word"
) -> dict[str, int]:
    """Summed edit distances of ``first``, ``oracle`` and (with ``weights``) ``rescored`` 1-bests, and
    ``ref_units``: counts of one batch, which add up over batches (see :func:`rates_of_counts`)."""
    out = {"first": 0, "oracle": 0, "ref_units": 0}
    chosen = best_indices(nbests, weights) if weights is not None else None
    if chosen is not None:
        out["rescored"] = 0
    for k, nb in enumerate(nbests):
        if nb.ref is None:
            raise LMFusionError(f"utterance {nb.utt_id!r} has no reference")
        ref = units_of(nb.ref, unit)
        errs = [edit_distance(ref, units_of(h.text, unit)) for h in nb.hyps]
        out["ref_units"] += len(ref)
        out["first"] += errs[0] if errs else len(ref)
        out["oracle"] += min(errs, default=len(ref))
        if chosen is not None:
            out["rescored"] += errs[chosen[k]] if chosen[k] >= 0 else len(ref)
    return out


def rates_of_counts(counts: dict[str, int]) -> dict[str, float]:
    """Error rates from (summed) :func:`onebest_error_counts`."""
    total = counts["ref_units"]
    if total <= 0:
        raise LMFusionError("error rate is undefined: the references are empty")
    return {k: v / total for k, v in counts.items() if k != "ref_units"}


def onebest_error_rates(
    nbests: Sequence[NBestList], weights: WeightsLike | None = None, unit: Unit = "word"
) -> dict[str, float]:
    """``first`` (the list's own order), ``oracle``, and (with ``weights``) ``rescored`` error rates."""
    return rates_of_counts(onebest_error_counts(nbests, weights, unit))
