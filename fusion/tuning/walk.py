"""The per-condition walk of a tuner: (domain, *), (*, bucket), then (domain, bucket), each with a
cross-validated back-off to its parent's weights.

One walk serves every way of fitting weights on a subset of dev utterances: the ASR recipe's n-best tuner
(MERT over cached n-best scores, :func:`recipes.asr.tune_stages.stage_tune`) and its in-search tuner (the
argmin over a grid of cached decodes, :mod:`recipes.asr.in_search_tune`), with conditions from the
utterances' tags or from a blind SNR estimate. The fitting is a :class:`ConditionTuner`:

- ``fit(idx, init)``: weights tuned on the utterances ``idx`` (started from ``init``, the parent's
  weights, or ``None`` for the global fit); a dict with at least ``weights`` and ``dev`` (a dict with
  ``error_rate``), which the walk extends;
- ``error_rate(idx, weights)``: the error rate of ``weights`` on ``idx``;
- ``ref_words(idx)``: the reference words of ``idx``.

Rule (:func:`walk_conditions`): a condition needs ``min_utts`` utterances; its parent is ``(domain, *)``
for a ``(domain, bucket)`` whose domain was tuned, else the global weights; with ``folds`` > 1 its own
weights are kept only if, in K-fold cross-validation over its utterances (a permutation drawn with
``seed``), weights fitted on the other folds make fewer held-out errors than the parent's. Otherwise the
condition backs off to the parent's weights (``backoff``; what it tuned is kept as ``tuned_weights``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from fusion.progress import progress_bar

__all__ = ["Cond", "ConditionTuner", "condition_groups", "cv_errors", "walk_conditions", "walk_order"]

Cond = tuple[str | None, str | None]
"""A condition: ``(domain, bucket)``; ``None`` is "any"."""


class ConditionTuner(Protocol):
    """How weights are fitted and scored on a subset of dev utterances (indices into the walk's list)."""

    def fit(self, idx: Sequence[int], init: Mapping[str, float] | None) -> dict[str, Any]:
        """Weights tuned on ``idx`` from ``init``: a dict with ``weights`` and ``dev`` (``error_rate``)."""
        ...

    def error_rate(self, idx: Sequence[int], weights: Mapping[str, float]) -> float:
        """Errors / reference words of ``weights`` on ``idx``."""
        ...

    def ref_words(self, idx: Sequence[int]) -> int:
        """Reference words of ``idx``."""
        ...


def condition_groups(conds: Sequence[Cond]) -> dict[Cond, list[int]]:
    """Utterance indices of every condition: ``(d, *)``, ``(*, b)`` and ``(d, b)`` of each ``conds[i] = (d, b)``
    (the global ``(*, *)`` included; an utterance counts once per condition)."""
    groups: dict[Cond, list[int]] = {}
    for i, (d, b) in enumerate(conds):
        for key in dict.fromkeys(((d, None), (None, b), (d, b))):
            groups.setdefault(key, []).append(i)
    return groups


def walk_order(groups: Mapping[Cond, Sequence[int]]) -> list[Cond]:
    """The conditions to tune, parents first: ``(d, *)`` and ``(*, b)`` before ``(d, b)``, by name."""
    return sorted((k for k in groups if k != (None, None)),
                  key=lambda k: (k[0] is not None and k[1] is not None, k[0] or "", k[1] or ""))  # fmt: skip


def cv_errors(tuner: ConditionTuner, idx: Sequence[int], base: Mapping[str, float], folds: int,
              seed: int) -> tuple[int, int, int]:  # fmt: skip
    """K-fold cross-validation over ``idx``: ``(errors of weights fitted on the other folds from ``base``,
    errors of ``base``, reference words)``, summed over the held-out folds."""
    order = np.asarray(idx)[np.random.default_rng(seed).permutation(len(idx))]
    parts = [[int(i) for i in order[k::folds]] for k in range(folds)]
    e_own = e_base = words = 0
    for k in range(folds):
        held = parts[k]
        train = [i for j, part in enumerate(parts) if j != k for i in part]
        if not held or not train:
            continue
        w = tuner.fit(train, base)["weights"]
        n = tuner.ref_words(held)
        e_own += round(tuner.error_rate(held, w) * n)
        e_base += round(tuner.error_rate(held, base) * n)
        words += n
    return e_own, e_base, words


def walk_conditions(tuner: ConditionTuner, conds: Sequence[Cond], global_weights: Mapping[str, float], *,
                    min_utts: int, folds: int, seed: int, progress: bool = False,
                    desc: str = "tune per condition") -> list[dict[str, Any]]:  # fmt: skip
    """Tune every condition of ``conds`` (utterance i's ``(domain, bucket)``) under the module's rule.

    Returns one dict per tuned condition, parents first: ``domain``, ``bucket``, then ``fit``'s result,
    ``global_dev_wer`` (the global weights' error rate there), ``parent`` (``"d/*"`` or ``"*/*"``), ``cv``
    (with ``folds`` > 1: ``folds``, ``wer_own``, ``wer_parent``, ``ref_words``), ``tuned_weights`` (when
    backed off) and ``backoff``.
    """
    groups = condition_groups(conds)
    kept: dict[Cond, Mapping[str, float]] = {(None, None): global_weights}
    rows = []
    for d, b in progress_bar(walk_order(groups), desc=desc, progress=progress):
        idx = groups[(d, b)]
        if len(idx) < min_utts:
            continue
        parent_key: Cond = (d, None) if (d is not None and b is not None and (d, None) in kept) else (None, None)
        parent = kept[parent_key]
        r = tuner.fit(idx, parent)
        r["global_dev_wer"] = tuner.error_rate(idx, global_weights)
        r["parent"] = "/".join(x or "*" for x in parent_key)
        if folds > 1:
            e_own, e_parent, n = cv_errors(tuner, idx, parent, folds, seed)
            r["cv"] = {"folds": folds, "wer_own": e_own / n if n else None, "wer_parent": e_parent / n if n else None,
                       "ref_words": n}  # fmt: skip
            if n and e_own >= e_parent:  # its own weights do not generalise: back off to the parent's
                r["tuned_weights"], r["weights"] = r["weights"], dict(parent)
                r["dev"]["error_rate"] = tuner.error_rate(idx, parent)
                r["backoff"] = True
        r.setdefault("backoff", False)
        kept[(d, b)] = r["weights"]
        rows.append({"domain": d, "bucket": b, **r})
    return rows
