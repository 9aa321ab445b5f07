"""The CTC decoder: prefix beam search with shallow fusion of any :class:`~fusion.lm.LanguageModel`.

The search keeps, for every prefix in the beam, the CTC log-probabilities of its alignments ending in blank
(``pb``) and in its last token (``pnb``), as in the standard prefix beam search, and adds a fused LM score::

    score(prefix) = w_am * am(prefix) + Σ_k w_k * lm_k(prefix) + w_words * words(prefix)
                    + w_oov * oov(prefix) + partial(open word)

* **word-level LMs** (``units.kind == "word"``) score a word when it completes: on a word delimiter
  (``" "`` or ``"|"`` in a character vocabulary), on a ``▁``-piece of a sentencepiece vocabulary, and at
  the end of the utterance (with ``</s>`` when ``options.eos``). A word outside the lexicon gets
  ``options.unk_score_offset`` (log10, default -10, pyctcdecode's) added to each word LM's score;
* **token-level LMs** score every emitted token (the decoder's labels are the LM's units);
* **partial words**: while a word is open, a prefix trie of the known words (the word LMs' vocabulary or a
  given lexicon) says whether it can still become one; if not, ``partial`` adds ``unk_prefix_score``
  (scaled up with length past ``unk_prefix_avg_len`` characters), as pyctcdecode does; this term only
  ranks hypotheses during the search and is not a component. With ``lexicon_constrained`` such prefixes
  are dropped, so only known words come out.

**Weights** have the one meaning of :mod:`fusion.weights` (resolved by :func:`fusion.weights.check_weights`):
components ``"am"`` (default 1), one per LM name, ``"words"`` (the word bonus β) and ``"oov"``; a component
without a weight counts 0; an unknown name is an error listing the known ones. So a pyctcdecode user's
``{"lm": alpha, "words": beta}`` means what it means in pyctcdecode. ``weights`` may also be a
:class:`~fusion.profile.FusionProfile`, its path, or any :class:`~fusion.weights.WeightPolicy`: each utterance
is then decoded with the weights the policy gives its :class:`~fusion.weights.UtteranceContext` (tags, SNR),
and a policy's interpolation λ re-weights the matching :class:`~fusion.interpolate.LinearInterpolation`.
Every hypothesis carries its unweighted components, so weights can be re-tuned offline from the n-best JSONL.

The package splits the work by job: :mod:`~decoders.ctc.options`, :mod:`~decoders.ctc.vocabulary` (labels,
lexicon glue), :mod:`~decoders.ctc.inputs` (emission checks), :mod:`~decoders.ctc.weighting`,
:mod:`~decoders.ctc.lmcache` (the one way the search asks an LM), :mod:`~decoders.ctc.lmstep` (fused LM steps),
:mod:`~decoders.ctc.tree` / :mod:`~decoders.ctc.search` / :mod:`~decoders.ctc.compiled` /
:mod:`~decoders.ctc.kernel` (the search, numpy and compiled; :mod:`~decoders.ctc.kernels`: ahead of time or
JIT), :mod:`~decoders.ctc.output` (hypotheses),
:mod:`~decoders.ctc.stream` and :mod:`~decoders.ctc.pool`. :func:`decoders.reference.reference_beam_search` is
the plain, slow version the tests check the fast one against.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from decoders.ctc.hotwords import HotwordGraphs, per_utterance_hotwords, with_hotwords
from decoders.ctc.inputs import as_logprobs, logprobs_and_candidates, split_batch
from decoders.ctc.lmcache import DEFAULT_CACHE_BYTES, DEFAULT_CACHE_LIMIT, CachedLM, unknown_words_share_a_score
from decoders.ctc.lmstep import FusionCache
from decoders.ctc.ngramfusion import NgramFusionCache, ngram_plan
from decoders.ctc.options import CTCOptions
from decoders.ctc.output import CTCHypothesis, ctc_hypothesis
from decoders.ctc.pool import SearchOverrides, decode_on, decode_one
from decoders.ctc.search import NumpySearch
from decoders.ctc.stream import CTCStream
from decoders.ctc.vocabulary import CTCVocab, WordTables, known_words, lookahead_table
from decoders.ctc.weighting import FIXED_COMPONENTS, MixtureVariants, ctc_components, resolve_ctc_weights
from decoders.hypothesis import NBestList
from decoders.lexicon import Lexicon
from fusion.abilities import ArpaBacked, LMSpec, spec_of
from fusion.biasing import DEFAULT_BOOST, ContextGraph, Hotwords
from fusion.errors import LMFusionError
from fusion.executor import Executor, LocalProcesses, open_executor
from fusion.lm import LanguageModel
from fusion.loading import open_spec
from fusion.weights import ConstantWeights, PolicyLike, UtteranceContext, WeightPolicy, as_policy

Context = UtteranceContext | Mapping[str, Any] | None
"""An utterance's context, or just its tags."""


