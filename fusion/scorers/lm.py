"""Language models as scorers over a decoder's tokens: token-level and word-boundary fusion.

Decoder token ids are mapped to LM units by ``token_units`` (see :mod:`fusion.token_units`): a unit
string in sentencepiece convention, or ``None`` for ids the LM cannot see (padding, language tags,
timestamps). The end-of-sentence id gets ``ln P(</s> | state)``. An id the LM cannot see leaves the LM
state unchanged and scores ``unscored``: by default ``"uniform"``, ``-ln(|vocabulary| + 1)``, the
probability an LM that knows nothing about the token would give it (the uniform distribution over its
units and ``</s>``; over :data:`OPEN_VOCABULARY` units for an LM that cannot list them, e.g. a word view
of a subword LM). A score of 0 would make such tokens free — Whisper then emits timestamp after
timestamp, as every real word costs LM log-probability — and ``-inf`` would forbid them; pass a number to
choose another price.

When the LM speaks the decoder's units (same sentencepiece model), :class:`TokenLMScorer` scores tokens
directly. When it does not (a word n-gram, or a neural LM over another tokenizer seen through
``fusion.units.WordLevelLM``), :class:`WordLMScorer` scores at word boundaries: a candidate that starts a
new word (or ends the sentence) closes the word in progress and gets ``ln P(word | history)``.

A negative weight is an ordinary subtraction: the density ratio ``+β log P_target − μ log P_source`` is
two scorers, the second named e.g. ``"source_lm"`` or ``"ilm"`` with weight ``−μ``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fusion.abilities import FullDistribution
from fusion.errors import LMFusionError, UnitMismatchError
from fusion.lm import LanguageModel, State
from fusion.scorers.base import Scorer, ScorerState, check_token_units
from fusion.token_units import split_unit, word_text

__all__ = ["TokenLMScorer", "UnscoredPrice", "WordLMScorer", "lm_scorer"]

OPEN_VOCABULARY = 2**16
"""The vocabulary size the ``"uniform"`` price assumes for an LM that cannot list its units (open vocabulary)."""

UnscoredPrice = float | str
"""The score of a decoder id the LM cannot see: a natural-log number, or ``"uniform"``."""


@runtime_checkable
class _IndexedDistribution(FullDistribution, Protocol):
    """A full distribution whose columns are named by ``piece_to_id`` (neural and HF LMs)."""

    piece_to_id: Mapping[str, int]


@runtime_checkable
class _Extendable(Protocol):
    """An LM that extends a state by units without scoring them (a neural LM's cached forward)."""

    def extend(self, state: State, units: Sequence[str]) -> State: ...


class _LMScorer(Scorer):
    """What the scorers wrapping a LanguageModel over decoder ids share: checking and binding the LM."""

    lm: LanguageModel
    token_units: list[str | None]
    eos_id: int
    unscored: float

    def _bind(
        self, lm: LanguageModel, token_units: Sequence[str | None], eos_id: int, name: str | None,
        kind: str, mismatch: str, unscored: UnscoredPrice,
    ) -> None:
        """Check the decoder units and the LM's unit kind (``mismatch`` is the error), then bind them."""
        check_token_units(token_units, eos_id)
        if lm.units.kind != kind:
            raise UnitMismatchError(mismatch)
        self.lm = lm
        self.name = name or lm.name
        self.token_units = list(token_units)
        self.vocab_size = len(self.token_units)
        self.eos_id = eos_id
        self.unseen = np.array([u is None and i != eos_id for i, u in enumerate(self.token_units)])
        self.unscored = self._price(unscored)

    def _price(self, unscored: UnscoredPrice) -> float:
        if not isinstance(unscored, str):
            if math.isnan(float(unscored)):
                raise LMFusionError(f"scorer {self.name!r}: unscored must be a number, got NaN")
            return float(unscored)
        if unscored != "uniform":
            raise LMFusionError(f"scorer {self.name!r}: unscored must be a number or 'uniform', got {unscored!r}")
        if not self.unseen.any():
            return 0.0
        vocab = self.lm.vocab
        return -math.log(OPEN_VOCABULARY if vocab is None else len(vocab) + 1)

    def with_lm(self, lm: LanguageModel) -> _LMScorer:
        """The same scorer over another LM with the same units and states (e.g. a mixture with other λ)."""
        out = copy.copy(self)
        out.lm = lm
        return out


class TokenLMScorer(_LMScorer):
    """An LM over the decoder's own tokens as a scorer (shallow fusion, density ratio, ILM subtraction).

    Args:
        lm: a token-unit LanguageModel (e.g. ``fusion.neural.NeuralLM`` over the decoder's
            sentencepiece model, or a token-level KenLM).
        token_units: the LM unit of each decoder id (``None``: the LM cannot see it).
        eos_id: the decoder's end-of-sentence id.
        name: the score component's name (default: ``lm.name``).
        partial: score only candidates (default: full when the LM gives full distributions, else partial).
        tokenizer_identity: the decoder tokenizer's identity; when given it must equal the LM's.
        allow_oov: accept decoder units outside the LM's vocabulary (they score as the LM's ``<unk>``).
        unscored: the score of ids the LM cannot see (see module docstring).

    Raises:
        UnitMismatchError: a word-unit LM, another tokenizer, or decoder units the LM cannot encode.
    """

    def __init__(
        self,
        lm: LanguageModel,
        token_units: Sequence[str | None],
        eos_id: int,
        *,
        name: str | None = None,
        partial: bool | None = None,
        tokenizer_identity: str | None = None,
        allow_oov: bool = False,
        unscored: UnscoredPrice = "uniform",
    ) -> None:
        self._bind(
            lm, token_units, eos_id, name, "token",
            f"LM {lm.name!r} predicts {lm.units}; the decoder predicts tokens: use WordLMScorer (word boundaries)",
            unscored,
        )
        if tokenizer_identity is not None and lm.units.tokenizer != tokenizer_identity:
            raise UnitMismatchError(
                f"LM {lm.name!r} uses tokenizer {lm.units.tokenizer}, the decoder {tokenizer_identity}: "
                "score at word boundaries (WordLMScorer over fusion.units.WordLevelLM) instead"
            )
        self.mapped = np.array([u is not None and i != eos_id for i, u in enumerate(self.token_units)])
        vocab = lm.vocab
        if vocab is not None and not allow_oov:
            bad = [u for i, u in enumerate(self.token_units) if self.mapped[i] and u not in vocab]
            if bad:
                raise UnitMismatchError(
                    f"LM {lm.name!r} cannot encode {len(bad)} of the decoder's units (e.g. {bad[:5]}); "
                    "use the LM's own tokenizer, WordLMScorer, or allow_oov=True"
                )
        has_full = isinstance(lm, _IndexedDistribution)
        self.is_partial = (not has_full) if partial is None else bool(partial)
        if not self.is_partial and not has_full:
            raise LMFusionError(f"LM {lm.name!r} gives no full distribution (logprobs_all); use it as a partial scorer")
        if isinstance(lm, _IndexedDistribution):
            p2i = lm.piece_to_id
            self._lm_cols = np.array(
                [p2i.get(u, 0) if self.mapped[i] and u is not None else 0 for i, u in enumerate(self.token_units)]
            )

    def init_state(self) -> ScorerState:
        return self.lm.begin()

    def _full(self, states: Sequence[State]) -> np.ndarray:
        assert isinstance(self.lm, _IndexedDistribution)
        lp = self.lm.logprobs_all(states)
        out = np.full((len(states), self.vocab_size), self.unscored, dtype=np.float64)
        out[:, self.mapped] = lp[:, self._lm_cols[self.mapped]]
        out[:, self.eos_id] = self.lm.end_batch(states)
        return out

    def score(
        self,
        hyps: Sequence[Sequence[int]],
        states: Sequence[ScorerState],
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        if candidates is None:
            if self.is_partial:
                raise LMFusionError(f"partial scorer {self.name!r} needs candidates")
            return self._full(states), {"states": list(states), "next": {}}
        cand = np.asarray(candidates)
        if not self.is_partial:
            return np.take_along_axis(self._full(states), cand, axis=1), {"states": list(states), "next": {}}
        out = np.where(self.unseen[cand], self.unscored, 0.0)
        nxt: dict[tuple[int, int], State] = {}
        pair_states, pair_units, pair_pos, eos_pos = [], [], [], []
        for b, k in np.ndindex(*cand.shape):
            t = int(cand[b, k])
            if t == self.eos_id:
                eos_pos.append((b, k))
            elif self.mapped[t]:
                pair_states.append(states[b])
                pair_units.append(self.token_units[t])
                pair_pos.append((b, k))
        if pair_states:
            lp, ns = self.lm.score_pairs(pair_states, pair_units)  # type: ignore[arg-type]
            for (b, k), v, s in zip(pair_pos, lp, ns, strict=True):
                out[b, k] = v
                nxt[(b, int(cand[b, k]))] = s
        if eos_pos:
            ends = self.lm.end_batch([states[b] for b, _ in eos_pos])
            for (b, k), v in zip(eos_pos, ends, strict=True):
                out[b, k] = v
        return out, {"states": list(states), "next": nxt}

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        states: list[State] = ctx["states"]
        nxt: dict[tuple[int, int], State] = ctx["next"]
        out: list[ScorerState] = [None] * len(rows)
        todo_i, todo_s, todo_u = [], [], []
        for i, (r, t) in enumerate(zip(rows, tokens, strict=True)):
            t = int(t)
            unit = self.token_units[t]
            if t == self.eos_id or not self.mapped[t] or unit is None:
                out[i] = states[r]
            elif (r, t) in nxt:
                out[i] = nxt[(r, t)]
            elif isinstance(self.lm, _Extendable):
                out[i] = self.lm.extend(states[r], [unit])
            else:
                todo_i.append(i)
                todo_s.append(states[r])
                todo_u.append(unit)
        if todo_i:
            _, ns = self.lm.score_pairs(todo_s, todo_u)
            for i, s in zip(todo_i, ns, strict=True):
                out[i] = s
        return out

    def final_score(self, state: ScorerState) -> float:
        return float(self.lm.end(state))


class WordLMScorer(_LMScorer):
    """A word-unit LM fused into a subword/character decoder, scored when a word closes.

    The state is ``(lm_state, word_in_progress)``. A candidate that starts a new word (its unit begins
    with ``"▁"``) or ends the sentence closes the word in progress and scores ``ln P(word | lm_state)``
    (plus ``ln P(</s> | ...)`` for end-of-sentence); other mapped candidates score 0. A word without text
    (a lone ``"▁"``) is no word (:mod:`fusion.token_units`). All closing candidates of one hypothesis
    share the same score, so the full-vocabulary version costs one LM call per hypothesis;
    ``partial=True`` scores only pre-beam candidates (the same numbers there).

    Args:
        lm: a word-unit LanguageModel (KenLM, ``fusion.units.WordLevelLM(subword_lm)``, a mixture ...).
        token_units: decoder id -> unit string (``"▁"`` starts a word; ``None``: the LM cannot see it).
        eos_id: the decoder's end-of-sentence id.
        name: component name (default ``lm.name``).
        partial: only score candidates (default False).
        unscored: the score of ids the LM cannot see (see module docstring).
    """

    def __init__(
        self,
        lm: LanguageModel,
        token_units: Sequence[str | None],
        eos_id: int,
        *,
        name: str | None = None,
        partial: bool = False,
        unscored: UnscoredPrice = "uniform",
    ) -> None:
        self._bind(
            lm, token_units, eos_id, name, "word",
            f"WordLMScorer needs a word-unit LM; {lm.name!r} predicts {lm.units} "
            "(wrap a subword LM in fusion.units.WordLevelLM, or use TokenLMScorer with the same tokenizer)",
            unscored,
        )
        self.is_partial = bool(partial)
        starts: list[bool] = []
        texts: list[str | None] = []
        for i, u in enumerate(self.token_units):
            if u is None or i == eos_id:
                starts.append(False)
                texts.append(None)
            else:
                s, t = split_unit(u)
                starts.append(s)
                texts.append(t)
        self.starts = np.array(starts, dtype=bool)
        self.texts: list[str | None] = texts
        # byte-level BPE pieces may hold half a character: only then do closed words need re-decoding
        self._bytes = any(t is not None and word_text(t) != t for t in texts)
        self._unseen_row = np.where(self.unseen, self.unscored, 0.0)

    def init_state(self) -> ScorerState:
        return (self.lm.begin(), "")

    def _close(self, states: Sequence[ScorerState]) -> tuple[np.ndarray, np.ndarray, list[State]]:
        """Per hypothesis: (score of closing its word, ln P(</s>) after it, LM state after it)."""
        close = np.zeros(len(states), dtype=np.float64)
        after: list[State] = [s[0] for s in states]  # type: ignore[index]
        idx = [i for i, s in enumerate(states) if s[1]]  # type: ignore[index]
        if idx:
            words = [states[i][1] for i in idx]  # type: ignore[index]
            if self._bytes:
                words = [word_text(w) for w in words]
            lp, ns = self.lm.score_pairs([states[i][0] for i in idx], words)  # type: ignore[index]
            close[idx] = lp
            for i, s in zip(idx, ns, strict=True):
                after[i] = s
        ends = self.lm.end_batch(after)
        return close, ends, after

    def score(
        self,
        hyps: Sequence[Sequence[int]],
        states: Sequence[ScorerState],
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        if candidates is None and self.is_partial:
            raise LMFusionError(f"partial scorer {self.name!r} needs candidates")
        close, ends, after = self._close(states)
        full = np.where(self.starts[None, :], close[:, None], self._unseen_row[None, :])
        full[:, self.eos_id] = close + ends
        out = full if candidates is None else np.take_along_axis(full, np.asarray(candidates), axis=1)
        return out, {"states": list(states), "after": after}

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        states = ctx["states"]
        after = ctx["after"]
        out: list[ScorerState] = []
        for r, t in zip(rows, tokens, strict=True):
            t = int(t)
            lm_state, word = states[r]
            text = self.texts[t]
            if text is None:
                out.append(states[r] if t != self.eos_id else (after[r], ""))
            elif self.starts[t]:
                out.append((after[r], text))
            else:
                out.append((lm_state, word + text))
        return out

    def final_score(self, state: ScorerState) -> float:
        close, ends, _ = self._close([state])
        return float(close[0] + ends[0])


def lm_scorer(
    lm: LanguageModel,
    token_units: Sequence[str | None],
    eos_id: int,
    *,
    name: str | None = None,
    partial: bool | None = None,
    tokenizer_identity: str | None = None,
    unscored: UnscoredPrice = "uniform",
) -> Scorer:
    """Turn any LanguageModel into a scorer: token-level when it speaks tokens, word-boundary when it speaks words.

    Word-unit LMs (KenLM over words, ``WordLevelLM``) become a :class:`WordLMScorer`; token-unit LMs a
    :class:`TokenLMScorer` (which checks the tokenizer and the vocabulary). For a density ratio or ILM
    subtraction build the source-domain LM's scorer with ``name="source_lm"``/``"ilm"`` and give it a
    negative weight.
    """
    if lm.units.kind == "word":
        return WordLMScorer(lm, token_units, eos_id, name=name, partial=bool(partial), unscored=unscored)
    return TokenLMScorer(
        lm, token_units, eos_id, name=name, partial=partial, tokenizer_identity=tokenizer_identity, unscored=unscored
    )
