"""N-best lists: readers and writers, LM rescoring with a per-component score cache, 1-best selection.

Formats (all read into :class:`~decoders.hypothesis.NBestList`, scores in natural log, higher better):

* **JSONL** (canonical, :mod:`decoders.hypothesis`): one utterance a line. Scores in another
  convention are converted on reading with a scale (``--score-scale``): ``-1`` for costs, ``ln 10``
  for log10 scores, or ``name=factor`` per component.
* **Kaldi** text n-best triplet as written by ``nbest-to-linear`` (after ``int2sym.pl`` for words):
  ``text`` (``<utt>-<n> w1 w2 ...``), ``ac_cost`` and ``lm_cost`` (``<utt>-<n> <cost>``). Costs are
  negated scores: ``am = -ac_cost`` (unscaled acoustic), ``lm = -lm_cost`` (graph cost).
* **TSV**: a header naming ``utt_id``, ``text``, optionally ``ref``, and one column per score
  component; one hypothesis a row, rows of an utterance together.

Rescoring (:func:`rescore`) adds one component per LM (``Σ ln P`` of the hypothesis text under the
LM, ``</s>`` included) and ``words`` (the word count, for a word bonus). Scores already in the file
for a component are reused (the cache), unless ``overwrite``. Texts repeated across hypotheses are
scored once; sentences are scored in batches across all utterances (``lm.score_sentences``).
Nothing is dropped: empty lists, empty texts, duplicates and out-of-vocabulary words are scored or
carried through and counted in :class:`RescoreStats`.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from decoders.hypothesis import (
    NBestList,
    ScoredHypothesis,
    component_names,
    iter_nbest_jsonl,
    read_nbest_jsonl,
    write_nbest_jsonl,
)
from fusion.abilities import SentenceBatchScorer
from fusion.adaptive import NBestFeatures
from fusion.errors import InputError, LMFusionError
from fusion.io import atomic_write_text, iter_text_lines
from fusion.lm import LanguageModel
from fusion.metrics import Unit, edit_distance, units_of
from fusion.profile import FusionProfile, resolve_weights
from fusion.tuning import TuningProblem, combine
from fusion.weights import UtteranceContext, WeightPolicy

__all__ = [
    "NBestFormat",
    "RescoreStats",
    "apply_weights",
    "best_indices",
    "count_ties",
    "flat_texts",
    "format_nbest_tsv",
    "iter_nbest_jsonl",
    "onebest_error_rates",
    "parse_score_scale",
    "read_kaldi_nbest",
    "read_nbest",
    "read_nbest_jsonl",
    "read_nbest_tsv",
    "rescore",
    "rescore_with_stats",
    "scale_scores",
    "score_hypotheses",
    "score_texts",
    "summarize",
    "to_tuning_problem",
    "write_kaldi_nbest",
    "write_nbest_jsonl",
    "write_nbest_tsv",
    "write_onebest",
]

NBestFormat = Literal["jsonl", "kaldi", "tsv"]
WORDS = "words"
"""The word-count component :func:`rescore` adds (its weight is the word bonus)."""


# ----------------------------------------------------------------------------------------------
# Score conventions
# ----------------------------------------------------------------------------------------------
def parse_score_scale(spec: str | float | Mapping[str, float] | None) -> float | dict[str, float] | None:
    """``"-1"`` / ``-1.0`` (every component) or ``"am=-1,lm=-2.302585"`` (per component) -> a scale.

    ``"cost"`` means ``-1`` (Kaldi-style costs), ``"log10"`` means ``ln 10``, ``"-log10"`` means ``-ln 10``.
    """
    if spec is None or isinstance(spec, Mapping):
        return None if spec is None else {k: float(v) for k, v in spec.items()}
    if isinstance(spec, (int, float)):
        return float(spec)
    named = {"cost": -1.0, "log10": math.log(10.0), "-log10": -math.log(10.0), "ln": 1.0}

    def num(s: str) -> float:
        s = s.strip()
        if s in named:
            return named[s]
        try:
            x = float(s)
        except ValueError:
            raise InputError(f"--score-scale: {s!r} is not a number (nor cost/log10/-log10)") from None
        if not math.isfinite(x):
            raise InputError(f"--score-scale: {s!r} is not finite")
        return x

    if "=" not in spec:
        return num(spec)
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, eq, val = part.partition("=")
        if not eq or not name.strip():
            raise InputError(f"--score-scale: expected NAME=FACTOR, got {part!r}")
        out[name.strip()] = num(val)
    return out


def scale_scores(nbests: Sequence[NBestList], scale: float | Mapping[str, float] | None) -> list[NBestList]:
    """Multiply component scores by ``scale`` (one factor, or per component; others unchanged)."""
    if scale is None:
        return list(nbests)
    per = scale if isinstance(scale, Mapping) else None
    out = []
    for nb in nbests:
        hyps = []
        for h in nb.hyps:
            if per is None:
                s = {k: v * float(scale) for k, v in h.scores.items()}  # type: ignore[arg-type]
            else:
                s = {k: v * per.get(k, 1.0) for k, v in h.scores.items()}
            hyps.append(ScoredHypothesis(h.text, s, h.tokens, h.words))
        out.append(NBestList(nb.utt_id, tuple(hyps), nb.ref, nb.tags))
    return out


# ----------------------------------------------------------------------------------------------
# Kaldi text triplet
# ----------------------------------------------------------------------------------------------
def _split_key(key: str, path: Path | str, lineno: int) -> tuple[str, int]:
    utt, dash, n = key.rpartition("-")
    if not dash or not utt or not n.isdigit():
        raise InputError(f"key {key!r} is not of the form <utt>-<n>", path=path, line=lineno)
    return utt, int(n)


def _read_kaldi_table(path: str | Path, what: str) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for lineno, line in iter_text_lines(path):
        s = line.strip()
        if not s:
            continue
        key, _, rest = s.partition(" ")
        if key in out:
            raise InputError(f"duplicate key {key!r} in {what} (first on line {out[key][0]})", path=path, line=lineno)
        out[key] = (lineno, rest.strip())
    return out


def _read_symbols(path: str | Path) -> dict[str, str]:
    table: dict[str, str] = {}
    for lineno, line in iter_text_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise InputError("expected '<symbol> <integer id>'", path=path, line=lineno)
        table[parts[1]] = parts[0]
    return table


def read_kaldi_nbest(
    text: str | Path,
    ac_cost: str | Path,
    lm_cost: str | Path,
    *,
    refs: str | Path | None = None,
    words_txt: str | Path | None = None,
    names: tuple[str, str] = ("am", "lm"),
) -> list[NBestList]:
    """Read Kaldi's n-best triplet (``<utt>-<n>`` keys); costs become scores (``am = -ac_cost``).

    Args:
        text: ``<utt>-<n> w1 w2 ...`` per hypothesis (an empty hypothesis has the key alone).
        ac_cost, lm_cost: ``<utt>-<n> <cost>`` per hypothesis.
        refs: optional Kaldi ``text`` file of references, ``<utt> w1 w2 ...``.
        words_txt: optional symbol table (``words.txt``) when ``text`` holds integer word ids.
        names: component names for the acoustic and LM (graph) scores.

    Hypotheses are ordered by ``n``; utterances by first appearance in ``text``.
    """
    hyp_text = _read_kaldi_table(text, "text")
    costs = [(_read_kaldi_table(p, n), p, n) for p, n in ((ac_cost, names[0]), (lm_cost, names[1]))]
    symbols = _read_symbols(words_txt) if words_txt is not None else None
    for table, p, _ in costs:
        for key, (lineno, _) in table.items():
            if key not in hyp_text:
                raise InputError(f"key {key!r} has a cost but no hypothesis in {text}", path=p, line=lineno)
    groups: dict[str, list[tuple[int, ScoredHypothesis]]] = {}
    for key, (lineno, words) in hyp_text.items():
        utt, n = _split_key(key, text, lineno)
        toks = words.split()
        if symbols is not None:
            try:
                toks = [symbols[t] for t in toks]
            except KeyError as e:
                raise InputError(f"word id {e.args[0]} is not in {words_txt}", path=text, line=lineno) from None
        scores: dict[str, float] = {}
        for table, p, name in costs:
            if key not in table:
                raise InputError(f"hypothesis {key!r} has no entry in {p}", path=text, line=lineno)
            cl, val = table[key]
            try:
                c = float(val)
            except ValueError:
                raise InputError(f"cost {val!r} is not a number", path=p, line=cl, field=key) from None
            if not math.isfinite(c):
                raise InputError(f"cost {val!r} is not finite", path=p, line=cl, field=key)
            scores[name] = -c
        groups.setdefault(utt, []).append((n, ScoredHypothesis(" ".join(toks), scores)))
    ref_map: dict[str, str] = {}
    if refs is not None:
        for key, (_, words) in _read_kaldi_table(refs, "references").items():
            ref_map[key] = " ".join(words.split())
    out = []
    for utt, hs in groups.items():
        ns = [n for n, _ in hs]
        if len(set(ns)) != len(ns):
            raise InputError(f"utterance {utt!r} has repeated hypothesis numbers", path=text)
        hs.sort(key=lambda t: t[0])
        out.append(NBestList(utt, tuple(h for _, h in hs), ref_map.get(utt)))
    return out


def write_kaldi_nbest(
    text: str | Path,
    ac_cost: str | Path,
    lm_cost: str | Path,
    nbests: Sequence[NBestList],
    *,
    refs: str | Path | None = None,
    names: tuple[str, str] = ("am", "lm"),
) -> None:
    """Write the Kaldi triplet (keys ``<utt>-<n>``, ``n`` from 1; costs are negated scores), atomically."""
    t: list[str] = []
    a: list[str] = []
    lm_lines: list[str] = []
    r: list[str] = []
    for nb in nbests:
        if nb.ref is not None:
            r.append(f"{nb.utt_id} {nb.ref}".rstrip() + "\n")
        for n, h in enumerate(nb.hyps, start=1):
            key = f"{nb.utt_id}-{n}"
            t.append(f"{key} {h.text}".rstrip() + "\n")
            for lines, name in ((a, names[0]), (lm_lines, names[1])):
                if name not in h.scores:
                    raise LMFusionError(f"{key}: no {name!r} score to write as a Kaldi cost")
                lines.append(f"{key} {-h.scores[name]!r}\n")
    atomic_write_text(text, "".join(t))
    atomic_write_text(ac_cost, "".join(a))
    atomic_write_text(lm_cost, "".join(lm_lines))
    if refs is not None:
        atomic_write_text(refs, "".join(r))


# ----------------------------------------------------------------------------------------------
# TSV
# ----------------------------------------------------------------------------------------------
def read_nbest_tsv(path: str | Path) -> list[NBestList]:
    """Read a TSV n-best file: header ``utt_id  text  [ref]  <score columns...>``, one hypothesis a row."""
    lines = iter_text_lines(path)
    header: list[str] | None = None
    groups: dict[str, list[ScoredHypothesis]] = {}
    refs: dict[str, str | None] = {}
    last: str | None = None
    for lineno, line in lines:
        if not line.strip():
            continue
        cells = line.split("\t")
        if header is None:
            header = [c.strip() for c in cells]
            for need in ("utt_id", "text"):
                if need not in header:
                    raise InputError(f"header has no {need!r} column", path=path, line=lineno)
            if len(set(header)) != len(header):
                raise InputError("header repeats a column name", path=path, line=lineno)
            continue
        if len(cells) != len(header):
            raise InputError(f"{len(cells)} cells, the header has {len(header)}", path=path, line=lineno)
        row = dict(zip(header, cells, strict=True))
        utt = row["utt_id"].strip()
        if not utt:
            raise InputError("empty utt_id", path=path, line=lineno, field="utt_id")
        if utt in groups and utt != last:
            raise InputError(f"rows of utterance {utt!r} are not contiguous", path=path, line=lineno)
        scores: dict[str, float] = {}
        for k, v in row.items():
            if k in ("utt_id", "text", "ref"):
                continue
            try:
                x = float(v)
            except ValueError:
                raise InputError(f"{v!r} is not a number", path=path, line=lineno, field=k) from None
            if math.isnan(x):
                raise InputError("score is NaN", path=path, line=lineno, field=k)
            scores[k] = x
        ref = " ".join(row["ref"].split()) if "ref" in row else None
        if utt in refs and refs[utt] != ref:
            raise InputError(f"utterance {utt!r} has two different references", path=path, line=lineno, field="ref")
        refs[utt] = ref
        groups.setdefault(utt, []).append(ScoredHypothesis(" ".join(row["text"].split()), scores))
        last = utt
    if header is None:
        raise InputError("empty file (no header)", path=path)
    return [NBestList(u, tuple(hs), refs[u]) for u, hs in groups.items()]


def format_nbest_tsv(nbests: Sequence[NBestList]) -> str:
    """TSV text of ``nbests`` (columns: the components every hypothesis has)."""
    comps = component_names(nbests)
    has_ref = any(nb.ref is not None for nb in nbests)
    head = ["utt_id", "text", *(["ref"] if has_ref else []), *comps]
    rows = ["\t".join(head)]
    for nb in nbests:
        if not nb.hyps:
            warnings.warn(f"TSV cannot hold utterance {nb.utt_id!r}: it has no hypotheses", stacklevel=2)
        for h in nb.hyps:
            cells = [
                nb.utt_id,
                h.text,
                *([nb.ref or ""] if has_ref else []),
                *(repr(float(h.scores[c])) for c in comps),
            ]
            rows.append("\t".join(cells))
    return "\n".join(rows) + "\n"


def write_nbest_tsv(path: str | Path, nbests: Sequence[NBestList]) -> None:
    """Atomically write TSV (lists without hypotheses cannot be represented and are warned about)."""
    atomic_write_text(path, format_nbest_tsv(nbests))


def read_nbest(
    path: str | Path | Sequence[str | Path],
    fmt: NBestFormat = "jsonl",
    *,
    scale: float | Mapping[str, float] | str | None = None,
    refs: str | Path | None = None,
    words_txt: str | Path | None = None,
) -> list[NBestList]:
    """Read n-best lists in any supported format and convert scores to natural log with ``scale``.

    For ``fmt="kaldi"``, ``path`` is the three files ``(text, ac_cost, lm_cost)``. ``refs`` (a Kaldi-style
    ``<utt> words`` file) fills in references for formats without them.
    """
    if fmt == "kaldi":
        if isinstance(path, (str, Path)) or len(path) != 3:
            raise LMFusionError("Kaldi n-best needs three files: text ac_cost lm_cost")
        nbests = read_kaldi_nbest(*path, refs=refs, words_txt=words_txt)
    else:
        if not isinstance(path, (str, Path)):
            raise LMFusionError(f"format {fmt!r} reads one file")
        if fmt == "jsonl":
            nbests = read_nbest_jsonl(path)
        elif fmt == "tsv":
            nbests = read_nbest_tsv(path)
        else:
            raise LMFusionError(f"unknown n-best format {fmt!r}")
        if refs is not None:
            table = {k: " ".join(v.split()) for k, (_, v) in _read_kaldi_table(refs, "references").items()}
            nbests = [NBestList(nb.utt_id, nb.hyps, table.get(nb.utt_id, nb.ref), nb.tags) for nb in nbests]
    return scale_scores(nbests, parse_score_scale(scale) if isinstance(scale, str) else scale)


def write_onebest(
    path: str | Path, nbests: Sequence[NBestList], texts: Sequence[str], *, with_ids: bool = True
) -> None:
    """Atomically write 1-best texts, Kaldi-style ``<utt_id> <text>`` lines (or bare texts)."""
    if len(texts) != len(nbests):
        raise LMFusionError(f"{len(nbests)} utterances but {len(texts)} texts")
    lines = [f"{nb.utt_id} {t}".rstrip() if with_ids else t for nb, t in zip(nbests, texts, strict=True)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


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
    """Texts each LM scored (repeats once each, except for a word KenLM)."""
    cached: dict[str, int] = field(default_factory=dict)
    """Hypotheses whose score for that LM was already in the input and reused."""
    oov: dict[str, int] = field(default_factory=dict)
    """Out-of-vocabulary units seen by each LM over the texts it scored (-1: not counted)."""
    failed: dict[str, int] = field(default_factory=dict)
    """Distinct texts an LM could not score (error or non-finite result) and that got ``floor_score``."""
    seconds: float = 0.0


def summarize(nbests: Sequence[NBestList]) -> dict[str, int]:
    """Counts of the edge cases in ``nbests``: empty lists, singletons, empty texts, duplicates."""
    no_hyps = single = empty = dup = 0
    for nb in nbests:
        if not nb.hyps:
            no_hyps += 1
        elif len(nb.hyps) == 1:
            single += 1
        seen: set[str] = set()
        for h in nb.hyps:
            if not h.text:
                empty += 1
            if h.text in seen:
                dup += 1
            seen.add(h.text)
    return {
        "utts": len(nbests),
        "hyps": sum(len(nb.hyps) for nb in nbests),
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


def _kenlm_word_model(lm: LanguageModel) -> object | None:
    """The ``kenlm.Model`` of a word-level :class:`~fusion.ngram.KenLM` (the fast path), else None."""
    from fusion.ngram import KenLM
    from fusion.tokenizers import WordTokenizer

    if isinstance(lm, KenLM) and isinstance(lm.tokenizer, WordTokenizer):
        return lm.model
    return None


def _count_oov(lm: LanguageModel, units_all: Sequence[Sequence[str]]) -> int:
    vocab = lm.vocab
    if vocab is not None:
        return sum(1 for units in units_all for u in units if u not in vocab)
    return sum(1 for units in units_all for u in units if lm.is_oov(u))


def _one_sentence_logprob(lm: SentenceBatchScorer, text: str) -> float:
    try:
        return float(lm.sentence_logprobs([text])[0])
    except Exception as e:
        warnings.warn(f"cannot score {text!r}: {e}", stacklevel=3)
        return math.nan


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

    A word-level KenLM goes through ``kenlm.Model.score`` directly (it splits on whitespace itself,
    so texts need no tokenizing); an LM with the :class:`~fusion.abilities.SentenceBatchScorer` ability
    (an LLM with prefix-shared scoring) gets the texts in list order, ``batch_size`` per call, so an
    n-best list's hypotheses share their prefixes; any other LM gets ``lm.tokenize`` and batches of ``batch_size``
    sentences through ``lm.score_sentences``, sorted by length so a neural LM pads little. A batch that
    raises is retried sentence by sentence; a sentence that still fails, or scores NaN/inf, gets
    ``floor_score`` and is counted (with a warning), so one bad hypothesis never stops a file.
    """
    from tqdm import tqdm

    n = len(texts)
    out = np.empty(n, dtype=np.float64)
    oov = 0
    bar = tqdm(total=n, desc=f"rescore {lm.name}", unit="sent", disable=not progress, leave=False)
    model = _kenlm_word_model(lm)
    if model is not None:
        from fusion.ngram import LN10

        step = max(batch_size, 8192)
        score = model.score  # type: ignore[attr-defined]
        for s in range(0, n, step):
            chunk = texts[s : s + step]
            out[s : s + len(chunk)] = np.fromiter(map(score, chunk), dtype=np.float64, count=len(chunk))
            bar.update(len(chunk))
        out *= LN10
        if count_oov:  # by word type: one split of everything, then one membership test per type
            counts = Counter(" ".join(texts).split())
            oov = sum(c for w, c in counts.items() if w not in model)  # type: ignore[misc,operator]
        units_all: list[list[str]] = []
    elif isinstance(lm, SentenceBatchScorer):  # e.g. an LLM with prefix-shared scoring: texts in list order
        for s in range(0, n, batch_size):
            chunk = list(texts[s : s + batch_size])
            try:
                out[s : s + len(chunk)] = lm.sentence_logprobs(chunk)
            except Exception:  # one bad sentence must not sink the batch: retry one by one
                out[s : s + len(chunk)] = [_one_sentence_logprob(lm, t) for t in chunk]
            bar.update(len(chunk))
        units_all = [lm.tokenize(t) for t in texts] if count_oov else []
        if count_oov:
            oov = _count_oov(lm, units_all)
    else:
        units_all = [lm.tokenize(t) for t in texts]
        order = sorted(range(n), key=lambda i: len(units_all[i]))
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            batch = [units_all[i] for i in idx]
            try:
                vals = np.array([x.total for x in lm.score_sentences(batch)], dtype=np.float64)
            except Exception:  # one bad sentence must not sink the batch: retry one by one
                vals = np.empty(len(batch), dtype=np.float64)
                for j, u in enumerate(batch):
                    try:
                        vals[j] = lm.score_sentence(u).total
                    except Exception as e:
                        warnings.warn(f"{lm.name}: cannot score {' '.join(u)!r}: {e}", stacklevel=2)
                        vals[j] = np.nan
            out[idx] = vals
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
    column of the score cache). Texts repeated across hypotheses are scored once (except by a word
    KenLM, for which a repeat costs less to score than to look up)."""
    texts = flat_texts(nbests)
    if _kenlm_word_model(lm) is not None:  # scoring a repeat costs KenLM less than finding it
        ts = score_texts(
            lm, texts, batch_size=batch_size, progress=progress, floor_score=floor_score, count_oov=count_oov
        )
        return ts.scores, ts
    distinct = list(dict.fromkeys(texts))
    ts = score_texts(
        lm, distinct, batch_size=batch_size, progress=progress, floor_score=floor_score, count_oov=count_oov
    )
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


def _build_records(
    nbests: Sequence[NBestList],
    names: list[str],
    cols: list[list[float]],
    single: list[float] | None,
    word_count: bool,
) -> list[NBestList]:
    out = []
    k = 0
    name0 = names[0] if names else ""
    make = _make_hyp if _fast_record_ok() else ScoredHypothesis
    for nb in nbests:
        hyps = []
        for h in nb.hyps:
            new = h.scores.copy() if isinstance(h.scores, dict) else dict(h.scores)
            if single is not None:
                new[name0] = single[k]
            else:
                for name, col in zip(names, cols, strict=True):
                    new[name] = col[k]
            if word_count:
                new[WORDS] = float(_word_count(h.text))
            hyps.append(make(h.text, new, h.tokens, h.words))
            k += 1
        out.append(NBestList(nb.utt_id, tuple(hyps), nb.ref, nb.tags))
    return out


def rescore_with_stats(
    nbests: Sequence[NBestList],
    lms: Mapping[str, LanguageModel],
    word_count: bool = True,
    *,
    batch_size: int = 256,
    progress: bool = False,
    overwrite: bool = False,
    floor_score: float = -1e4,
    count_oov: bool = True,
) -> tuple[list[NBestList], RescoreStats]:
    """:func:`rescore`, also returning the :class:`RescoreStats`."""
    t0 = time.perf_counter()
    if floor_score > 0 or not math.isfinite(floor_score):
        raise LMFusionError(f"floor_score must be a finite log-probability (<= 0), got {floor_score}")
    if batch_size < 1:
        raise LMFusionError(f"batch_size must be >= 1, got {batch_size}")
    if word_count and WORDS in lms:
        raise LMFusionError(f"an LM may not be named {WORDS!r}: that is the word-count component")
    base = summarize(nbests)
    columns: dict[str, list[float]] = {}
    scored: dict[str, int] = {}
    cached: dict[str, int] = {}
    oov: dict[str, int] = {}
    failed: dict[str, int] = {}
    for name, lm in lms.items():
        # the score cache: hypotheses that already carry this component keep it (unless overwrite)
        hits = 0 if overwrite else sum(1 for nb in nbests for h in nb.hyps if name in h.scores)
        todo = nbests
        if hits:
            todo = [NBestList(nb.utt_id, tuple(h for h in nb.hyps if name not in h.scores)) for nb in nbests]
        vals, ts = score_hypotheses(
            todo, lm, batch_size=batch_size, progress=progress, floor_score=floor_score, count_oov=count_oov
        )
        if hits:  # spread the new scores back over the hypotheses that lacked them
            col: list[float] = []
            it = iter(vals.tolist())
            for nb in nbests:
                col.extend(h.scores[name] if name in h.scores else next(it) for h in nb.hyps)
            columns[name] = col
        else:
            columns[name] = vals.tolist()
        scored[name], cached[name], oov[name], failed[name] = len(ts.scores), hits, ts.oov, ts.failed
    names = list(columns)
    cols = [columns[k] for k in names]
    single = cols[0] if len(cols) == 1 else None
    gc_was_on = gc.isenabled()
    gc.disable()  # millions of small acyclic records: generational GC passes would dominate the build
    try:
        out = _build_records(nbests, names, cols, single, word_count)
    finally:
        if gc_was_on:
            gc.enable()

    stats = RescoreStats(
        n_utts=base["utts"],
        n_hyps=base["hyps"],
        n_no_hyps=base["no_hyps"],
        n_single=base["single"],
        n_empty_text=base["empty_text"],
        n_duplicates=base["duplicates"],
        scored=scored,
        cached=cached,
        oov=oov,
        failed=failed,
        seconds=time.perf_counter() - t0,
    )
    return out, stats


def rescore(
    nbests: Sequence[NBestList],
    lms: Mapping[str, LanguageModel],
    word_count: bool = True,
    *,
    batch_size: int = 256,
    progress: bool = False,
    overwrite: bool = False,
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
        floor_score=floor_score,
        count_oov=count_oov,
    )[0]


# ----------------------------------------------------------------------------------------------
# Weights -> 1-best; tuning problems
# ----------------------------------------------------------------------------------------------
def _weight_items(weights: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    names = [k for k, v in weights.items() if float(v) != 0.0]
    w = np.array([float(weights[k]) for k in names], dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise LMFusionError(f"non-finite weight in {dict(weights)}")
    return names, w


def _feats(nb: NBestList, names: Sequence[str]) -> np.ndarray:
    f = np.empty((len(nb.hyps), len(names)), dtype=np.float64)
    for i, h in enumerate(nb.hyps):
        for j, k in enumerate(names):
            try:
                f[i, j] = h.scores[k]
            except KeyError:
                raise LMFusionError(
                    f"utterance {nb.utt_id!r}, hypothesis {i} ({h.text!r}) has no {k!r} score "
                    f"(has {sorted(h.scores)}); rescore it first"
                ) from None
    return f


WeightsLike = Mapping[str, float] | FusionProfile | WeightPolicy
"""Fusion weights: one mapping for every utterance, a profile that picks them from each list's tags, or
any :class:`~fusion.weights.WeightPolicy` (e.g. a learned :class:`~fusion.adaptive.AdaptiveWeights`)."""


def list_context(nb: NBestList, policy: object = None) -> UtteranceContext:
    """What a policy knows about one list: its id and tags, and the run-time features a policy that
    computes them (:class:`~fusion.adaptive.NBestFeatures`) reads from the list's scores."""
    feats: dict[str, float] = {}
    if isinstance(policy, NBestFeatures) and nb.hyps:
        names = set.intersection(*(set(h.scores) for h in nb.hyps))
        feats = policy.nbest_features({k: np.array([h.scores[k] for h in nb.hyps]) for k in names}, nb.tags)
    return UtteranceContext(nb.utt_id, dict(nb.tags), features=feats)


