"""LM rescoring of n-best lists: one score component per LM, a per-component score cache, streaming.

:func:`rescore` adds one component per LM (``Σ ln P`` of the hypothesis text under the LM, ``</s>``
included) and ``words`` (the word count, for a word bonus). Scores already in the input for a component
are reused (the cache), unless ``overwrite``. Texts repeated across hypotheses are scored once.

LMs are asked through the scorer abilities: an LM that is a
:class:`~fusion.abilities.SentenceBatchScorer` (KenLM: its own C++ sentence scoring) scores
whole sentences in one call; any other LM gets batches through ``score_sentences``. Nothing is dropped:
empty lists, empty texts, duplicates and out-of-vocabulary words are scored or carried through and
counted in :class:`RescoreStats`.

:func:`rescore_batch` is a pure function of a batch of lists (what an executor runs per shard);
:func:`rescore_stream` runs it over bounded batches of a stream, so memory does not grow with the
number of lists.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
import warnings
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from decoders.hypothesis import NBestList, ScoredHypothesis
from fusion.abilities import SentenceBatchScorer
from fusion.errors import LMFusionError
from fusion.lm import LanguageModel

__all__ = [
    "WORDS",
    "RescoreStats",
    "TextScores",
    "build_records",
    "check_rescore_options",
    "check_reuse",
    "flat_texts",
    "iter_batches",
    "known_scores",
    "merge_stats",
    "rescore",
    "rescore_batch",
    "rescore_stream",
    "rescore_with_stats",
    "score_columns",
    "score_flat",
    "score_hypotheses",
    "score_texts",
    "summarize",
    "summarize_texts",
]

WORDS = "words"
"""The word-count component :func:`rescore` adds (its weight is the word bonus)."""
UNK = "<unk>"
"""The unknown-word unit: scored by the LM as its own unknown word, never counted as an OOV."""


# ----------------------------------------------------------------------------------------------
# Rescoring
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RescoreStats:
    """What :func:`rescore` did, per LM where it applies; nothing is dropped, everything is counted."""

    n_utts: int
    n_hyps: int
    n_no_hyps: int
    """Utterances with an empty list (kept; their 1-best is the empty string)."""
    n_single: int
    """Utterances with exactly one hypothesis."""
    n_empty_text: int
    """Hypotheses with no words (scored as ``ln P(</s> | <s>)``)."""
    n_duplicates: int
    """Hypotheses whose text repeats an earlier one of the same utterance (kept, scored once)."""
    scored: dict[str, int] = field(default_factory=dict)
    """Texts each LM scored (repeats once each within a batch, except for a word KenLM)."""
    cached: dict[str, int] = field(default_factory=dict)
    """Hypotheses whose score for that LM was already in the input and reused."""
    oov: dict[str, int] = field(default_factory=dict)
    """Out-of-vocabulary units seen by each LM over the texts it scored (-1: not counted)."""
    failed: dict[str, int] = field(default_factory=dict)
    """Distinct texts an LM could not score (error or non-finite result) and that got ``floor_score``."""
    seconds: float = 0.0


def summarize(nbests: Sequence[NBestList]) -> dict[str, int]:
    """Counts of the edge cases in ``nbests``: empty lists, singletons, empty texts, duplicates."""
    return summarize_texts([[h.text for h in nb.hyps] for nb in nbests])


def summarize_texts(texts: Sequence[Sequence[str]]) -> dict[str, int]:
    """:func:`summarize` over each utterance's hypothesis texts (what a worker holds of a shard)."""
    no_hyps = single = empty = dup = 0
    for ts in texts:
        if not ts:
            no_hyps += 1
        elif len(ts) == 1:
            single += 1
        else:
            dup += len(ts) - len(set(ts))
        empty += ts.count("")
    return {
        "utts": len(texts),
        "hyps": sum(map(len, texts)),
        "no_hyps": no_hyps,
        "single": single,
        "empty_text": empty,
        "duplicates": dup,
    }


@dataclass(frozen=True)
class TextScores:
    """Scores of distinct texts under one LM (natural log, ``</s>`` included)."""

    scores: np.ndarray
    """``[T]``, aligned with the texts given."""
    oov: int
    """Out-of-vocabulary units over the texts scored; -1 when not counted."""
    failed: int
    """Texts the LM raised on or gave a non-finite score; they hold ``floor_score``."""


def _sentence_scorer(lm: LanguageModel) -> SentenceBatchScorer | None:
    """The LM as a whole-sentence scorer when it has that ability (KenLM's own scoring), else None."""
    return lm if isinstance(lm, SentenceBatchScorer) else None


