"""The open-word n-gram over the whole decoder vocabulary at once: :class:`VocabOpenWordScorer`.

:class:`~fusion.scorers.open_word.OpenWordLMScorer` is partial: only the pre-beam candidates (the model's top
few tokens) are scored, so a word the model ranks low (a register word the training targets never held, at the
label-smoothing floor) is never shown to the LM, whatever its weight. This scorer gives the same numbers for
*every* decoder token, so the fused score itself picks the candidates. Over an
:class:`~fusion.array_lm.ArrayNgramLM` that is cheap: per hypothesis, one compiled batch of
``(state, word)`` lookups for the tokens that start a word (all from the state after the open word) and one for
the tokens that continue it (all from the state before it), no Python loop over tokens.

The scores are those of :class:`OpenWordLMScorer` (a word-start token ``ln P(piece | history)``, a continuation
``ln P(word + piece | history) − ln P(word | history)``, end-of-sentence ``ln P(</s> | history, word)``); so are
the states, built for the selected tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fusion.array_lm import ArrayNgramLM
from fusion.errors import LMFusionError
from fusion.ngram_arrays import UNK, score_after
from fusion.scorers.base import ScorerState
from fusion.scorers.lm import UnscoredPrice
from fusion.scorers.open_word import OpenWordLMScorer

__all__ = ["VocabOpenWordScorer"]

_CACHE = 4096
"""Most open words whose continuation ids are kept (cleared when full)."""


class VocabOpenWordScorer(OpenWordLMScorer):
    """:class:`OpenWordLMScorer` as a full scorer over an array n-gram (module docstring).

    Args:
        lm: the word n-gram as an :class:`~fusion.array_lm.ArrayNgramLM` (``ArrayNgramLM(read_arpa_cached(path),
            name, units)``; the scores are KenLM's own).
        token_units, eos_id, name, unscored: as :class:`OpenWordLMScorer`.

    Raises:
        LMFusionError: ``lm`` is not an :class:`~fusion.array_lm.ArrayNgramLM`.
    """

    def __init__(
        self,
        lm: ArrayNgramLM,
        token_units: Sequence[str | None],
        eos_id: int,
        *,
        name: str | None = None,
        unscored: UnscoredPrice = "uniform",
    ) -> None:
        if not isinstance(lm, ArrayNgramLM):
            raise LMFusionError(f"VocabOpenWordScorer needs an ArrayNgramLM (compiled lookups), "
                                f"got {type(lm).__name__}")
        super().__init__(lm, token_units, eos_id, name=name, unscored=unscored)
        self.is_partial = False
        self.arr = lm.arrays
        has_text = np.array([t is not None for t in self.texts])
        self._start = np.flatnonzero(has_text & self.starts & np.array([bool(t) for t in self.texts]))
        self._start_ids = self.arr.unit_ids([self._lm_text(str(self.texts[t])) for t in self._start])
        self._cont = np.flatnonzero(has_text & ~self.starts)
        self._cont_texts = [str(self.texts[t]) for t in self._cont]
        self._cont_empty = np.array([not t for t in self._cont_texts], dtype=bool)
        self._ids_of_open: dict[str, np.ndarray] = {}
        self._start_rows: dict[Any, np.ndarray] = {}

    def _cont_ids(self, word: str) -> np.ndarray:
        """Word ids of ``word + piece`` for every continuation token."""
        ids = self._ids_of_open.get(word)
        if ids is None:
            if len(self._ids_of_open) >= _CACHE:
                self._ids_of_open.clear()
            ids = self.arr.unit_ids([self._lm_text(word + t) for t in self._cont_texts])
            self._ids_of_open[word] = ids
        return ids

    def _rows(self, state: Any, ids: np.ndarray) -> np.ndarray:
        """ln P of every word id in ``ids`` after one LM state. Every unknown word scores as ``<unk>`` (the same
        number after one state), so it is looked up once: most continuations make no known word."""
        out = np.empty(len(ids))
        known = np.flatnonzero(ids != UNK)
        st = np.asarray(state, dtype=np.int32)
        if len(known) < len(ids):
            out[:] = score_after(self.arr, st, np.array([UNK]))[0]
        if len(known):
            out[known] = score_after(self.arr, st, ids[known])
        return out

    def score(
        self,
        hyps: Sequence[Sequence[int]],
        states: Sequence[ScorerState],
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        after: list[Any] = [s[3] for s in states]  # type: ignore[index]
        ends = self.lm.end_batch(after)
        out = np.tile(self._unseen_row, (len(states), 1))
        starts = self._start_rows  # hypotheses often share the state after their word (after any unknown one)
        if len(starts) >= _CACHE // 8:
            starts.clear()
        for b, st in enumerate(states):
            lm_state: Any = st[0]  # type: ignore[index]
            word: str = st[1]  # type: ignore[index]
            charged: float = st[2]  # type: ignore[index]
            aft: Any = st[3]  # type: ignore[index]
            row = starts.get(aft)
            if row is None:
                row = starts[aft] = self._rows(aft, self._start_ids)
            out[b, self._start] = row
            cont = self._rows(lm_state, self._cont_ids(word)) - float(charged)
            if not word:  # an empty piece after no word: still no word, nothing charged
                cont[self._cont_empty] = 0.0
            out[b, self._cont] = cont
            out[b, self.eos_id] = ends[b]
        if candidates is not None:
            out = np.take_along_axis(out, np.asarray(candidates), axis=1)
        return out, {"states": list(states), "after": after}

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        states, after = ctx["states"], ctx["after"]
        out: list[ScorerState | None] = [None] * len(rows)
        todo: list[int] = []
        for i, (r, t) in enumerate(zip(rows, tokens, strict=True)):
            t = int(t)
            if t == self.eos_id:
                out[i] = (after[r], "", 0.0, after[r])
            elif self.texts[t] is None:
                out[i] = states[r]
            else:
                todo.append(i)
        if todo:  # the partial scorer's own step over just the selected tokens gives their states
            sel = [states[rows[i]] for i in todo]
            cand = np.array([[int(tokens[i])] for i in todo])
            _, c = OpenWordLMScorer.score(self, [()] * len(todo), sel, cand)
            for j, i in enumerate(todo):
                out[i] = c["next"][(j, int(tokens[i]))]
        return [o for o in out if o is not None]