def as_context(ctx: Context, utt_id: str | None = None) -> UtteranceContext:
    """An :class:`~fusion.weights.UtteranceContext` from a context or a tags mapping."""
    if isinstance(ctx, UtteranceContext):
        return ctx
    return UtteranceContext(utt_id=utt_id, tags=dict(ctx or {}))


def _named_lms(lms: Sequence[LanguageModel] | Mapping[str, LanguageModel] | None) -> list[tuple[str, LanguageModel]]:
    if lms is None:
        return []
    pairs = list(lms.items()) if isinstance(lms, Mapping) else [(m.name, m) for m in lms]
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise LMFusionError(f"LM names must be distinct, got {names}")
    for n, m in pairs:
        if not isinstance(m, LanguageModel):
            raise LMFusionError(f"LM {n!r} is not a LanguageModel: {type(m).__name__}")
        if n in FIXED_COMPONENTS:
            raise LMFusionError(f"an LM cannot be named {n!r} (reserved score component)")
    return pairs


def _warn_case_mismatch(labels: Sequence[str], words: Iterable[str]) -> None:
    """Warn when the letter labels and the LM's words differ only in case (e.g. upper-case wav2vec2 labels
    against a lower-case LM), which would make every word unknown to the LM."""
    letters = [lab for lab in labels if len(lab) == 1 and lab.isalpha()]
    if not letters:
        return
    sample = [w for _, w in zip(range(2000), words, strict=False) if any(c.isalpha() for c in w)]
    if not sample:
        return
    up_labels = all(c.isupper() for c in letters)
    low_labels = all(c.islower() for c in letters)
    low_words = all(w == w.lower() for w in sample)
    up_words = all(w == w.upper() for w in sample)
    if (up_labels and low_words) or (low_labels and up_words):
        warnings.warn(
            f"the labels are {'upper' if up_labels else 'lower'}-case but the LM's words are "
            f"{'lower' if up_labels else 'upper'}-case: every word would be unknown to the LM; convert the "
            "labels' case (or the LM's)", UserWarning, stacklevel=3)


