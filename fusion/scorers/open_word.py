"""Word-boundary fusion that charges the open word at once: :class:`OpenWordLMScorer`.

:class:`~fusion.scorers.lm.WordLMScorer` scores a word when the *next* word starts (or the sentence
ends). In a left-to-right beam search that defers every word's LM cost by one word, and the deferral is
not neutral: ending the sentence pays the open word *and* ``ln P(</s>)`` now, while starting another
word pays only the open word now and its own cost later. Under a strong LM weight a myopic beam then
keeps adding words after the speech has ended (Whisper: ``"... light blank audio audio"``) and glues
words together with continuation pieces (``"saidlet"``), which pay nothing until the word closes.

This scorer charges the word in progress as if it ended at every token: a token that starts a word
scores ``ln P(piece | history)``, a token that continues it ``ln P(word + piece | history) − ln P(word |
history)`` (the difference to what was charged), end-of-sentence only ``ln P(</s> | history, word)``. The
scores along a hypothesis telescope to the same total as :class:`WordLMScorer`'s (each finished word
``ln P(word | history)``, then ``ln P(</s>)``), but no word is free while it is open. Each candidate needs
its own LM call, so the scorer is partial (pre-beam candidates only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.lm import LanguageModel, State
from fusion.scorers.base import ScorerState
from fusion.scorers.lm import UnscoredPrice, WordLMScorer
from fusion.token_units import word_text

__all__ = ["OpenWordLMScorer"]


class OpenWordLMScorer(WordLMScorer):
    """A word-unit LM fused into a subword decoder, the open word charged at every token (module docstring).

    The state is ``(lm_state, word_in_progress, charged, after)`` with ``charged = ln P(word | lm_state)``
    (0 for no word) and ``after`` the LM state after the word, both kept from the step that charged it, so
    closing a word costs no LM call. Arguments as :class:`~fusion.scorers.lm.WordLMScorer`; always partial.
    """

    def __init__(
        self,
        lm: LanguageModel,
        token_units: Sequence[str | None],
        eos_id: int,
        *,
        name: str | None = None,
        unscored: UnscoredPrice = "uniform",
    ) -> None:
        super().__init__(lm, token_units, eos_id, name=name, partial=True, unscored=unscored)

    def init_state(self) -> ScorerState:
        b = self.lm.begin()
        return (b, "", 0.0, b)

    def _lm_text(self, word: str) -> str:
        return word_text(word) if self._bytes else word

    def score(
        self,
        hyps: Sequence[Sequence[int]],
        states: Sequence[ScorerState],
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        if candidates is None:
            raise LMFusionError(f"partial scorer {self.name!r} needs candidates")
        cand = np.asarray(candidates)
        after: list[State] = [s[3] for s in states]  # type: ignore[index]
        ends = self.lm.end_batch(after)
        out = np.where(self.unseen[cand], self.unscored, 0.0)
        nxt: dict[tuple[int, int], ScorerState] = {}
        pair_states: list[State] = []
        pair_words: list[str] = []
        pair_pos: list[tuple[int, int, str, State, float]] = []  # row, column, word, base state, offset
        for b, k in np.ndindex(*cand.shape):
            t = int(cand[b, k])
            text = self.texts[t]
            if t == self.eos_id:
                out[b, k] = ends[b]  # the open word was charged already
                continue
            if text is None:
                continue
            st: Any = states[b]
            base: State = after[b] if self.starts[t] else st[0]
            new_word: str = text if self.starts[t] else st[1] + text
            offset = 0.0 if self.starts[t] else -float(st[2])
            if not new_word:  # a lone word-start marker: no word yet
                out[b, k] = offset
                nxt[(b, t)] = (base, "", 0.0, base)
                continue
            pair_states.append(base)
            pair_words.append(self._lm_text(new_word))
            pair_pos.append((b, k, new_word, base, offset))
        if pair_states:
            lp, ns = self.lm.score_pairs(pair_states, pair_words)
            for (b, k, w, s0, off), v, s1 in zip(pair_pos, lp, ns, strict=True):
                out[b, k] = off + float(v)
                nxt[(b, int(cand[b, k]))] = (s0, w, float(v), s1)
        return out, {"states": list(states), "after": after, "next": nxt}

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        states, after, nxt = ctx["states"], ctx["after"], ctx["next"]
        out: list[ScorerState] = []
        for r, t in zip(rows, tokens, strict=True):
            t = int(t)
            if (r, t) in nxt:
                out.append(nxt[(r, t)])
            elif t == self.eos_id:
                out.append((after[r], "", 0.0, after[r]))
            elif self.texts[t] is None:
                out.append(states[r])
            else:  # not a scored candidate: charge it now
                _, c = self.score([()], [states[r]], np.array([[t]]))
                out.append(c["next"][(0, t)])
        return out

    def final_score(self, state: ScorerState) -> float:
        return float(self.lm.end_batch([state[3]])[0])  # type: ignore[index]
