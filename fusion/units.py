"""Views that bridge units across tokenizers.

* :class:`WordLevelLM`: a word-level view of a subword LM (sentencepiece pieces, ``▁`` starting a word),
  so a word KenLM and a subword neural LM can be linearly interpolated per word with EM weights.
* :class:`fusion.reference.SlowWordLevelLM` (in the references' module): the same view over *any*
  token-level :class:`~fusion.lm.LanguageModel` that can list its vocabulary (e.g. a KenLM over pieces),
  built only from ``score``/``score_batch``/``end``; :func:`word_view` uses it for such LMs.
* :class:`TokenLevelLM`: a token-level LM seen through a decoder's token list (same pieces, the
  decoder's id order), for full-vocabulary scorers.

The word probability. A word ``w`` with pieces ``p_1 .. p_n`` after history ``h`` (a state at a word
boundary) gets

    ln P(w | h) = Σ_i ln P(p_i | h, p_<i) + ln B(h, w) − ln B(h)

where ``B(s)`` is the mass the subword LM gives, in state ``s``, to the symbols that may follow a complete
word: pieces that start a new word plus end-of-sentence. ``B(h, w)`` is the end-of-word factor (without it
"the" would also collect the mass of "they", "then", ...); dividing by ``B(h)`` conditions on a word
starting at ``h`` (mass the LM puts on continuation pieces at a boundary is not a word). Then
``ln P(</s> | h) = ln P_sub(</s> | h) − ln B(h)``, the sum over any closed word list plus ``</s>`` is at most
one, and a sentence's word-level log-probability telescopes to the subword LM's sentence log-probability
minus ``ln B(<s>)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from fusion.errors import LMFusionError, UnitMismatchError
from fusion.incremental import CachedIncrementalLM, NeuralState
from fusion.lm import BatchFirstLM, LanguageModel, SentenceScore, State, Units, check_word_unit, require_token_lm


class WordLevelLM(BatchFirstLM):
    """Word-level view of a subword neural LM (see the module docstring for the probability).

    States are the subword LM's states at word boundaries. ``score_batch`` over ``B`` states x ``K``
    words runs one batched forward per piece depth (``1 + max pieces per word``), never ``B * K``.

    Args:
        lm: a :class:`~fusion.incremental.CachedIncrementalLM` (a :class:`~fusion.neural.NeuralLM`, or the HF
            adapter) over sentencepiece-style pieces.
        name: default ``lm.name`` (so EM weights keep the model's name).
        retokenize: forget the word -> pieces memo at every whole-sentence read (:meth:`score_sentences`),
            so each read tokenises its text afresh (a re-reading baseline's cost; default ``False``).
    """

    def __init__(self, lm: CachedIncrementalLM, *, name: str | None = None, max_tokens: int = 4096,
                 retokenize: bool = False) -> None:  # fmt: skip
        require_token_lm(lm)
        if not isinstance(lm, CachedIncrementalLM):
            raise LMFusionError(f"WordLevelLM needs a neural LM with cached incremental scoring; for "
                                f"{type(lm).__name__} use fusion.reference.SlowWordLevelLM")
        super().__init__(name or lm.name, Units.word())
        self.lm = lm
        self.max_tokens = max_tokens
        self.retokenize = retokenize
        self._ids: dict[str, tuple[int, ...]] = {}
        self._oov: dict[str, bool] = {}

    # -- pieces --------------------------------------------------------------------------------
    def word_ids(self, word: str) -> tuple[int, ...]:
        """The subword ids of one word (memoised)."""
        ids = self._ids.get(word)
        if ids is None:
            check_word_unit(self, word)
            pieces = self.lm.encode_word(word)
            if not pieces:
                raise LMFusionError(f"{self.name}: word {word!r} encodes to no pieces")
            ids = tuple(self.lm.unit_id(p) for p in pieces)
            if len(self._ids) > 1_000_000:
                self._ids.clear()
                self._oov.clear()
            self._ids[word] = ids
            self._oov[word] = any(self.lm.is_oov(p) for p in pieces)
        return ids

    def is_oov(self, unit: str) -> bool:
        """True when a piece of the word is unknown to the subword LM (scored as ``<unk>``)."""
        self.word_ids(unit)
        return self._oov[unit]

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    # -- core ----------------------------------------------------------------------------------
    def _boundary_logmass(self, logp: torch.Tensor) -> torch.Tensor:
        mask = self.lm.boundary_mask().to(logp.device)
        return torch.logsumexp(logp.masked_fill(~mask, float("-inf")), dim=-1)

    def begin(self) -> State:
        return self.lm.begin()

    def end_batch(self, states: Sequence[State]) -> np.ndarray:
        if not states:
            return np.zeros(0)
        lp = self.lm.logprobs_tensor(states).double()
        return (lp[:, self.lm.eos_id] - self._boundary_logmass(lp)).cpu().numpy()

    def score_batch(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]:
        b_n, k_n = len(states), len(candidates)
        if b_n == 0 or k_n == 0:
            for w in candidates:
                self.word_ids(w)
            return np.zeros((b_n, k_n)), [[] for _ in range(b_n)]
        lp, ns = self.score_pairs([s for s in states for _ in range(k_n)], list(candidates) * b_n)
        return lp.reshape(b_n, k_n), [ns[b * k_n : (b + 1) * k_n] for b in range(b_n)]

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> tuple[np.ndarray, list[State]]:
        """``ln P(units[i] | states[i])`` for every pair: all pairs' pieces walked together as one trie.

        Depth ``d`` of every word is one batched LM step over the *distinct* prefixes ``state + pieces[:d]``
        (words that share a start, the same word after several states, and prefixes the LM already cached
        cost nothing extra), so ``N`` pairs cost ``1 + max pieces`` batched forwards. The end-of-word mass
        ``B`` is computed only where it is used: at each pair's start and end state. The numbers are those
        of :meth:`score_pairs_reference` (the per-word path, kept for the tests).
        """
        n = len(states)
        if n != len(units):
            raise ValueError(f"score_pairs: {len(states)} states but {len(units)} units")
        if n == 0:
            return np.zeros(0), []
        toks = [self.word_ids(w) for w in units]
        bases: list[tuple[int, ...]] = []
        for s in states:
            if not isinstance(s, NeuralState):
                raise LMFusionError(f"{self.name}: not a state of this LM: {s!r}")
            bases.append(s.ids)
        total = np.zeros(n, dtype=np.float64)
        nxt: list[State] = [None] * n
        active = list(range(n))
        d = 0
        while active:
            uniq: dict[tuple[int, ...], int] = {}
            rows = [uniq.setdefault(bases[i] + toks[i][:d] if d else bases[i], len(uniq)) for i in active]
            keyed = [NeuralState(k) for k in uniq]
            logp = self.lm.logprobs_tensor(keyed)  # one batched step for the prefixes not cached yet
            # the end-of-word mass: subtracted at depth 0, added where a word ends
            ends = [j for j, i in enumerate(active) if d == 0 or len(toks[i]) == d]
            if ends:
                zrows = sorted({rows[j] for j in ends})
                z = dict(zip(zrows, self._boundary_logmass(logp[zrows].double()).cpu().numpy().tolist(), strict=True))
                if d == 0:
                    total -= np.array([z[r] for r in rows])
            more = [j for j, i in enumerate(active) if len(toks[i]) > d]
            if more:
                r_t = torch.as_tensor([rows[j] for j in more])
                c_t = torch.as_tensor([toks[active[j]][d] for j in more])
                vals = logp[r_t, c_t].double().cpu().numpy()
                for j, v in zip(more, vals.tolist(), strict=True):
                    total[active[j]] += v
            for j in ends:
                i = active[j]
                if len(toks[i]) == d:
                    total[i] += z[rows[j]]
                    nxt[i] = keyed[rows[j]]
            active = [active[j] for j in more]
            d += 1
        return total, nxt

    def score_batch_reference(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]:
        """The ``B`` x ``K`` grid the depth-by-depth way (the reference of :meth:`score_batch`)."""
        b_n, k_n = len(states), len(candidates)
        toks = [self.word_ids(w) for w in candidates]
        if b_n == 0 or k_n == 0:
            return np.zeros((b_n, k_n)), [[] for _ in range(b_n)]
        lens = np.array([len(t) for t in toks])
        total = np.zeros((b_n, k_n), dtype=np.float64)
        # depth 0: the states themselves
        logp = self.lm.logprobs_tensor(states).double()
        total -= self._boundary_logmass(logp).cpu().numpy()[:, None]
        rows = {(b, k): b for b in range(b_n) for k in range(k_n)}
        for d in range(int(lens.max()) + 1):
            zd = self._boundary_logmass(logp).cpu().numpy()
            gather_r, gather_c, gather_bk = [], [], []
            nxt_states: dict[State, int] = {}
            nxt_rows: dict[tuple[int, int], int] = {}
            for (b, k), r in rows.items():
                t = toks[k]
                if len(t) == d:
                    total[b, k] += zd[r]
                    continue
                gather_r.append(r)
                gather_c.append(t[d])
                gather_bk.append((b, k))
                st = self.lm.extend_ids(states[b], t[: d + 1])
                nxt_rows[(b, k)] = nxt_states.setdefault(st, len(nxt_states))
            if gather_r:
                vals = logp[torch.as_tensor(gather_r), torch.as_tensor(gather_c)].cpu().numpy()
                for (b, k), v in zip(gather_bk, vals, strict=True):
                    total[b, k] += v
            if not nxt_states:
                break
            logp = self.lm.logprobs_tensor(list(nxt_states)).double()  # one batched forward per depth
            rows = nxt_rows
        nxt = [[self.lm.extend_ids(states[b], toks[k]) for k in range(k_n)] for b in range(b_n)]
        return total, nxt  # type: ignore[return-value]

    def score_pairs_reference(self, states: Sequence[State], units: Sequence[str]) -> tuple[np.ndarray, list[State]]:
        """The per-word path, kept beside :meth:`score_pairs` as its reference: the pairs grouped by word,
        each word's states stepped through its pieces on their own (same math, nothing shared across words)."""
        if len(states) != len(units):
            raise ValueError(f"score_pairs: {len(states)} states but {len(units)} units")
        out = np.empty(len(states))
        nxt: list[State] = [None] * len(states)
        by_word: dict[str, list[int]] = {}
        for i, u in enumerate(units):
            by_word.setdefault(u, []).append(i)
        for w, idx in by_word.items():
            lp, ns = self.score_batch_reference([states[i] for i in idx], [w])
            for j, i in enumerate(idx):
                out[i] = lp[j, 0]
                nxt[i] = ns[j][0]
        return out, nxt

    # -- whole sentences: one full-sequence forward per batch ----------------------------------
    def score_sentences(self, sentences: Iterable[Sequence[str]], *, eos: bool = True) -> list[SentenceScore]:
        """Word scores of whole sentences from the subword LM's full-sequence distributions."""
        sents = [list(s) for s in sentences]
        if self.retokenize:
            self._ids.clear()
            self._oov.clear()
        out: list[SentenceScore | None] = [None] * len(sents)
        order = sorted(range(len(sents)), key=lambda i: sum(len(self.word_ids(w)) for w in sents[i]))
        batch: list[int] = []
        ntok = 0
        with torch.inference_mode():
            for j, i in enumerate(order):
                batch.append(i)
                ntok = max(ntok, sum(len(self.word_ids(w)) for w in sents[i]) + 1)
                if j + 1 == len(order) or ntok * (len(batch) + 1) > self.max_tokens:
                    self._score_full([sents[b] for b in batch], batch, out, eos)
                    batch = []
                    ntok = 0
        return out  # type: ignore[return-value]

    def _score_full(self, sents: list[list[str]], idx: list[int], out: list[SentenceScore | None],
                    eos: bool) -> None:
        seqs = [[i for w in s for i in self.word_ids(w)] for s in sents]
        dists = self.lm.full_distributions(seqs)
        for s, seq, dist, j in zip(sents, seqs, dists, idx, strict=True):
            d = dist.double()
            z = self._boundary_logmass(d).cpu().numpy()  # [n + 1]
            tgt = torch.as_tensor([*seq, self.lm.eos_id], dtype=torch.long, device=d.device)
            lp = d.gather(1, tgt[:, None])[:, 0].cpu().numpy()
            scores = np.empty(len(s) + int(eos))
            a = 0
            for k, w in enumerate(s):
                bnd = a + len(self.word_ids(w))
                scores[k] = lp[a:bnd].sum() - z[a] + z[bnd]
                a = bnd
            if eos:
                scores[-1] = lp[a] - z[a]
            oov = tuple(self._oov[w] for w in s)
            self.oov_seen += sum(oov)
            out[j] = SentenceScore(tuple(s), scores, oov)

    def score_sentence(self, units: Sequence[str], *, eos: bool = True) -> SentenceScore:
        return self.score_sentences([units], eos=eos)[0]


class TokenLevelLM(LanguageModel):
    """A token-level LM seen through a decoder's token list, which must name the same pieces.

    Scores pass through unchanged; :meth:`logprobs_all` returns columns in the decoder's token order
    (``-inf`` for decoder-only symbols such as ``<blank>``; the ``eos_token`` column, when the decoder has
    one, holds end-of-sentence).

    Args:
        lm: a :class:`~fusion.incremental.CachedIncrementalLM`.
        decoder_tokens: the decoder's tokens in id order.
        decoder_only: tokens the LM need not know (blank, padding, sentence markers).
        eos_token: the decoder's end-of-sentence token, if any.
        units: the decoder's units (default: the LM's).

    Raises:
        UnitMismatchError: a decoder token (not in ``decoder_only``) is not an LM piece.
    """

    def __init__(
        self,
        lm: CachedIncrementalLM,
        decoder_tokens: Sequence[str],
        *,
        decoder_only: Iterable[str] = ("<blank>", "<pad>", "<s>", "</s>", "<sos/eos>", "<eos>", "<sos>"),
        eos_token: str | None = None,
        unk_token: str | None = "<unk>",
        units: Units | None = None,
        name: str | None = None,
    ) -> None:
        require_token_lm(lm)
        super().__init__(name or lm.name, units or lm.units)
        self.lm = lm
        self.decoder_tokens = list(decoder_tokens)
        skip = set(decoder_only)
        index = np.full(len(self.decoder_tokens), -1, dtype=np.int64)
        missing = []
        for j, t in enumerate(self.decoder_tokens):
            if t == eos_token:
                index[j] = lm.eos_id
            elif unk_token is not None and t == unk_token and lm.unk_id is not None:
                index[j] = lm.unk_id
            elif not lm.is_oov(t):
                index[j] = lm.piece_to_id[t]
            elif t not in skip:
                missing.append(t)
        if missing:
            raise UnitMismatchError(
                f"{lm.name!r} does not share the decoder's vocabulary: {len(missing)} decoder tokens are not "
                f"its pieces (e.g. {missing[:5]}); use WordLevelLM to bridge at word boundaries")
        self.index = index

    def begin(self) -> State:
        return self.lm.begin()

    def score(self, state: State, unit: str) -> tuple[float, State]:
        return self.lm.score(state, unit)

    def end(self, state: State) -> float:
        return self.lm.end(state)

    def score_batch(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]:
        return self.lm.score_batch(states, candidates)

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> tuple[np.ndarray, list[State]]:
        return self.lm.score_pairs(states, units)

    def end_batch(self, states: Sequence[State]) -> np.ndarray:
        return self.lm.end_batch(states)

    def score_sentences(self, sentences: Iterable[Sequence[str]], *, eos: bool = True) -> list[SentenceScore]:
        return self.lm.score_sentences(sentences, eos=eos)

    @property
    def vocab(self) -> frozenset[str] | None:
        return self.lm.vocab

    def is_oov(self, unit: str) -> bool:
        return self.lm.is_oov(unit)

    def tokenize(self, text: str) -> list[str]:
        return self.lm.tokenize(text)

    def logprobs_all(self, states: Sequence[State]) -> np.ndarray:
        """``[B, len(decoder_tokens)]`` next-token log-probs in the decoder's order."""
        lp = self.lm.logprobs_tensor(states).double().cpu().numpy()
        out = np.full((lp.shape[0], len(self.index)), -np.inf)
        ok = self.index >= 0
        out[:, ok] = lp[:, self.index[ok]]
        return out


def word_view(lm: LanguageModel) -> LanguageModel:
    """``lm`` at word level: itself when it predicts words, else the fast or slow word-level view."""
    if lm.units.kind == "word":
        return lm
    if isinstance(lm, CachedIncrementalLM):
        return WordLevelLM(lm)
    from fusion.reference import SlowWordLevelLM

    return SlowWordLevelLM(lm)


def bridge_units(models: Sequence[LanguageModel], units: str = "auto") -> list[LanguageModel]:
    """Make models comparable and mixable.

    Args:
        units: ``"auto"`` (if the models' units differ, view every subword LM at word level),
            ``"word"`` (always view them at word level) or ``"token"`` (leave them as they are).
    """
    if units not in ("auto", "word", "token"):
        raise LMFusionError(f"units must be 'auto', 'word' or 'token', got {units!r}")
    if units == "token" or (units == "auto" and len({m.units for m in models}) <= 1):
        return list(models)
    return [word_view(m) for m in models]