def _count_oov(lm: LanguageModel, unit_lists: Iterable[Sequence[str]]) -> int:
    """Out-of-vocabulary units, by type: one membership test per distinct unit (``<unk>`` is not one)."""
    counts: Counter[str] = Counter()
    for units in unit_lists:
        counts.update(units)
    vocab = lm.vocab
    if vocab is not None:
        return sum(c for w, c in counts.items() if w != UNK and w not in vocab)
    return sum(c for w, c in counts.items() if w != UNK and lm.is_oov(w))


def _score_batched(lm: LanguageModel, batch: list[list[str]]) -> np.ndarray:
    """``score_sentences`` over one batch; a batch that raises is retried one sentence at a time."""
    try:
        return np.array([x.total for x in lm.score_sentences(batch)], dtype=np.float64)
    except Exception:  # one bad sentence must not sink the batch
        vals = np.empty(len(batch), dtype=np.float64)
        for j, u in enumerate(batch):
            try:
                vals[j] = lm.score_sentence(u).total
            except Exception as e:
                warnings.warn(f"{lm.name}: cannot score {' '.join(u)!r}: {e}", stacklevel=3)
                vals[j] = np.nan
        return vals


def score_texts(
    lm: LanguageModel,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    progress: bool = False,
    floor_score: float = -1e4,
    count_oov: bool = True,
) -> TextScores:
    """Score whole texts with ``lm``: ``Σ ln P`` over its units plus ``ln P(</s>)``.

    An LM with the :class:`~fusion.abilities.SentenceBatchScorer` ability scores space-joined unit
    strings in one call per chunk (a word LM takes the texts as they are); any other LM gets
    ``lm.tokenize`` and batches of ``batch_size`` sentences through ``lm.score_sentences``, sorted by
    length so a neural LM pads little. A batch that raises is retried sentence by sentence; a sentence
    that still fails, or scores NaN/inf, gets ``floor_score`` and is counted (with a warning), so one bad
    hypothesis never stops a file.
    """
    from fusion.progress import progress_bar

    n = len(texts)
    out = np.empty(n, dtype=np.float64)
    oov = 0
    bar = progress_bar(total=n, desc=f"rescore {lm.name}", unit="sent", progress=progress, leave=False)
    fast = _sentence_scorer(lm)
    if fast is not None:
        words = lm.units.kind == "word"
        joined = list(texts) if words else [" ".join(lm.tokenize(t)) for t in texts]
        step = max(batch_size, 8192)
        for s in range(0, n, step):
            chunk = joined[s : s + step]
            try:
                out[s : s + len(chunk)] = fast.sentence_logprobs(chunk, True, True)
            except Exception:
                out[s : s + len(chunk)] = _score_batched(lm, [c.split() for c in chunk])
            bar.update(len(chunk))
        if count_oov:
            oov = _count_oov(lm, [" ".join(joined).split()])
    else:
        units_all = [lm.tokenize(t) for t in texts]
        order = sorted(range(n), key=lambda i: len(units_all[i]))
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            out[idx] = _score_batched(lm, [units_all[i] for i in idx])
            bar.update(len(idx))
        if count_oov:
            oov = _count_oov(lm, units_all)
    bar.close()
    bad = ~np.isfinite(out)
    failed = int(bad.sum())
    if failed:
        out[bad] = floor_score
        warnings.warn(f"{lm.name}: {failed} texts could not be scored; they got {floor_score}", stacklevel=2)
    return TextScores(out, oov if count_oov else -1, failed)


def flat_texts(nbests: Sequence[NBestList]) -> list[str]:
    """Every hypothesis text, utterance by utterance (the order of :func:`score_hypotheses`)."""
    return [h.text for nb in nbests for h in nb.hyps]


def score_hypotheses(
    nbests: Sequence[NBestList],
    lm: LanguageModel,
    *,
    batch_size: int = 256,
    progress: bool = False,
    floor_score: float = -1e4,
    count_oov: bool = True,
) -> tuple[np.ndarray, TextScores]:
    """One LM's score for every hypothesis, as a flat ``[H]`` array in :func:`flat_texts` order (a
    column of the score cache); see :func:`score_flat`."""
    return score_flat(
        flat_texts(nbests), lm, batch_size=batch_size, progress=progress, floor_score=floor_score, count_oov=count_oov
    )


