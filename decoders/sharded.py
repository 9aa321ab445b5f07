"""N-best rescoring over an executor: shards of utterances, LMs opened once per worker from specs.

:func:`rescore_sharded` cuts the lists into contiguous shards of ``shard_size`` utterances (the same
shards on every back-end), sends each shard's texts — plus the scores the cache may reuse, nothing
else — to a worker, which opens the LMs from their :class:`~fusion.abilities.LMSpec` once
(:func:`fusion.executor.worker_state`) and scores the texts as :func:`decoders.nbest.rescore_with_stats`
does (:func:`~decoders.nbest.score_hypotheses` per LM, with the score cache). Only the score columns come
back; the records are built here, in input order, as ``rescore_with_stats`` builds them, so the output
is the same as rescoring the shards one after another in this process. With an n-gram LM (each text scored on its
own) that is also byte for byte the output of one unsharded :func:`~decoders.nbest.rescore`; a neural
LM batches texts within a shard, so its last bits may depend on the shard size (never on the back-end).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.nbest import WORDS, RescoreStats, merge_stats, score_hypotheses, summarize
from decoders.nbest.rescore import _build_records
from fusion.abilities import LMSpec
from fusion.errors import LMFusionError
from fusion.executor import Executor, LMSet, open_executor, shards, with_setup
from fusion.lm import LanguageModel

__all__ = ["DEFAULT_SHARD_SIZE", "RescoreOptions", "rescore_sharded"]

_NO_SCORES: dict[str, float] = {}

DEFAULT_SHARD_SIZE = 2000
"""Utterances per task: large enough that a task runs ~0.1-1 s with a KenLM, so a scheduler handling a
few thousand tasks a second is far from the bottleneck (see the README's scale-out section)."""


@dataclass(frozen=True)
class RescoreOptions:
    """The :func:`~decoders.nbest.rescore_with_stats` options a worker applies to its shard."""

    word_count: bool = True
    batch_size: int = 256
    overwrite: bool = False
    floor_score: float = -1e4
    count_oov: bool = True

    def __post_init__(self) -> None:
        if self.floor_score > 0 or not math.isfinite(self.floor_score):
            raise LMFusionError(f"floor_score must be a finite log-probability (<= 0), got {self.floor_score}")
        if self.batch_size < 1:
            raise LMFusionError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class _ShardResult:
    columns: dict[str, np.ndarray]
    """LM name -> float64 ``[hyps in shard]``."""
    stats: RescoreStats


@dataclass(frozen=True)
class _ShardTask:
    """What a worker needs for one shard: the texts, and the scores the cache may reuse — nothing else."""

    texts: list[list[str]]
    """Per utterance, its hypothesis texts."""
    cached: dict[str, list[tuple[int, float]]]
    """LM name -> ``(hypothesis index within the shard, score)`` already in the input."""
    options: RescoreOptions


def _make_tasks(nbests: Sequence[NBestList], names: Sequence[str], size: int, opts: RescoreOptions) -> list[_ShardTask]:
    tasks = []
    for part in shards(nbests, size):
        cached: dict[str, list[tuple[int, float]]] = {k: [] for k in names}
        if not opts.overwrite:
            k = 0
            for nb in part:
                for h in nb.hyps:
                    sc = h.scores
                    for name in names:
                        if name in sc:
                            cached[name].append((k, sc[name]))
                    k += 1
        texts = [[h.text for h in nb.hyps] for nb in part]
        tasks.append(_ShardTask(texts, {k: v for k, v in cached.items() if v}, opts))
    return tasks


def _rescore_shard(lms: dict[str, LanguageModel], task: _ShardTask) -> _ShardResult:
    """Worker side: score the shard's texts with the worker's cached LMs (as
    :func:`~decoders.nbest.rescore_with_stats` does, without building records); return the LM columns."""
    opts = task.options
    shard = [NBestList(str(u), tuple(ScoredHypothesis(t, _NO_SCORES) for t in ts)) for u, ts in enumerate(task.texts)]
    base = summarize(shard)
    n = base["hyps"]
    cols: dict[str, np.ndarray] = {}
    scored, cached, oov, failed = {}, {}, {}, {}
    for name, lm in lms.items():
        hits = dict(task.cached.get(name, ()))
        todo = shard
        if hits:  # the score cache: only the hypotheses without this score are scored
            it = iter(range(n))
            todo = [NBestList(nb.utt_id, tuple(h for h in nb.hyps if next(it) not in hits)) for nb in shard]
        vals, ts = score_hypotheses(
            todo, lm, batch_size=opts.batch_size, floor_score=opts.floor_score, count_oov=opts.count_oov
        )
        if hits:
            col = np.empty(n, dtype=np.float64)
            mask = np.zeros(n, dtype=bool)
            idx = np.fromiter(hits.keys(), dtype=np.int64, count=len(hits))
            mask[idx] = True
            col[idx] = np.fromiter(hits.values(), dtype=np.float64, count=len(hits))
            col[~mask] = vals
            vals = col
        cols[name] = vals
        scored[name], cached[name], oov[name], failed[name] = len(ts.scores), len(hits), ts.oov, ts.failed
    st = RescoreStats(
        n_utts=base["utts"],
        n_hyps=n,
        n_no_hyps=base["no_hyps"],
        n_single=base["single"],
        n_empty_text=base["empty_text"],
        n_duplicates=base["duplicates"],
        scored=scored,
        cached=cached,
        oov=oov,
        failed=failed,
    )
    return _ShardResult(cols, st)


def rescore_sharded(
    nbests: Sequence[NBestList],
    lms: Sequence[LMSpec] | LMSet,
    executor: Executor | str | None = None,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    options: RescoreOptions | None = None,
    progress: bool = False,
) -> tuple[list[NBestList], RescoreStats]:
    """:func:`~decoders.nbest.rescore_with_stats` over ``executor``, one task per shard of utterances.

    Args:
        nbests: the lists (not modified; new records are returned in the same order).
        lms: the LMs as specs (each worker opens them once and keeps them); their names are the
            score components, in this order.
        executor: an :class:`~fusion.executor.Executor` or a spec for :func:`~fusion.executor.open_executor`
            (None: in this process).
        shard_size: utterances per task (the shards, and so the output, do not depend on the back-end).
        options: what :func:`~decoders.nbest.rescore_with_stats` does in each shard.
        progress: a bar over finished shards (only on a terminal).

    Returns:
        The rescored lists and the stats summed over shards (``scored`` counts each shard's distinct
        texts, so a text repeated across shards counts once per shard).
    """
    t0 = time.perf_counter()
    opts = options or RescoreOptions()
    setup = lms if isinstance(lms, LMSet) else LMSet(tuple(lms))
    names = [s.name for s in setup.specs]
    if opts.word_count and WORDS in names:
        raise LMFusionError(f"an LM may not be named {WORDS!r}: that is the word-count component")
    ex = open_executor(executor)
    tasks = _make_tasks(nbests, names, shard_size, opts)
    try:
        results = ex.map(with_setup(_rescore_shard, setup), tasks, desc="rescore shards", progress=progress)
    finally:
        if ex is not executor:
            ex.close()
    n = sum(len(nb.hyps) for nb in nbests)
    cols = [np.concatenate([r.columns[k] for r in results]).tolist() if results else [] for k in names]
    if any(len(c) != n for c in cols):
        raise LMFusionError(f"rescore_sharded: {[len(c) for c in cols]} scores came back for {n} hypotheses")
    gc_was_on = gc.isenabled()
    gc.disable()  # many small acyclic records (as in rescore_with_stats)
    try:  # the records are built as rescore_with_stats builds them, so the output is the same
        out = _build_records(nbests, names, cols, cols[0] if len(cols) == 1 else None, opts.word_count)
    finally:
        if gc_was_on:
            gc.enable()
    return out, merge_stats([r.stats for r in results], names=names, seconds=time.perf_counter() - t0)