class CTCDecoder:
    """CTC prefix beam search with shallow fusion.

    Args:
        labels: the acoustic model's output labels (characters with a word delimiter, or
            sentencepiece pieces).
        lms: LMs to fuse (a sequence, named by ``lm.name``, or a mapping ``name -> LM``). Word-level
            LMs score completed words, token-level LMs score every token.
        weights: ``name -> weight`` (the meaning of :mod:`fusion.weights`), a
            :class:`~fusion.profile.FusionProfile` or its path, or a :class:`~fusion.weights.WeightPolicy`.
        blank: the blank index.
        options: search options.
        lexicon: known words for the partial-word trie (default: the union of the word LMs'
            vocabularies; none when an LM cannot list its vocabulary).
        word_delimiter: the delimiter label of a character vocabulary (default: ``" "`` or ``"|"``).
    """

    def __init__(
        self,
        labels: Sequence[str],
        lms: Sequence[LanguageModel] | Mapping[str, LanguageModel] | None = None,
        weights: PolicyLike = None,
        *,
        blank: int = 0,
        options: CTCOptions | None = None,
        lexicon: Iterable[str] | Lexicon | None = None,
        word_delimiter: str | None = None,
    ) -> None:
        self.vocab = CTCVocab.from_labels(labels, blank=blank, word_delimiter=word_delimiter)
        self.options = options or CTCOptions()
        pairs = _named_lms(lms)
        self.lm_names: tuple[str, ...] = tuple(n for n, _ in pairs)
        self.lms: tuple[LanguageModel, ...] = tuple(m for _, m in pairs)
        self.word_lms = tuple(i for i, m in enumerate(self.lms) if m.units.kind == "word")
        self.token_lms = tuple(i for i, m in enumerate(self.lms) if m.units.kind == "token")
        if self.word_lms and self.vocab.kind == "char" and self.vocab.word_delimiter is None:
            raise LMFusionError(
                "word-level LMs need word boundaries, but the vocabulary has no word delimiter "
                "(' ' or '|'; pass word_delimiter=)"
            )
        self.policy = as_policy(weights)
        self._fixed = False
        self._constant_self: CTCDecoder | None = None  # this decoder, once its constant policy resolved to itself
        self._bind_lexicon(lexicon)
        _warn_case_mismatch(self.vocab.labels, self.lexicon.words if self.lexicon is not None else ())
        self.backend = self._pick_backend()
        self.cache_limit = DEFAULT_CACHE_LIMIT
        self.cache_bytes = DEFAULT_CACHE_BYTES
        """Memory budget of the fused-step cache (started afresh between utterances once over it) and of each
        LM's score caches (least recently used entries dropped)."""
        self._plan_lms()
        self._mixtures = MixtureVariants(self.lms)
        self._mixture_caches: dict[int, CachedLM] = {}
        self._variants: dict[Any, CTCDecoder] = {}
        self._shared: FusionCache | None = None
        self._spares: list[NumpySearch] = []  # one finished search to reuse (shared by this decoder's variants)
        self.hot: ContextGraph | None = None
        self.w_hot = 0.0
        self._hot_graphs = HotwordGraphs(self.vocab.labels, self.vocab.word_delimiter)
        self._set_weights(resolve_ctc_weights(self.policy.weights_for(UtteranceContext()), self.lm_names))

    # -- construction helpers ------------------------------------------------------------------
    def _bind_lexicon(self, lexicon: Iterable[str] | Lexicon | None) -> None:
        self._lexicon_given = lexicon is not None
        self.lexicon = known_words(lexicon, [self.lms[i] for i in self.word_lms])
        if self.options.lexicon_constrained and self.lexicon is None:
            raise LMFusionError(
                "lexicon_constrained needs a lexicon: pass lexicon= or use word LMs that list their vocabulary"
            )
        t = self.tables = WordTables(self.vocab, self.lexicon)
        self.trie = t.trie
        self._completes, self._pure_delim, self._toklen, self._start_trie = (
            t.completes, t.pure_delim, t.toklen, t.start_trie)
        self._has_pure_delim, self._has_completing_text = t.has_pure_delim, t.has_completing_text
        # LMs that score every unknown word alike (KenLM: <unk>), with the lexicon made of their
        # vocabularies: all unknown words after one context share one LM entry
        self._oov_uniform = (
            not self._lexicon_given and self.lexicon is not None and bool(self.word_lms)
            and unknown_words_share_a_score([self.lms[k] for k in self.word_lms])
        )

    def _plan_lms(self) -> None:
        """Decide whether the compiled search scores the LMs itself (n-gram arrays) and open the LM caches."""
        plan, why = ngram_plan(self.lms, self.word_lms, self.lexicon, self._lexicon_given, self.vocab.labels)
        self._ngram = plan
        self._ngram_why = why
        # said when every LM is an n-gram that could be scored inside the compiled loop but cannot (a binary without
        # its ARPA, a lexicon missing LM words); with a neural LM the Python path is the design, not a fall-back
        if plan is None and self.compiled and self.lms and all(isinstance(m, ArpaBacked) for m in self.lms):
            warnings.warn(f"CTC search: the n-gram LMs are scored from Python, not inside the compiled search: {why}",
                          UserWarning, stacklevel=3)
        scorers = plan.twins if plan is not None else self.lms
        self._lm_caches = [CachedLM(m, n, self.cache_limit, self.cache_bytes)
                           for n, m in zip(self.lm_names, scorers, strict=True)]

    def _set_weights(self, w: dict[str, float]) -> None:
        self.weights = w
        self.w_lm = np.array([w[n] for n in self.lm_names], dtype=np.float64)
        self.look = lookahead_table(self.lexicon, [self._lm_caches[k].lm for k in self.word_lms],
                                    [float(self.w_lm[k]) for k in self.word_lms], self.options.lookahead)
        # an upper bound of what one extension can add to the LM part of the score
        any_neg = bool((self.w_lm < 0).any())
        self._gain_bound = float("inf") if any_neg else max(0.0, w["words"]) + max(0.0, w["oov"])

    def _pick_backend(self) -> str:
        """``"compiled-aot"`` (the extension :mod:`decoders.ctc.build_aot` builds), ``"compiled-jit"`` (numba) or
        ``"numpy"``, as :attr:`CTCOptions.backend` asks; never a silent fall-back from what was asked for."""
        from decoders.ctc import kernels

        want = self.options.backend
        if want == "numpy":
            return "numpy"
        if want == "aot" or (want in ("auto", "numba") and kernels.default_kind() == "aot"):
            if not kernels.aot_available():
                why = "stale (compiled from other kernel sources)" if kernels.aot_state() == "stale" else "not built"
                raise LMFusionError(f"CTCOptions.backend={want!r} asks for the ahead-of-time kernels, which are {why}: "
                                    "run `python -m decoders.ctc.build_aot` (make setup does)")
            return "compiled-aot"
        if kernels.jit_available():
            return "compiled-jit"
        if want != "auto":
            raise LMFusionError(f"CTCOptions.backend={want!r} but numba is not installed") from None
        warnings.warn("neither the ahead-of-time CTC kernels nor numba are there: the CTC search runs on the numpy "
                      "back end (several times slower)", UserWarning, stacklevel=3)
        return "numpy"

    @property
    def compiled(self) -> bool:
        """Whether the search runs compiled (:attr:`backend` ``"compiled-aot"`` or ``"compiled-jit"``)."""
        return self.backend != "numpy"

    @property
    def K(self) -> Any:
        """The compiled kernels this decoder runs (:func:`decoders.ctc.kernels.load`)."""
        from decoders.ctc import kernels

        return kernels.load("aot" if self.backend == "compiled-aot" else "jit")

    # -- searches ------------------------------------------------------------------------------
    def _new_fusion_cache(self) -> FusionCache:
        if self._ngram is not None and self.compiled:
            return NgramFusionCache(self._ngram, self.K)
        return FusionCache(tuple(c.lm.begin() for c in self._lm_caches))

    def _search(self, private: bool = False) -> NumpySearch:
        """A fresh search; unless ``private``, it shares this decoder's LM steps (utterances one at a time)."""
        shared = None
        if not private:
            sh = self._shared
            if sh is None or sh.size() > self.cache_limit or sh.nbytes() > self.cache_bytes:
                self._shared = self._new_fusion_cache()
            shared = self._shared
        if self.compiled:
            from decoders.ctc.compiled import NumbaSearch

            spare = self._spares.pop() if self._spares and shared is not None else None
            # the arrays of an earlier utterance of this decoder, reset
            if isinstance(spare, NumbaSearch) and spare.d is self and shared is not None:
                spare.reset(shared)
                return spare
            return NumbaSearch(self, shared=shared)
        return NumpySearch(self, shared=shared)

    def _recycle(self, search: NumpySearch) -> None:
        """Keep a finished search's arrays for the next utterance of this decoder (:meth:`_search`)."""
        self._spares[:] = [search]

    def _is_oov(self, word: str) -> bool:
        if self.lexicon is not None:
            return word not in self.lexicon
        return bool(self.word_lms) and all(self.lms[k].is_oov(word) for k in self.word_lms)

    def clear_caches(self) -> None:
        """Forget every cached LM score and fused step (e.g. before a timed run)."""
        self._shared = None
        for c in self._lm_caches:
            c.clear()
        for v in self._variants.values():
            v.clear_caches()

    # -- public API ----------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return self.vocab.labels

    @property
    def lm_backend(self) -> str:
        """Where the search scores the LMs: ``"compiled-ngram"`` (inside the compiled loop, from n-gram arrays)
        or ``"python"`` (batched at frame boundaries; :attr:`lm_backend_reason` says why)."""
        return "compiled-ngram" if self._ngram is not None and self.compiled else "python"

    @property
    def lm_backend_reason(self) -> str:
        """Why the LMs are scored from Python (empty when they are not)."""
        if self.lm_backend == "compiled-ngram":
            return ""
        return self._ngram_why or f"the {self.backend} back end"

    @property
    def components(self) -> tuple[str, ...]:
        """The score components of every hypothesis: ``am``, the LM names, ``words``, ``oov``, ``hotwords``."""
        return ctc_components(self.lm_names)

    @property
    def lm_calls(self) -> list[int]:
        """Number of (state, unit) pairs each LM was asked to score (cache misses)."""
        return [c.calls for c in self._lm_caches]

    def _variant(self, w: dict[str, float], lam: Mapping[str, float]) -> CTCDecoder:
        """This decoder with other weights and λ; LMs, lexicon and raw LM-score caches are shared."""
        new = copy.copy(self)
        new.policy = ConstantWeights(dict(w), dict(lam))
        new._fixed = True
        new._variants = {}
        new._shared = None  # fused steps depend on the weights
        lms = self._mixtures.apply(lam)
        if lms != self.lms:
            new.lms = lms
            new._ngram, new._ngram_why = None, "interpolation weights per utterance"
            new._lm_caches = [self._cache_of(m, c) for m, c in zip(lms, self._lm_caches, strict=True)]
        new._set_weights(w)
        return new

    def _cache_of(self, lm: LanguageModel, base: CachedLM) -> CachedLM:
        if lm is base.lm:
            return base
        c = self._mixture_caches.get(id(lm))
        if c is None:
            c = self._mixture_caches[id(lm)] = CachedLM(lm, base.name, self.cache_limit, self.cache_bytes)
        return c

    def with_weights(self, weights: Mapping[str, float]) -> CTCDecoder:
        """This decoder with other constant fusion weights; LMs, lexicon and raw LM-score caches are shared."""
        return self._variant(resolve_ctc_weights(weights, self.lm_names), {})

    def for_utterance(self, context: Context = None) -> CTCDecoder:
        """The decoder for one utterance: the variant with the weights (and λ) its policy gives the context
        (an :class:`~fusion.weights.UtteranceContext`, or just tags); built once per distinct weights."""
        if self._fixed or self._constant_self is self:
            return self
        ctx = as_context(context)
        where = f"weights of utterance {ctx.utt_id}" if ctx.utt_id else "weights"
        w = resolve_ctc_weights(self.policy.weights_for(ctx), self.lm_names, where=where)
        lam = dict(self.policy.interpolation_for(ctx) or {})
        if not lam and w == self.weights:
            if isinstance(self.policy, ConstantWeights):  # the same for every utterance: resolved once
                self._constant_self = self
            return self
        key = (tuple(w.items()), tuple(sorted(lam.items())))
        dec = self._variants.get(key)
        if dec is None:
            dec = self._variants[key] = self._variant(w, lam)
        return dec

    def with_search(self, beam_width: int | None = None, beam_prune_logp: float | None = None,
                    token_min_logp: float | None = None) -> CTCDecoder:
        """This decoder with other beam width / pruning for a call (``None``: keep); shares every cache."""
        over = {k: v for k, v in (("beam_width", beam_width), ("beam_prune_logp", beam_prune_logp),
                                  ("token_min_logp", token_min_logp)) if v is not None}
        if not over:
            return self
        new = copy.copy(self)
        new.options = replace(self.options, **over)  # type: ignore[arg-type]
        return new

    def biased(self, hotwords: Hotwords | None, hotword_weight: float | None = None,
               hotword_boost: float = DEFAULT_BOOST) -> CTCDecoder:
        """This decoder boosting ``hotwords`` (phrases, or ``phrase -> boost per label``): component
        ``"hotwords"`` with weight ``hotword_weight`` (default: this decoder's ``"hotwords"`` weight).
        Itself when the list is empty."""
        return with_hotwords(self, self._hot_graphs.graph(hotwords, hotword_boost), hotword_weight)

    def decode(self, logprobs: Any, *, utt_id: str = "utt", ref: str | None = None,
               tags: Mapping[str, Any] | None = None, context: UtteranceContext | None = None,
               hotwords: Hotwords | None = None, hotword_weight: float | None = None,
               hotword_boost: float = DEFAULT_BOOST, logits: bool = False, beam_width: int | None = None,
               beam_prune_logp: float | None = None, token_min_logp: float | None = None) -> NBestList:
        """Decode one utterance's log-probabilities ``[T, V]`` into an n-best list.

        ``tags`` are copied to the output and, with ``context`` (SNR, audio, features), tell the weight
        policy which weights to use. ``hotwords`` are boosted for this call (see :meth:`biased`).
        ``logits=True``: the rows are raw scores, log-softmax is applied. ``beam_width``, ``beam_prune_logp``
        and ``token_min_logp`` override the options for this call.
        """
        min_logp = self.options.token_min_logp if token_min_logp is None else token_min_logp
        arr, cands = logprobs_and_candidates(
            logprobs, len(self.vocab), self.K if self.compiled else None, self.vocab.blank, min_logp,
            check_normalized=self.options.check_normalized and not logits, logits=logits)
        ctx = context or as_context(tags, utt_id)
        dec = self.for_utterance(ctx).biased(hotwords, hotword_weight, hotword_boost)
        s = dec.with_search(beam_width, beam_prune_logp, token_min_logp)._search()
        s.feed_array(arr, cands)
        out = s.finish(utt_id=utt_id, ref=ref, tags=tags if tags is not None else ctx.tags,
                       logprobs=arr if self.options.align else None)
        self._recycle(s)
        return out

    def ctc_hypotheses(self, nbest: NBestList) -> list[CTCHypothesis]:
        """torchaudio-style views (label ids, words, fused score, per-token timesteps) of an n-best list."""
        return [ctc_hypothesis(h, self.vocab.labels, self.vocab.blank, self.weights) for h in nbest.hyps]

    def decode_text(self, logprobs: Any) -> str:
        """The best hypothesis' text: :meth:`decode`'s first hypothesis, built alone and without the forced
        alignment (which changes no text)."""
        arr, cands = logprobs_and_candidates(logprobs, len(self.vocab), self.K if self.compiled else None,
                                             self.vocab.blank, self.options.token_min_logp,
                                             check_normalized=self.options.check_normalized)
        s = self.for_utterance(None)._search()  # no hotwords: biased(None) is the decoder itself
        s.feed_array(arr, cands)
        fin = s.finals(1)
        text = s._text(fin[0][1]) if fin else ""  # the text alone: no labels, no word frames
        self._recycle(s)
        return text

    def stream(self, tags: Context = None) -> CTCStream:
        """A streaming search: feed frames chunk by chunk, read the current best any time."""
        return CTCStream(self.for_utterance(tags))

    def decode_batch(
        self,
        emissions: Sequence[Any],
        *,
        utt_ids: Sequence[str] | None = None,
        refs: Sequence[str | None] | None = None,
        tags: Sequence[Mapping[str, Any] | None] | None = None,
        processes: int = 1,
        mp_context: str | None = None,
        spec: CTCDecoderSpec | None = None,
        progress: bool = False,
        executor: Executor | str | None = None,
        shard_size: int | None = None,
        hotwords: Any = None,
        hotword_weight: float | None = None,
        lengths: Any = None,
        logits: bool = False,
        beam_width: int | None = None,
        beam_prune_logp: float | None = None,
        token_min_logp: float | None = None,
    ) -> list[NBestList]:
        """Decode many utterances, in this process, in a process pool or on any executor (a Dask cluster).

        ``emissions`` is a sequence of ``[T, V]`` arrays or one ``[B, T, V]`` array / tensor; ``lengths`` cuts
        each row to its number of frames. ``logits`` and the search overrides are as in :meth:`decode`.
        The output is the same on every back-end.

        Args:
            hotwords: phrases to boost in every utterance, or one list (or ``phrase -> boost``) per utterance.
            hotword_weight: the ``"hotwords"`` weight (default: the decoder's).
            processes: local worker processes (``1``: decode here), when no ``executor`` is given.
            mp_context: ``"fork"``, ``"spawn"`` or ``"forkserver"`` (default: the platform's).
            spec: how workers rebuild this decoder (default: :meth:`spec`, which needs LMs that
                can describe themselves, :class:`~fusion.abilities.Reloadable`).
            executor: an :class:`~fusion.executor.Executor` or a spec (``tcp://HOST:PORT``,
                ``processes:N``); each worker builds the decoder once from ``spec`` and decodes shards
                of ``shard_size`` utterances (default: about four shards per worker, at most 16
                utterances). An in-process executor decodes here.
        """
        emissions = split_batch(emissions, lengths)
        n = len(emissions)
        ids = list(utt_ids) if utt_ids is not None else [f"utt{i}" for i in range(n)]
        rs = list(refs) if refs is not None else [None] * n
        tg = list(tags) if tags is not None else [None] * n
        if len(ids) != n or len(rs) != n or len(tg) != n:
            raise LMFusionError(
                f"decode_batch: {n} emissions but {len(ids)} utt_ids, {len(rs)} refs and {len(tg)} tags"
            )
        arrays = [
            as_logprobs(e, len(self.vocab), check_normalized=self.options.check_normalized and not logits,
                        what=f"emissions[{i}]", logits=logits)
            for i, e in enumerate(emissions)
        ]
        hot = per_utterance_hotwords(hotwords, n)
        over = SearchOverrides(hotword_weight, beam_width, beam_prune_logp, token_min_logp)
        items = list(zip(arrays, ids, rs, tg, hot, strict=True))
        if executor is None and processes > 1 and n > 1:
            executor = LocalProcesses(processes, mp_context=mp_context)
        if executor is not None and n > 1:
            ex = open_executor(executor)  # a spec string is opened (and closed) here
            try:
                if ex.kind != "inprocess":
                    return decode_on(ex, spec or self.spec(), items, overrides=over, shard_size=shard_size,
                                     progress=progress)  # fmt: skip
            finally:
                if ex is not executor:
                    ex.close()
        from fusion.progress import progress_bar

        return [decode_one(over, self, x) for x in progress_bar(items, desc="ctc decode", progress=progress)]

    def spec(self) -> CTCDecoderSpec:
        """A picklable description workers rebuild this decoder from (LMs by their specs).

        Raises:
            LMFusionError: an LM cannot describe itself (built in memory).
        """
        return CTCDecoderSpec(
            labels=self.vocab.labels,
            blank=self.vocab.blank,
            word_delimiter=self.vocab.word_delimiter,
            lms=tuple(replace(spec_of(m), name=n) for n, m in zip(self.lm_names, self.lms, strict=True)),
            policy=self.policy,
            options=self.options,
            lexicon=tuple(sorted(self.lexicon.words)) if self._lexicon_given and self.lexicon is not None else None,
        )


@dataclass(frozen=True)
class CTCDecoderSpec:
    """Everything needed to rebuild a :class:`CTCDecoder` in a worker (picklable, no model objects).

    Attributes:
        lms: one :class:`~fusion.abilities.LMSpec` per LM, named as the decoder names it.
        policy: the weight policy (constant weights, a profile, ...).
        lexicon: the lexicon, when one was given (else the word LMs' vocabularies).
    """

    labels: tuple[str, ...]
    blank: int = 0
    word_delimiter: str | None = None
    lms: tuple[LMSpec, ...] = ()
    policy: WeightPolicy = field(default_factory=ConstantWeights)
    options: CTCOptions = field(default_factory=CTCOptions)
    lexicon: tuple[str, ...] | None = None

    def build(self) -> CTCDecoder:
        return CTCDecoder(
            self.labels,
            {s.name: open_spec(s) for s in self.lms},
            self.policy,
            blank=self.blank,
            options=self.options,
            lexicon=self.lexicon,
            word_delimiter=self.word_delimiter,
        )
