"""Incremental, batched, cached scoring of token-level neural LMs (the shared base of torch and HF LMs).

A state is a small frozen value (:class:`NeuralState`: the token-id prefix with a precomputed hash). The
model's recurrent state (LSTM ``h, c``) or key/value cache for a prefix lives in an LM-side LRU cache
keyed by that prefix. Scoring candidates creates the next states lazily; they are materialised together
in **one** batched forward step the next time any of them is scored from. Extending a hypothesis by one
unit therefore costs one step, and scoring ``B`` states x ``K`` candidates costs at most one forward pass
over the ``B`` states. Evicted or never-seen prefixes are recomputed from their longest cached ancestor,
so results never depend on the cache.

:meth:`CachedIncrementalLM.score_sentences` is the plain full-sequence path (one padded forward over
whole sentences); tests check the incremental path (:func:`fusion.reference.score_unit_by_unit`)
against it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fusion.errors import LMFusionError
from fusion.lm import BatchFirstLM, SentenceScore, State
from fusion.tokenizers import WORD_START


# ----------------------------------------------------------------------------------------------
# States and the LM
# ----------------------------------------------------------------------------------------------
class NeuralState:
    """An immutable, hashable LM state: the token-id prefix (after ``<s>``), hash precomputed."""

    __slots__ = ("_hash", "ids")
    ids: tuple[int, ...]
    _hash: int

    def __init__(self, ids: tuple[int, ...]) -> None:
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_hash", hash(ids))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("NeuralState is immutable")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return isinstance(other, NeuralState) and self._hash == other._hash and self.ids == other.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"NeuralState(len={len(self.ids)}, tail={self.ids[-4:]})"


@dataclass(frozen=True)
class _Entry:
    logp: torch.Tensor  # [n_out] next-symbol log-probs after the prefix
    past: Any  # the model's past for the prefix (tensor, or model-specific)
    nbytes: int


class CachedIncrementalLM(BatchFirstLM):
    """Shared machinery of token-level neural LMs: prefix states, an LRU cache of pasts, batched steps.

    Subclasses set ``pieces`` (unit strings in id order), ``n_out``, ``eos_id``, ``bos_id``, ``unk_id``
    and implement :meth:`_empty_past`, :meth:`_advance` and :meth:`full_distributions`.
    """

    pieces: list[str]
    piece_to_id: dict[str, int]
    n_out: int
    eos_id: int
    bos_id: int
    unk_id: int | None
    special_ids: frozenset[int]

    def __init__(self, name: str, units: Any, *, cache_bytes: int, max_batch: int) -> None:
        super().__init__(name, units)
        self.cache_bytes = int(cache_bytes)
        self.max_batch = int(max_batch)
        self._cache: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._cached_bytes = 0
        self.forward_calls = 0
        """Number of model forward passes run (for tests and benchmarks)."""

    # -- model hooks -----------------------------------------------------------------------------
    def _empty_past(self) -> Any:
        raise NotImplementedError

    def _advance(self, pasts: Sequence[Any], ids: list[list[int]]) -> tuple[torch.Tensor, list[Any]]:
        """Feed equal-length ``ids`` rows after ``pasts``: ``(last-position log-probs [B, n_out], new pasts)``."""
        raise NotImplementedError

    def full_distributions(self, seqs: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per id sequence: next-symbol log-probs ``[len + 1, n_out]`` after ``<s>`` and each id, from scratch."""
        raise NotImplementedError

    def _full_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per sequence: ``ln P`` of each id then of end-of-sentence, one forward from scratch."""
        out = []
        for s, d in zip(seqs, self.full_distributions(seqs), strict=True):
            tgt = torch.as_tensor([*s, self.eos_id], dtype=torch.long, device=d.device)
            out.append(d.gather(1, tgt[:, None])[:, 0].double().cpu().numpy())
        return out

    # -- word boundaries (used by fusion.units.WordLevelLM) ----------------------------------------
    def word_start_ids(self) -> list[int]:
        """Ids of the pieces that begin a word (sentencepiece: a leading ``▁``; specials excluded)."""
        return [i for i, p in enumerate(self.pieces) if p.startswith(WORD_START) and i not in self.special_ids]

    def boundary_mask(self) -> torch.Tensor:
        """Bool ``[n_out]``: the symbols that may follow a complete word (word starts and end-of-sentence)."""
        m = getattr(self, "_boundary_mask", None)
        if m is None:
            m = torch.zeros(self.n_out, dtype=torch.bool)
            m[self.word_start_ids()] = True
            m[self.eos_id] = True
            self._boundary_mask = m
        return m

    def encode_word(self, word: str) -> list[str]:
        """The pieces of one whitespace-free word as it appears in running text."""
        return self.tokenize(word)

    def _past_nbytes(self, past: Any) -> int:
        if past is None:
            return 0
        n = getattr(past, "nbytes", None)
        if n is not None:
            return int(n)
        return sum(self._past_nbytes(p) for p in past)

    # -- unit mapping ----------------------------------------------------------------------------
    def unit_id(self, unit: str) -> int:
        """The id of a unit; unknown units map to ``<unk>`` (or raise when the model has none)."""
        i = self.piece_to_id.get(unit)
        if i is not None and i not in self.special_ids:
            return i
        if self.unk_id is None:
            raise LMFusionError(f"{self.name}: unit {unit!r} is not in the vocabulary and the model has no <unk>")
        return self.unk_id

    def is_oov(self, unit: str) -> bool:
        i = self.piece_to_id.get(unit)
        return i is None or i in self.special_ids

    @property
    def vocab(self) -> frozenset[str] | None:
        return frozenset(p for i, p in enumerate(self.pieces) if i not in self.special_ids)

    # -- cache -----------------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget every cached past (states stay valid: they are recomputed on demand)."""
        self._cache.clear()
        self._cached_bytes = 0

    @property
    def cache_info(self) -> dict[str, int]:
        return {"entries": len(self._cache), "bytes": self._cached_bytes, "forward_calls": self.forward_calls}

    def _put(self, key: tuple[int, ...], entry: _Entry) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= old.nbytes
        self._cache[key] = entry
        self._cached_bytes += entry.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, ev = self._cache.popitem(last=False)
            self._cached_bytes -= ev.nbytes

    def _make_entry(self, logp: torch.Tensor, past: Any) -> _Entry:
        return _Entry(logp, past, logp.numel() * logp.element_size() + self._past_nbytes(past))

    def _materialise(self, states: Sequence[State]) -> list[_Entry]:
        """Entries of ``states``; the missing ones whose parent is cached are computed in batched steps."""
        found: dict[tuple[int, ...], _Entry] = {}
        one_step: list[tuple[int, ...]] = []
        parents: list[_Entry] = []
        deep: list[tuple[int, ...]] = []
        for s in states:
            if not isinstance(s, NeuralState):
                raise LMFusionError(f"{self.name}: not a state of this LM: {s!r}")
            key = s.ids
            if key in found:
                continue
            e = self._cache.get(key)
            if e is not None:
                self._cache.move_to_end(key)
                found[key] = e
            elif key and key[:-1] in self._cache:
                found[key] = None  # type: ignore[assignment]
                one_step.append(key)
                parents.append(self._cache[key[:-1]])  # held now: later insertions may evict it
            else:
                found[key] = None  # type: ignore[assignment]
                deep.append(key)
        for key in deep:  # rare: begin(), or a prefix whose ancestors were evicted
            anc = None
            for cut in range(len(key) - 1, -1, -1):
                anc = self._cache.get(key[:cut])
                if anc is not None:
                    break
            if anc is None:
                cut = 0
                logp, pasts = self._advance([self._empty_past()], [[self.bos_id]])
                self.forward_calls += 1
                anc = self._make_entry(logp[0], pasts[0])
                self._put((), anc)
            if cut < len(key):
                logp, pasts = self._advance([anc.past], [list(key[cut:])])
                self.forward_calls += 1
                ent = self._make_entry(logp[0], pasts[0])
                self._put(key, ent)
            else:
                ent = anc
            found[key] = ent
        for lo in range(0, len(one_step), self.max_batch):
            keys = one_step[lo : lo + self.max_batch]
            logp, pasts = self._advance([p.past for p in parents[lo : lo + self.max_batch]], [[k[-1]] for k in keys])
            self.forward_calls += 1
            for i, k in enumerate(keys):
                ent = self._make_entry(logp[i], pasts[i])
                self._put(k, ent)
                found[k] = ent
        return [found[s.ids] for s in states]  # type: ignore[attr-defined]

    # -- protocol --------------------------------------------------------------------------------
    def begin(self) -> State:
        return NeuralState(())

    def extend_ids(self, state: State, ids: Sequence[int]) -> NeuralState:
        """The state after the symbol ids ``ids`` (no scoring; materialised lazily)."""
        if not isinstance(state, NeuralState):
            raise LMFusionError(f"{self.name}: not a state of this LM: {state!r}")
        return NeuralState(state.ids + tuple(ids))

    def extend(self, state: State, units: Iterable[str]) -> State:
        """The state after ``units`` (no scoring; materialised lazily)."""
        assert isinstance(state, NeuralState)
        return NeuralState(state.ids + tuple(self.unit_id(u) for u in units))

    def logprobs_tensor(self, states: Sequence[State]) -> torch.Tensor:
        """Next-symbol log-probs ``[B, n_out]`` on the model's device (columns: ids, incl. end-of-sentence)."""
        with torch.inference_mode():
            ents = self._materialise(states)
            return torch.stack([e.logp for e in ents])

    def logprobs_all(self, states: Sequence[State]) -> np.ndarray:
        """Next-token log-probs ``[B, V]`` over the whole tokenizer vocabulary in id order (float64).

        End-of-sentence is :meth:`end_batch` (it is a column here only when the tokenizer has an eos piece).
        """
        return self.logprobs_tensor(states)[:, : len(self.pieces)].double().cpu().numpy()

    def score_batch(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]:
        ids = [self.unit_id(c) for c in candidates]
        if not states:
            return np.zeros((0, len(candidates))), []
        lp = self.logprobs_tensor(states)
        idx = torch.as_tensor(ids, dtype=torch.long, device=lp.device)
        out = lp.index_select(1, idx).double().cpu().numpy()
        nxt = [[NeuralState((*s.ids, i)) for i in ids] for s in states]  # type: ignore[attr-defined]
        return out, nxt  # type: ignore[return-value]

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> tuple[np.ndarray, list[State]]:
        if len(states) != len(units):
            raise ValueError(f"score_pairs: {len(states)} states but {len(units)} units")
        ids = [self.unit_id(u) for u in units]
        if not states:
            return np.zeros(0), []
        lp = self.logprobs_tensor(states)
        idx = torch.as_tensor(ids, dtype=torch.long, device=lp.device)
        out = lp.gather(1, idx[:, None])[:, 0].double().cpu().numpy()
        return out, [NeuralState((*s.ids, i)) for s, i in zip(states, ids, strict=True)]  # type: ignore[attr-defined]

    def end_batch(self, states: Sequence[State]) -> np.ndarray:
        if not states:
            return np.zeros(0)
        return self.logprobs_tensor(states)[:, self.eos_id].double().cpu().numpy()

    def score_sentences(self, sentences: Iterable[Sequence[str]], *, eos: bool = True,
                        max_tokens: int = 4096) -> list[SentenceScore]:
        """Score whole sentences with padded full-sequence forwards (sorted by length, batched)."""
        sents = [list(s) for s in sentences]
        seqs = [[self.unit_id(u) for u in s] for s in sents]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        res: list[np.ndarray | None] = [None] * len(seqs)
        batch: list[int] = []
        with torch.inference_mode():
            for j, i in enumerate(order):
                batch.append(i)
                t = len(seqs[i]) + 1
                if j + 1 == len(order) or (len(batch) + 1) * (len(seqs[order[j + 1]]) + 1) > max(max_tokens, t):
                    for bi, blp in zip(batch, self._full_logprobs([seqs[b] for b in batch]), strict=True):
                        res[bi] = blp
                    batch = []
        out = []
        for s, lp in zip(sents, res, strict=True):
            assert lp is not None
            oov = tuple(self.is_oov(u) for u in s)
            self.oov_seen += sum(oov)
            out.append(SentenceScore(tuple(s), lp if eos else lp[:-1], oov))
        return out

    def score_sentence(self, units: Sequence[str], *, eos: bool = True) -> SentenceScore:
        return self.score_sentences([units], eos=eos)[0]