def score_flat(
    texts: Sequence[str],
    lm: LanguageModel,
    *,
    batch_size: int = 256,
    progress: bool = False,
    floor_score: float = -1e4,
    count_oov: bool = True,
) -> tuple[np.ndarray, TextScores]:
    """One LM's score for every text, as a flat ``[H]`` array. Texts repeated are scored once (except by
    a word sentence scorer over words, KenLM, for which a repeat costs less to score than to look up)."""
    opts = {"batch_size": batch_size, "progress": progress, "floor_score": floor_score, "count_oov": count_oov}
    if _sentence_scorer(lm) is not None and lm.units.kind == "word":  # a repeat costs KenLM less than a lookup
        ts = score_texts(lm, texts, **opts)  # type: ignore[arg-type]
        return ts.scores, ts
    distinct = list(dict.fromkeys(texts))
    ts = score_texts(lm, distinct, **opts)  # type: ignore[arg-type]
    if len(distinct) == len(texts):
        return ts.scores, ts
    table = dict(zip(distinct, ts.scores.tolist(), strict=True))
    return np.fromiter(map(table.__getitem__, texts), dtype=np.float64, count=len(texts)), ts


def _word_count(text: str) -> int:
    """Whitespace words in ``text`` (counting spaces when the text is already normalised)."""
    if not text:
        return 0
    if "  " in text or text[0] == " " or text[-1] == " " or "\t" in text or "\n" in text or "\r" in text:
        return len(text.split())
    return text.count(" ") + 1


def _fast_record_ok() -> bool:
    """Whether :class:`ScoredHypothesis` is a plain frozen dataclass whose instances can be filled
    through ``__dict__`` (no ``__post_init__``, no slots): 2x cheaper than ``__init__`` per record."""
    return (
        not hasattr(ScoredHypothesis, "__post_init__")
        and "__slots__" not in ScoredHypothesis.__dict__
        and [f.name for f in dataclasses.fields(ScoredHypothesis)] == ["text", "scores", "tokens", "words"]
    )


def _make_hyp(
    text: str, scores: dict[str, float], tokens: tuple[str, ...], words: tuple[tuple[str, int, int], ...]
) -> ScoredHypothesis:
    h = object.__new__(ScoredHypothesis)
    d = h.__dict__
    d["text"] = text
    d["scores"] = scores
    d["tokens"] = tokens
    d["words"] = words
    return h


def build_records(
    nbests: Sequence[NBestList],
    columns: Mapping[str, Sequence[float]],
    *,
    word_count: bool = True,
    keep: Collection[str] = (),
) -> list[NBestList]:
    """New lists with ``columns[name][k]`` (``k``: the hypothesis' index in :func:`flat_texts` order) as
    score ``name`` of every hypothesis, and ``words`` (the word count) with ``word_count``. A component in
    ``keep`` keeps the input's own value where a hypothesis has one (the score cache). Tokens, word
    alignments, references and tags are carried over; ``nbests`` is not modified."""
    names = list(columns)
    cols = [columns[k] if isinstance(columns[k], list) else list(columns[k]) for k in names]
    kept = [k in keep for k in names]
    single = cols[0] if len(cols) == 1 and not kept[0] else None
    name0 = names[0] if names else ""
    make = _make_hyp if _fast_record_ok() else ScoredHypothesis
    out = []
    k = 0
    gc_was_on = gc.isenabled()
    gc.disable()  # millions of small acyclic records: generational GC passes would dominate the build
    try:
        for nb in nbests:
            hyps = []
            for h in nb.hyps:
                new = h.scores.copy() if isinstance(h.scores, dict) else dict(h.scores)
                if single is not None:
                    new[name0] = single[k]
                else:
                    for name, col, kp in zip(names, cols, kept, strict=True):
                        if not (kp and name in new):
                            new[name] = col[k]
                if word_count:
                    new[WORDS] = float(_word_count(h.text))
                hyps.append(make(h.text, new, h.tokens, h.words))
                k += 1
            out.append(NBestList(nb.utt_id, tuple(hyps), nb.ref, nb.tags))
    finally:
        if gc_was_on:
            gc.enable()
    return out


def known_scores(nbests: Sequence[NBestList], names: Iterable[str]) -> dict[str, dict[int, float]]:
    """The score cache: LM name -> ``{flat hypothesis index: score already in the input}`` (names no
    hypothesis carries are left out)."""
    names = list(names)
    out: dict[str, dict[int, float]] = {n: {} for n in names}
    k = 0
    for nb in nbests:
        for h in nb.hyps:
            sc = h.scores
            for name in names:
                if name in sc:
                    out[name][k] = sc[name]
            k += 1
    return {n: d for n, d in out.items() if d}


