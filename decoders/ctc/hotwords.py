"""Contextual biasing in the CTC search: per-call hotwords as one more weighted component, ``"hotwords"``.

A call's hotwords are compiled (once per distinct list, cached) to a :class:`~fusion.biasing.ContextGraph`
over the decoder's label ids. The search keeps a graph state per prefix node; a new node adds
``w_hotwords x delta`` to its fixed score (the bonus of a matched label, or the take-back of an abandoned
phrase prefix), and a final hypothesis takes back an unfinished phrase's bonus. The unweighted sum is the
hypothesis' ``"hotwords"`` component. Both back ends carry it (numpy: :mod:`decoders.ctc.search`; numba:
:mod:`decoders.ctc.kernel`, over the graph's flat arrays).
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from fusion.biasing import HOTWORDS, ContextGraph, Hotwords, build_context_graph, label_tokenizer, normalize_hotwords
from fusion.errors import LMFusionError

CTCDecoder = Any
"""A :class:`decoders.ctc.decoder.CTCDecoder` (not imported: modules import down the package only)."""

GRAPH_CACHE = 16
"""Compiled hotword lists kept per decoder."""


class HotwordGraphs:
    """Compiles hotword lists to context graphs over a vocabulary's labels, keeping the last few."""

    def __init__(self, labels: Sequence[str], word_delimiter: str | None) -> None:
        self.num_units = len(labels)
        self.tokenize = label_tokenizer(labels, word_delimiter)
        self._cache: OrderedDict[tuple[tuple[str, float], ...], ContextGraph | None] = OrderedDict()
        self._raw: OrderedDict[Any, ContextGraph | None] = OrderedDict()  # the lists as given, unnormalized

    def graph(self, hotwords: Hotwords | None, boost: float) -> ContextGraph | None:
        """The graph of a hotword list (``None`` when it has no phrase). A list given again as it was is found
        without normalizing it again (that alone costs milliseconds for 1,000 hotwords)."""
        raw = _raw_key(hotwords, boost)
        if raw is not None and raw in self._raw:
            self._raw.move_to_end(raw)
            return self._raw[raw]
        phrases = normalize_hotwords(hotwords, boost)
        g = None
        if phrases:
            key = tuple(sorted(phrases.items()))
            if key in self._cache:
                self._cache.move_to_end(key)
                g = self._cache[key]
            else:
                g = build_context_graph(phrases, self.tokenize, self.num_units)
                _put(self._cache, key, g)
        if raw is not None:
            _put(self._raw, raw, g)
        return g


def _put(cache: OrderedDict[Any, ContextGraph | None], key: Any, g: ContextGraph | None) -> None:
    cache[key] = g
    if len(cache) > GRAPH_CACHE:
        cache.popitem(last=False)


def _raw_key(hotwords: Hotwords | None, boost: float) -> Any:
    """A hashable key of a hotword list exactly as given, or ``None`` (not hashable, or not a list/mapping of
    strings)."""
    if hotwords is None:
        return None
    try:
        if isinstance(hotwords, Mapping):
            key: Any = ("m", tuple(hotwords.items()))
        else:
            key = ("l", tuple(hotwords), float(boost))
        hash(key)
    except (TypeError, ValueError):
        return None
    return key


def with_hotwords(dec: CTCDecoder, graph: ContextGraph | None, weight: float | None) -> CTCDecoder:
    """The decoder biased by ``graph`` with weight ``weight`` (``None``: the decoder's ``"hotwords"`` weight).

    Shares everything with ``dec`` (LMs, caches, fused steps) and its back end (the compiled kernel steps the
    graph's flat arrays, :meth:`~fusion.biasing.ContextGraph.arrays`).
    """
    w = float(dec.weights[HOTWORDS] if weight is None else weight)
    if graph is None:
        return dec
    if w == 0.0:
        warnings.warn(
            "hotwords were given but the weight 'hotwords' is 0, so they change nothing: pass hotword_weight= "
            "or weights={'hotwords': w}", UserWarning, stacklevel=3)
        return dec
    new = copy.copy(dec)
    new.weights = {**dec.weights, HOTWORDS: w}
    new.hot = graph
    new.w_hot = w
    new._gain_bound = dec._gain_bound + abs(w) * graph.max_gain
    return new


def per_utterance_hotwords(hotwords: Any, n: int) -> list[Hotwords | None]:
    """One hotword list per utterance: a list of phrases (or ``phrase -> boost``) for all, or one per utterance.

    Raises:
        LMFusionError: a per-utterance list whose length is not ``n``.
    """
    if hotwords is None or isinstance(hotwords, Mapping):
        return [hotwords] * n
    items = list(hotwords)
    if all(isinstance(h, str) for h in items):
        return [items] * n
    if len(items) != n:
        raise LMFusionError(f"decode_batch: {n} emissions but {len(items)} per-utterance hotword lists")
    return items
