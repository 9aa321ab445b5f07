"""Contextual biasing: a context graph of hotwords over a decoder's units (as icefall's ``ContextGraph``).

A per-call list of words or phrases, each with a boost, is compiled to a trie over the decoder's unit ids
(characters, or BPE pieces through a tokenize function), made an Aho-Corasick automaton by failure links. A
hypothesis carries one graph *state* (an ``int``, hashable). Emitting a unit moves the state along the
automaton; the score delta is the new state's accumulated bonus minus the old one's:

* a unit that continues a phrase earns the phrase's boost;
* a unit that breaks it backs off to the longest suffix that is still a phrase prefix (the failure
  links), and the bonus of the abandoned part is **taken back** (the delta is negative);
* completing a phrase locks its bonus in (a later back-off takes back only what was earned after it);
* at the end of a hypothesis, :meth:`ContextGraph.final` takes back the bonus of an unfinished phrase.

So a hypothesis' total bonus is ``boost x units`` of the phrases it completes, and nothing else. Matching is
over unit sequences (a phrase also matches inside a longer word when its units do). Everything here is pure:
:class:`ContextGraph` is frozen after construction; :class:`HotwordScorer` is a
:class:`~fusion.scorers.Scorer` (component ``"hotwords"``, weighted like any other) for seq2seq beam search
and HF ``generate()``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.scorers import FullScorer, ScorerState

HOTWORDS = "hotwords"
"""The score component (and weight name) of contextual biasing."""

DEFAULT_BOOST = 1.0
"""Bonus per matched unit (natural log), before the component's weight."""

DENSE_LIMIT = 4_000_000
"""Largest ``states x units`` transition table kept dense."""

Hotwords = Sequence[str] | Mapping[str, float]
"""Phrases (each with :data:`DEFAULT_BOOST`), or ``phrase -> boost per unit``."""


class HotwordError(LMFusionError):
    """A hotword cannot be written in the decoder's units, or its boost is not a finite number."""


def normalize_hotwords(hotwords: Hotwords | None, boost: float = DEFAULT_BOOST) -> dict[str, float]:
    """``phrase -> boost`` from a list or mapping (phrases stripped, whitespace collapsed, empties dropped).

    Raises:
        HotwordError: a non-finite boost or a non-string phrase.
    """
    if hotwords is None:
        return {}
    items = hotwords.items() if isinstance(hotwords, Mapping) else ((h, boost) for h in hotwords)
    out: dict[str, float] = {}
    for phrase, b in items:
        if not isinstance(phrase, str):
            raise HotwordError(f"hotword {phrase!r} is not a string")
        if not math.isfinite(float(b)):
            raise HotwordError(f"hotword {phrase!r}: boost must be finite, got {b!r}")
        p = " ".join(phrase.split())
        if p:
            out[p] = float(b)
    return out


def label_tokenizer(labels: Sequence[str], word_delimiter: str | None = None) -> Callable[[str], list[int]]:
    """A tokenize function over a CTC-style label set.

    Character labels: one label per character, words joined by ``word_delimiter``. Sentencepiece labels
    (some start with ``"▁"``): greedy longest match of ``"▁" + word`` for each word.
    """
    index = {lab: i for i, lab in enumerate(labels) if lab}
    spm = word_delimiter is None and any(lab.startswith("▁") for lab in labels)
    longest = max((len(lab) for lab in index), default=1)

    def char_tok(phrase: str) -> list[int]:
        out: list[int] = []
        for wi, word in enumerate(phrase.split(" ")):
            if wi and word_delimiter is not None:
                out.append(index[word_delimiter])
            for ch in word:
                j = index.get(ch, index.get(ch.upper(), index.get(ch.lower())))  # labels may be upper case
                if j is None:
                    raise HotwordError(f"hotword {phrase!r}: character {ch!r} is not a label")
                out.append(j)
        return out

    def spm_tok(phrase: str) -> list[int]:
        out: list[int] = []
        for word in phrase.split(" "):
            s, i = "▁" + word, 0
            while i < len(s):
                for L in range(min(longest, len(s) - i), 0, -1):
                    j = index.get(s[i : i + L])
                    if j is not None:
                        out.append(j)
                        i += L
                        break
                else:
                    raise HotwordError(f"hotword {phrase!r}: {s[i:]!r} cannot be written with the labels")
        return out

    return spm_tok if spm else char_tok