def check_rescore_options(floor_score: float, batch_size: int) -> None:
    """The options every rescoring entry point checks before it starts."""
    if floor_score > 0 or not math.isfinite(floor_score):
        raise LMFusionError(f"floor_score must be a finite log-probability (<= 0), got {floor_score}")
    if batch_size < 1:
        raise LMFusionError(f"batch_size must be >= 1, got {batch_size}")


def check_reuse(known: Mapping[str, Mapping[int, float]], reuse: bool) -> None:
    """With ``reuse=False``, an LM named like a score component already in the input is an error."""
    if known and not reuse:
        name = next(iter(known))
        raise LMFusionError(
            f"the input already has a score component named {name!r}: name the LM differently "
            "(NAME=PATH), or reuse those scores (the cache) or overwrite them explicitly"
        )


def score_columns(
    texts: Sequence[Sequence[str]],
    lms: Mapping[str, LanguageModel],
    *,
    known: Mapping[str, Mapping[int, float]] | None = None,
    batch_size: int = 256,
    progress: bool = False,
    floor_score: float = -1e4,
    count_oov: bool = True,
) -> tuple[dict[str, np.ndarray], RescoreStats]:
    """The work of rescoring one batch, on texts alone (what a worker gets of a shard): one float64
    column ``[H]`` per LM over the flat hypotheses (each utterance's texts in turn), and the batch's
    :class:`RescoreStats` (``seconds`` 0). ``known`` is the score cache (:func:`known_scores`): those
    hypotheses keep their score and are not scored."""
    base = summarize_texts(texts)
    flat = [t for ts in texts for t in ts]
    n = len(flat)
    cols: dict[str, np.ndarray] = {}
    scored, cached, oov, failed = {}, {}, {}, {}
    for name, lm in lms.items():
        hits = (known or {}).get(name) or {}
        todo = [t for i, t in enumerate(flat) if i not in hits] if hits else flat
        vals, ts = score_flat(
            todo, lm, batch_size=batch_size, progress=progress, floor_score=floor_score, count_oov=count_oov
        )
        if hits:  # spread the new scores over the hypotheses that lacked them
            col = np.empty(n, dtype=np.float64)
            mask = np.zeros(n, dtype=bool)
            idx = np.fromiter(hits.keys(), dtype=np.int64, count=len(hits))
            mask[idx] = True
            col[idx] = np.fromiter(hits.values(), dtype=np.float64, count=len(hits))
            col[~mask] = vals
            vals = col
        cols[name] = vals
        scored[name], cached[name], oov[name], failed[name] = len(ts.scores), len(hits), ts.oov, ts.failed
    stats = RescoreStats(
        n_utts=base["utts"],
        n_hyps=n,
        n_no_hyps=base["no_hyps"],
        n_single=base["single"],
        n_empty_text=base["empty_text"],
        n_duplicates=base["duplicates"],
        scored=scored,
        cached=cached,
        oov=oov,
        failed=failed,
    )
    return cols, stats


def rescore_with_stats(
    nbests: Sequence[NBestList],
    lms: Mapping[str, LanguageModel],
    word_count: bool = True,
    *,
    batch_size: int = 256,
    progress: bool = False,
    overwrite: bool = False,
    reuse: bool = True,
    floor_score: float = -1e4,
    count_oov: bool = True,
) -> tuple[list[NBestList], RescoreStats]:
    """:func:`rescore`, also returning the :class:`RescoreStats` (a pure function of one batch):
    :func:`score_columns` then :func:`build_records`."""
    t0 = time.perf_counter()
    check_rescore_options(floor_score, batch_size)
    if word_count and WORDS in lms:
        raise LMFusionError(f"an LM may not be named {WORDS!r}: that is the word-count component")
    known = {} if overwrite else known_scores(nbests, lms)
    check_reuse(known, reuse)
    texts = [[h.text for h in nb.hyps] for nb in nbests]
    cols, stats = score_columns(
        texts, lms, known=known, batch_size=batch_size, progress=progress, floor_score=floor_score,
        count_oov=count_oov,
    )  # fmt: skip
    out = build_records(nbests, {k: v.tolist() for k, v in cols.items()}, word_count=word_count, keep=known)
    return out, dataclasses.replace(stats, seconds=time.perf_counter() - t0)


