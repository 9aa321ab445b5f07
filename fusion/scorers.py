"""Scorers for autoregressive beam search, in the shape of ESPnet's scorer interface.

A :class:`Scorer` scores the next decoder token for a batch of hypotheses:

* :meth:`Scorer.init_state` — the state of an empty hypothesis;
* :meth:`Scorer.score` ``(hyps, states, candidates=None)`` — natural-log scores ``[B, V]`` over the
  whole decoder vocabulary (a *full* scorer), or ``[B, K]`` over per-hypothesis candidate ids (a
  *partial* scorer, called only on the pre-beam top-k, e.g. 1.5 x beam: this keeps KenLM and
  word-level LMs cheap); it also returns a context for :meth:`Scorer.select_state`;
* :meth:`Scorer.select_state` ``(ctx, rows, tokens)`` — the states of hypotheses ``rows`` extended
  by ``tokens``, after the search reordered its beams (batched: one call per step);
* :meth:`Scorer.final_score` — a score added once when a hypothesis is closed without an
  end-of-sentence token (at the length limit): for an LM, ``ln P(</s> | state)``.

Scores of several scorers are combined with a plain weights dict, ``Σ_k w[k] * score_k``, the same
names as the n-best JSONL components ("am", "lm", "ngram", "nnlm", "tokens", "words", ...). A
negative weight is an ordinary subtraction: the density ratio ``+β log P_target − μ log P_source``
is two :class:`TokenLMScorer`/:class:`WordLMScorer` s, the second (named e.g. ``"source_lm"`` or
``"ilm"``) with weight ``−μ``.

Decoder token ids are mapped to LM units by ``token_units``: a list over the decoder vocabulary of
unit strings in sentencepiece convention (``"▁"`` starts a word), with ``None`` for ids the LM does not
score (padding, language tags, timestamps): those get score 0 and leave the LM state unchanged.
The end-of-sentence id gets ``ln P(</s> | state)``.

When the LM speaks the decoder's units (same sentencepiece model), :class:`TokenLMScorer` scores
tokens directly. When it does not (a word n-gram, or a neural LM over another tokenizer seen through
``fusion.units.WordLevelLM``), :class:`WordLMScorer` scores at word boundaries: a candidate that starts
a new word (or ends the sentence) closes the word in progress and gets ``ln P(word | history)``.

Slow references beside the fast paths: :class:`FullPrefixLMScorer` re-reads the whole prefix from
``begin()`` every step (what fairseq's ``--lm-weight`` and whisper-lm do) and must agree with the
cached scorers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from fusion.errors import LMFusionError, UnitMismatchError, WeightsError
from fusion.lm import LanguageModel, State
from fusion.profile import FusionProfile, resolve_weights

WORD_START = "▁"

ScorerState = Hashable


class Scorer(ABC):
    """Base of every beam-search scorer (see module docstring).

    Attributes:
        name: the score component's name (the key of its weight and of its n-best score).
        is_partial: ``True`` when the scorer only scores candidate ids (pre-beam top-k).
        vocab_size: the decoder vocabulary size ``V``.
    """

    name: str
    is_partial: bool = False
    vocab_size: int

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
    """A scorer that scores the whole vocabulary each step (cheap per token, e.g. a neural LM's softmax)."""

    is_partial = False


class PartialScorer(Scorer):
    """A scorer that scores only pre-beam candidates (``candidates`` must be given)."""

    is_partial = True


# ----------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------
def check_weights(weights: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """Validate a weights dict against the component names; missing scorers get weight 0.

    Raises:
        WeightsError: NaN/infinite weights, or weights naming no component.
    """
    out: dict[str, float] = {}
    for k, w in weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(float(w)):
            raise WeightsError(f"weight {k!r} must be a finite number, got {w!r}")
        if k not in names:
            raise WeightsError(f"weight {k!r} names no score component (have {sorted(names)})")
        out[k] = float(w)
    for n in names:
        out.setdefault(n, 0.0)
    return out


def per_utterance_weights(
    weights: Mapping[str, float] | FusionProfile | None,
    names: Sequence[str],
    n_utts: int,
    tags: Sequence[Mapping[str, Any] | None] | None = None,
) -> dict[str, np.ndarray]:
    """Validated weights of every utterance: ``{component: array [n_utts]}``.

    ``weights`` is one mapping for all utterances, or a :class:`~fusion.profile.FusionProfile` that picks
    each utterance's weights from its ``tags``. As in :func:`check_weights`, a missing scorer weight is 0;
    a missing ``"am"`` weight is 1.
    """
    if tags is not None and len(tags) != n_utts:
        raise LMFusionError(f"{len(tags)} tag sets for {n_utts} utterances")
    maps: list[Mapping[str, float]]
    if isinstance(weights, FusionProfile):
        maps = [resolve_weights(weights, None if tags is None else tags[u]) for u in range(n_utts)]
    else:
        maps = [weights if weights is not None else {"am": 1.0}] * n_utts
    out = {n: np.empty(n_utts, dtype=np.float64) for n in names}
    checked: dict[int, dict[str, float]] = {}
    for u, m in enumerate(maps):
        w = checked.get(id(m))
        if w is None:
            w = check_weights(m, names)
            if "am" not in m:
                w["am"] = 1.0
            checked[id(m)] = w
        for n in names:
            out[n][u] = w[n]
    return out


def weighted(w: np.ndarray | float, scores: np.ndarray) -> np.ndarray:
    """``w * scores`` where a zero weight contributes exactly 0 (even against ``-inf``)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.asarray(w) == 0.0, 0.0, np.asarray(w) * scores)


def combine_scores(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``Σ_k weights[k] * scores[k]`` over the components with nonzero weight (``0 * -inf`` is 0)."""
    total: np.ndarray | None = None
    for k, s in scores.items():
        w = weights.get(k, 0.0)
        if w == 0.0:
            continue
        term = w * s
        total = term if total is None else total + term
    if total is None:
        first = next(iter(scores.values()))
        return np.zeros_like(first, dtype=np.float64)
    return total


def check_finite_scores(name: str, scores: np.ndarray) -> None:
    """Raise when a scorer returned NaN (``-inf`` is allowed: an impossible token)."""
    if np.isnan(scores).any():
        raise LMFusionError(f"scorer {name!r} returned NaN scores")


def _check_token_units(token_units: Sequence[str | None], eos_id: int) -> None:
    if not 0 <= eos_id < len(token_units):
        raise LMFusionError(f"eos_id {eos_id} outside the decoder vocabulary of size {len(token_units)}")


# ----------------------------------------------------------------------------------------------
# Token-level LM scorer
# ----------------------------------------------------------------------------------------------
class _LMScorer(Scorer):
    """What the scorers wrapping a LanguageModel over decoder ids share: checking and binding the LM."""

    lm: LanguageModel
    token_units: list[str | None]
    eos_id: int

    def _bind(
        self, lm: LanguageModel, token_units: Sequence[str | None], eos_id: int, name: str | None,
        kind: str, mismatch: str,
    ) -> None:
        """Check the decoder units and the LM's unit kind (``mismatch`` is the error), then bind them."""
        _check_token_units(token_units, eos_id)
        if lm.units.kind != kind:
            raise UnitMismatchError(mismatch)
        self.lm = lm
        self.name = name or lm.name
        self.token_units = list(token_units)
        self.vocab_size = len(self.token_units)
        self.eos_id = eos_id


class TokenLMScorer(_LMScorer):
    """An LM over the decoder's own tokens as a scorer (shallow fusion, density ratio, ILM subtraction).

    Args:
        lm: a token-unit LanguageModel (e.g. ``fusion.neural.NeuralLM`` over the decoder's
            sentencepiece model, or a token-level KenLM).
        token_units: the LM unit of each decoder id (``None``: not scored), see module docstring.
        eos_id: the decoder's end-of-sentence id.
        name: the score component's name (default: ``lm.name``).
        partial: score only candidates (default: full when the LM offers ``logprobs_all``, else partial).
        tokenizer_identity: the decoder tokenizer's identity; when given it must equal the LM's.
        allow_oov: accept decoder units outside the LM's vocabulary (they score as the LM's ``<unk>``).

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
    ) -> None:
        self._bind(
            lm, token_units, eos_id, name, "token",
            f"LM {lm.name!r} predicts {lm.units}; the decoder predicts tokens: use WordLMScorer (word boundaries)",
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
        has_full = hasattr(lm, "logprobs_all") and hasattr(lm, "piece_to_id")
        self.is_partial = (not has_full) if partial is None else bool(partial)
        if not self.is_partial and not has_full:
            raise LMFusionError(f"LM {lm.name!r} has no logprobs_all(); use it as a partial scorer")
        self._extend = getattr(lm, "extend", None)
        if has_full:
            p2i: Mapping[str, int] = lm.piece_to_id  # type: ignore[attr-defined]
            self._lm_cols = np.array(
                [p2i.get(u, 0) if self.mapped[i] and u is not None else 0 for i, u in enumerate(self.token_units)]
            )

    def init_state(self) -> ScorerState:
        return self.lm.begin()

    def _full(self, states: Sequence[State]) -> np.ndarray:
        lp = self.lm.logprobs_all(states)  # type: ignore[attr-defined]
        out = np.zeros((len(states), self.vocab_size), dtype=np.float64)
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
        b_idx, k_idx = np.nonzero(np.ones_like(cand, dtype=bool))
        out = np.zeros(cand.shape, dtype=np.float64)
        nxt: dict[tuple[int, int], State] = {}
        pair_states, pair_units, pair_pos, eos_pos = [], [], [], []
        for b, k in zip(b_idx.tolist(), k_idx.tolist(), strict=True):
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
            if t == self.eos_id or not self.mapped[t]:
                out[i] = states[r]
            elif (r, t) in nxt:
                out[i] = nxt[(r, t)]
            elif self._extend is not None:
                out[i] = self._extend(states[r], [self.token_units[t]])
            else:
                todo_i.append(i)
                todo_s.append(states[r])
                todo_u.append(self.token_units[t])
        if todo_i:
            _, ns = self.lm.score_pairs(todo_s, todo_u)  # type: ignore[arg-type]
            for i, s in zip(todo_i, ns, strict=True):
                out[i] = s
        return out

    def final_score(self, state: ScorerState) -> float:
        return float(self.lm.end(state))


# ----------------------------------------------------------------------------------------------
# Word-boundary LM scorer (vocabulary bridging)
# ----------------------------------------------------------------------------------------------
def split_unit(unit: str) -> tuple[bool, str]:
    """``(starts_word, text)`` of a sentencepiece-convention unit: ``"▁the"`` -> ``(True, "the")``."""
    if unit.startswith(WORD_START):
        return True, unit.lstrip(WORD_START)
    return False, unit


class WordLMScorer(_LMScorer):
    """A word-unit LM fused into a subword/character decoder, scored when a word closes.

    The state is ``(lm_state, word_in_progress)``. A candidate that starts a new word (its unit begins
    with ``"▁"``) or ends the sentence closes the word in progress and scores ``ln P(word | lm_state)``
    (plus ``ln P(</s> | ...)`` for end-of-sentence); any other candidate scores 0. All closing
    candidates of one hypothesis share the same score, so the full-vocabulary version costs one LM
    call per hypothesis; ``partial=True`` scores only pre-beam candidates (the same numbers there).

    Args:
        lm: a word-unit LanguageModel (KenLM, ``fusion.units.WordLevelLM(subword_lm)``, a mixture ...).
        token_units: decoder id -> unit string (``"▁"`` starts a word; ``None``: not scored).
        eos_id: the decoder's end-of-sentence id.
        name: component name (default ``lm.name``).
        partial: only score candidates (default False).
    """

    def __init__(
        self,
        lm: LanguageModel,
        token_units: Sequence[str | None],
        eos_id: int,
        *,
        name: str | None = None,
        partial: bool = False,
    ) -> None:
        self._bind(
            lm, token_units, eos_id, name, "word",
            f"WordLMScorer needs a word-unit LM; {lm.name!r} predicts {lm.units} "
            "(wrap a subword LM in fusion.units.WordLevelLM, or use TokenLMScorer with the same tokenizer)",
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

    def init_state(self) -> ScorerState:
        return (self.lm.begin(), "")

    def _close(self, states: Sequence[ScorerState]) -> tuple[np.ndarray, np.ndarray, list[State]]:
        """Per hypothesis: (score of closing its word, ln P(</s>) after it, LM state after it)."""
        close = np.zeros(len(states), dtype=np.float64)
        after: list[State] = [s[0] for s in states]  # type: ignore[index]
        idx = [i for i, s in enumerate(states) if s[1]]  # type: ignore[index]
        if idx:
            lp, ns = self.lm.score_pairs([states[i][0] for i in idx], [states[i][1] for i in idx])  # type: ignore[index]
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
        full = np.where(self.starts[None, :], close[:, None], 0.0)
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


# ----------------------------------------------------------------------------------------------
# Bonuses
# ----------------------------------------------------------------------------------------------
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


class WordBonus(LengthBonus):
    """+1 for every token that starts a word (component ``"words"``): a word-insertion bonus."""

    def __init__(self, token_units: Sequence[str | None], eos_id: int, name: str = "words") -> None:
        super().__init__(len(token_units), eos_id, name)
        self._row = np.array(
            [1.0 if (u is not None and i != eos_id and u.startswith(WORD_START)) else 0.0
             for i, u in enumerate(token_units)]
        )


# ----------------------------------------------------------------------------------------------
# The slow reference: re-read the whole prefix every step
# ----------------------------------------------------------------------------------------------
class FullPrefixLMScorer(FullScorer):
    """Re-scores every hypothesis from ``lm.begin()`` over its whole prefix each step (no state kept).

    This is what fairseq's ``--lm-weight`` and whisper-lm's LogitsProcessor do; it is the obviously
    correct reference the cached :class:`TokenLMScorer` / :class:`WordLMScorer` are tested against,
    and the anchor of the fusion-overhead benchmark. ``mode`` is ``"token"`` or ``"word"``.
    For a neural LM (``lm.model`` with ``lm.bos_id``) ``reread_forward=True`` runs one uncached forward
    pass over ``<s> + prefix`` per hypothesis batch instead of walking the LM's (cached) states.
    """

    def __init__(
        self,
        lm: LanguageModel,
        token_units: Sequence[str | None],
        eos_id: int,
        *,
        mode: str = "token",
        name: str | None = None,
        reread_forward: bool = False,
    ) -> None:
        _check_token_units(token_units, eos_id)
        if mode not in ("token", "word"):
            raise ValueError(f"mode must be 'token' or 'word', got {mode!r}")
        self.inner: TokenLMScorer | WordLMScorer
        if mode == "token":
            self.inner = TokenLMScorer(lm, token_units, eos_id, partial=True, allow_oov=True)
        else:
            self.inner = WordLMScorer(lm, token_units, eos_id)
        self.lm = lm
        self.mode = mode
        self.name = name or lm.name
        self.token_units = list(token_units)
        self.vocab_size = len(self.token_units)
        self.eos_id = eos_id
        self.reread_forward = reread_forward
        if reread_forward and not (mode == "token" and hasattr(lm, "model") and hasattr(lm, "piece_to_id")):
            raise LMFusionError("reread_forward needs a token-level neural LM (with .model and .piece_to_id)")

    def init_state(self) -> ScorerState:
        return None

    def _state_of(self, hyp: Sequence[int]) -> ScorerState:
        st = self.inner.init_state()
        for t in hyp:
            _, ctx = self.inner.score([()], [st], np.array([[int(t)]]))
            st = self.inner.select_state(ctx, [0], [int(t)])[0]
        return st

    def _forward_full(self, hyps: Sequence[Sequence[int]]) -> np.ndarray:
        import torch

        lm: Any = self.lm
        inner = self.inner
        assert isinstance(inner, TokenLMScorer)
        seqs = [[lm.bos_id] + [int(inner._lm_cols[t]) for t in h if inner.mapped[t]] for h in hyps]
        n = max(map(len, seqs))
        ids = torch.full((len(seqs), n), lm.bos_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        with torch.inference_mode():
            logits = lm.model(ids)
            last = logits[torch.arange(len(seqs)), torch.tensor([len(s) - 1 for s in seqs])]
            lp = torch.log_softmax(last.float(), dim=-1).double().numpy()
        out = np.zeros((len(hyps), self.vocab_size), dtype=np.float64)
        out[:, inner.mapped] = lp[:, inner._lm_cols[inner.mapped]]
        out[:, self.eos_id] = lp[:, lm.eos_id]
        return out

    def score(
        self, hyps: Sequence[Sequence[int]], states: Sequence[ScorerState], candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, Any]:
        if self.reread_forward:
            full = self._forward_full(hyps)
        else:
            full = np.zeros((len(hyps), self.vocab_size), dtype=np.float64)
            all_ids = np.arange(self.vocab_size)[None, :]
            for b, h in enumerate(hyps):
                st = self._state_of(h)
                if self.mode == "token":
                    cand = all_ids if candidates is None else np.asarray(candidates)[b : b + 1]
                    row, _ = self.inner.score([h], [st], cand)
                    if candidates is None:
                        full[b] = row[0]
                    else:
                        full[b, cand[0]] = row[0]
                else:
                    row, _ = self.inner.score([h], [st], None)
                    full[b] = row[0]
        out = full if candidates is None else np.take_along_axis(full, np.asarray(candidates), axis=1)
        return out, None

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        return [None] * len(rows)


# ----------------------------------------------------------------------------------------------
# Factory
# ----------------------------------------------------------------------------------------------
def lm_scorer(
    lm: LanguageModel,
    token_units: Sequence[str | None],
    eos_id: int,
    *,
    name: str | None = None,
    partial: bool | None = None,
    tokenizer_identity: str | None = None,
) -> Scorer:
    """Turn any LanguageModel into a scorer: token-level when it speaks tokens, word-boundary when it speaks words.

    Word-unit LMs (KenLM over words, ``WordLevelLM``) become a :class:`WordLMScorer`; token-unit LMs a
    :class:`TokenLMScorer` (which checks the tokenizer and the vocabulary). For a density ratio or ILM
    subtraction build the source-domain LM's scorer with ``name="source_lm"``/``"ilm"`` and give it a
    negative weight.
    """
    if lm.units.kind == "word":
        return WordLMScorer(lm, token_units, eos_id, name=name, partial=bool(partial))
    return TokenLMScorer(lm, token_units, eos_id, name=name, partial=partial, tokenizer_identity=tokenizer_identity)


def units_from_pieces(
    pieces: Sequence[str], *, specials: Sequence[int] = (), byte_bpe: bool = False
) -> list[str | None]:
    """Decoder ``token_units`` from a tokenizer's piece strings.

    Args:
        pieces: piece string of each id (sentencepiece ``"▁the"``, or GPT-2/Whisper byte-BPE ``"Ġthe"``).
        specials: ids the LM must not score (pad, eos, language/task/timestamp tokens) -> ``None``.
        byte_bpe: convert the byte-level BPE word marker ``"Ġ"`` to ``"▁"``.
    """
    skip = set(specials)
    out: list[str | None] = []
    for i, p in enumerate(pieces):
        if i in skip:
            out.append(None)
        elif byte_bpe:
            out.append(WORD_START + p[1:] if p.startswith("Ġ") else p)
        else:
            out.append(p)
    return out