def weights_per_list(nbests: Sequence[NBestList], weights: WeightsLike) -> list[Mapping[str, float]]:
    """The weights each n-best list is ranked with: ``weights`` itself, the profile's pick for its tags, or
    the policy's weights for its context (:func:`list_context`)."""
    if isinstance(weights, FusionProfile):
        return [resolve_weights(weights, nb.tags) for nb in nbests]
    if isinstance(weights, Mapping):
        return [weights] * len(nbests)
    return [weights.weights_for(list_context(nb, weights)) for nb in nbests]


def _ranked(nbests: Sequence[NBestList], weights: WeightsLike) -> Iterator[tuple[NBestList, np.ndarray | None]]:
    """Each list with its combined hypothesis scores (None when no weight is non-zero)."""
    cached: tuple[int, list[str], np.ndarray] | None = None
    for nb, wmap in zip(nbests, weights_per_list(nbests, weights), strict=True):
        if cached is None or cached[0] != id(wmap):
            names, w = _weight_items(wmap)
            cached = (id(wmap), names, w)
        _, names, w = cached
        yield nb, (combine(_feats(nb, names), w) if names and nb.hyps else None)


def best_indices(nbests: Sequence[NBestList], weights: WeightsLike) -> list[int]:
    """Index of each list's best hypothesis under ``weights`` (first on exact ties; -1 for an empty list).

    ``weights`` may be a :class:`~fusion.profile.FusionProfile`: each list is then ranked with the weights
    the profile selects for its ``tags`` (domain, SNR bucket or measured SNR).
    """
    return [-1 if not nb.hyps else 0 if s is None else int(np.argmax(s)) for nb, s in _ranked(nbests, weights)]


