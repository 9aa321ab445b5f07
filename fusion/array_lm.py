"""An n-gram LM served from :class:`~fusion.ngram_arrays.NgramArrays`: the Python face of the arrays a compiled
search reads.

:class:`ArrayNgramLM` scores exactly as the :class:`~fusion.ngram.KenLM` it was read from (same float32 numbers,
same order of additions, same right-state minimisation; ``tests/test_ngram_arrays.py``), with states that are
plain tuples of word ids (most recent first, ``-1`` padded). The CTC search uses it for the few scores it asks
from Python (end of sentence, the open word at the end) while its compiled loop reads the same arrays, so both
sides share contexts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusion.lm import LanguageModel, State, Units
from fusion.ngram_arrays import NgramArrays, score_many


class ArrayNgramLM(LanguageModel):
    """An :class:`NgramArrays` model as a :class:`~fusion.lm.LanguageModel` (states: tuples of word ids).

    Args:
        arrays: the model.
        name: its name (that of the LM it stands for).
        units: its units (those of the LM it stands for).
    """

    def __init__(self, arrays: NgramArrays, name: str, units: Units) -> None:
        super().__init__(name, units)
        self.arrays = arrays
        self.width = max(1, arrays.order - 1)
        self._begin: State = tuple(arrays.begin_state().tolist())

    def begin(self) -> State:
        return self._begin

    def score(self, state: State, unit: str) -> tuple[float, State]:
        lp, nxt = self.arrays.score(np.asarray(state, dtype=np.int32), self.arrays.word_id(unit))
        return lp, tuple(nxt.tolist())

    def end(self, state: State) -> float:
        return self.score(state, "</s>")[0]

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> tuple[np.ndarray, list[State]]:
        if not units:
            return np.zeros(0), []
        st = np.array(states, dtype=np.int32).reshape(len(units), self.width)
        lp, nxt = score_many(self.arrays, st, self.arrays.unit_ids(units))
        return lp, [tuple(r) for r in nxt.tolist()]

    def score_batch(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]:
        B, K = len(states), len(candidates)
        st = np.repeat(np.array(states, dtype=np.int32).reshape(B, self.width), K, axis=0)
        lp, nxt = score_many(self.arrays, st, np.tile(self.arrays.unit_ids(candidates), B))
        rows: list[State] = [tuple(r) for r in nxt.tolist()]
        return lp.reshape(B, K), [rows[b * K : (b + 1) * K] for b in range(B)]

    def end_batch(self, states: Sequence[State]) -> np.ndarray:
        return self.score_pairs(states, ["</s>"] * len(states))[0]

    @property
    def vocab(self) -> frozenset[str] | None:
        return frozenset(w for w in self.arrays.vocab if w not in ("<s>", "</s>", "<unk>"))

    def is_oov(self, unit: str) -> bool:
        return unit not in self.arrays.vocab

    def unknown_unit(self) -> str:
        """Every unknown unit scores as ``<unk>``, as in KenLM."""
        return "<unk>"