def rescore(
    nbests: Sequence[NBestList],
    lms: Mapping[str, LanguageModel],
    word_count: bool = True,
    *,
    batch_size: int = 256,
    progress: bool = False,
    overwrite: bool = False,
    reuse: bool = True,
    floor_score: float = -1e4,
    count_oov: bool = True,
) -> list[NBestList]:
    """Add one score component per LM (keyed by the mapping's names) and ``words`` to every hypothesis.

    Args:
        nbests: the lists to rescore (not modified; new records are returned, in the same order).
        lms: component name -> LM (KenLM, neural, a ``LinearInterpolation``, a ``WordLevelLM`` ...).
            Each scores the whole hypothesis text: ``Σ ln P(unit | history) + ln P(</s> | ...)`` over its
            own units (words or pieces), so LMs over different units can all score the same list.
        word_count: add ``words`` (number of whitespace words).
        batch_size: sentences per ``lm.score_sentences`` call (across utterances).
        progress: show a tqdm bar per LM.
        overwrite: re-score components already present instead of reusing them (the score cache).
        reuse: reuse components already present (the cache); with ``reuse=False`` and no ``overwrite``,
            an LM named like a component already in the input is an error (the CLI's default).
        floor_score: the score of a text an LM fails on (counted in the stats, with a warning).
        count_oov: count out-of-vocabulary units per LM (in the stats).
    """
    return rescore_with_stats(
        nbests,
        lms,
        word_count,
        batch_size=batch_size,
        progress=progress,
        overwrite=overwrite,
        reuse=reuse,
        floor_score=floor_score,
        count_oov=count_oov,
    )[0]


rescore_batch = rescore_with_stats
"""The pure per-batch function an executor runs on each shard of lists: ``(lists, lms, ...) -> (lists, stats)``."""


def iter_batches(lists: Iterable[NBestList], max_hyps: int = 20_000) -> Iterator[list[NBestList]]:
    """Consecutive batches of whole lists, each with at most ``max_hyps`` hypotheses (or one list)."""
    if max_hyps < 1:
        raise LMFusionError(f"max_hyps must be >= 1, got {max_hyps}")
    batch: list[NBestList] = []
    n = 0
    for nb in lists:
        if batch and n + len(nb.hyps) > max_hyps:
            yield batch
            batch, n = [], 0
        batch.append(nb)
        n += len(nb.hyps)
    if batch:
        yield batch


def merge_stats(parts: Iterable[RescoreStats], *, names: Sequence[str] = (), seconds: float | None = None
                ) -> RescoreStats:  # fmt: skip
    """The :class:`RescoreStats` of several batches or shards together: counts summed; a per-LM count that
    any part did not make (-1, e.g. OOV not counted) stays -1; ``seconds`` summed unless given (the wall
    time of parts that ran side by side). ``names`` are LMs that appear in the per-LM counts even with no part."""
    parts = list(parts)

    def total(attr: str) -> int:
        return sum(int(getattr(p, attr)) for p in parts)

    def per(attr: str) -> dict[str, int]:
        keys = dict.fromkeys([*names, *(k for p in parts for k in getattr(p, attr))])
        vals = {k: [getattr(p, attr).get(k, 0) for p in parts] for k in keys}
        return {k: -1 if any(x < 0 for x in v) else sum(v) for k, v in vals.items()}

    return RescoreStats(
        n_utts=total("n_utts"),
        n_hyps=total("n_hyps"),
        n_no_hyps=total("n_no_hyps"),
        n_single=total("n_single"),
        n_empty_text=total("n_empty_text"),
        n_duplicates=total("n_duplicates"),
        scored=per("scored"),
        cached=per("cached"),
        oov=per("oov"),
        failed=per("failed"),
        seconds=sum(p.seconds for p in parts) if seconds is None else seconds,
    )


def rescore_stream(
    lists: Iterable[NBestList],
    lms: Mapping[str, LanguageModel],
    word_count: bool = True,
    *,
    batch_hyps: int = 20_000,
    **options: object,
) -> Iterator[tuple[list[NBestList], RescoreStats]]:
    """:func:`rescore_batch` over bounded batches of a stream of lists (at most ``batch_hyps``
    hypotheses each, whole lists), yielding each rescored batch with its stats as soon as it is done.
    Memory is bounded by the batch size, not by the number of lists."""
    for batch in iter_batches(lists, batch_hyps):
        yield rescore_batch(batch, lms, word_count, **options)  # type: ignore[arg-type]


