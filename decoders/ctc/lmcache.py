"""How the CTC search asks an LM for scores: the one adapter between the search and any LanguageModel.

:class:`CachedLM` answers ``(state, unit)`` pairs and end-of-sentence scores through caches bounded in bytes
(least recently used entries dropped first), with every miss of one request in one batched ``score_pairs`` /
``end_batch`` call (one forward pass for a neural LM; KenLM's own loop for an n-gram). Word LMs and token LMs
are asked the same way; nothing here knows which LM class it talks to. :func:`unknown_words_share_a_score`
reads the optional :class:`~fusion.abilities.UnknownWordsAlike` ability (KenLM has it) that lets the search
give every unknown word after one context a single cache entry.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from typing import Any

from fusion.abilities import UnknownWordsAlike
from fusion.errors import LMFusionError
from fusion.lm import LanguageModel, State

DEFAULT_CACHE_LIMIT = 2_000_000
"""Most entries of a decoder's fused-step cache before it starts afresh."""

DEFAULT_CACHE_BYTES = 48 << 20
"""Default memory budget (bytes) of each LM's caches, and of a decoder's fused-step cache."""


def entry_bytes(key: Any, value: Any) -> int:
    """Estimated bytes of one dict entry ``key -> value`` (the objects, plus the dict's slot)."""
    size = 100 + sys.getsizeof(key) + sys.getsizeof(value)
    for part in (*(key if isinstance(key, tuple) else ()), *(value if isinstance(value, tuple) else ())):
        size += sys.getsizeof(part) + int(getattr(part, "nbytes", 0))  # array / tensor states: their data too
    return size


class CachedLM:
    """One LM behind ``(state, unit)`` and end-score caches that live across utterances, each bounded in bytes
    with least-recently-used eviction.

    Attributes:
        lm: the LM.
        name: its score component's name.
        calls: ``(state, unit)`` pairs the LM was asked to score (cache misses).
        max_bytes: the memory budget of the two caches together (estimated per entry).
    """

    def __init__(self, lm: LanguageModel, name: str, limit: int = DEFAULT_CACHE_LIMIT,
                 max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.lm = lm
        self.name = name
        self.limit = limit
        self.max_bytes = max_bytes
        self.calls = 0
        self._pairs: dict[tuple[State, str], tuple[float, State]] = {}
        self._ends: dict[State, float] = {}
        self._pair_bytes = 0  # estimated size of one entry, from the first one
        self._end_bytes = 0

    def clear(self) -> None:
        """Empty both caches."""
        self._pairs.clear()
        self._ends.clear()

    def nbytes(self) -> int:
        """Estimated bytes held by the caches."""
        return len(self._pairs) * self._pair_bytes + len(self._ends) * self._end_bytes

    def _cap(self, per_entry: int, share: float) -> int:
        return max(1, min(self.limit, int(self.max_bytes * share) // max(1, per_entry)))

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> list[tuple[float, State]]:
        """``(ln P(unit | state), next state)`` per pair; the misses in one ``score_pairs`` call.

        Raises:
            LMFusionError: the LM returned NaN.
        """
        cache = self._pairs
        out: list[tuple[float, State] | None] = [None] * len(states)
        miss: dict[tuple[State, str], list[int]] = {}
        for i, key in enumerate(zip(states, units, strict=True)):
            r = cache.pop(key, None)
            if r is None:
                miss.setdefault(key, []).append(i)
            else:
                cache[key] = r  # most recently used last
                out[i] = r
        if miss:
            keys = list(miss)
            lps, nss = self.lm.score_pairs([s for s, _ in keys], [u for _, u in keys])
            self.calls += len(keys)
            for j, key in enumerate(keys):
                lp = float(lps[j])
                if math.isnan(lp):
                    raise LMFusionError(f"LM {self.name!r} returned NaN for unit {key[1]!r}")
                res = (lp, nss[j])
                if not self._pair_bytes:
                    self._pair_bytes = entry_bytes(key, res)
                cache[key] = res
                for i in miss[key]:
                    out[i] = res
            _evict(cache, self._cap(self._pair_bytes, 0.9))
        return out  # type: ignore[return-value]

    def end_scores(self, states: Sequence[State]) -> list[float]:
        """``ln P(</s> | state)`` per state; the misses in one ``end_batch`` call."""
        cache = self._ends
        out: list[float | None] = [None] * len(states)
        miss: dict[State, list[int]] = {}
        for i, s in enumerate(states):
            v = cache.pop(s, None)
            if v is None:
                miss.setdefault(s, []).append(i)
            else:
                cache[s] = v
                out[i] = v
        if miss:
            keys = list(miss)
            vals = self.lm.end_batch(keys)
            for s, v in zip(keys, vals, strict=True):
                cache[s] = float(v)
                if not self._end_bytes:
                    self._end_bytes = entry_bytes(s, float(v))
                for i in miss[s]:
                    out[i] = float(v)
            _evict(cache, self._cap(self._end_bytes, 0.1))
        return out  # type: ignore[return-value]


def _evict(cache: dict[Any, Any], cap: int) -> None:
    """Drop the least recently used entries (the first ones) down to 90 % of ``cap`` once ``cap`` is passed."""
    if len(cache) <= cap:
        return
    drop = len(cache) - int(cap * 0.9)
    for k in list(itertools.islice(cache, drop)):
        del cache[k]


def unknown_words_share_a_score(lms: Sequence[LanguageModel]) -> bool:
    """Whether every LM scores all words outside its vocabulary alike (same score and next state)."""
    return bool(lms) and all(isinstance(m, UnknownWordsAlike) for m in lms)
