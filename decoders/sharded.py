"""N-best rescoring over an executor: shards of utterances, LMs opened once per worker from specs.

:func:`rescore_sharded` cuts the lists into contiguous shards of ``shard_size`` utterances (the same
shards on every back-end), sends each shard's texts — plus the scores the cache may reuse, nothing
else — to a worker, which opens the LMs from their :class:`~fusion.abilities.LMSpec` once
(:func:`fusion.executor.worker_state`) and runs :func:`decoders.nbest.rescore_with_stats` on it. Only the
new score columns come back; the records are rebuilt here in input order, so the output is the same
as rescoring the shards one after another in this process. With an n-gram LM (each text scored on its
own) that is also byte for byte the output of one unsharded :func:`~decoders.nbest.rescore`; a neural
LM batches texts within a shard, so its last bits may depend on the shard size (never on the back-end).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.nbest import WORDS, RescoreStats, rescore_with_stats
from fusion.abilities import LMSpec
from fusion.errors import LMFusionError
from fusion.executor import Executor, LMSet, open_executor, shards, with_setup
from fusion.lm import LanguageModel

__all__ = ["DEFAULT_SHARD_SIZE", "RescoreOptions", "rescore_sharded"]

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


@dataclass(frozen=True)
class _ShardResult:
    columns: dict[str, np.ndarray]
    """Component -> float64 ``[hyps in shard]`` (the LMs' and ``words``)."""
    stats: RescoreStats


def _slim(nb: NBestList, names: Sequence[str]) -> NBestList:
    """The part of a list a worker needs: texts, and the scores of the LMs (the cache)."""
    return NBestList(
        nb.utt_id, tuple(ScoredHypothesis(h.text, {k: h.scores[k] for k in names if k in h.scores}) for h in nb.hyps)
    )


def _rescore_shard(lms: dict[str, LanguageModel], task: tuple[tuple[NBestList, ...], RescoreOptions]) -> _ShardResult:
    """Worker side: rescore one shard with the worker's cached LMs; return the new columns."""
    shard, opts = task
    out, st = rescore_with_stats(
        shard,
        lms,
        opts.word_count,
        batch_size=opts.batch_size,
        overwrite=opts.overwrite,
        floor_score=opts.floor_score,
        count_oov=opts.count_oov,
    )
    names = [*lms, WORDS] if opts.word_count else list(lms)
    cols = {k: np.fromiter((h.scores[k] for nb in out for h in nb.hyps), dtype=np.float64) for k in names}
    return _ShardResult(cols, st)


def _merge_stats(parts: Sequence[RescoreStats], names: Sequence[str], seconds: float) -> RescoreStats:
    def total(attr: str) -> int:
        return sum(int(getattr(p, attr)) for p in parts)

    def per(attr: str) -> dict[str, int]:
        out = {}
        for k in names:
            vals = [getattr(p, attr)[k] for p in parts]
            out[k] = -1 if any(v < 0 for v in vals) else sum(vals)
        return out

    return RescoreStats(
        n_utts=total("n_utts"),
        n_hyps=total("n_hyps"),
        n_no_hyps=total("n_no_hyps"),
        n_single=total("n_single"),
        n_empty_text=total("n_empty_text"),
        n_duplicates=total("n_duplicates"),
        scored=per("scored"),
        cached=per("cached"),
        oov=per("oov"),
        failed=per("failed"),
        seconds=seconds,
    )


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
    tasks = [(tuple(_slim(nb, names) for nb in part), opts) for part in shards(list(nbests), shard_size)]
    results = ex.map(with_setup(_rescore_shard, setup), tasks, desc="rescore shards", progress=progress)
    if ex is not executor:
        ex.close()
    comps = [*names, WORDS] if opts.word_count else names
    cols = {k: np.concatenate([r.columns[k] for r in results]).tolist() if results else [] for k in comps}
    out: list[NBestList] = []
    i = 0
    for nb in nbests:
        hyps = []
        for h in nb.hyps:
            new = dict(h.scores)
            for k in comps:
                new[k] = cols[k][i]
            hyps.append(ScoredHypothesis(h.text, new, h.tokens, h.words))
            i += 1
        out.append(NBestList(nb.utt_id, tuple(hyps), nb.ref, nb.tags))
    if comps and len(cols[comps[0]]) != i:
        raise LMFusionError(f"rescore_sharded: {len(cols[comps[0]])} scores came back for {i} hypotheses")
    return out, _merge_stats([r.stats for r in results], names, time.perf_counter() - t0)