class ContextGraph:
    """An Aho-Corasick automaton of hotword unit sequences with per-unit bonuses (immutable).

    Args:
        phrases: ``phrase -> boost per unit`` (see :func:`normalize_hotwords`).
        tokenize: phrase -> unit ids.
        num_units: the number of unit ids ``V`` (ids must be in ``[0, V)``).

    State 0 is the root (no phrase in progress). Attributes (read-only arrays): ``node_score[s]`` (the bonus
    accumulated along the path to ``s``), ``at_risk[s]`` (the part not locked by a completed phrase),
    ``is_end[s]``, ``parent[s]``.
    """

    def __init__(self, phrases: Mapping[str, float], tokenize: Callable[[str], Sequence[int]], num_units: int) -> None:
        self.num_units = int(num_units)
        children: list[dict[int, int]] = [{}]
        score = [0.0]
        end = [False]
        for phrase, boost in phrases.items():
            ids = [int(t) for t in tokenize(phrase)]
            if not ids:
                continue
            if min(ids) < 0 or max(ids) >= num_units:
                raise HotwordError(f"hotword {phrase!r}: unit ids {ids} outside [0, {num_units})")
            s = 0
            for t in ids:
                nxt = children[s].get(t)
                if nxt is None:
                    nxt = len(children)
                    children[s][t] = nxt
                    children.append({})
                    score.append(score[s] + boost)
                    end.append(False)
                else:  # a shared prefix keeps the larger boost
                    score[nxt] = max(score[nxt], score[s] + boost)
                s = nxt
            end[s] = True
        self.size = len(children)
        parent = np.full(self.size, -1, dtype=np.int64)
        lock = np.zeros(self.size)
        for s in range(self.size):  # children always have larger ids than their parent
            for c in children[s].values():
                parent[c] = s
                lock[c] = score[c] if end[c] else lock[s]
        self.node_score = np.asarray(score, dtype=np.float64)
        self.is_end = np.asarray(end, dtype=bool)
        self.parent = parent
        self.at_risk = self.node_score - lock
        for a in (self.node_score, self.is_end, self.parent, self.at_risk):
            a.setflags(write=False)
        self._moves, fail = self._goto(children)
        self._csr = self._flat(children, fail)
        steps = self.node_score[1:] - self.node_score[parent[1:]]
        self._max_gain = max(0.0, float(np.max(steps, initial=0.0)), float(self.node_score.max()))
        self._dense: np.ndarray | None = None
        if self.size * self.num_units <= DENSE_LIMIT:
            self._dense = self._dense_table()

    @staticmethod
    def _goto(children: list[dict[int, int]]) -> tuple[list[dict[int, int]], list[int]]:
        """Full goto function (children merged with the failure state's moves), BFS order; moves to the root
        are left out. Also the failure links."""
        fail = [0] * len(children)
        moves: list[dict[int, int]] = [dict() for _ in children]
        moves[0] = dict(children[0])
        queue = deque(children[0].values())
        while queue:
            s = queue.popleft()
            for t, c in children[s].items():
                f = fail[s]
                fail[c] = moves[f].get(t, 0) if s != 0 else 0
                queue.append(c)
            moves[s] = {**moves[fail[s]], **children[s]}
        return moves, fail

    def _flat(self, children: list[dict[int, int]], fail: list[int]) -> tuple[np.ndarray, ...]:
        """The graph as flat arrays (see :meth:`arrays`)."""
        counts = np.fromiter((len(c) for c in children), np.int64, len(children))
        ptr = np.zeros(len(children) + 1, np.int64)
        np.cumsum(counts, out=ptr[1:])
        lab = np.empty(int(ptr[-1]), np.int64)
        nxt = np.empty(int(ptr[-1]), np.int64)
        for s, c in enumerate(children):
            if c:
                keys = sorted(c)
                lab[ptr[s] : ptr[s + 1]] = keys
                nxt[ptr[s] : ptr[s + 1]] = [c[k] for k in keys]
        out = (ptr, lab, nxt, np.asarray(fail, np.int64), self.parent, self.node_score, self.at_risk)
        for a in out:
            a.setflags(write=False)
        return out

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The automaton as flat read-only arrays, for compiled searches:
        ``(ptr, labels, targets, fail, parent, node_score, at_risk)``.

        The children of state ``s`` are ``labels[ptr[s]:ptr[s + 1]]`` (sorted unit ids) leading to
        ``targets[...]``; a unit that is not a child moves as from ``fail[s]`` (the longest proper suffix that
        is a phrase prefix), and from the root to the root. The bonus delta of a move follows
        :meth:`step`: ``node_score[n] - node_score[s]`` when ``parent[n] == s``, else
        ``node_score[n] - at_risk[s]``; ``-at_risk[s]`` is :meth:`final`.
        """
        return self._csr

    def _dense_table(self) -> np.ndarray:
        tab = np.zeros((self.size, self.num_units), dtype=np.int32)
        for s, m in enumerate(self._moves):
            if m:
                tab[s, list(m.keys())] = list(m.values())
        tab.setflags(write=False)
        return tab

    def __len__(self) -> int:
        return self.size

    @property
    def max_gain(self) -> float:
        """The largest bonus one unit can add (an upper bound for pruning)."""
        return self._max_gain

    def step(self, state: int, unit: int) -> tuple[int, float]:
        """``(next state, bonus delta)`` after emitting ``unit`` in ``state``."""
        n = self._moves[state].get(unit, 0)
        return n, float(self._delta(np.int64(state), np.int64(n)))

    def _delta(self, s: Any, n: Any) -> Any:
        """Bonus delta of the move ``s -> n``: a phrase continued earns its boost; a back-off takes back the
        at-risk bonus of ``s`` (not yet locked by a completed phrase) and credits the suffix matched by ``n``."""
        ns = self.node_score
        return np.where(self.parent[n] == s, ns[n] - ns[s], ns[n] - self.at_risk[s])

    def step_many(self, states: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`step`: ``(next states, deltas)`` for arrays of states and units."""
        states = np.asarray(states, dtype=np.int64)
        units = np.asarray(units, dtype=np.int64)
        if self._dense is not None:
            n = self._dense[states, units].astype(np.int64)
        else:
            n = np.fromiter((self._moves[s].get(u, 0) for s, u in zip(states.tolist(), units.tolist(), strict=True)),
                            np.int64, len(states))
        return n, self._delta(states, n)

    def row(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """``(next states [V], deltas [V])`` for every unit from ``state``."""
        n = np.zeros(self.num_units, dtype=np.int64)
        m = self._moves[state]
        if m:
            n[list(m.keys())] = list(m.values())
        return n, self._delta(np.int64(state), n)

    def final(self, state: int) -> float:
        """Bonus delta at the end of a hypothesis: takes back an unfinished phrase's bonus."""
        return -float(self.at_risk[state])

    def score_units(self, units: Iterable[int], *, final: bool = True) -> float:
        """Total bonus of a unit sequence (the reference the searches must agree with)."""
        s, total = 0, 0.0
        for u in units:
            s, d = self.step(s, int(u))
            total += d
        return total + (self.final(s) if final else 0.0)


def build_context_graph(
    hotwords: Hotwords | None,
    tokenize: Callable[[str], Sequence[int]],
    num_units: int,
    boost: float = DEFAULT_BOOST,
) -> ContextGraph | None:
    """A :class:`ContextGraph` of the hotwords, or ``None`` when there are none."""
    phrases = normalize_hotwords(hotwords, boost)
    if not phrases:
        return None
    g = ContextGraph(phrases, tokenize, num_units)
    return g if g.size > 1 else None


class HotwordScorer(FullScorer):
    """Contextual biasing as a beam-search :class:`~fusion.scorers.Scorer` (component ``"hotwords"``).

    Args:
        graph: the context graph over the decoder's token ids.
        vocab_size: ``V`` of the decoder (``graph.num_units`` by default).
        eos_id: the end-of-sentence id: it takes back an unfinished phrase's bonus.
        name: the component's name.
    """

    def __init__(self, graph: ContextGraph, vocab_size: int | None = None, eos_id: int | None = None,
                 name: str = HOTWORDS) -> None:
        self.graph = graph
        self.vocab_size = int(vocab_size if vocab_size is not None else graph.num_units)
        if self.vocab_size < graph.num_units:
            raise HotwordError(f"vocab_size {self.vocab_size} < the graph's {graph.num_units} units")
        self.eos_id = eos_id
        self.name = name

    @classmethod
    def from_hotwords(cls, hotwords: Hotwords | None, tokenize: Callable[[str], Sequence[int]], vocab_size: int, *,
                      eos_id: int | None = None, boost: float = DEFAULT_BOOST, name: str = HOTWORDS) -> HotwordScorer:
        """The scorer of a hotword list over a model's token ids (``tokenize``: phrase -> ids, e.g. a Hugging
        Face tokenizer's ``lambda p: tok.encode(" " + p, add_special_tokens=False)``). An empty list gives a
        scorer that adds 0 everywhere, so the component (and its weight) stays valid for any list."""
        return cls(ContextGraph(normalize_hotwords(hotwords, boost), tokenize, vocab_size), vocab_size, eos_id, name)

    def init_state(self) -> ScorerState:
        return 0

    def _row(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        g = self.graph
        nxt, delta = g.row(state)
        if self.vocab_size > g.num_units:
            pad = self.vocab_size - g.num_units
            nxt = np.concatenate([nxt, np.zeros(pad, np.int64)])
            delta = np.concatenate([delta, np.full(pad, g.final(state))])
        if self.eos_id is not None:
            nxt[self.eos_id] = 0
            delta[self.eos_id] = g.final(state)
        return nxt, delta

    def score(self, hyps: Sequence[Sequence[int]], states: Sequence[ScorerState],
              candidates: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        rows = [self._row(int(s)) for s in states]  # type: ignore[call-overload]
        nxt = np.stack([r[0] for r in rows]) if rows else np.zeros((0, self.vocab_size), np.int64)
        delta = np.stack([r[1] for r in rows]) if rows else np.zeros((0, self.vocab_size))
        if candidates is not None:
            c = np.asarray(candidates, dtype=np.int64)
            return np.take_along_axis(delta, c, 1), (np.take_along_axis(nxt, c, 1), c)
        return delta, (nxt, None)

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        nxt, cand = ctx
        out: list[ScorerState] = []
        for r, t in zip(rows, tokens, strict=True):
            if cand is None:
                out.append(int(nxt[r, t]))
            else:
                out.append(int(nxt[r, int(np.flatnonzero(cand[r] == t)[0])]))
        return out

    def final_score(self, state: ScorerState) -> float:
        return self.graph.final(int(state))  # type: ignore[call-overload]