def apply_weights(nbests: Sequence[NBestList], weights: WeightsLike) -> list[str]:
    """1-best texts under ``weights`` (``Σ_k w_k score_k``, or a profile); an empty list gives ``""``."""
    return ["" if i < 0 else nb.hyps[i].text for nb, i in zip(nbests, best_indices(nbests, weights), strict=True)]


def count_ties(nbests: Sequence[NBestList], weights: WeightsLike) -> int:
    """Utterances whose top score is shared by hypotheses with different texts (first one wins)."""
    n = 0
    for nb, s in _ranked(nbests, weights):
        if s is None or len(nb.hyps) < 2:
            continue
        top = s == s.max()
        if len({h.text for h, t in zip(nb.hyps, top, strict=True) if t}) > 1:
            n += 1
    return n


def to_tuning_problem(nbests: Sequence[NBestList], components: Sequence[str], unit: Unit = "word") -> TuningProblem:
    """Cache component scores and edit distances of every hypothesis as a :class:`TuningProblem`.

    Every list needs a reference; every hypothesis needs every component. An empty list is kept (it
    counts its reference length as errors under any weights).
    """
    comps = tuple(components)
    if not comps:
        raise LMFusionError("to_tuning_problem: no components")
    feats, errors, lens = [], [], []
    for nb in nbests:
        if nb.ref is None:
            raise LMFusionError(f"utterance {nb.utt_id!r} has no reference: cannot count errors")
        ref = units_of(nb.ref, unit)
        feats.append(_feats(nb, comps).reshape(len(nb.hyps), len(comps)))
        cache: dict[str, int] = {}
        e = np.empty(len(nb.hyps), dtype=np.int64)
        for i, h in enumerate(nb.hyps):
            if h.text not in cache:
                cache[h.text] = edit_distance(ref, units_of(h.text, unit))
            e[i] = cache[h.text]
        errors.append(e)
        lens.append(len(ref))
    return TuningProblem(comps, feats, errors, np.array(lens, dtype=np.int64), tuple(nb.utt_id for nb in nbests))


def onebest_error_rates(
    nbests: Sequence[NBestList], weights: WeightsLike | None = None, unit: Unit = "word"
) -> dict[str, float]:
    """``first`` (the list's own order), ``oracle``, and (with ``weights``) ``rescored`` error rates."""
    from fusion.metrics import error_rate_of

    refs = []
    for nb in nbests:
        if nb.ref is None:
            raise LMFusionError(f"utterance {nb.utt_id!r} has no reference")
        refs.append(nb.ref)
    out = {"first": error_rate_of(refs, [nb.hyps[0].text if nb.hyps else "" for nb in nbests], unit)}
    best_errs = 0
    total = 0
    for nb in nbests:
        assert nb.ref is not None
        ref = units_of(nb.ref, unit)
        total += len(ref)
        best_errs += min((edit_distance(ref, units_of(h.text, unit)) for h in nb.hyps), default=len(ref))
    if total <= 0:
        raise LMFusionError("error rate is undefined: the references are empty")
    out["oracle"] = best_errs / total
    if weights is not None:
        out["rescored"] = error_rate_of(refs, apply_weights(nbests, weights), unit)
    return out
