"""A weight policy's interpolation λ applied to the scorers of one batch of utterances.

A :class:`~fusion.weights.WeightPolicy` gives each utterance its fusion weights and, for a linear LM
mixture, its interpolation weights λ (:meth:`~fusion.weights.WeightPolicy.interpolation_for`, e.g. a
profile's per-condition λ). :func:`apply_interpolation` gives a scorer over a
:class:`~fusion.interpolate.LinearInterpolation` the λ of each utterance: the same scorer over a copy of
the mixture with those λ (component states are shared, so nothing is re-scored), and a
:class:`GroupedScorer` when the utterances of one batch need different λ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.interpolate import LinearInterpolation, validate_simplex
from fusion.scorers.base import Scorer, ScorerState
from fusion.scorers.lm import _LMScorer

__all__ = ["GroupedScorer", "apply_interpolation"]


class GroupedScorer(Scorer):
    """Several same-shaped scorers, one per group of utterances, as one scorer over the whole batch.

    Rows are utterance-major (row ``u * rows_per_utt + k`` is beam ``k`` of utterance ``u``). A state is
    ``(group, inner_state)``; the empty state takes its group from its row at the first :meth:`score`.

    Args:
        scorers: one scorer per group (same name, vocabulary size and kind).
        utt_group: the group of each utterance of the batch.
    """

    def __init__(self, scorers: Sequence[Scorer], utt_group: Sequence[int]) -> None:
        if not scorers:
            raise LMFusionError("GroupedScorer needs at least one scorer")
        self.scorers = list(scorers)
        self.utt_group = np.asarray(utt_group, dtype=np.int64)
        first = self.scorers[0]
        self.name, self.is_partial, self.vocab_size = first.name, first.is_partial, first.vocab_size
        self.eos_id = first.eos_id

    def init_state(self) -> ScorerState:
        return (None, None)

    def _groups(self, states: Sequence[ScorerState]) -> list[tuple[int, Any]]:
        per_utt = max(1, len(states) // len(self.utt_group))
        out: list[tuple[int, Any]] = []
        for r, st in enumerate(states):
            pair: tuple[Any, Any] = st  # type: ignore[assignment]
            tag, inner = pair
            g = int(self.utt_group[min(r // per_utt, len(self.utt_group) - 1)]) if tag is None else int(tag)
            out.append((g, self.scorers[g].init_state() if tag is None else inner))
        return out

    def score(
        self, hyps: Sequence[Sequence[int]], states: Sequence[ScorerState], candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, Any]:
        tagged = self._groups(states)
        groups = np.array([g for g, _ in tagged], dtype=np.int64)
        width = self.vocab_size if candidates is None else np.asarray(candidates).shape[1]
        out = np.zeros((len(states), width), dtype=np.float64)
        ctxs: dict[int, tuple[Any, np.ndarray]] = {}
        for g in np.unique(groups).tolist():
            rows = np.flatnonzero(groups == g)
            sub_c = None if candidates is None else np.asarray(candidates)[rows]
            sc, ctx = self.scorers[g].score([hyps[int(r)] for r in rows], [tagged[r][1] for r in rows], sub_c)
            out[rows] = sc
            ctxs[g] = (ctx, rows)
        local = np.zeros(len(states), dtype=np.int64)
        for _, rows in ctxs.values():
            local[rows] = np.arange(len(rows))
        return out, (groups, local, ctxs)

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        groups, local, ctxs = ctx
        out: list[ScorerState] = [None] * len(rows)
        for g, (gctx, _) in ctxs.items():
            idx = [i for i, r in enumerate(rows) if groups[r] == g]
            if idx:
                new = self.scorers[g].select_state(gctx, [int(local[rows[i]]) for i in idx], [tokens[i] for i in idx])
                for i, st in zip(idx, new, strict=True):
                    out[i] = (g, st)
        return out

    def final_score(self, state: ScorerState) -> float:
        pair: tuple[Any, Any] = state  # type: ignore[assignment]
        tag, inner = pair
        if tag is None:
            return self.scorers[0].final_score(self.scorers[0].init_state())
        return self.scorers[int(tag)].final_score(inner)


def _with_lambda(scorer: Scorer, lam: Mapping[str, float]) -> Scorer:
    """``scorer`` with its linear mixture's λ replaced by ``lam`` (unchanged when λ names none of its LMs)."""
    if not lam or not isinstance(scorer, _LMScorer) or not isinstance(scorer.lm, LinearInterpolation):
        return scorer
    mix = scorer.lm
    names = {m.name for m in mix.models}
    if not names & set(lam):
        return scorer
    copy_mix = LinearInterpolation(mix.models, validate_simplex(mix.models, dict(lam)).tolist(), name=mix.name)
    return scorer.with_lm(copy_mix)


def apply_interpolation(scorers: Sequence[Scorer], lambdas: Sequence[Mapping[str, float]]) -> list[Scorer]:
    """Each scorer with the per-utterance λ ``lambdas[u]`` applied to its linear mixture (see module docstring).

    A λ mapping that names none of a mixture's components leaves it unchanged; one that names some but
    not all, or is off the simplex, is an error (:func:`fusion.interpolate.validate_simplex`).
    """
    keys = [tuple(sorted((str(k), float(v)) for k, v in lam.items())) for lam in lambdas]
    distinct = list(dict.fromkeys(keys))
    if not distinct or distinct == [()]:
        return list(scorers)
    group = [distinct.index(k) for k in keys]
    out: list[Scorer] = []
    for s in scorers:
        variants = [_with_lambda(s, dict(k)) for k in distinct]
        if all(v is s for v in variants):
            out.append(s)
        elif len(variants) == 1:
            out.append(variants[0])
        else:
            out.append(GroupedScorer(variants, group))
    return out
