"""N-best rescoring over an executor: shards of utterances, LMs opened once per worker from specs.

:func:`rescore_sharded_stream` reads the lists lazily, cuts them into contiguous shards of
``shard_size`` utterances (the same shards on every back-end) and sends each shard's texts — plus the
scores the cache may reuse, nothing else — to a worker, which opens the LMs from their
:class:`~fusion.abilities.LMSpec` once (:func:`fusion.executor.worker_state`) and runs
:func:`decoders.nbest.score_columns` on them, the same function :func:`~decoders.nbest.rescore_with_stats`
runs. Only the float64 score columns and the shard's :class:`~decoders.nbest.RescoreStats` come back;
the records are built here with :func:`decoders.nbest.build_records`, in input order, while the workers
score the next shards (at most a window of shards is in flight, so memory does not grow with the input).
The output is therefore the same as rescoring the shards one after another in this process. With an
n-gram LM (each text scored on its own) that is also byte for byte the output of one unsharded
:func:`~decoders.nbest.rescore`; a neural LM batches texts within a shard, so its last bits may depend on
the shard size (never on the back-end).
"""

from __future__ import annotations

import itertools
import pickle
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from decoders.hypothesis import NBestList
from decoders.nbest import (
    WORDS,
    RescoreStats,
    build_records,
    check_rescore_options,
    check_reuse,
    known_scores,
    merge_stats,
    score_columns,
)
from fusion.abilities import LMSpec
from fusion.errors import LMFusionError
from fusion.executor import Executor, LMSet, imap, open_executor, with_setup
from fusion.lm import LanguageModel

__all__ = ["DEFAULT_SHARD_SIZE", "RescoreOptions", "rescore_sharded", "rescore_sharded_stream", "shard_task"]

DEFAULT_SHARD_SIZE = 2000
"""Utterances per task: large enough that a task runs ~0.1-1 s with a KenLM, so a scheduler handling a
few thousand tasks a second is far from the bottleneck (see the README's scale-out section)."""


@dataclass(frozen=True)
class RescoreOptions:
    """The :func:`~decoders.nbest.rescore_with_stats` options a worker applies to its shard."""

    word_count: bool = True
    batch_size: int = 256
    overwrite: bool = False
    reuse: bool = True
    floor_score: float = -1e4
    count_oov: bool = True

    def __post_init__(self) -> None:
        check_rescore_options(self.floor_score, self.batch_size)


@dataclass(frozen=True)
class ShardResult:
    """What a worker sends back for a shard: one float64 column per LM, and the shard's stats."""

    columns: dict[str, np.ndarray]
    """LM name -> float64 ``[hyps in shard]``."""
    stats: RescoreStats


@dataclass(frozen=True)
class ShardTask:
    """What a worker needs for one shard: the texts, and the scores the cache may reuse — nothing else.

    They travel as one pickled ``bytes`` blob (made here, read by the worker: never a user file). Dask's
    scheduler unpickles and re-pickles every task it forwards; a blob costs it a copy, where the same
    texts as a list of lists of strings cost it a Python object per hypothesis."""

    blob: bytes
    """``pickle((texts, known))``: per utterance its hypothesis texts; LM name -> ``{hypothesis index
    within the shard: score already in the input}``."""
    options: RescoreOptions

    @property
    def n_hyps(self) -> int:
        """Hypotheses in the shard."""
        return sum(map(len, self.unpack()[0]))

    def unpack(self) -> tuple[list[list[str]], dict[str, dict[int, float]]]:
        """``(texts, known)``."""
        texts, known = pickle.loads(self.blob)  # our own bytes from shard_task
        return texts, known


def shard_task(part: Sequence[NBestList], names: Sequence[str], opts: RescoreOptions) -> ShardTask:
    """The task for one shard of lists (the score cache checked against ``opts.reuse`` here)."""
    known = {} if opts.overwrite else known_scores(part, names)
    check_reuse(known, opts.reuse)
    texts = [[h.text for h in nb.hyps] for nb in part]
    return ShardTask(pickle.dumps((texts, known), protocol=pickle.HIGHEST_PROTOCOL), opts)


