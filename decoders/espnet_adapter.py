"""lmfusion LMs inside ESPnet's own beam search: scorers with ESPnet's meanings.

ESPnet's ``BeamSearch``/``BatchBeamSearch`` accept scorers that implement its ``ScorerInterface``
(``espnet.nets.scorer_interface``). Their meanings differ from lmfusion's :class:`~fusion.scorers.Scorer`:

* ``init_state(x)`` takes the encoder output;
* ``score(y, state, x)`` scores one hypothesis: ``y`` is its whole 1-D token tensor **including** the
  start symbol (``<sos>``, or a Whisper-style primer), ``state`` is the state returned by the parent's
  call, and the result is a torch tensor ``[V]`` plus the state after ``y``;
* ``batch_score(ys, states, xs)`` does it for a batch, ``select_state(state, i, new_id)`` picks row ``i``;
* ``final_score(state)`` is added to **every** hypothesis that ends in ``<eos>``. lmfusion's scorers
  already give ``<eos>`` its full score (``ln P(</s>)``, and for a word LM the word it closes), and their
  ``final_score`` means "closed *without* ``</s>``"; forwarding it would count ``</s>`` twice (the issue
  measured -47.69 against KenLM's -45.88). So :meth:`ESPnetLMScorer.final_score` is 0. A hypothesis
  ESPnet closes at ``maxlen`` by appending ``<eos>`` unscored gets no ``</s>`` score, as with ESPnet's own
  LM scorers (its n-gram scorer does the same).

:class:`ESPnetLMScorer` derives from ESPnet's ``BatchScorerInterface`` when ``espnet`` is importable (so
``BeamSearch`` accepts it) and is otherwise a plain class with the same methods (what the contract tests
use). :func:`espnet_token_units` maps an ESPnet ``token_list`` to lmfusion's token units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.scorers import Scorer

__all__ = ["ESPNET_AVAILABLE", "ESPnetLMScorer", "espnet_token_units"]

if TYPE_CHECKING:
    _Base = object
else:
    try:
        from espnet.nets.scorer_interface import BatchScorerInterface as _Base

        ESPNET_AVAILABLE = True
    except ImportError:
        _Base = object
        ESPNET_AVAILABLE = False

ESPNET_AVAILABLE: bool
"""Whether ``espnet`` is importable (then :class:`ESPnetLMScorer` is one of its ``BatchScorerInterface``)."""

_ESPNET_SPECIALS = frozenset({"<blank>", "<unk>", "<sos/eos>", "<sos>", "<eos>", "<pad>", "<mask>"})


def espnet_token_units(token_list: Sequence[str]) -> list[str | None]:
    """lmfusion token units of an ESPnet ``token_list`` (``<blank>``, ``<unk>``, ``<sos/eos>`` -> ``None``).

    Pieces keep sentencepiece's ``"▁"``; ESPnet's character lists use ``"<space>"`` between words, which
    becomes a lone ``"▁"`` (a word start).
    """
    out: list[str | None] = []
    for tok in token_list:
        if tok in _ESPNET_SPECIALS:
            out.append(None)
        elif tok == "<space>":
            out.append("▁")
        else:
            out.append(tok)
    return out


@dataclass(frozen=True)
class _State:
    """The lmfusion scorer's state after the first ``consumed`` hypothesis tokens (start symbols excluded)."""

    inner: Any
    consumed: int


class ESPnetLMScorer(_Base):
    """An lmfusion :class:`~fusion.scorers.Scorer` (LM, bonus) as an ESPnet full ``BatchScorerInterface``.

    Args:
        scorer: an lmfusion scorer over ESPnet's vocabulary (``vocab_size == len(token_list)``), e.g.
            ``lm_scorer(KenLM(path), espnet_token_units(token_list), eos_id)``; ESPnet's ``<sos/eos>`` id
            is its end-of-sentence id.
        n_primer: how many leading tokens of ``y`` are start symbols, not hypothesis tokens (1: ``<sos>``;
            a Whisper-style ``hyp_primer`` is longer).

    Use it as ``BeamSearch(scorers={"decoder": dec, "lm": ESPnetLMScorer(sc)}, weights={"decoder": 1.0,
    "lm": 0.5}, ...)``. Scores are natural-log float32 tensors on ``x``'s device.
    """

    def __init__(self, scorer: Scorer, *, n_primer: int = 1) -> None:
        if n_primer < 0:
            raise LMFusionError(f"n_primer must be >= 0, got {n_primer}")
        self.scorer = scorer
        self.n_primer = n_primer
        self._all_ids: np.ndarray = np.arange(scorer.vocab_size)[None, :]

    # -- ESPnet's interface -------------------------------------------------------------------
    def init_state(self, x: Any) -> _State:
        """The state of the empty hypothesis (``x``, the encoder output, is not used)."""
        return _State(self.scorer.init_state(), 0)

    def batch_init_state(self, x: Any) -> _State:
        return self.init_state(x)

    def select_state(self, state: Any, i: int, new_id: int | None = None) -> Any:
        """Row ``i`` of a batch of states (a single state is shared by its children, as in ESPnet)."""
        if isinstance(state, list):
            return state[i]
        return state

    def score(self, y: Any, state: _State, x: Any) -> tuple[Any, _State]:
        """Natural-log scores ``[V]`` of the token after ``y`` (``<sos>`` included), and the state after ``y``."""
        scores, states = self.batch_score(y[None, :], [state], None if x is None else x[None])
        return scores[0], states[0]

    def batch_score(self, ys: Any, states: Sequence[_State], xs: Any) -> tuple[Any, list[_State]]:
        """Scores ``[B, V]`` for a batch of hypotheses ``ys`` ``[B, L]`` and their states."""
        import torch

        rows = [[int(t) for t in row[self.n_primer:]] for row in ys.tolist()]
        caught_up = [self._catch_up(st, toks) for st, toks in zip(states, rows, strict=True)]
        inner = [st.inner for st in caught_up]
        cand = None if not self.scorer.is_partial else np.repeat(self._all_ids, len(rows), axis=0)
        sc, _ = self.scorer.score(rows, inner, cand)
        device = ys.device if xs is None else xs.device
        dtype = torch.float32 if xs is None or not torch.is_floating_point(xs) else xs.dtype
        return torch.as_tensor(sc, dtype=dtype, device=device), caught_up

    def final_score(self, state: Any) -> float:
        """0: ``<eos>`` was scored in full by :meth:`score` (see module docstring)."""
        return 0.0

    # -- helpers ------------------------------------------------------------------------------
    def _catch_up(self, state: _State, tokens: Sequence[int]) -> _State:
        """Extend ``state`` by the tokens of ``tokens`` it has not consumed yet (normally the last one)."""
        if len(tokens) < state.consumed:
            raise LMFusionError(f"hypothesis of {len(tokens)} tokens has a state of {state.consumed}: not its parent's")
        inner = state.inner
        for t in tokens[state.consumed:]:
            _, ctx = self.scorer.score([()], [inner], np.array([[t]]))
            inner = self.scorer.select_state(ctx, [0], [t])[0]
        return _State(inner, len(tokens))
