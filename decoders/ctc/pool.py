"""Batch decoding on an executor: each worker builds its own decoder once from a picklable spec.

Nothing with C or torch state is pickled: the spec names the LMs by :class:`~fusion.abilities.LMSpec`
(files and options), and :func:`fusion.loading.open_spec` opens them in the worker; the decoder is built
once per worker process and cached there (:func:`fusion.executor.worker_state`). Utterances go out in
contiguous shards in input order and come back in that order, so the output does not depend on the
back-end (in-process, a local process pool, or a Dask cluster).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from decoders.hypothesis import NBestList
from fusion.executor import Executor, LocalProcesses, map_sharded, open_executor
from fusion.weights import UtteranceContext

__all__ = ["DecoderFactory", "SearchOverrides", "decode_in_pool", "decode_on", "default_shard_size"]


class DecoderFactory(Protocol):
    """A picklable recipe for a decoder (:class:`decoders.ctc.decoder.CTCDecoderSpec`)."""

    def build(self) -> Any:
        """The decoder (it has ``for_utterance(context)``, ``biased()``, ``with_search()``, ``_search()`` and
        ``_recycle(search)``)."""
        ...


@dataclass(frozen=True)
class SearchOverrides:
    """Per-call settings every utterance of a batch is decoded with (``None``: the decoder's own)."""

    hotword_weight: float | None = None
    beam_width: int | None = None
    beam_prune_logp: float | None = None
    token_min_logp: float | None = None


Utterance = tuple[np.ndarray, str, "str | None", "Mapping[str, Any] | None", Any]
"""``(log-probabilities [T, V], utt_id, ref, tags, hotwords)``: one item of a batch."""


def decode_one(over: SearchOverrides, decoder: Any, item: Utterance) -> NBestList:
    """Decode one utterance with ``decoder`` (what :meth:`CTCDecoder.decode_batch` does per utterance,
    here or in a worker)."""
    arr, utt_id, ref, tags, hot = item
    dec = decoder.for_utterance(UtteranceContext(utt_id=utt_id, tags=dict(tags or {}))).biased(hot, over.hotword_weight)
    s = dec.with_search(over.beam_width, over.beam_prune_logp, over.token_min_logp)._search()
    s.feed_array(arr)
    result: NBestList = s.finish(utt_id=utt_id, ref=ref, tags=tags, logprobs=arr if dec.options.align else None)
    dec._recycle(s)
    return result


def default_shard_size(n: int, workers: int) -> int:
    """Utterances per task: about four tasks per worker (so a slow utterance evens out), at most 16."""
    return max(1, min(16, n // (max(1, workers) * 4) or 1))


def decode_on(
    executor: Executor | str,
    spec: DecoderFactory,
    items: Sequence[Utterance],
    *,
    overrides: SearchOverrides = SearchOverrides(),
    shard_size: int | None = None,
    progress: bool = False,
) -> list[NBestList]:
    """Decode validated utterances on ``executor`` (an :class:`~fusion.executor.Executor` or a spec for
    :func:`~fusion.executor.open_executor`), in input order; each worker builds ``spec`` once."""
    ex = open_executor(executor)
    try:
        size = shard_size or default_shard_size(len(items), ex.workers)
        return map_sharded(ex, functools.partial(decode_one, overrides), spec, items, shard_size=size,
                           desc="ctc decode", progress=progress)  # fmt: skip
    finally:
        if ex is not executor:
            ex.close()


def decode_in_pool(
    spec: DecoderFactory,
    items: Sequence[Utterance],
    *,
    processes: int,
    mp_context: str | None = None,
    overrides: SearchOverrides = SearchOverrides(),
    progress: bool = False,
) -> list[NBestList]:
    """Decode validated utterances in ``processes`` local worker processes, in input order."""
    return decode_on(LocalProcesses(processes, mp_context=mp_context), spec, items, overrides=overrides,
                     progress=progress)  # fmt: skip
