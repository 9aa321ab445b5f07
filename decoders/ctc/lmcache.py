"""How the CTC search asks an LM for scores: the one adapter between the search and any LanguageModel.

:class:`CachedLM` answers ``(state, unit)`` pairs and end-of-sentence scores through bounded caches, with
every miss of one request in one batched ``score_pairs`` / ``end_batch`` call (one forward pass for a
neural LM; KenLM's own loop for an n-gram). Word LMs and token LMs are asked the same way; nothing here
knows which LM class it talks to. :func:`unknown_words_share_a_score` reads the optional
:class:`~fusion.abilities.UnknownWordsAlike` ability (KenLM has it) that lets the search give every
unknown word after one context a single cache entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fusion.abilities import UnknownWordsAlike
from fusion.errors import LMFusionError
from fusion.lm import LanguageModel, State

DEFAULT_CACHE_LIMIT = 2_000_000


class CachedLM:
    """One LM behind ``(state, unit)`` and end-score caches that live across utterances (bounded).

    Attributes:
        lm: the LM.
        name: its score component's name.
        calls: ``(state, unit)`` pairs the LM was asked to score (cache misses).
    """

    def __init__(self, lm: LanguageModel, name: str, limit: int = DEFAULT_CACHE_LIMIT) -> None:
        self.lm = lm
        self.name = name
        self.limit = limit
        self.calls = 0
        self._pairs: dict[tuple[State, str], tuple[float, State]] = {}
        self._ends: dict[State, float] = {}

    def clear(self) -> None:
        """Empty both caches."""
        self._pairs.clear()
        self._ends.clear()

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> list[tuple[float, State]]:
        """``(ln P(unit | state), next state)`` per pair; the misses in one ``score_pairs`` call.

        Raises:
            LMFusionError: the LM returned NaN.
        """
        cache = self._pairs
        out: list[tuple[float, State] | None] = [cache.get((s, u)) for s, u in zip(states, units, strict=True)]
        miss: dict[tuple[State, str], list[int]] = {}
        for i, r in enumerate(out):
            if r is None:
                miss.setdefault((states[i], units[i]), []).append(i)
        if miss:
            keys = list(miss)
            lps, nss = self.lm.score_pairs([s for s, _ in keys], [u for _, u in keys])
            self.calls += len(keys)
            if len(cache) + len(keys) > self.limit:
                cache.clear()
            for j, key in enumerate(keys):
                lp = float(lps[j])
                if math.isnan(lp):
                    raise LMFusionError(f"LM {self.name!r} returned NaN for unit {key[1]!r}")
                res = (lp, nss[j])
                cache[key] = res
                for i in miss[key]:
                    out[i] = res
        return out  # type: ignore[return-value]

    def end_scores(self, states: Sequence[State]) -> list[float]:
        """``ln P(</s> | state)`` per state; the misses in one ``end_batch`` call."""
        cache = self._ends
        miss = list(dict.fromkeys(s for s in states if s not in cache))
        if miss:
            vals = self.lm.end_batch(miss)
            if len(cache) + len(miss) > self.limit:
                cache.clear()
            for s, v in zip(miss, vals, strict=True):
                cache[s] = float(v)
        return [cache[s] for s in states]


def unknown_words_share_a_score(lms: Sequence[LanguageModel]) -> bool:
    """Whether every LM scores all words outside its vocabulary alike (same score and next state)."""
    return bool(lms) and all(isinstance(m, UnknownWordsAlike) for m in lms)