def _rescore_shard(lms: Mapping[str, LanguageModel], task: ShardTask) -> ShardResult:
    """Worker side: :func:`~decoders.nbest.score_columns` with the worker's cached LMs."""
    o = task.options
    texts, known = task.unpack()
    cols, st = score_columns(
        texts, lms, known=known, batch_size=o.batch_size, floor_score=o.floor_score, count_oov=o.count_oov
    )
    return ShardResult(cols, st)


def _chunks(lists: Iterable[NBestList], size: int) -> Iterator[list[NBestList]]:
    if size < 1:
        raise LMFusionError(f"shard size must be >= 1, got {size}")
    it = iter(lists)
    while part := list(itertools.islice(it, size)):
        yield part


def rescore_sharded_stream(
    lists: Iterable[NBestList],
    lms: Sequence[LMSpec] | LMSet,
    executor: Executor | str | None = None,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    options: RescoreOptions | None = None,
    window: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[list[NBestList], RescoreStats]]:
    """:func:`~decoders.nbest.rescore_stream` over ``executor``: each shard of ``shard_size`` utterances
    is one task; ``(rescored shard, its stats)`` are yielded in input order.

    Args:
        lists: the lists, read lazily (a reader's iterator streams a file; not modified).
        lms: the LMs as specs (each worker opens them once and keeps them); their names are the
            score components, in this order.
        executor: an :class:`~fusion.executor.Executor` or a spec for :func:`~fusion.executor.open_executor`
            (None: in this process; a spec opened here is closed when the stream ends).
        shard_size: utterances per task (the shards, and so the output, do not depend on the back-end).
        options: what :func:`~decoders.nbest.rescore_with_stats` does in each shard.
        window: shards in flight at most (default: twice the workers); bounds this process's memory.
        progress: a bar over finished shards (only on a terminal).

    Each shard's stats carry, as ``seconds``, the wall time since the previous shard was yielded, so
    :func:`~decoders.nbest.merge_stats` of them is the stream's wall time.
    """
    opts = options or RescoreOptions()
    setup = lms if isinstance(lms, LMSet) else LMSet(tuple(lms))
    names = [s.name for s in setup.specs]
    if opts.word_count and WORDS in names:
        raise LMFusionError(f"an LM may not be named {WORDS!r}: that is the word-count component")
    ex = open_executor(executor)
    parts: deque[list[NBestList]] = deque()

    def tasks() -> Iterator[ShardTask]:
        for part in _chunks(lists, shard_size):
            task = shard_task(part, names, opts)
            parts.append(part)
            yield task

    last = time.perf_counter()
    try:
        for res in imap(ex, with_setup(_rescore_shard, setup), tasks(), window=window, desc="rescore shards",
                        progress=progress):  # fmt: skip
            part = parts.popleft()
            n = sum(len(nb.hyps) for nb in part)
            if any(len(res.columns[k]) != n for k in names):
                raise LMFusionError(f"a shard of {n} hypotheses came back with {len(res.columns[names[0]])} scores")
            cols = {k: res.columns[k].tolist() for k in names}
            keep = [] if opts.overwrite else [k for k, v in res.stats.cached.items() if v]
            out = build_records(part, cols, word_count=opts.word_count, keep=keep)
            now = time.perf_counter()
            yield out, replace(res.stats, seconds=now - last)  # wall time since the last shard: they sum up
            last = now
    finally:
        if ex is not executor:
            ex.close()


def rescore_sharded(
    nbests: Iterable[NBestList],
    lms: Sequence[LMSpec] | LMSet,
    executor: Executor | str | None = None,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    options: RescoreOptions | None = None,
    window: int | None = None,
    progress: bool = False,
) -> tuple[list[NBestList], RescoreStats]:
    """:func:`~decoders.nbest.rescore_with_stats` over ``executor``, one task per shard of utterances
    (:func:`rescore_sharded_stream`, collected).

    Returns:
        The rescored lists and the stats summed over shards (``scored`` counts each shard's distinct
        texts, so a text repeated across shards counts once per shard); ``seconds`` is the wall time.
    """
    t0 = time.perf_counter()
    out: list[NBestList] = []
    stats = []
    for part, st in rescore_sharded_stream(
        nbests, lms, executor, shard_size=shard_size, options=options, window=window, progress=progress
    ):
        out += part
        stats.append(st)
    names = [s.name for s in (lms.specs if isinstance(lms, LMSet) else lms)]
    return out, merge_stats(stats, names=names, seconds=time.perf_counter() - t0)
