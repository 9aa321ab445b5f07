"""Length and word-insertion bonuses as scorers (components ``"tokens"`` and ``"words"``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fusion.scorers.base import FullScorer, ScorerState, check_token_units
from fusion.token_units import split_unit

__all__ = ["LengthBonus", "WordBonus"]


class LengthBonus(FullScorer):
    """+1 for every token that is not end-of-sentence (component ``"tokens"``)."""

    def __init__(self, vocab_size: int, eos_id: int, name: str = "tokens") -> None:
        self.name = name
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self._row = np.ones(vocab_size, dtype=np.float64)
        self._row[eos_id] = 0.0

    def init_state(self) -> ScorerState:
        return None

    def score(
        self, hyps: Sequence[Sequence[int]], states: Sequence[ScorerState], candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, Any]:
        full = np.broadcast_to(self._row, (len(hyps), self.vocab_size))
        out = full.copy() if candidates is None else np.take_along_axis(full, np.asarray(candidates), axis=1)
        return out, None

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        return [None] * len(rows)


class WordBonus(FullScorer):
    """+1 for every word (component ``"words"``): a word-insertion bonus.

    A word is what :func:`fusion.token_units.count_words` counts (and what the word-boundary LM scores):
    the bonus goes to the first token that gives a word text, so a lone ``"▁"`` earns nothing until text
    follows it, and trailing spaces earn nothing. The state is whether the current word has text yet.
    Ids without a unit (``None``) and end-of-sentence earn 0.
    """

    def __init__(self, token_units: Sequence[str | None], eos_id: int, name: str = "words") -> None:
        check_token_units(token_units, eos_id)
        self.name = name
        self.vocab_size = len(token_units)
        self.eos_id = eos_id
        starts = np.zeros(self.vocab_size, dtype=bool)
        has_text = np.zeros(self.vocab_size, dtype=bool)
        mapped = np.zeros(self.vocab_size, dtype=bool)
        for i, u in enumerate(token_units):
            if u is None or i == eos_id:
                continue
            s, text = split_unit(u)
            mapped[i], starts[i], has_text[i] = True, s, bool(text)
        self._starts, self._has_text, self._mapped = starts, has_text, mapped
        # row[open]: the bonus of each id when the current word has (1) or has not (0) text yet
        self._rows = np.stack([has_text.astype(np.float64), (starts & has_text).astype(np.float64)])

    def init_state(self) -> ScorerState:
        return False

    def score(
        self, hyps: Sequence[Sequence[int]], states: Sequence[ScorerState], candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, Any]:
        full = self._rows[np.array([1 if s else 0 for s in states], dtype=np.int64)]
        out = full if candidates is None else np.take_along_axis(full, np.asarray(candidates), axis=1)
        return out, list(states)

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        out: list[ScorerState] = []
        for r, t in zip(rows, tokens, strict=True):
            t = int(t)
            if not self._mapped[t]:
                out.append(ctx[r])
            elif self._starts[t]:
                out.append(bool(self._has_text[t]))
            else:
                out.append(bool(ctx[r]) or bool(self._has_text[t]))
        return out
