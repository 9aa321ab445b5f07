"""N-best file formats: readers (one dispatch, :func:`iter_nbest` / :func:`read_nbest`) and writers.

Formats (all read into :class:`~decoders.hypothesis.NBestList`, scores in natural log, higher better):

* **JSONL** (canonical, :mod:`decoders.hypothesis`): one utterance a line. Scores in another
  convention are converted on reading with a scale (``--score-scale``): ``-1`` for costs, ``ln 10``
  for log10 scores, or ``name=factor`` per component.
* **Kaldi** text n-best triplet as written by ``nbest-to-linear`` (after ``int2sym.pl`` for words):
  ``text`` (``<utt>-<n> w1 w2 ...``), ``ac_cost`` and ``lm_cost`` (``<utt>-<n> <cost>``). Costs are
  negated scores: ``am = -ac_cost`` (unscaled acoustic), ``lm = -lm_cost`` (graph cost). The key ends
  at the first whitespace (a space or a tab, as Kaldi's own readers do). Kaldi's non-words are not
  scored as words: silence and noise symbols (:data:`KALDI_NON_WORDS`, and disambiguation symbols
  ``#N``) are removed from hypotheses, and the unknown-word symbols (:data:`KALDI_UNK`) become KenLM's
  ``<unk>``. A ``text`` file of integer ids needs its ``words.txt``; read without one, it is an error.
* **TSV**: a header naming ``utt_id``, ``text``, optionally ``ref``, and one column per score
  component; one hypothesis a row, rows of an utterance together.

JSONL and TSV are read as streams (one list at a time); the Kaldi triplet is read as three tables.
Other formats plug in with :func:`register_reader` (SRILM, Kaldi binary archives).
Every reader accepts finite scores only and reports a bad value with its file, line and field.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from decoders.hypothesis import (
    NBestList,
    ScoredHypothesis,
    check_utt_id,
    component_names,
    iter_nbest_jsonl,
)
from fusion.errors import InputError, LMFusionError
from fusion.io import AtomicWriter, atomic_write_text, iter_text_lines

__all__ = [
    "KALDI_NON_WORDS",
    "KALDI_UNK",
    "NBestFormat",
    "NBestReader",
    "format_nbest_tsv",
    "iter_nbest",
    "iter_nbest_tsv",
    "parse_score_scale",
    "read_kaldi_nbest",
    "read_nbest",
    "read_nbest_tsv",
    "read_refs",
    "reader_formats",
    "register_reader",
    "scale_scores",
    "write_kaldi_nbest",
    "write_nbest_tsv",
    "write_onebest",
]

NBestFormat = Literal["jsonl", "kaldi", "tsv"]
PathArg = str | Path
KALDI_NON_WORDS = frozenset({"<eps>", "!SIL", "<sil>", "<SIL>", "!sil", "<NOISE>", "<SPOKEN_NOISE>", "<s>", "</s>"})
"""Kaldi symbols that are not words: removed from hypothesis texts before any LM sees them."""
KALDI_UNK = frozenset({"<UNK>", "<unk>"})
"""Kaldi unknown-word symbols: written as ``<unk>`` (KenLM's unknown word, not counted as an OOV)."""
_DISAMBIG = re.compile(r"#\d+")


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


def _scale_one(nb: NBestList, scale: float | Mapping[str, float]) -> NBestList:
    per = scale if isinstance(scale, Mapping) else None
    hyps = []
    for h in nb.hyps:
        if per is None:
            s = {k: v * float(scale) for k, v in h.scores.items()}  # type: ignore[arg-type]
        else:
            s = {k: v * per.get(k, 1.0) for k, v in h.scores.items()}
        for k, v in s.items():
            if not math.isfinite(v):
                raise InputError(f"utterance {nb.utt_id!r}: score {k!r} overflows when scaled", field=k)
        hyps.append(ScoredHypothesis(h.text, s, h.tokens, h.words))
    return NBestList(nb.utt_id, tuple(hyps), nb.ref, nb.tags)


def scale_scores(nbests: Iterable[NBestList], scale: float | Mapping[str, float] | None) -> list[NBestList]:
    """Multiply component scores by ``scale`` (one factor, or per component; others unchanged)."""
    if scale is None:
        return list(nbests)
    return [_scale_one(nb, scale) for nb in nbests]


# ----------------------------------------------------------------------------------------------
# Kaldi text triplet
# ----------------------------------------------------------------------------------------------
def _split_key(key: str, path: PathArg, lineno: int) -> tuple[str, int]:
    utt, dash, n = key.rpartition("-")
    if not dash or not utt or not n.isdigit() or len(n) > 9:
        raise InputError(f"key {key!r} is not of the form <utt>-<n>", path=path, line=lineno)
    return utt, int(n)


def _read_kaldi_table(path: PathArg, what: str) -> dict[str, tuple[int, str]]:
    """``key -> (line, rest)``; the key ends at the first whitespace (space or tab, as in Kaldi)."""
    out: dict[str, tuple[int, str]] = {}
    for lineno, line in iter_text_lines(path):
        parts = line.split(None, 1)
        if not parts:
            continue
        key = parts[0]
        if key in out:
            raise InputError(f"duplicate key {key!r} in {what} (first on line {out[key][0]})", path=path, line=lineno)
        out[key] = (lineno, parts[1].strip() if len(parts) > 1 else "")
    return out


def read_refs(path: PathArg) -> dict[str, str]:
    """A Kaldi-style ``<utt> words ...`` reference file as ``{utt: normalised text}``."""
    return {k: " ".join(v.split()) for k, (_, v) in _read_kaldi_table(path, "references").items()}


def _read_symbols(path: PathArg) -> dict[str, str]:
    table: dict[str, str] = {}
    for lineno, line in iter_text_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or len(parts[1]) > 12:
            raise InputError("expected '<symbol> <integer id>'", path=path, line=lineno)
        table[parts[1]] = parts[0]
    return table


def _kaldi_words(toks: list[str]) -> str:
    """Drop Kaldi's non-words, map its unknown-word symbols to ``<unk>``."""
    out = []
    for t in toks:
        if t in KALDI_NON_WORDS or _DISAMBIG.fullmatch(t):
            continue
        out.append("<unk>" if t in KALDI_UNK else t)
    return " ".join(out)


def _cost(table: dict[str, tuple[int, str]], key: str, p: PathArg, text: PathArg, lineno: int) -> float:
    if key not in table:
        raise InputError(f"hypothesis {key!r} has no entry in {p}", path=text, line=lineno)
    cl, val = table[key]
    try:
        c = float(val)
    except ValueError:
        raise InputError(f"cost {val!r} is not a number", path=p, line=cl, field=key) from None
    if not math.isfinite(c):
        raise InputError(f"cost {val!r} is not finite", path=p, line=cl, field=key)
    return -c


def read_kaldi_nbest(
    text: PathArg,
    ac_cost: PathArg,
    lm_cost: PathArg,
    *,
    refs: PathArg | None = None,
    words_txt: PathArg | None = None,
    names: tuple[str, str] = ("am", "lm"),
    integer_words: bool = False,
) -> list[NBestList]:
    """Read Kaldi's n-best triplet (``<utt>-<n>`` keys); costs become scores (``am = -ac_cost``).

    Args:
        text: ``<utt>-<n> w1 w2 ...`` per hypothesis (an empty hypothesis has the key alone).
        ac_cost, lm_cost: ``<utt>-<n> <cost>`` per hypothesis.
        refs: optional Kaldi ``text`` file of references, ``<utt> w1 w2 ...``.
        words_txt: symbol table (``words.txt``) when ``text`` holds integer word ids.
        names: component names for the acoustic and LM (graph) scores.
        integer_words: accept a ``text`` whose every word is an integer without ``words_txt`` (a
            digit-string task); by default that is taken for forgotten ``words.txt`` and refused.

    Hypotheses are ordered by ``n``; utterances by first appearance in ``text``.
    """
    hyp_text = _read_kaldi_table(text, "text")
    costs = [(_read_kaldi_table(p, n), p, n) for p, n in ((ac_cost, names[0]), (lm_cost, names[1]))]
    symbols = _read_symbols(words_txt) if words_txt is not None else None
    for table, p, _ in costs:
        for key, (lineno, _) in table.items():
            if key not in hyp_text:
                raise InputError(f"key {key!r} has a cost but no hypothesis in {text}", path=p, line=lineno)
    if symbols is None and not integer_words:
        words = [w for _, rest in hyp_text.values() for w in rest.split()]
        if words and all(w.isdigit() for w in words):
            raise InputError(
                "every hypothesis word is an integer: these look like Kaldi word ids; give the symbol table "
                "(--words-txt words.txt), or integer_words=True for a task whose words are digits",
                path=text,
            )
    groups: dict[str, list[tuple[int, ScoredHypothesis]]] = {}
    for key, (lineno, rest) in hyp_text.items():
        utt, n = _split_key(key, text, lineno)
        check_utt_id(utt, text, lineno)
        toks = rest.split()
        if symbols is not None:
            try:
                toks = [symbols[t] for t in toks]
            except KeyError as e:
                raise InputError(f"word id {e.args[0]} is not in {words_txt}", path=text, line=lineno) from None
        scores = {name: _cost(table, key, p, text, lineno) for table, p, name in costs}
        groups.setdefault(utt, []).append((n, ScoredHypothesis(_kaldi_words(toks), scores)))
    ref_map = read_refs(refs) if refs is not None else {}
    out = []
    for utt, hs in groups.items():
        ns = [n for n, _ in hs]
        if len(set(ns)) != len(ns):
            raise InputError(f"utterance {utt!r} has repeated hypothesis numbers", path=text)
        hs.sort(key=lambda t: t[0])
        out.append(NBestList(utt, tuple(h for _, h in hs), ref_map.get(utt)))
    return out


def write_kaldi_nbest(
    text: PathArg,
    ac_cost: PathArg,
    lm_cost: PathArg,
    nbests: Sequence[NBestList],
    *,
    refs: PathArg | None = None,
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
def _tsv_header(cells: list[str], path: PathArg, lineno: int) -> list[str]:
    header = [c.strip() for c in cells]
    for need in ("utt_id", "text"):
        if need not in header:
            raise InputError(f"header has no {need!r} column", path=path, line=lineno)
    if len(set(header)) != len(header):
        raise InputError("header repeats a column name", path=path, line=lineno)
    return header


def _tsv_scores(row: dict[str, str], path: PathArg, lineno: int) -> dict[str, float]:
    scores: dict[str, float] = {}
    for k, v in row.items():
        if k in ("utt_id", "text", "ref"):
            continue
        if len(v) > 64:
            raise InputError(f"score of {len(v)} characters is not a plain number", path=path, line=lineno, field=k)
        try:
            x = float(v)
        except ValueError:
            raise InputError(f"{v!r} is not a number", path=path, line=lineno, field=k) from None
        if not math.isfinite(x):
            raise InputError(f"score {v.strip()!r} is not finite", path=path, line=lineno, field=k)
        scores[k] = x
    return scores


def iter_nbest_tsv(path: PathArg) -> Iterator[NBestList]:
    """Stream a TSV n-best file (header ``utt_id  text  [ref]  <score columns...>``), one list at a time."""
    header: list[str] | None = None
    seen: set[str] = set()
    cur: str | None = None
    cur_ref: str | None = None
    hyps: list[ScoredHypothesis] = []
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        cells = line.split("\t")
        if header is None:
            header = _tsv_header(cells, path, lineno)
            continue
        if len(cells) != len(header):
            raise InputError(f"{len(cells)} cells, the header has {len(header)}", path=path, line=lineno)
        row = dict(zip(header, cells, strict=True))
        utt = row["utt_id"].strip()
        if not utt:
            raise InputError("empty utt_id", path=path, line=lineno, field="utt_id")
        check_utt_id(utt, path, lineno)
        ref = " ".join(row["ref"].split()) if "ref" in row else None
        if utt != cur:
            if utt in seen:
                raise InputError(f"rows of utterance {utt!r} are not contiguous", path=path, line=lineno)
            if cur is not None:
                yield NBestList(cur, tuple(hyps), cur_ref)
            seen.add(utt)
            cur, cur_ref, hyps = utt, ref, []
        elif ref != cur_ref:
            raise InputError(f"utterance {utt!r} has two different references", path=path, line=lineno, field="ref")
        hyps.append(ScoredHypothesis(" ".join(row["text"].split()), _tsv_scores(row, path, lineno)))
    if header is None:
        raise InputError("empty file (no header)", path=path)
    if cur is not None:
        yield NBestList(cur, tuple(hyps), cur_ref)


def read_nbest_tsv(path: PathArg) -> list[NBestList]:
    """Read a whole TSV n-best file."""
    return list(iter_nbest_tsv(path))


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
            cells = [nb.utt_id, h.text, *([nb.ref or ""] if has_ref else [])]
            cells += [repr(float(h.scores[c])) for c in comps]
            rows.append("\t".join(cells))
    return "\n".join(rows) + "\n"


def write_nbest_tsv(path: PathArg, nbests: Sequence[NBestList]) -> None:
    """Atomically write TSV (lists without hypotheses cannot be represented and are warned about)."""
    atomic_write_text(path, format_nbest_tsv(nbests))


# ----------------------------------------------------------------------------------------------
# One dispatch for every reader
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NBestReader:
    """A registered n-best format.

    Attributes:
        name: the ``--format`` value.
        read: ``read(paths, **options) -> Iterable[NBestList]`` (options: ``words_txt`` when given);
            a generator streams, a list does not.
        n_files: how many paths the format takes (``None``: any number of at least one).
        help: one line for ``--help``.
    """

    name: str
    read: Callable[..., Iterable[NBestList]]
    n_files: int | None = 1
    help: str = ""


_READERS: dict[str, NBestReader] = {}


def register_reader(reader: NBestReader, *, replace: bool = False) -> None:
    """Make a format readable by :func:`iter_nbest`, :func:`read_nbest` and the ``--format`` flag."""
    if reader.name in _READERS and not replace:
        raise LMFusionError(f"an n-best reader named {reader.name!r} is already registered")
    _READERS[reader.name] = reader


def reader_formats() -> dict[str, str]:
    """``{format name: help}`` of every registered reader."""
    return {k: r.help for k, r in _READERS.items()}


def _read_jsonl(paths: Sequence[PathArg], **_: Any) -> Iterator[NBestList]:
    return iter_nbest_jsonl(paths[0])


def _read_tsv(paths: Sequence[PathArg], **_: Any) -> Iterator[NBestList]:
    return iter_nbest_tsv(paths[0])


def _read_kaldi(paths: Sequence[PathArg], *, words_txt: PathArg | None = None, **_: Any) -> list[NBestList]:
    return read_kaldi_nbest(*paths, words_txt=words_txt)


register_reader(NBestReader("jsonl", _read_jsonl, 1, "canonical JSONL, one utterance a line (streamed)"))
register_reader(NBestReader("tsv", _read_tsv, 1, "TSV: utt_id, text, [ref], one column per score (streamed)"))
register_reader(NBestReader("kaldi", _read_kaldi, 3, "Kaldi text triplet: text ac_cost lm_cost"))


def iter_nbest(
    path: PathArg | Sequence[PathArg],
    format: str = "jsonl",
    *,
    scale: float | Mapping[str, float] | str | None = None,
    refs: PathArg | None = None,
    words_txt: PathArg | None = None,
) -> Iterator[NBestList]:
    """Stream n-best lists in any registered format, scores converted to natural log with ``scale``.

    ``path`` is one file, or a sequence of files for a multi-file format (Kaldi: ``text ac_cost
    lm_cost``). ``refs`` (a Kaldi-style ``<utt> words`` file) replaces the references in the input.
    """
    reader = _READERS.get(format)
    if reader is None:
        raise LMFusionError(f"unknown n-best format {format!r} (known: {', '.join(_READERS)})")
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if reader.n_files is not None and len(paths) != reader.n_files:
        raise LMFusionError(f"format {format!r} reads {reader.n_files} file(s), got {len(paths)}")
    if not paths:
        raise LMFusionError(f"format {format!r}: no input file")
    opts = {} if words_txt is None else {"words_txt": words_txt}
    table = read_refs(refs) if refs is not None else None
    factor = parse_score_scale(scale) if isinstance(scale, str) else scale
    for nb in reader.read(paths, **opts):
        if table is not None:
            nb = NBestList(nb.utt_id, nb.hyps, table.get(nb.utt_id, nb.ref), nb.tags)
        yield nb if factor is None else _scale_one(nb, factor)


def read_nbest(
    path: PathArg | Sequence[PathArg],
    format: str = "jsonl",
    *,
    scale: float | Mapping[str, float] | str | None = None,
    refs: PathArg | None = None,
    words_txt: PathArg | None = None,
) -> list[NBestList]:
    """Read n-best lists in any registered format (see :func:`iter_nbest`) into a list."""
    return list(iter_nbest(path, format, scale=scale, refs=refs, words_txt=words_txt))


def write_onebest(
    path: PathArg, nbests: Iterable[NBestList], texts: Iterable[str], *, with_ids: bool = True
) -> None:
    """Atomically write 1-best texts, Kaldi-style ``<utt_id> <text>`` lines (or bare texts)."""
    nbests, texts = list(nbests), list(texts)
    if len(texts) != len(nbests):
        raise LMFusionError(f"{len(nbests)} utterances but {len(texts)} texts")
    with AtomicWriter(path) as f:
        for nb, t in zip(nbests, texts, strict=True):
            f.write(onebest_line(nb.utt_id, t, with_ids=with_ids))


def onebest_line(utt_id: str, text: str, *, with_ids: bool = True) -> str:
    """One ``<utt_id> <text>`` line; an id or text that would break the line format is refused."""
    check_utt_id(utt_id, "<1-best output>", None)
    text = " ".join(text.split())
    return (f"{utt_id} {text}".rstrip() if with_ids else text) + "\n"
