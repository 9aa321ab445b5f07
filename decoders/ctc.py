"""CTC prefix beam search with shallow fusion of any :class:`~fusion.lm.LanguageModel`.

The search keeps, for every prefix in the beam, the CTC log-probabilities of its alignments ending
in blank (``pb``) and in its last token (``pnb``), as in the standard prefix beam search, and adds
a fused LM score::

    score(prefix) = w_am * am(prefix) + Σ_k w_k * lm_k(prefix) + w_words * words(prefix)
                    + w_oov * oov(prefix) + partial(open word)

* **word-level LMs** (``units.kind == "word"``) score a word when it completes: on a word delimiter
  (``" "`` or ``"|"`` in a character vocabulary), on a ``▁``-piece of a sentencepiece vocabulary,
  and at the end of the utterance (with ``</s>`` when ``options.eos``);
* **token-level LMs** score every emitted token (the decoder's labels are the LM's units);
* **partial words**: while a word is open, a prefix trie of the known words (the word LMs'
  vocabulary or a given lexicon) says whether it can still become one; if not, ``partial`` adds
  ``unk_prefix_score`` (scaled up with length past ``unk_prefix_avg_len`` characters), as
  pyctcdecode does; this term only ranks hypotheses during the search and is not a component.
  With ``lexicon_constrained`` such prefixes are dropped, so only known words come out.

Weights are a plain mapping ``name -> float``: ``"am"`` (default 1), one per LM name (the LM's
``name``), ``"words"`` (word bonus β) and ``"oov"`` (per out-of-lexicon word). Any real weight is
allowed, negative ones too (density-ratio terms). Every hypothesis carries its unweighted
components (``"am"``, each LM name, ``"words"``, ``"oov"``) so weights can be re-tuned offline
from the n-best JSONL without decoding again.

Speed: prefixes are nodes of a tree created once per utterance (node arrays: parent, token, LM
context, scores), so merging an extension into an existing prefix is a table look-up. The frame
loop runs compiled (numba, :mod:`decoders._ctc_kernel`; ``backend="numpy"`` is the vectorised
fallback): per frame only tokens above ``token_min_logp`` extend prefixes, extensions that cannot
reach the beam are dropped by an upper bound before any LM work, and the loop returns to Python
only when a completed word (or a token, for token LMs) needs an LM score that is not cached yet.
Those are scored in one ``score_pairs`` call per LM (batched neural LMs) through caches keyed
``(LM state, unit)``, which live across the utterances a decoder decodes (bounded); unknown words
after one context share one entry when every word LM is a KenLM (it scores them all as ``<unk>``).

:func:`reference_beam_search` is the plain, slow version of the same search (prefix tuples in a
dict, LM scores recomputed from scratch for every prefix); the tests check the fast one against it.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing as mp
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.lexicon import DEAD, Lexicon, TokenTrie
from fusion.errors import InputError, LMFusionError, WeightsError
from fusion.lm import LanguageModel, State
from fusion.profile import FusionProfile, resolve_weights

NEG_INF = float("-inf")
SPM_BOUNDARY = "\u2581"
"""sentencepiece's word-start marker ``▁``."""

FIXED_COMPONENTS = ("am", "words", "oov")
"""Score components every CTC hypothesis carries, besides one per LM name."""

DEFAULT_LM_WEIGHT = 0.5
DEFAULT_WORD_BONUS = 1.0


# ----------------------------------------------------------------------------------------------
# Options and vocabulary
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CTCOptions:
    """Search options (validated on construction).

    Attributes:
        beam_width: most prefixes kept per frame.
        token_min_logp: per-frame token pruning: only tokens with a log-prob at least this
            (plus the frame's best token) extend prefixes.
        beam_prune_logp: prefixes scoring below the frame's best plus this (negative) are dropped.
        nbest: hypotheses returned per utterance.
        lexicon_constrained: only words of the lexicon may come out.
        unk_prefix_score: added to the ranking score while the open word cannot start any known
            word (open-vocabulary mode with a lexicon).
        unk_prefix_avg_len: past this many characters, ``unk_prefix_score`` grows with the open
            word's length (``unk_prefix_score * len / unk_prefix_avg_len``).
        lookahead: while a word is open and can still become known words, rank it by the best
            weighted word-LM score (from the sentence start) among those words, as flashlight-text's
            smeared lexicon trie does; the true score replaces it when the word completes.
        eos: add each LM's end-of-sentence score to the final hypotheses.
        check_normalized: reject emission rows that are not log-probabilities (logsumexp != 0).
        backend: ``"numba"`` (the compiled frame loop), ``"numpy"`` (vectorised per frame), or
            ``"auto"`` (numba when it is installed and the vocabulary's trie table is dense).
    """

    beam_width: int = 64
    token_min_logp: float = -5.0
    beam_prune_logp: float = -10.0
    nbest: int = 10
    lexicon_constrained: bool = False
    unk_prefix_score: float = -10.0
    unk_prefix_avg_len: int = 6
    lookahead: bool = False
    eos: bool = True
    check_normalized: bool = True
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.beam_width, int) or self.beam_width < 1:
            raise LMFusionError(f"CTCOptions.beam_width must be an int >= 1, got {self.beam_width!r}")
        if not isinstance(self.nbest, int) or self.nbest < 1:
            raise LMFusionError(f"CTCOptions.nbest must be an int >= 1, got {self.nbest!r}")
        for name in ("token_min_logp", "beam_prune_logp", "unk_prefix_score"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or math.isnan(v) or v > 0:
                raise LMFusionError(f"CTCOptions.{name} must be a number <= 0, got {v!r}")
        if self.backend not in ("auto", "numba", "numpy"):
            raise LMFusionError(f"CTCOptions.backend must be 'auto', 'numba' or 'numpy', got {self.backend!r}")
        if not isinstance(self.unk_prefix_avg_len, int) or self.unk_prefix_avg_len < 1:
            raise LMFusionError(f"CTCOptions.unk_prefix_avg_len must be an int >= 1, got {self.unk_prefix_avg_len!r}")


@dataclass(frozen=True)
class CTCVocab:
    """The decoder's labels and what each one does to the text.

    Attributes:
        labels: one label per output index of the acoustic model.
        blank: the blank index.
        kind: ``"char"`` (characters, words split by ``word_delimiter``) or ``"spm"``
            (sentencepiece pieces; ``▁`` starts a word).
        word_delimiter: the delimiter label in a character vocabulary (``None``: no words).
        completes: per label, whether emitting it completes the open word.
        text: per label, the characters it appends to the (new) open word.
    """

    labels: tuple[str, ...]
    blank: int
    kind: str
    word_delimiter: str | None
    completes: tuple[bool, ...] = field(repr=False)
    text: tuple[str, ...] = field(repr=False)

    @classmethod
    def from_labels(
        cls, labels: Sequence[str], *, blank: int = 0, word_delimiter: str | None = None
    ) -> CTCVocab:
        """Recognise a character vocabulary (delimiter ``" "`` or ``"|"``) or a sentencepiece one.

        Raises:
            LMFusionError: no labels, duplicates, a blank index out of range, or a delimiter that
                is not a label.
        """
        labels = tuple(str(x) for x in labels)
        if not labels:
            raise LMFusionError("CTC vocabulary is empty")
        if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank < len(labels):
            raise LMFusionError(f"blank index {blank!r} is out of range for a vocabulary of {len(labels)} labels")
        blank = int(blank)
        seen: dict[str, int] = {}
        for i, lab in enumerate(labels):
            if i == blank:
                continue
            if lab in seen:
                raise LMFusionError(f"CTC vocabulary has label {lab!r} twice (indices {seen[lab]} and {i})")
            seen[lab] = i
        others = [lab for i, lab in enumerate(labels) if i != blank]
        is_spm = word_delimiter is None and any(lab.startswith(SPM_BOUNDARY) for lab in others)
        if is_spm:
            completes = tuple(i != blank and lab.startswith(SPM_BOUNDARY) for i, lab in enumerate(labels))
            text = tuple(
                "" if i == blank else (lab[1:] if lab.startswith(SPM_BOUNDARY) else lab) for i, lab in enumerate(labels)
            )
            return cls(labels, blank, "spm", None, completes, text)
        if word_delimiter is None:
            word_delimiter = " " if " " in others else ("|" if "|" in others else None)
        elif word_delimiter not in others:
            raise LMFusionError(f"word delimiter {word_delimiter!r} is not a label of the vocabulary")
        completes = tuple(i != blank and lab == word_delimiter for i, lab in enumerate(labels))
        text = tuple("" if (i == blank or lab == word_delimiter) else lab for i, lab in enumerate(labels))
        return cls(labels, blank, "char", word_delimiter, completes, text)

    def __len__(self) -> int:
        return len(self.labels)

    def words_of(self, tokens: Sequence[int]) -> list[tuple[str, int]]:
        """Split a token sequence into ``(word, index of its first token)`` pairs."""
        words: list[tuple[str, int]] = []
        cur: list[str] = []
        start = -1
        for i, t in enumerate(tokens):
            if self.completes[t]:
                if cur:
                    words.append(("".join(cur), start))
                cur = []
                start = -1
            if self.text[t]:
                if not cur:
                    start = i
                cur.append(self.text[t])
        if cur:
            words.append(("".join(cur), start))
        return words


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------
def as_logprobs(x: Any, vocab_size: int, *, check_normalized: bool = True, what: str = "emissions") -> np.ndarray:
    """Validate emissions ``[T, V]`` (numpy or torch) and return them as float64 numpy.

    Raises:
        InputError: not 2-D, wrong vocabulary size, empty, NaN or +inf cells, or rows that are not
            log-probabilities (when ``check_normalized``).
    """
    # rows of half-precision log-probabilities sum to 1 only within their rounding
    low = str(getattr(x, "dtype", "")).replace("torch.", "") in ("float16", "bfloat16")
    tol = 5e-2 if low else 1e-3
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().float().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} are not a numeric array: {e}", field=what) from None
    if arr.ndim != 2:
        raise InputError(f"{what} must be 2-D [frames, vocabulary], got shape {arr.shape}", field=what)
    if arr.shape[1] != vocab_size:
        raise InputError(
            f"{what} have {arr.shape[1]} columns but the vocabulary has {vocab_size} labels", field=what
        )
    if arr.shape[0] == 0:
        raise InputError(f"{what} are empty (0 frames)", field=what)
    bad = np.isnan(arr) | (arr == np.inf)
    if bad.any():
        t, v = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(arr[t, v]) else "+inf"
        raise InputError(
            f"{what} contain {kind} (first at frame {t}, label {v}); {int(bad.sum())} bad cells", field=what
        )
    if check_normalized:
        m = arr.max(axis=1, keepdims=True)
        if not np.isfinite(m).all():
            t = int(np.flatnonzero(~np.isfinite(m[:, 0]))[0])
            raise InputError(f"{what}: frame {t} has probability zero for every label", field=what)
        with np.errstate(over="ignore"):
            mass = np.exp(arr).sum(axis=1)  # 1 for log-probabilities (inf for large logits: rejected)
        dev = np.abs(mass - 1.0)
        worst = int(np.argmax(dev))
        if not dev[worst] <= tol:
            lse = float(m[worst, 0] + np.log(np.exp(arr[worst] - m[worst]).sum()))
            raise InputError(
                f"{what} are not log-probabilities: frame {worst} has logsumexp {lse:.4g} (expected 0); "
                "apply log_softmax to the model's logits first",
                field=what,
            )
    return arr


