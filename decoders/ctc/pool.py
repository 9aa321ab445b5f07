"""Batch decoding in a process pool: each worker builds its own decoder once from a picklable spec.

Nothing with C or torch state is pickled: the spec names the LMs by :class:`~fusion.abilities.LMSpec`
(files and options), and :func:`fusion.loading.open_spec` opens them in the worker.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

import numpy as np

from decoders.ctc.align import align_nbest
from decoders.hypothesis import NBestList
from fusion.weights import UtteranceContext


class DecoderFactory(Protocol):
    """A picklable recipe for a decoder (:class:`decoders.ctc.decoder.CTCDecoderSpec`)."""

    def build(self) -> Any:
        """The decoder (it has ``for_utterance(context)`` and ``_search()``)."""
        ...


_WORKER: dict[str, Any] = {}
"""The decoder of a pool worker process (set by the pool initializer, only in workers)."""


def _worker_init(spec: DecoderFactory) -> None:
    _WORKER["decoder"] = spec.build()


def _worker_decode(arr: np.ndarray, utt_id: str, ref: str | None, tags: Mapping[str, Any] | None,
                   hotwords: Any = None, hotword_weight: float | None = None) -> NBestList:
    dec = _WORKER["decoder"].for_utterance(UtteranceContext(utt_id=utt_id, tags=dict(tags or {})))
    s = dec.biased(hotwords, hotword_weight)._search()
    s.feed_array(arr)
    result: NBestList = align_nbest(s.finish(utt_id=utt_id, ref=ref, tags=tags), arr, dec.vocab, dec.options.align)
    return result


def decode_in_pool(
    spec: DecoderFactory,
    arrays: Sequence[np.ndarray],
    utt_ids: Sequence[str],
    refs: Sequence[str | None],
    tags: Sequence[Mapping[str, Any] | None],
    *,
    processes: int,
    mp_context: str | None = None,
    progress: bool = False,
    hotwords: Sequence[Any] | None = None,
    hotword_weight: float | None = None,
) -> list[NBestList]:
    """Decode validated emissions in ``processes`` workers, in input order (``hotwords``: one list per
    utterance)."""
    from fusion.progress import progress_bar

    n = len(arrays)
    ctx = mp.get_context(mp_context)
    chunks = max(1, min(16, n // (processes * 4) or 1))
    with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init, initargs=(spec,)) as ex:
        hw = list(hotwords) if hotwords is not None else [None] * n
        it = ex.map(_worker_decode, arrays, utt_ids, refs, tags, hw, [hotword_weight] * n, chunksize=chunks)
        return list(progress_bar(it, total=n, desc="ctc decode", progress=progress))
