"""Scorers for autoregressive beam search, in the shape of ESPnet's scorer interface.

* :mod:`fusion.scorers.base` — the :class:`Scorer` interface;
* :mod:`fusion.scorers.lm` — LMs as scorers (:class:`TokenLMScorer`, :class:`WordLMScorer`, :func:`lm_scorer`);
* :mod:`fusion.scorers.open_word` — :class:`OpenWordLMScorer` (word-boundary fusion, the open word charged at once);
* :mod:`fusion.scorers.open_word_full` — :class:`VocabOpenWordScorer` (the same, whole vocabulary);
* :mod:`fusion.scorers.bonus` — :class:`LengthBonus`, :class:`WordBonus`;
* :mod:`fusion.scorers.policy` — a weight policy's per-utterance interpolation λ (:func:`apply_interpolation`).

Weights are resolved and combined by :mod:`fusion.weights`; the slow full-prefix reference scorer lives
in :mod:`fusion.reference`; decoder token ids become LM units through :mod:`fusion.token_units`.
"""

from fusion.scorers.base import FullScorer, Scorer, ScorerState, check_token_units
from fusion.scorers.bonus import LengthBonus, WordBonus
from fusion.scorers.lm import TokenLMScorer, UnscoredPrice, WordLMScorer, lm_scorer
from fusion.scorers.open_word import OpenWordLMScorer
from fusion.scorers.open_word_full import VocabOpenWordScorer
from fusion.scorers.policy import GroupedScorer, apply_interpolation
from fusion.token_units import WORD_START, split_unit, units_from_pieces

__all__ = [
    "WORD_START",
    "FullScorer",
    "GroupedScorer",
    "LengthBonus",
    "OpenWordLMScorer",
    "Scorer",
    "ScorerState",
    "TokenLMScorer",
    "UnscoredPrice",
    "VocabOpenWordScorer",
    "WordBonus",
    "WordLMScorer",
    "apply_interpolation",
    "check_token_units",
    "lm_scorer",
    "split_unit",
    "units_from_pieces",
]