def validate_weights(weights: Mapping[str, float], lm_names: Sequence[str]) -> dict[str, float]:
    """Fill defaults and check a fusion weight mapping.

    Defaults: ``am`` 1, each LM :data:`DEFAULT_LM_WEIGHT`, ``words`` :data:`DEFAULT_WORD_BONUS` when
    there is an LM (else 0), ``oov`` 0.

    Raises:
        WeightsError: an unknown name, a non-finite value, or an ``am`` weight <= 0.
    """
    known = set(lm_names) | set(FIXED_COMPONENTS)
    out: dict[str, float] = {"am": 1.0}
    out.update({n: DEFAULT_LM_WEIGHT for n in lm_names})
    out["words"] = DEFAULT_WORD_BONUS if lm_names else 0.0
    out["oov"] = 0.0
    for k, v in weights.items():
        if k not in known:
            raise WeightsError(f"unknown weight {k!r}: expected one of {sorted(known)}")
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not math.isfinite(v):
            raise WeightsError(f"weight {k!r} must be a finite number, got {v!r}")
        out[k] = float(v)
    if out["am"] <= 0:
        raise WeightsError(f"weight 'am' must be > 0, got {out['am']}")
    return out


# ----------------------------------------------------------------------------------------------
# The decoder
# ----------------------------------------------------------------------------------------------
class CTCDecoder:
    """CTC prefix beam search with shallow fusion.

    Args:
        labels: the acoustic model's output labels (characters with a word delimiter, or
            sentencepiece pieces).
        lms: LMs to fuse (a sequence, named by ``lm.name``, or a mapping ``name -> LM``). Word-level
            LMs score completed words, token-level LMs score every token.
        weights: ``name -> weight`` (see :func:`validate_weights` for defaults), or a
            :class:`~fusion.profile.FusionProfile`: each utterance is then decoded with the weights the
            profile picks for its ``tags`` (domain, SNR); its default weights apply without tags.
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
        weights: Mapping[str, float] | FusionProfile | None = None,
        *,
        blank: int = 0,
        options: CTCOptions | None = None,
        lexicon: Iterable[str] | Lexicon | None = None,
        word_delimiter: str | None = None,
    ) -> None:
        self.vocab = CTCVocab.from_labels(labels, blank=blank, word_delimiter=word_delimiter)
        self.options = options or CTCOptions()
        if lms is None:
            pairs: list[tuple[str, LanguageModel]] = []
        elif isinstance(lms, Mapping):
            pairs = list(lms.items())
        else:
            pairs = [(m.name, m) for m in lms]
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names):
            raise LMFusionError(f"LM names must be distinct, got {names}")
        for n, m in pairs:
            if not isinstance(m, LanguageModel):
                raise LMFusionError(f"LM {n!r} is not a LanguageModel: {type(m).__name__}")
            if n in FIXED_COMPONENTS:
                raise LMFusionError(f"an LM cannot be named {n!r} (reserved score component)")
        self.lm_names: tuple[str, ...] = tuple(names)
        self.lms: tuple[LanguageModel, ...] = tuple(m for _, m in pairs)
        self.word_lms = tuple(i for i, m in enumerate(self.lms) if m.units.kind == "word")
        self.token_lms = tuple(i for i, m in enumerate(self.lms) if m.units.kind == "token")
        if self.word_lms and self.vocab.kind == "char" and self.vocab.word_delimiter is None:
            raise LMFusionError(
                "word-level LMs need word boundaries, but the vocabulary has no word delimiter "
                "(' ' or '|'; pass word_delimiter=)"
            )
        self.profile = weights if isinstance(weights, FusionProfile) else None
        base = weights.default.fusion if isinstance(weights, FusionProfile) else weights
        self.weights = validate_weights(base or {}, self.lm_names)
        self.w_lm = np.array([self.weights[n] for n in self.lm_names], dtype=np.float64)
        self._variants: dict[tuple[tuple[str, float], ...], CTCDecoder] = {}
        # lexicon / trie
        default_lexicon = lexicon is None
        if isinstance(lexicon, Lexicon):
            self.lexicon: Lexicon | None = lexicon
        elif lexicon is not None:
            self.lexicon = Lexicon(lexicon)
        else:
            vocabs = [self.lms[i].vocab for i in self.word_lms]
            known = vocabs and all(v is not None for v in vocabs)
            self.lexicon = Lexicon(frozenset().union(*vocabs)) if known else None  # type: ignore[arg-type]
        if self.options.lexicon_constrained and self.lexicon is None:
            raise LMFusionError(
                "lexicon_constrained needs a lexicon: pass lexicon= or use word LMs that list their vocabulary"
            )
        self.trie = TokenTrie(self.lexicon, self.vocab.text) if self.lexicon is not None else None
        self.look = self._lookahead_table()
        from fusion.ngram import KenLM

        # KenLM scores every out-of-vocabulary word as <unk>: with the lexicon made of the KenLMs'
        # vocabularies, all unknown words after one context share one LM entry
        self._oov_uniform = (
            default_lexicon and self.lexicon is not None and bool(self.word_lms)
            and all(type(self.lms[k]) is KenLM for k in self.word_lms)
        )
        # per-label arrays for the hot loop
        V = len(self.vocab)
        self._completes = np.array(self.vocab.completes, dtype=bool)
        self._pure_delim = np.array([c and not t for c, t in zip(self.vocab.completes, self.vocab.text, strict=True)])
        self._toklen = np.array([len(t) for t in self.vocab.text], dtype=np.int32)
        self._start_trie = (
            self.trie.step(np.zeros(V, dtype=np.int64), np.arange(V))
            if self.trie is not None
            else np.zeros(V, np.int32)
        )
        self._start_trie[~self._completes] = 0  # unused for non-completing labels
        self._start_trie[self._pure_delim] = 0
        self._has_pure_delim = bool(self._pure_delim.any())
        self._has_completing_text = any(c and t for c, t in zip(self.vocab.completes, self.vocab.text, strict=True))
        # an upper bound of what one extension can add to the LM part of the score
        any_neg = bool((self.w_lm < 0).any())
        self._gain_bound = math.inf if any_neg else max(0.0, self.weights["words"]) + max(0.0, self.weights["oov"])
        self.backend = self._pick_backend()
        # LM caches keyed (state, unit), shared across utterances (bounded)
        self._lm_cache: list[dict[tuple[State, str], tuple[float, State]]] = [{} for _ in self.lms]
        self._end_cache: list[dict[State, float]] = [{} for _ in self.lms]
        self.cache_limit = 2_000_000
        self._shared: _FusionCache | None = None
        self.lm_calls = [0 for _ in self.lms]
        """Number of (state, unit) pairs each LM was asked to score (cache misses)."""

    def _pick_backend(self) -> str:
        want = self.options.backend
        if want == "numpy":
            return "numpy"
        dense_ok = self.trie is None or self.trie._dense is not None
        try:
            import decoders._ctc_kernel  # noqa: F401
        except ImportError:
            if want == "numba":
                raise LMFusionError("CTCOptions.backend='numba' but numba is not installed") from None
            return "numpy"
        if not dense_ok:
            if want == "numba":
                raise LMFusionError(
                    "the numba backend needs a dense lexicon table; this vocabulary x lexicon is too big"
                )
            return "numpy"
        return "numba"

    def _search(self, private: bool = False) -> _Search:
        """A fresh search; unless ``private``, it shares this decoder's LM cache (utterances one at a time)."""
        shared = None
        if not private:
            if self._shared is None or self._shared.size() > self.cache_limit:
                self._shared = _FusionCache(self.lms, len(self.lms))
            shared = self._shared
        cls = _NumbaSearch if self.backend == "numba" else _Search
        return cls(self, shared=shared)

    # -- public API ----------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return self.vocab.labels

    @property
    def components(self) -> tuple[str, ...]:
        """The score components of every hypothesis: ``am``, the LM names, ``words``, ``oov``."""
        return ("am", *self.lm_names, "words", "oov")

    def with_weights(self, weights: Mapping[str, float]) -> CTCDecoder:
        """This decoder with other fusion weights; LMs, lexicon and raw LM-score caches are shared."""
        new = copy.copy(self)
        new.profile = None
        new._variants = {}
        new.weights = validate_weights(weights, self.lm_names)
        new.w_lm = np.array([new.weights[n] for n in self.lm_names], dtype=np.float64)
        new.look = new._lookahead_table()
        any_neg = bool((new.w_lm < 0).any())
        new._gain_bound = math.inf if any_neg else max(0.0, new.weights["words"]) + max(0.0, new.weights["oov"])
        new._shared = None  # fused-score entries depend on the weights
        return new

    def for_utterance(self, tags: Mapping[str, Any] | None = None) -> CTCDecoder:
        """The decoder for one utterance: itself, or (with a profile) the variant with its condition's weights."""
        if self.profile is None:
            return self
        w = resolve_weights(self.profile, tags)
        key = tuple(sorted(w.items()))
        dec = self._variants.get(key)
        if dec is None:
            dec = self._variants[key] = self.with_weights(w)
        return dec

    def decode(self, logprobs: Any, *, utt_id: str = "utt", ref: str | None = None,
               tags: Mapping[str, Any] | None = None) -> NBestList:
        """Decode one utterance's log-probabilities ``[T, V]`` into an n-best list.

        ``tags`` are copied to the output; with a profile they also pick the weights.
        """
        arr = as_logprobs(logprobs, len(self.vocab), check_normalized=self.options.check_normalized)
        s = self.for_utterance(tags)._search()
        s.feed_array(arr)
        return s.finish(utt_id=utt_id, ref=ref, tags=tags)

    def decode_text(self, logprobs: Any) -> str:
        """The best hypothesis' text."""
        nb = self.decode(logprobs)
        return nb.hyps[0].text if nb.hyps else ""

    def stream(self, tags: Mapping[str, Any] | None = None) -> CTCStream:
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
    ) -> list[NBestList]:
        """Decode many utterances, in this process or in a process pool.

        Args:
            processes: worker processes (``1``: decode here).
            mp_context: ``"fork"``, ``"spawn"`` or ``"forkserver"`` (default: the platform's).
            spec: how workers rebuild this decoder (default: :meth:`spec`, which needs LMs that
                were loaded from files).
        """
        n = len(emissions)
        ids = list(utt_ids) if utt_ids is not None else [f"utt{i}" for i in range(n)]
        rs = list(refs) if refs is not None else [None] * n
        tg = list(tags) if tags is not None else [None] * n
        if len(ids) != n or len(rs) != n or len(tg) != n:
            raise LMFusionError(
                f"decode_batch: {n} emissions but {len(ids)} utt_ids, {len(rs)} refs and {len(tg)} tags"
            )
        arrays = [
            as_logprobs(e, len(self.vocab), check_normalized=self.options.check_normalized, what=f"emissions[{i}]")
            for i, e in enumerate(emissions)
        ]
        from tqdm import tqdm

        if processes <= 1 or n <= 1:
            out = []
            for a, u, r, t in tqdm(list(zip(arrays, ids, rs, tg, strict=True)), desc="ctc decode",
                                   disable=not progress):
                s = self.for_utterance(t)._search()
                s.feed_array(a)
                out.append(s.finish(utt_id=u, ref=r, tags=t))
            return out
        spec = spec or self.spec()
        ctx = mp.get_context(mp_context)
        chunks = max(1, min(16, n // (processes * 4) or 1))
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init, initargs=(spec,)) as ex:
            it = ex.map(_worker_decode, arrays, ids, rs, tg, chunksize=chunks)
            return list(tqdm(it, total=n, desc="ctc decode", disable=not progress))

    def spec(self) -> CTCDecoderSpec:
        """A picklable description workers rebuild this decoder from (LMs by file path)."""
        return CTCDecoderSpec(
            labels=self.vocab.labels,
            blank=self.vocab.blank,
            word_delimiter=self.vocab.word_delimiter,
            lms=tuple(lm_spec_of(m, name=n) for n, m in zip(self.lm_names, self.lms, strict=True)),
            weights=tuple(sorted(self.weights.items())),
            options=self.options,
            lexicon=None,
            profile=None if self.profile is None else json.dumps(self.profile.to_json()),
        )

    # -- LM plumbing used by the search ---------------------------------------------------------
    def _score_lm_pairs(self, k: int, states: list[State], units: list[str]) -> list[tuple[float, State]]:
        """``(lp, next_state)`` of each pair under LM ``k``, through the cache; misses in one batch."""
        cache = self._lm_cache[k]
        out: list[tuple[float, State] | None] = [cache.get((s, u)) for s, u in zip(states, units, strict=True)]
        miss_idx: dict[tuple[State, str], list[int]] = {}
        for i, r in enumerate(out):
            if r is None:
                miss_idx.setdefault((states[i], units[i]), []).append(i)
        if miss_idx:
            keys = list(miss_idx)
            lps, nss = self.lms[k].score_pairs([s for s, _ in keys], [u for _, u in keys])
            self.lm_calls[k] += len(keys)
            if len(cache) + len(keys) > self.cache_limit:
                cache.clear()
            for j, key in enumerate(keys):
                lp = float(lps[j])
                if math.isnan(lp):
                    raise LMFusionError(f"LM {self.lm_names[k]!r} returned NaN for unit {key[1]!r}")
                res = (lp, nss[j])
                cache[key] = res
                for i in miss_idx[key]:
                    out[i] = res
        return out  # type: ignore[return-value]

    def _end_scores(self, k: int, states: list[State]) -> list[float]:
        cache = self._end_cache[k]
        miss = list(dict.fromkeys(s for s in states if s not in cache))
        if miss:
            vals = self.lms[k].end_batch(miss)
            if len(cache) + len(miss) > self.cache_limit:
                cache.clear()
            for s, v in zip(miss, vals, strict=True):
                cache[s] = float(v)
        return [cache[s] for s in states]

    def _is_oov(self, word: str) -> bool:
        if self.lexicon is not None:
            return word not in self.lexicon
        return bool(self.word_lms) and all(self.lms[k].is_oov(word) for k in self.word_lms)

    def _lookahead_table(self) -> np.ndarray:
        """Per trie node, the look-ahead score of an open word at it (all zero without ``lookahead``)."""
        lex = self.lexicon
        if lex is None:
            return np.zeros(1)
        if not self.options.lookahead or not self.word_lms:
            return np.zeros(lex.n_nodes)
        words = list(lex.words)
        total = np.zeros(len(words))
        for k in self.word_lms:
            lm = self.lms[k]
            lps, _ = lm.score_batch([lm.begin()], words)
            total += self.w_lm[k] * np.asarray(lps[0], dtype=np.float64)
        return lex.smear_max(dict(zip(words, total.tolist(), strict=True)))

    def _partial(self, trie_node: np.ndarray, wlen: np.ndarray) -> np.ndarray:
        """Ranking-only score of open words: the look-ahead while they can still become a known
        word (0 without ``lookahead``), the unknown-prefix penalty once they cannot."""
        o = self.options
        if self.trie is None:
            return np.zeros(len(wlen))
        scale = np.maximum(1.0, wlen / o.unk_prefix_avg_len)
        alive = trie_node != DEAD
        look = np.where(alive & (wlen > 0), self.look[np.where(alive, trie_node, 0)], 0.0)
        return np.where(~alive & (wlen > 0), o.unk_prefix_score * scale, look)


# ----------------------------------------------------------------------------------------------
# The search (one utterance); fast path
# ----------------------------------------------------------------------------------------------
class _FusionCache:
    """LM contexts and fused-score entries, shareable by the searches of one decoder.

    A context is an interned tuple of per-LM states (id 0: every LM's ``begin()``); an entry is the
    fused result of one ``(context, completed word, token)`` step. ``lm_index`` (numba searches)
    maps ``(context, word code, token)`` to an entry, for in-lexicon words (code = trie node + 1)
    for other words (code = -1 - a 62-bit hash of their tokens) and for no word (code 0).
    """

    def __init__(self, lms: Sequence[LanguageModel], n_lms: int) -> None:
        begin = tuple(m.begin() for m in lms)
        self.ctx_states: list[tuple[State, ...]] = [begin]
        self.ctx_index: dict[tuple[State, ...], int] = {begin: 0}
        self.ext_cache: dict[tuple[int, str, int], tuple[float, np.ndarray, int, bool]] = {}
        self.M = n_lms
        self.lm_index: Any = None
        self.n_entries = 0
        self.e_delta = np.zeros(0)
        self.e_ctx = np.zeros(0, np.int64)
        self.e_oov = np.zeros(0, np.int64)
        self.e_comp = np.zeros((0, n_lms))

    def size(self) -> int:
        return len(self.ext_cache) + len(self.ctx_states) + self.n_entries

    def numba_index(self) -> Any:
        if self.lm_index is None:
            from decoders._ctc_kernel import new_lm_index

            self.lm_index = new_lm_index()
            self.alloc_entries(1024)
        return self.lm_index

    def alloc_entries(self, n: int) -> None:
        old = self.n_entries
        e_delta = np.zeros(n)
        e_ctx = np.zeros(n, np.int64)
        e_oov = np.zeros(n, np.int64)
        e_comp = np.zeros((n, self.M))
        if old:
            e_delta[:old] = self.e_delta[:old]
            e_ctx[:old] = self.e_ctx[:old]
            e_oov[:old] = self.e_oov[:old]
            e_comp[:old] = self.e_comp[:old]
        self.e_delta, self.e_ctx, self.e_oov, self.e_comp = e_delta, e_ctx, e_oov, e_comp


def token_candidates(arr: np.ndarray, blank: int, min_logp: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame token pruning: ``(mask [T, V], has [T])``.

    A non-blank token is a candidate where its log-probability is at least ``min_logp``; a frame with
    none keeps its best token when that is not the blank. ``has`` marks frames with any candidate.
    """
    mask = np.asarray(arr >= min_logp)
    mask[:, blank] = False
    has: np.ndarray = np.asarray(mask.any(axis=1))
    if not has.all():
        am = arr.argmax(axis=1)
        fix = ~has & (am != blank)
        if fix.any():
            mask[np.flatnonzero(fix), am[fix]] = True
            has |= fix
    return mask, has


class _Search:
    """The state of one utterance's search: a tree of prefix nodes plus the current beam."""

    def __init__(
        self, dec: CTCDecoder, capacity: int = 4096, shared: _FusionCache | None = None, dense_children: bool = True
    ) -> None:
        self.d = dec
        self.sh = shared if shared is not None else _FusionCache(dec.lms, len(dec.lms))
        V = len(dec.vocab)
        self.V = V
        M = len(dec.lms)
        self.M = M
        self.cap = capacity
        self.parent = np.empty(capacity, np.int32)
        self.tok = np.empty(capacity, np.int32)
        self.frame = np.empty(capacity, np.int32)
        self.fixed = np.empty(capacity, np.float64)  # weighted committed LM part (+ bonuses)
        self.rank = np.empty(capacity, np.float64)  # fixed + partial-word score
        self.trie = np.empty(capacity, np.int32)
        self.wlen = np.empty(capacity, np.int32)
        self.ctx = np.empty(capacity, np.int32)
        self.nwords = np.empty(capacity, np.int32)
        self.noov = np.empty(capacity, np.int32)
        self.comp = np.empty((capacity, M), np.float64)
        self.pos = np.full(capacity + 1, -1, np.int32)  # position in the beam, or -1; pos[-1] pads child -1
        self.child = np.full((capacity, V), -1, np.int32) if dense_children and V <= 128 else None
        self.child_map: dict[int, int] = {}
        # contexts: interned tuples of per-LM states
        self.word_memo: dict[int, str] = {}
        # root
        self.parent[0] = -1
        self.tok[0] = V  # sentinel: lp_ext[V] = -inf
        self.frame[0] = -1
        self.fixed[0] = self.rank[0] = 0.0
        self.trie[0] = 0
        self.wlen[0] = 0
        self.ctx[0] = 0
        self.nwords[0] = self.noov[0] = 0
        self.comp[0] = 0.0
        self.n = 1
        self.ids = np.zeros(1, np.int64)
        self.pb = np.zeros(1, np.float64)
        self.pnb = np.full(1, NEG_INF)
        self.pos[0] = 0
        self.last = np.full(1, V, np.int64)
        self.brank = np.zeros(1, np.float64)
        self.arange = np.arange(dec.options.beam_width + 1)
        self.t = 0
        self.lp_ext = np.full(V + 1, NEG_INF)
        self.w_am = dec.weights["am"]

    # -- node storage -----------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        if need <= self.cap:
            return
        new = max(need, self.cap * 2)
        for name in ("parent", "tok", "frame", "fixed", "rank", "trie", "wlen", "ctx", "nwords", "noov"):
            a = getattr(self, name)
            b = np.empty(new, a.dtype)
            b[: self.n] = a[: self.n]
            setattr(self, name, b)
        c = np.empty((new, self.M), np.float64)
        c[: self.n] = self.comp[: self.n]
        self.comp = c
        p = np.full(new + 1, -1, np.int32)
        p[: self.cap] = self.pos[: self.cap]
        self.pos = p
        if self.child is not None:
            ch = np.full((new, self.V), -1, np.int32)
            ch[: self.n] = self.child[: self.n]
            self.child = ch
        self.cap = new

    def _lookup_children(self, pid: np.ndarray, toks: np.ndarray) -> np.ndarray:
        if self.child is not None:
            return self.child[pid, toks]
        V = self.V
        get = self.child_map.get
        return np.fromiter(
            (get(p * V + t, -1) for p, t in zip(pid.tolist(), toks.tolist(), strict=True)), np.int64, len(pid)
        )

    def _open_word(self, node: int) -> str:
        """The open (not yet completed) word of a node."""
        tn = int(self.trie[node])
        lex = self.d.lexicon
        if tn >= 0 and lex is not None and lex.terminal[tn]:
            return lex.word_of[tn]  # type: ignore[return-value]
        memo = self.word_memo
        w = memo.get(node)
        if w is not None:
            return w
        # walk up to a memoised node or the word's first token, then memoise on the way down
        text = self.d.vocab.text
        completes = self.d.vocab.completes
        chain: list[tuple[int, int]] = []
        nd = node
        base = ""
        while nd > 0:
            hit = memo.get(nd)
            if hit is not None:
                base = hit
                break
            t = int(self.tok[nd])
            chain.append((nd, t))
            if completes[t]:
                break
            nd = int(self.parent[nd])
        for nd, t in reversed(chain):
            base = text[t] if completes[t] else base + text[t]
            memo[nd] = base
        return base

    # -- LM extension (Python path: word completions and token LMs) -----------------------------
    def _extend(self, ctxs: list[int], words: list[str], toks: list[int]) -> list[tuple[float, np.ndarray, int, bool]]:
        """For each item, apply the word LMs to ``words[i]`` (if non-empty) and the token LMs to
        label ``toks[i]`` (if >= 0) from context ``ctxs[i]``.

        Returns per item ``(weighted delta, unweighted per-LM deltas [M], new ctx id, is_oov)``;
        the weighted delta includes the word bonus and OOV weight.
        """
        d = self.d
        cache = self.sh.ext_cache
        keys = [(c, w, t) for c, w, t in zip(ctxs, words, toks, strict=True)]
        out: list[Any] = [cache.get(k) for k in keys]
        miss = list(dict.fromkeys(k for k, r in zip(keys, out, strict=True) if r is None))
        if miss:
            M = self.M
            sh = self.sh
            new_states = [list(sh.ctx_states[c]) for c, _, _ in miss]
            deltas = np.zeros((len(miss), M))
            labels = d.vocab.labels
            for k in range(M):
                is_word = k in d.word_lms
                sel = [j for j, (_, w, t) in enumerate(miss) if (w if is_word else t >= 0)]
                if not sel:
                    continue
                units = [miss[j][1] if is_word else labels[miss[j][2]] for j in sel]
                res = d._score_lm_pairs(k, [new_states[j][k] for j in sel], units)
                for j, (lp, ns) in zip(sel, res, strict=True):
                    deltas[j, k] = lp
                    new_states[j][k] = ns
            wb, wo = d.weights["words"], d.weights["oov"]
            w_lm = d.w_lm.tolist()
            drows = deltas.tolist()
            for j, key in enumerate(miss):
                st = tuple(new_states[j])
                cid = sh.ctx_index.get(st)
                if cid is None:
                    cid = len(sh.ctx_states)
                    sh.ctx_states.append(st)
                    sh.ctx_index[st] = cid
                word = key[1]
                oov = bool(word) and d._is_oov(word)
                comp = deltas[j]
                w = sum(a * b for a, b in zip(w_lm, drows[j], strict=True))
                if word:
                    w += wb + (wo if oov else 0.0)
                cache[key] = (w, comp, cid, oov)
            out = [cache[k] for k in keys]
        return out

    # -- one frame --------------------------------------------------------------------------
    def _advance(self, lp: np.ndarray, cand: np.ndarray) -> None:
        """One frame with at least one candidate token ``cand`` (blank excluded)."""
        d = self.d
        o = d.options
        ids, pb, pnb, last = self.ids, self.pb, self.pnb, self.last
        B = len(ids)
        lp_ext = self.lp_ext
        lp_ext[: self.V] = lp
        tot = np.logaddexp(pb, pnb)
        pb2 = tot + lp[d.vocab.blank]
        pnb2 = pnb + lp_ext[last]
        C = len(cand)
        if C == 1:
            c = int(cand[0])
            par = self.arange[:B]
            ctok = np.full(B, c, np.int64)
            ext = np.where(last == c, pb, tot) + lp[c]
            pid = ids
        else:
            par = np.repeat(self.arange[:B], C)
            ctok = np.tile(cand, B)
            ext = np.where(last[par] == ctok, pb[par], tot[par]) + lp[ctok]
            pid = ids[par]
        if d._has_pure_delim and d._pure_delim[cand].any():
            # a delimiter with no open word keeps the prefix's text: its mass joins the prefix itself
            redirect = d._pure_delim[ctok] & (self.wlen[pid] == 0)
            if redirect.any():
                rp = par[redirect]
                pnb2[rp] = np.logaddexp(pnb2[rp], ext[redirect])
                keep = ~redirect
                par, ctok, pid, ext = par[keep], ctok[keep], pid[keep], ext[keep]
        child = self._lookup_children(pid, ctok)
        cpos = self.pos[child]  # pos[-1] is the padding cell, always -1
        inbeam = cpos >= 0
        if inbeam.any():
            bpos = cpos[inbeam]
            pnb2[bpos] = np.logaddexp(pnb2[bpos], ext[inbeam])
        s_stay = np.logaddexp(pb2, pnb2) + self.brank
        W = o.beam_width
        thr = float(s_stay.max()) + o.beam_prune_logp
        if B >= W:
            thr = max(thr, float(np.partition(s_stay, B - W)[B - W]))
        # children outside the beam: existing nodes have exact scores; new ones an upper bound first
        exists = child >= 0
        ex_idx = np.flatnonzero(exists & ~inbeam)
        if ex_idx.size:
            ex_score = ext[ex_idx] + self.rank[child[ex_idx]]
            ok = ex_score >= thr
            ex_idx, ex_score = ex_idx[ok], ex_score[ok]
        else:
            ex_score = ex_idx.astype(np.float64)
        if math.isinf(d._gain_bound):
            nw_idx = np.flatnonzero(~exists & (ext > NEG_INF))
        else:
            nw_idx = np.flatnonzero(~exists & (ext + self.fixed[pid] + d._gain_bound >= thr))
        new = self._new_children(pid[nw_idx], ctok[nw_idx], ext[nw_idx], thr) if nw_idx.size else None
        n_ex = ex_idx.size
        if new is None and n_ex == 0:
            self._select_stays(pb2, pnb2, s_stay)
            return
        parts = (s_stay, ex_score, new["score"]) if new is not None else (s_stay, ex_score)
        score = np.concatenate(parts)
        best = float(score.max())
        if not math.isfinite(best):
            raise LMFusionError(f"CTC search: every hypothesis has zero probability at frame {self.t}")
        sel = np.flatnonzero(score >= best + o.beam_prune_logp)
        if sel.size > W:
            sel = np.sort(sel[np.argpartition(-score[sel], W - 1)[:W]])
        cut1 = int(np.searchsorted(sel, B))
        cut2 = int(np.searchsorted(sel, B + n_ex))
        st = sel[:cut1]
        ei = ex_idx[sel[cut1:cut2] - B]
        ec = child[ei]
        ids_l = [ids[st], ec]
        pb_l = [pb2[st], np.full(ei.size, NEG_INF)]
        pnb_l = [pnb2[st], ext[ei]]
        rank_l = [self.brank[st], self.rank[ec]]
        last_l = [last[st], self.tok[ec]]
        if cut2 < sel.size:
            ni = sel[cut2:] - B - n_ex
            ids_l.append(self._create(new, ni))  # type: ignore[arg-type]
            pb_l.append(np.full(ni.size, NEG_INF))
            pnb_l.append(new["ext"][ni])  # type: ignore[index]
            rank_l.append(new["rank"][ni])  # type: ignore[index]
            last_l.append(new["tok"][ni])  # type: ignore[index]
        self.pos[ids] = -1
        self.ids = np.concatenate(ids_l)
        self.pb = np.concatenate(pb_l)
        self.pnb = np.concatenate(pnb_l)
        self.brank = np.concatenate(rank_l)
        self.last = np.concatenate(last_l)
        self.pos[self.ids] = self.arange[: len(self.ids)]

    def _select_stays(self, pb2: np.ndarray, pnb2: np.ndarray, s: np.ndarray) -> None:
        best = float(s.max())
        if not math.isfinite(best):
            raise LMFusionError(f"CTC search: every hypothesis has zero probability at frame {self.t}")
        self._keep(s >= best + self.d.options.beam_prune_logp, pb2, pnb2)

    def _keep(self, keep: np.ndarray, pb: np.ndarray, pnb: np.ndarray) -> None:
        """Adopt the beams' new blank / non-blank scores, dropping the beams where ``keep`` is False."""
        if keep.all():
            self.pb, self.pnb = pb, pnb
            return
        self.pos[self.ids[~keep]] = -1
        self.ids = self.ids[keep]
        self.pb, self.pnb = pb[keep], pnb[keep]
        self.brank = self.brank[keep]
        self.last = self.last[keep]
        self.pos[self.ids] = self.arange[: len(self.ids)]

    def _stay_run(self, run: np.ndarray) -> None:
        """Frames where no token passes the pruning: every prefix only stays (blank or repeat).

        Closed form over the run (``run`` is ``[L, V]``); falls back to frame by frame when the
        per-frame beam pruning would depend on the order of removals or blanks have probability 0.
        """
        d = self.d
        L = len(run)
        blank = d.vocab.blank
        b = run[:, blank]
        if L == 1 or not np.isfinite(b).all():
            for row in run:
                self._stay_frame(row)
                self.t += 1
            return
        r = np.concatenate((run, np.full((L, 1), NEG_INF)), axis=1)[:, self.last]  # [L, B]
        cb = np.cumsum(b)
        cr = np.cumsum(r, axis=0)
        tot0 = np.logaddexp(self.pb, self.pnb)
        with np.errstate(invalid="ignore"):
            acc = np.logaddexp.accumulate(cr - cb[:, None], axis=0)
        tot = cb[:, None] + np.logaddexp(tot0[None, :], self.pnb[None, :] + acc)  # [L, B]
        s = tot + self.brank[None, :]
        best = s.max(axis=1)
        ok = s >= (best + d.options.beam_prune_logp)[:, None]
        alive = ok.all(axis=0)
        if not alive[s.argmax(axis=1)].all() or not np.isfinite(best).all():
            for row in run:
                self._stay_frame(row)
                self.t += 1
            return
        pnb = self.pnb + cr[-1]
        prev_tot = tot[-2]
        pb = prev_tot + b[-1]
        self.t += L
        self._keep(alive, pb, pnb)

    def _stay_frame(self, lp: np.ndarray) -> None:
        self.lp_ext[: self.V] = lp
        tot = np.logaddexp(self.pb, self.pnb)
        pb2 = tot + lp[self.d.vocab.blank]
        pnb2 = self.pnb + self.lp_ext[self.last]
        self._select_stays(pb2, pnb2, np.logaddexp(pb2, pnb2) + self.brank)

    def _new_children(self, pid: np.ndarray, ctok: np.ndarray, ext: np.ndarray, thr: float) -> dict[str, Any] | None:
        """Exact fused scores of candidate new nodes ``(pid, ctok)``; drops the hopeless ones.

        Returns the survivors' fields, with ``delta`` rows (index into ``deltas``) for those that
        went through the LM (``-1``: same LM part as the parent).
        """
        d = self.d
        comp_tok = d._completes[ctok]
        n = len(pid)
        pwlen = self.wlen[pid]
        toklen = d._toklen[ctok]
        if d.trie is not None:
            step = d.trie.step(self.trie[pid], ctok)
            start = d._start_trie[ctok] if d._has_completing_text else 0
            trie = np.where(comp_tok, start, step)
        else:
            trie = np.zeros(n, np.int32)
        wlen = np.where(comp_tok, toklen, pwlen + toklen)
        fixed = self.fixed[pid]
        alive = None
        completing = comp_tok & (pwlen > 0)
        need = np.ones(n, bool) if d.token_lms else completing
        if d.options.lexicon_constrained:
            alive = trie != DEAD
            if completing.any():
                pt = self.trie[pid[completing]]
                okc = (pt >= 0) & d.lexicon.terminal[np.maximum(pt, 0)]  # type: ignore[union-attr]
                alive[np.flatnonzero(completing)[~okc]] = False
            need &= alive
        delta = None
        idx = np.flatnonzero(need) if need.any() else None
        if idx is not None:
            use_tok = bool(d.token_lms)
            ctxs = self.ctx[pid[idx]].tolist()
            words = [
                self._open_word(p) if c else ""
                for p, c in zip(pid[idx].tolist(), completing[idx].tolist(), strict=True)
            ]
            toks = ctok[idx].tolist() if use_tok else [-1] * idx.size
            res = self._extend(ctxs, words, toks)
            fixed = fixed.copy()
            fixed[idx] += np.fromiter((r[0] for r in res), np.float64, idx.size)
            delta = np.full(n, -1, np.int64)
            delta[idx] = np.arange(idx.size)
        rank = fixed + d._partial(trie, wlen) if d.trie is not None else fixed
        score = ext + rank
        keep = score >= thr
        if alive is not None:
            keep &= alive
        if not keep.any():
            return None
        k = np.flatnonzero(keep) if not keep.all() else None
        out = {"pid": pid, "tok": ctok, "ext": ext, "score": score, "fixed": fixed, "rank": rank,
               "trie": trie, "wlen": wlen, "completing": completing}
        if delta is not None:
            out["delta"] = delta
            out["res"] = res
        if k is not None:
            for key in ("pid", "tok", "ext", "score", "fixed", "rank", "trie", "wlen", "completing", "delta"):
                if key in out:
                    out[key] = out[key][k]
        return out

    def _create(self, new: dict[str, Any], ni: np.ndarray) -> np.ndarray:
        k = ni.size
        self._grow(self.n + k)
        a, b = self.n, self.n + k
        ids = np.arange(a, b)
        pid = new["pid"][ni]
        tok = new["tok"][ni]
        self.parent[a:b] = pid
        self.tok[a:b] = tok
        self.frame[a:b] = self.t
        for name in ("fixed", "rank", "trie", "wlen"):
            getattr(self, name)[a:b] = new[name][ni]
        ctx = self.ctx[pid]
        nwords = self.nwords[pid] + new["completing"][ni]
        noov = self.noov[pid]
        comp = self.comp[pid] if self.M else None
        if "delta" in new:
            dl = new["delta"][ni]
            res = new["res"]
            for j in np.flatnonzero(dl >= 0).tolist():
                _, dcomp, cid, oov = res[dl[j]]
                ctx[j] = cid
                noov[j] += oov
                if comp is not None:
                    comp[j] += dcomp
        self.ctx[a:b] = ctx
        self.nwords[a:b] = nwords
        self.noov[a:b] = noov
        if comp is not None:
            self.comp[a:b] = comp
        if self.child is not None:
            self.child[pid, tok] = ids
        else:
            V = self.V
            for p, tk, i in zip(pid.tolist(), tok.tolist(), ids.tolist(), strict=True):
                self.child_map[p * V + tk] = i
        self.n = b
        return ids

    # -- feeding and finishing -----------------------------------------------------------------
    def feed_array(self, arr: np.ndarray) -> None:
        """Advance over validated float64 log-probabilities ``[T, V]``."""
        if self.w_am != 1.0:
            arr = arr * self.w_am
        d = self.d
        blank = d.vocab.blank
        T = len(arr)
        mask, has = token_candidates(arr, blank, d.options.token_min_logp)
        tt, vv = np.nonzero(mask)
        bounds: list[int] = np.searchsorted(tt, np.arange(T + 1)).tolist()
        has_l: list[bool] = list(has.tolist())
        t = 0
        while t < T:
            if has_l[t]:
                self._advance(arr[t], vv[bounds[t] : bounds[t + 1]])
                self.t += 1
                t += 1
            else:
                e = t + 1
                while e < T and not has_l[e]:
                    e += 1
                self._stay_run(arr[t:e])
                t = e

    def _tokens(self, node: int) -> tuple[list[int], list[int]]:
        if getattr(self, "_lists_n", -1) != self.n:
            self._pl = self.parent[: self.n].tolist()
            self._tl = self.tok[: self.n].tolist()
            self._fl = self.frame[: self.n].tolist()
            self._lists_n = self.n
        pl, tl, fl = self._pl, self._tl, self._fl
        toks, frames = [], []
        nd = node
        while nd > 0:
            toks.append(tl[nd])
            frames.append(fl[nd])
            nd = pl[nd]
        return toks[::-1], frames[::-1]

    def finals(self, limit: int | None = None) -> list[tuple[float, int, dict[str, float]]]:
        """Score the beam as final hypotheses: ``(total, node, components)``, best first,
        one per distinct text (alignments of the same text are summed into ``am``)."""
        d = self.d
        o = d.options
        ids = self.ids.tolist()
        am = np.logaddexp(self.pb, self.pnb)
        # complete open words
        open_words = [self._open_word(i) if self.wlen[i] > 0 else "" for i in ids]
        if o.lexicon_constrained:
            lex = d.lexicon
            ok = [w == "" or w in lex for w in open_words]  # type: ignore[operator]
            if any(ok):
                ids = [i for i, k in zip(ids, ok, strict=True) if k]
                am = am[np.array(ok)]
                open_words = [w for w, k in zip(open_words, ok, strict=True) if k]
        res = self._extend([int(self.ctx[i]) for i in ids], open_words, [-1] * len(ids))
        ends = np.zeros((len(ids), self.M))
        if o.eos and self.M:
            for k in range(self.M):
                ends[:, k] = d._end_scores(k, [self.sh.ctx_states[r[2]][k] for r in res])
        n = len(ids)
        ids_arr = np.array(ids, dtype=np.int64)
        dw = np.fromiter((r[0] for r in res), np.float64, n)
        dcomp = np.stack([r[1] for r in res]) if self.M else np.zeros((n, 0))
        comp = self.comp[ids_arr] + dcomp + ends
        nwords = self.nwords[ids_arr] + np.fromiter((bool(w) for w in open_words), np.int64, n)
        noov = self.noov[ids_arr] + np.fromiter((r[3] for r in res), np.int64, n)
        fixed = self.fixed[ids_arr] + dw + (ends @ d.w_lm if self.M else 0.0)
        am_w = np.asarray(am, dtype=np.float64)
        total = am_w + fixed
        if d.vocab.kind == "char":
            # distinct prefixes share a text only as X and X + delimiter (delimiters never repeat)
            toks = self.tok[ids_arr]
            keys: list[Any] = np.where(d._pure_delim[np.minimum(toks, self.V - 1)] & (toks < self.V),
                                       self.parent[ids_arr], ids_arr).tolist()
        else:
            keys = [self._text(i) for i in ids]
        order = np.argsort(-total, kind="stable").tolist()
        groups: dict[Any, list[int]] = {}
        for j in order:
            groups.setdefault(keys[j], []).append(j)
        out = []
        for members in groups.values():
            j = members[0]
            tot_j = float(total[j])
            a_j = float(am_w[j])
            if len(members) > 1:
                merged = float(np.logaddexp.reduce(am_w[members]))
                tot_j += merged - a_j
                a_j = merged
            out.append((tot_j, j, a_j))
        out.sort(key=lambda x: -x[0])
        if limit is not None:
            out = out[:limit]
        result = []
        for tot_j, j, a_j in out:
            scores = {"am": a_j / self.w_am, **{nm: float(comp[j, k]) for k, nm in enumerate(d.lm_names)},
                      "words": float(nwords[j]), "oov": float(noov[j])}
            result.append((tot_j, int(ids_arr[j]), scores))
        return result

    def _text(self, node: int) -> str:
        toks, _ = self._tokens(node)
        return " ".join(w for w, _ in self.d.vocab.words_of(toks))

    def hypothesis(self, node: int, scores: Mapping[str, float]) -> ScoredHypothesis:
        toks, frames = self._tokens(node)
        vocab = self.d.vocab
        words = []
        pieces = vocab.words_of(toks)
        # end frame: first frame of the word's last token, plus one
        for wi, (w, start) in enumerate(pieces):
            stop = pieces[wi + 1][1] if wi + 1 < len(pieces) else len(toks)
            last_tok_idx = max(i for i in range(start, stop) if vocab.text[toks[i]])
            words.append((w, frames[start], frames[last_tok_idx] + 1))
        return ScoredHypothesis(
            " ".join(w for w, _ in pieces), dict(scores), tuple(vocab.labels[t] for t in toks), tuple(words)
        )

    def finish(
        self, *, utt_id: str = "utt", ref: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> NBestList:
        fin = self.finals(self.d.options.nbest)
        hyps = tuple(self.hypothesis(node, scores) for _, node, scores in fin)
        return NBestList(utt_id, hyps, ref, dict(tags or {}))


class _NumbaSearch(_Search):
    """The same search with the frame loop compiled by numba (:mod:`decoders._ctc_kernel`)."""

    def __init__(self, dec: CTCDecoder, capacity: int = 2048, shared: _FusionCache | None = None) -> None:
        super().__init__(dec, capacity, shared, dense_children=False)
        from decoders import _ctc_kernel as K

        self.K = K
        self.child_nb = K.new_child_index()
        self.sh.numba_index()
        self.whash = np.zeros(self.cap, np.int64)
        W = dec.options.beam_width
        self.b_ids = np.zeros(W + 1, np.int64)
        self.b_pb = np.zeros(W + 1)
        self.b_pnb = np.full(W + 1, NEG_INF)
        self.b_last = np.full(W + 1, self.V, np.int64)
        self.b_rank = np.zeros(W + 1)
        self.state = np.array([1, 1, capacity, 0, 0], np.int64)
        tr = dec.trie
        self.trie_tab = tr._dense if tr is not None else np.zeros((1, 1), np.int32)
        self.terminal = dec.lexicon.terminal if dec.lexicon is not None else np.zeros(1, bool)
        self.toklen64 = dec._toklen.astype(np.int64)
        self.start64 = dec._start_trie.astype(np.int64)
        self.req = [np.empty(0, np.int64)] * 3
        self.ins_keys = np.empty((256, 3), np.int64)  # new LM-cache entries for the kernel to index
        self.ins_vals = np.empty(256, np.int64)
        self.n_ins = 0
        self._sync()

    def _tokens(self, node: int) -> tuple[list[int], list[int]]:
        toks, frames = self.K.token_chain(self.parent, self.tok, self.frame, node)
        return toks.tolist(), frames.tolist()

    def _sync(self) -> None:
        """Expose the kernel's beam as the arrays :meth:`_Search.finals` reads."""
        self.n = int(self.state[0])
        B = int(self.state[1])
        self.ids = self.b_ids[:B].copy()
        self.pb = self.b_pb[:B].copy()
        self.pnb = self.b_pnb[:B].copy()

    def _answer(self, nreq: int) -> None:
        """Score the kernel's LM requests and add them to its cache."""
        pid_arr = self.req[0][:nreq]
        pids = pid_arr.tolist()
        pctx = self.ctx[pid_arr].tolist()
        toks = self.req[1][:nreq].tolist() if self.d.token_lms else [-1] * nreq
        codes = self.req[2][:nreq].tolist()
        word_of = self.d.lexicon.word_of if self.d.lexicon is not None else []
        keys, words = [], []
        seen: set[tuple[int, int, int]] = set()
        for p, cx, c, code in zip(pids, pctx, toks, codes, strict=True):
            key = (cx, code, c)
            if key in seen:
                continue
            seen.add(key)
            keys.append(key)
            words.append("" if code == 0 else (word_of[code - 1] if code > 0 else self._open_word(p)))
        res = self._extend([k[0] for k in keys], words, [k[2] for k in keys])
        sh = self.sh
        a = sh.n_entries
        b = a + len(keys)
        if b > len(sh.e_delta):
            sh.alloc_entries(max(b, 2 * len(sh.e_delta)))
        sh.e_delta[a:b] = [r[0] for r in res]
        sh.e_ctx[a:b] = [r[2] for r in res]
        sh.e_oov[a:b] = [r[3] for r in res]
        if self.M:
            sh.e_comp[a:b] = np.stack([r[1] for r in res])
        k = len(keys)
        if self.n_ins + k > len(self.ins_vals):
            size = max(2 * len(self.ins_vals), self.n_ins + k)
            keys_new = np.empty((size, 3), np.int64)
            vals_new = np.empty(size, np.int64)
            keys_new[: self.n_ins] = self.ins_keys[: self.n_ins]
            vals_new[: self.n_ins] = self.ins_vals[: self.n_ins]
            self.ins_keys, self.ins_vals = keys_new, vals_new
        self.ins_keys[self.n_ins : self.n_ins + k] = keys
        self.ins_vals[self.n_ins : self.n_ins + k] = np.arange(a, b)
        self.n_ins += k
        sh.n_entries = b

    def feed_array(self, arr: np.ndarray) -> None:
        if self.w_am != 1.0:
            arr = arr * self.w_am
        d = self.d
        o = d.options
        blank = d.vocab.blank
        T = len(arr)
        mask, _ = token_candidates(arr, blank, o.token_min_logp)
        tt, vv = np.nonzero(mask)
        cand_ptr = np.searchsorted(tt, np.arange(T + 1)).astype(np.int64)
        cand_tok = vv.astype(np.int64)
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        t = 0
        K = self.K
        W = o.beam_width
        cmax = max(1, int(np.diff(cand_ptr).max(initial=1)))
        if len(self.req[0]) < W * cmax:
            self.req = [np.empty(W * cmax, np.int64) for _ in range(3)]
        sh = self.sh
        self.n_ins = 0
        while True:
            n_ins = self.n_ins
            self.n_ins = 0
            status = K.run_frames(
                arr, t, self.t, cand_ptr, cand_tok,
                self.parent, self.tok, self.frame, self.fixed, self.rank, self.trie, self.wlen, self.ctx,
                self.nwords, self.noov, self.comp, self.pos, self.child_nb, self.whash,
                self.b_ids, self.b_pb, self.b_pnb, self.b_last, self.b_rank, self.state,
                self.trie_tab, self.terminal, d._completes, d._pure_delim, self.toklen64, self.start64,
                sh.lm_index, sh.e_delta, sh.e_ctx, sh.e_oov, sh.e_comp,
                blank, W, float(o.beam_prune_logp), not bool((d.w_lm < 0).any()), d.weights["words"],
                d.weights["oov"], float(o.unk_prefix_score),
                float(o.unk_prefix_avg_len), bool(o.lexicon_constrained), d.trie is not None, bool(d.token_lms),
                d.look, d._oov_uniform,
                self.req[0], self.req[1], self.req[2], self.ins_keys, self.ins_vals, n_ins,
            )
            t = int(self.state[3])
            if status == K.STATUS_DONE:
                break
            if status == K.STATUS_GROW:
                self.n = int(self.state[0])
                self._grow(self.n + W * (1 + cmax) + 1)
                wh = np.zeros(self.cap, np.int64)
                wh[: self.n] = self.whash[: self.n]
                self.whash = wh
                self.state[2] = self.cap
            elif status == K.STATUS_NEED_LM:
                self._answer(int(self.state[4]))
            else:
                self._sync()
                raise LMFusionError(f"CTC search: every hypothesis has zero probability at frame {self.t + t}")
        self.t += T
        self._sync()


class CTCStream:
    """Streaming CTC decoding: :meth:`feed` chunks of frames, :meth:`best` any time, :meth:`finish`.

    The search state after feeding chunks ``a`` then ``b`` is the same as after feeding ``a ++ b``.
    """

    def __init__(self, decoder: CTCDecoder) -> None:
        self.decoder = decoder
        self._search = decoder._search(private=True)
        self._done = False

    @property
    def frames(self) -> int:
        """Frames fed so far."""
        return self._search.t

    def feed(self, logprobs: Any) -> None:
        """Advance over a chunk ``[t, V]`` of log-probabilities (``t`` may be 0)."""
        if self._done:
            raise LMFusionError("CTCStream.feed after finish()")
        if hasattr(logprobs, "shape") and len(logprobs.shape) == 2 and logprobs.shape[0] == 0:
            if logprobs.shape[1] != len(self.decoder.vocab):
                as_logprobs(logprobs, len(self.decoder.vocab))  # raises the size error
            return
        arr = as_logprobs(logprobs, len(self.decoder.vocab), check_normalized=self.decoder.options.check_normalized,
                          what=f"chunk at frame {self.frames}")
        self._search.feed_array(arr)

    def best(self) -> ScoredHypothesis:
        """The current best hypothesis, as if the utterance ended now (the search goes on)."""
        if self._search.t == 0:
            return ScoredHypothesis("", {c: 0.0 for c in self.decoder.components})
        fin = self._search.finals(1)
        _, node, scores = fin[0]
        return self._search.hypothesis(node, scores)

    def finish(self, *, utt_id: str = "utt", ref: str | None = None) -> NBestList:
        """The final n-best list; the stream cannot be fed afterwards."""
        if self._search.t == 0:
            raise InputError("CTCStream.finish: no frames were fed", field="emissions")
        self._done = True
        return self._search.finish(utt_id=utt_id, ref=ref)


# ----------------------------------------------------------------------------------------------
# Process pools: a picklable decoder spec
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LMSpec:
    """How to rebuild an LM in another process.

    Attributes:
        name: the LM's name (its weight's key).
        path: a KenLM file or neural checkpoint directory (see :func:`fusion.loading.load_lm`).
        tokenizer: sentencepiece model for an n-gram over pieces.
        mix: for an interpolation, its components (``LMSpec``) and weights.
        mix_kind: ``"linear"`` or ``"loglinear"``.
    """

    name: str
    path: str | None = None
    tokenizer: str | None = None
    mix: tuple[tuple[LMSpec, float], ...] = ()
    mix_kind: str = "linear"

    def load(self) -> LanguageModel:
        from fusion.interpolate import LinearInterpolation, LogLinearInterpolation

        if self.mix:
            models = [s.load() for s, _ in self.mix]
            ws = [w for _, w in self.mix]
            cls = LinearInterpolation if self.mix_kind == "linear" else LogLinearInterpolation
            return cls(models, ws, name=self.name)
        if self.path is None:
            raise LMFusionError(f"LMSpec {self.name!r} has neither a path nor components")
        from fusion.loading import load_lm

        return load_lm(self.path, name=self.name, tokenizer=self.tokenizer)


def lm_spec_of(lm: LanguageModel, *, name: str | None = None) -> LMSpec:
    """Describe an LM loaded from files (KenLM, a neural checkpoint, interpolations of those).

    Raises:
        LMFusionError: the LM was built in memory and has no file to reload it from.
    """
    from fusion.interpolate import LinearInterpolation, LogLinearInterpolation

    name = name or lm.name
    if isinstance(lm, (LinearInterpolation, LogLinearInterpolation)):
        kind = "linear" if isinstance(lm, LinearInterpolation) else "loglinear"
        return LMSpec(
            name,
            mix=tuple((lm_spec_of(m), float(w)) for m, w in zip(lm.models, lm.weights, strict=True)),
            mix_kind=kind,
        )
    path = getattr(lm, "path", None)
    if path is None:
        raise LMFusionError(
            f"LM {name!r} ({type(lm).__name__}) was not loaded from a file; pass decode_batch(spec=...) "
            "with an LMSpec per LM to use a process pool"
        )
    tok = getattr(lm, "tokenizer", None)
    tok_path = getattr(tok, "path", None)
    return LMSpec(name, path=str(path), tokenizer=str(tok_path) if tok_path is not None else None)


@dataclass(frozen=True)
class CTCDecoderSpec:
    """Everything needed to rebuild a :class:`CTCDecoder` in a worker (picklable, no model objects)."""

    labels: tuple[str, ...]
    blank: int = 0
    word_delimiter: str | None = None
    lms: tuple[LMSpec, ...] = ()
    weights: tuple[tuple[str, float], ...] = ()
    options: CTCOptions = field(default_factory=CTCOptions)
    lexicon: tuple[str, ...] | None = None
    profile: str | None = None
    """A fusion profile as JSON text (it then supplies the weights per utterance)."""

    def build(self) -> CTCDecoder:
        weights: Mapping[str, float] | FusionProfile = dict(self.weights)
        if self.profile is not None:
            weights = FusionProfile.from_json(json.loads(self.profile))
        return CTCDecoder(
            self.labels,
            {s.name: s.load() for s in self.lms},
            weights,
            blank=self.blank,
            options=self.options,
            lexicon=self.lexicon,
            word_delimiter=self.word_delimiter,
        )


_WORKER: dict[str, CTCDecoder] = {}
"""The decoder of a pool worker process (set by the pool initializer, only in workers)."""


def _worker_init(spec: CTCDecoderSpec) -> None:
    _WORKER["decoder"] = spec.build()


def _worker_decode(arr: np.ndarray, utt_id: str, ref: str | None, tags: Mapping[str, Any] | None) -> NBestList:
    dec = _WORKER["decoder"].for_utterance(tags)
    s = dec._search()
    s.feed_array(arr)
    return s.finish(utt_id=utt_id, ref=ref, tags=tags)


# ----------------------------------------------------------------------------------------------
# The slow reference: same search, plainly written
# ----------------------------------------------------------------------------------------------
def _ref_lm_state(dec: CTCDecoder, prefix: tuple[int, ...]) -> tuple[float, dict[str, float], int, int, str]:
    """Score a whole prefix from scratch: ``(weighted fixed part, per-LM sums, words, oovs, open word)``."""
    vocab = dec.vocab
    states = [m.begin() for m in dec.lms]
    comp = {n: 0.0 for n in dec.lm_names}
    nwords = noov = 0
    cur = ""
    for t in prefix:
        if vocab.completes[t]:
            if cur:
                for k in dec.word_lms:
                    lp, states[k] = dec.lms[k].score(states[k], cur)
                    comp[dec.lm_names[k]] += lp
                nwords += 1
                noov += int(dec._is_oov(cur))
            cur = ""
        for k in dec.token_lms:
            lp, states[k] = dec.lms[k].score(states[k], vocab.labels[t])
            comp[dec.lm_names[k]] += lp
        cur += vocab.text[t]
    w = dec.weights
    fixed = sum(w[n] * comp[n] for n in dec.lm_names) + w["words"] * nwords + w["oov"] * noov
    return fixed, comp, nwords, noov, cur


def _ref_rank(dec: CTCDecoder, prefix: tuple[int, ...]) -> float | None:
    """Ranking LM score of a prefix, or ``None`` if lexicon-constrained search forbids it."""
    fixed, _, _, _, cur = _ref_lm_state(dec, prefix)
    o = dec.options
    lex = dec.lexicon
    if lex is None:
        return fixed
    alive = lex.is_prefix(cur)
    if o.lexicon_constrained:
        completed = dec.vocab.words_of(prefix)
        if cur:
            completed = completed[:-1]
        if not alive or any(w not in lex for w, _ in completed):
            return None
        return fixed + (float(dec.look[lex.walk(0, cur)]) if cur else 0.0)
    if not cur:
        return fixed
    if alive:
        return fixed + float(dec.look[lex.walk(0, cur)])
    return fixed + o.unk_prefix_score * max(1.0, len(cur) / o.unk_prefix_avg_len)


def reference_beam_search(dec: CTCDecoder, logprobs: Any) -> list[tuple[str, float, dict[str, float]]]:
    """The plain version of :class:`CTCDecoder`'s search: ``[(text, total, components)]``, best first.

    Prefixes are tuples of label ids in a dict; every prefix's LM score is recomputed from scratch
    with ``LanguageModel.score`` (no caches, no batching, no pruning shortcuts).
    """
    o = dec.options
    arr = as_logprobs(logprobs, len(dec.vocab), check_normalized=o.check_normalized) * dec.weights["am"]
    vocab = dec.vocab
    blank = vocab.blank
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}

    def lae(a: float, b: float) -> float:
        return float(np.logaddexp(a, b))

    for lp in arr:
        cand = [v for v in range(len(vocab)) if v != blank and lp[v] >= o.token_min_logp]
        if not cand and int(np.argmax(lp)) != blank:
            cand = [int(np.argmax(lp))]
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(p: tuple[int, ...], b: float, nb: float, nxt: dict[tuple[int, ...], list[float]] = nxt) -> None:
            cur = nxt.setdefault(p, [NEG_INF, NEG_INF])
            cur[0] = lae(cur[0], b)
            cur[1] = lae(cur[1], nb)

        for prefix, (pb, pnb) in beams.items():
            last = prefix[-1] if prefix else None
            tot = lae(pb, pnb)
            add(prefix, tot + lp[blank], pnb + lp[last] if last is not None else NEG_INF)
            open_word = _ref_lm_state(dec, prefix)[4] if prefix else ""
            for c in cand:
                e = (pb if c == last else tot) + lp[c]
                if vocab.completes[c] and not vocab.text[c] and not open_word:
                    add(prefix, NEG_INF, e)  # a delimiter with no open word keeps the text
                else:
                    add((*prefix, c), NEG_INF, e)
        scored = []
        for p, (b, nb) in nxt.items():
            r = _ref_rank(dec, p)
            if r is None:
                continue
            scored.append((lae(b, nb) + r, p, b, nb))
        best = max(s[0] for s in scored)
        scored = [s for s in scored if s[0] >= best + o.beam_prune_logp]
        scored.sort(key=lambda s: -s[0])
        beams = {p: (b, nb) for _, p, b, nb in scored[: o.beam_width]}
    # finals
    out: dict[str, tuple[float, dict[str, float]]] = {}
    entries = []
    for p, (b, nb) in beams.items():
        fixed, comp, nwords, noov, cur = _ref_lm_state(dec, p)
        entries.append((p, lae(b, nb), fixed, comp, nwords, noov, cur))
    if o.lexicon_constrained and any((not e[6]) or e[6] in dec.lexicon for e in entries):  # type: ignore[operator]
        entries = [e for e in entries if (not e[6]) or e[6] in dec.lexicon]  # type: ignore[operator]
    for p, am, _fixed, _comp, _nwords, _noov, _cur in entries:
        words = [w for w, _ in vocab.words_of(p)]
        states = [m.begin() for m in dec.lms]
        comp = {n: 0.0 for n in dec.lm_names}
        for k in dec.word_lms:
            for w in words:
                lp, states[k] = dec.lms[k].score(states[k], w)
                comp[dec.lm_names[k]] += lp
        for k in dec.token_lms:
            for t in p:
                lp, states[k] = dec.lms[k].score(states[k], vocab.labels[t])
                comp[dec.lm_names[k]] += lp
        if o.eos:
            for k, m in enumerate(dec.lms):
                comp[dec.lm_names[k]] += m.end(states[k])
        noov = sum(int(dec._is_oov(w)) for w in words)
        scores = {"am": am / dec.weights["am"], **comp, "words": float(len(words)), "oov": float(noov)}
        wts = dec.weights
        total = am + sum(wts[n] * comp[n] for n in dec.lm_names) + wts["words"] * len(words) + wts["oov"] * noov
        text = " ".join(words)
        if text in out:
            t0, s0 = out[text]
            merged = lae(s0["am"], scores["am"])
            if total > t0:
                t0, s0 = total, scores
            t0 += (merged - s0["am"]) * wts["am"]
            s0 = {**s0, "am": merged}
            out[text] = (t0, s0)
        else:
            out[text] = (total, scores)
    res = [(t, tot, sc) for t, (tot, sc) in out.items()]
    res.sort(key=lambda x: -x[1])
    return res[: o.nbest]
