"""Streamed n-best lists -> a compact :class:`~fusion.tuning.TuningProblem` (what ``lmfusion tune`` reads).

The lists are read in bounded batches of whole lists (:func:`~decoders.nbest.rescore.iter_batches`, the
batching ``rescore`` streams with); of each batch only numbers are kept: the component scores of every
hypothesis (one ``[H, C]`` float64 matrix for the corpus), its edit distance to the reference (``[H]``
int64), and per list its reference length and id, with ``[U + 1]`` offsets into the rows. No list or
hypothesis object outlives its batch, so memory grows by ``8 C + 8`` bytes per hypothesis (twice that
while the batches are joined at the end), not by the ~1.7 KB a hypothesis costs as Python objects.

:func:`~decoders.nbest.rank.to_tuning_problem` (lists in, one small array per list) is the plain
reference; the two give equal problems (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from decoders.hypothesis import NBestList
from decoders.nbest.rescore import iter_batches
from fusion.errors import LMFusionError
from fusion.metrics import Unit, edit_distance, units_of
from fusion.tuning import Ragged, TuningProblem

__all__ = ["ComponentTracker", "stream_tuning_problem"]


class ComponentTracker:
    """The components every hypothesis of a stream has, and those some have and others lack.

    ``common``: components of every hypothesis seen (in the first hypothesis' order; None before any);
    ``dropped``: ``{component: first utterance with a hypothesis lacking it}`` for every component some
    hypothesis has and another lacks (one first seen after the first hypothesis was lacked by that one).
    """

    def __init__(self) -> None:
        self.common: list[str] | None = None
        self.seen: dict[str, None] = {}
        self.dropped: dict[str, str] = {}
        self._first_utt = ""

    def update(self, utt_id: str, scores: Mapping[str, Any]) -> None:
        """Account for one hypothesis' score components."""
        if self.common is None:
            self.common = list(scores)
            self.seen.update(dict.fromkeys(scores))
            self._first_utt = utt_id
            return
        for c in scores:
            if c not in self.seen:  # new: the first hypothesis (at least) lacked it
                self.seen[c] = None
                self.dropped.setdefault(c, self._first_utt)
        for c in self.seen:
            if c not in scores and c not in self.dropped:
                self.dropped[c] = utt_id
        self.common = [c for c in self.common if c in scores]


Chooser = Callable[[list[str], dict[str, str]], Sequence[str]]
"""Given the components every hypothesis has and the dropped ones, the components to keep."""


def _missing(nb: NBestList, i: int, scores: Mapping[str, Any], names: Sequence[str]) -> LMFusionError:
    k = next(k for k in names if k not in scores)
    return LMFusionError(
        f"utterance {nb.utt_id!r}, hypothesis {i} ({nb.hyps[i].text!r}) has no {k!r} score "
        f"(has {sorted(scores)}); rescore it first"
    )


class _Builder:
    """The growing arrays of :func:`stream_tuning_problem` (one chunk per batch, joined at the end)."""

    def __init__(self, components: Sequence[str] | None, unit: Unit) -> None:
        self.names: list[str] | None = list(components) if components is not None else None
        self.strict = components is not None
        self.unit = unit
        self.tracker = ComponentTracker()
        self.scores: list[np.ndarray] = []
        self.errors: list[np.ndarray] = []
        self.counts: list[int] = []
        self.lens: list[int] = []
        self.ids: list[str] = []

    def add(self, batch: list[NBestList]) -> None:
        rows: list[list[float]] = []
        errs: list[int] = []
        for nb in batch:
            if nb.ref is None:
                raise LMFusionError(f"utterance {nb.utt_id!r} has no reference: cannot count errors")
            ref = units_of(nb.ref, self.unit)
            cache: dict[str, int] = {}
            for i, h in enumerate(nb.hyps):
                sc = h.scores
                self.tracker.update(nb.utt_id, sc)
                if self.names is None:
                    self.names = list(sc)
                if self.strict:
                    try:
                        rows.append([sc[k] for k in self.names])
                    except KeyError:
                        raise _missing(nb, i, sc, self.names) from None
                else:  # a component this hypothesis lacks is not common: its column is dropped at the end
                    rows.append([sc.get(k, math.nan) for k in self.names])
                e = cache.get(h.text)
                if e is None:
                    e = cache[h.text] = edit_distance(ref, units_of(h.text, self.unit))
                errs.append(e)
            self.counts.append(len(nb.hyps))
            self.lens.append(len(ref))
            self.ids.append(nb.utt_id)
        if rows:
            self.scores.append(np.array(rows, dtype=np.float64).reshape(len(rows), -1))
            self.errors.append(np.array(errs, dtype=np.int64))

    def problem(self, choose: Chooser | None) -> TuningProblem:
        names = self.names or []
        keep = list(names) if self.strict else list(self.tracker.common or [])
        if choose is not None:
            keep = list(choose(keep, dict(self.tracker.dropped)))
        if not keep:
            raise LMFusionError("no score component is present in every hypothesis")
        unknown = [k for k in keep if k not in names or (not self.strict and k not in (self.tracker.common or []))]
        if unknown:
            raise LMFusionError(f"components {unknown} are not in every hypothesis (common: {self.tracker.common})")
        parts, self.scores = self.scores, []
        full = np.concatenate(parts) if parts else np.zeros((0, len(names)), np.float64)
        del parts
        idx = [names.index(k) for k in keep]
        feats = full if idx == list(range(len(names))) else np.ascontiguousarray(full[:, idx])
        del full
        errs = np.concatenate(self.errors) if self.errors else np.zeros(0, np.int64)
        self.errors = []
        offsets = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=offsets[1:])
        return TuningProblem(
            tuple(keep), Ragged(feats, offsets), Ragged(errs, offsets), np.array(self.lens, np.int64), tuple(self.ids)
        )


def stream_tuning_problem(
    lists: Iterable[NBestList],
    components: Sequence[str] | None = None,
    unit: Unit = "word",
    *,
    choose: Chooser | None = None,
    batch_hyps: int = 20_000,
) -> TuningProblem:
    """Read a stream of n-best lists once, in batches of at most ``batch_hyps`` hypotheses, into a
    compact :class:`~fusion.tuning.TuningProblem` (one score matrix, one error array, offsets).

    Args:
        lists: the lists (an iterator is read once; nothing of a list is kept but its numbers).
        components: the score components to keep, in this order; every hypothesis must have each (an
            error names the first that lacks one). None: the components every hypothesis has.
        unit: ``word`` (WER) or ``char`` (CER) edit distances.
        choose: called once at the end with the components every hypothesis has and ``{component: first
            utterance lacking it}`` for those some lack; returns the components to keep (e.g. ``tune``'s
            default rule). Only with ``components=None`` can it pick any common component.
        batch_hyps: hypotheses per batch (whole lists).

    Every list needs a reference. An empty list is kept (its reference length counts as errors).
    Equal to :func:`~decoders.nbest.rank.to_tuning_problem` on the same lists and components.
    """
    if components is not None and not components:
        raise LMFusionError("stream_tuning_problem: no components")
    b = _Builder(components, unit)
    for batch in iter_batches(lists, batch_hyps):
        b.add(batch)
    return b.problem(choose)
