"""The scorer interface (ESPnet's shape) every beam search and ``generate()`` hook asks LMs through.

A :class:`Scorer` scores the next decoder token for a batch of hypotheses:

* :meth:`Scorer.init_state` — the state of an empty hypothesis;
* :meth:`Scorer.score` ``(hyps, states, candidates=None)`` — natural-log scores ``[B, V]`` over the
  whole decoder vocabulary (a *full* scorer), or ``[B, K]`` over per-hypothesis candidate ids (a
  *partial* scorer, called only on the pre-beam top-k, e.g. 1.5 x beam: this keeps KenLM and
  word-level LMs cheap); it also returns a context for :meth:`Scorer.select_state`;
* :meth:`Scorer.select_state` ``(ctx, rows, tokens)`` — the states of hypotheses ``rows`` extended
  by ``tokens``, after the search reordered its beams (batched: one call per step);
* :meth:`Scorer.final_score` — a score added once when a hypothesis is closed without an
  end-of-sentence token (at the length limit): for an LM, the open word and ``ln P(</s> | state)``.

Scores of several scorers are combined by :func:`fusion.weights.combine_scores` with the weights'
one meaning (:mod:`fusion.weights`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from fusion.errors import LMFusionError

ScorerState = Hashable

__all__ = ["FullScorer", "Scorer", "ScorerState", "check_token_units"]


class Scorer(ABC):
    """Base of every beam-search scorer (see module docstring).

    Attributes:
        name: the score component's name (the key of its weight and of its n-best score).
        is_partial: ``True`` when the scorer only scores candidate ids (pre-beam top-k).
        vocab_size: the decoder vocabulary size ``V``.
        eos_id: the decoder's end-of-sentence id, when the scorer gives it a score of its own (``None``:
            no special meaning).
    """

    name: str
    is_partial: bool = False
    vocab_size: int
    eos_id: int | None = None

    @abstractmethod
    def init_state(self) -> ScorerState:
        """The state of an empty hypothesis."""

    @abstractmethod
    def score(
        self,
        hyps: Sequence[Sequence[int]],
        states: Sequence[ScorerState],
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """Scores of the next token.

        Args:
            hyps: the ``B`` token-id prefixes (decoder ids, without the start token).
            states: their states.
            candidates: ``None`` for the whole vocabulary, else an int array ``[B, K]`` of candidate ids.

        Returns:
            ``(scores, ctx)``: float64 ``[B, V]`` (or ``[B, K]``), and a context for :meth:`select_state`.
        """

    @abstractmethod
    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        """States after extending hypothesis ``rows[i]`` (a row of the last :meth:`score` call) by ``tokens[i]``."""

    def final_score(self, state: ScorerState) -> float:
        """Score added when a hypothesis is closed without end-of-sentence (length limit)."""
        return 0.0


class FullScorer(Scorer):
    """A scorer that scores the whole vocabulary each step (cheap per token, e.g. a bonus)."""

    is_partial = False


def check_token_units(token_units: Sequence[str | None], eos_id: int) -> None:
    """Raise unless ``eos_id`` is an id of the decoder vocabulary ``token_units``."""
    if not 0 <= eos_id < len(token_units):
        raise LMFusionError(f"eos_id {eos_id} outside the decoder vocabulary of size {len(token_units)}")
