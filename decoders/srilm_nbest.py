"""SRILM n-best lists (``nbest-format(5)``) read into :class:`~decoders.hypothesis.NBestList`.

SRILM keeps one n-best list per file (one file per utterance; the utterance id is the file name without
``.gz`` and an ``.nbest``/``.score`` suffix), optionally gzip-compressed. Three forms:

* ``NBestList1.0`` header, then ``(score) w1 w2 ...``: one composite recogniser score on the *bytelog*
  scale (log base 1.0001, divided by 1024). It becomes component ``"am"`` (the recogniser's own score).
* ``NBestList2.0`` header, then ``(score) w1 ( st: s et: e g: lm a: ac ) w2 ( ... ) ...``: per-word
  language-model (``g``) and acoustic (``a``) bytelog scores, summed into ``"lm"`` and ``"am"``.
  Sub-word units (phones, states) have time marks inside the preceding word's and are skipped;
  ``<s>``/``</s>`` are not words of the text (their scores count).
* no header, ``ascore lscore nwords w1 w2 ...`` (what ``ngram -rescore`` writes): log10 acoustic and
  LM scores, into ``"am"`` and ``"lm"``.

All scores become natural log (the n-best convention).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.nbest.formats import _read_kaldi_table
from fusion.errors import InputError
from fusion.io import iter_text_lines

__all__ = ["BYTELOG_TO_LN", "read_srilm_nbest", "read_srilm_nbest_file", "srilm_utt_id"]

BYTELOG_TO_LN = 1024.0 * math.log(1.0001)
"""Multiply a bytelog score by this to get natural log."""

LN10 = math.log(10.0)
_SCORE = re.compile(r"^\(\s*(-?[0-9.eE+-]+)\s*\)\s*(.*)$")
_SENTENCE_MARKS = frozenset({"<s>", "</s>"})
_SUFFIXES = (".gz", ".nbest", ".score", ".txt")


def srilm_utt_id(path: str | Path) -> str:
    """The utterance id of an n-best file: its name without ``.gz`` and an ``.nbest``/``.score``/``.txt`` suffix."""
    name = Path(path).name
    for suf in _SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
    return name


def _number(tok: str, path: Path, lineno: int, what: str) -> float:
    try:
        x = float(tok)
    except ValueError:
        raise InputError(f"{what} {tok!r} is not a number", path=path, line=lineno) from None
    if not math.isfinite(x):
        raise InputError(f"{what} {tok!r} is not finite", path=path, line=lineno)
    return x


def _decipher2(rest: str, path: Path, lineno: int) -> tuple[list[str], float, float]:
    """Words, Σ acoustic and Σ LM bytelog scores of an ``NBestList2.0`` hypothesis."""
    toks = rest.split()
    words: list[str] = []
    ac = lm = 0.0
    span: tuple[float, float] | None = None  # the times of the preceding word
    i = 0
    while i < len(toks):
        unit = toks[i]
        if i + 1 >= len(toks) or toks[i + 1] != "(":
            raise InputError(f"unit {unit!r} has no '( st: .. et: .. g: .. a: .. )' block", path=path, line=lineno)
        try:
            close = toks.index(")", i + 2)
        except ValueError:
            raise InputError(f"unclosed '(' after {unit!r}", path=path, line=lineno) from None
        block = toks[i + 2 : close]
        fields = dict(zip(block[0::2], block[1::2], strict=False))
        if len(block) % 2 or not {"st:", "et:", "g:", "a:"} <= fields.keys():
            raise InputError(f"block of {unit!r} needs st: et: g: a: values, got {' '.join(block)!r}",
                             path=path, line=lineno)
        st = _number(fields["st:"], path, lineno, "start time")
        et = _number(fields["et:"], path, lineno, "end time")
        if span is not None and span[0] <= st and et <= span[1]:
            i = close + 1  # a sub-word unit (phone, state) inside the preceding word
            continue
        span = (st, et)
        lm += _number(fields["g:"], path, lineno, "LM score")
        ac += _number(fields["a:"], path, lineno, "acoustic score")
        if unit not in _SENTENCE_MARKS:
            words.append(unit)
        i = close + 1
    return words, ac, lm


def read_srilm_nbest_file(path: str | Path, *, utt_id: str | None = None) -> NBestList:
    """Read one SRILM n-best file (any of the three forms, gzip or not); see the module docstring."""
    path = Path(path)
    form: str | None = None
    hyps: list[ScoredHypothesis] = []
    for lineno, line in iter_text_lines(path):
        s = line.strip()
        if not s:
            continue
        if form is None:
            if s in ("NBestList1.0", "NBestList2.0"):
                form = s
                continue
            form = "plain"
        if form == "plain":
            parts = s.split()
            if len(parts) < 3:
                raise InputError("expected 'ascore lscore nwords w1 w2 ...'", path=path, line=lineno)
            ascore = _number(parts[0], path, lineno, "acoustic score")
            lscore = _number(parts[1], path, lineno, "LM score")
            if not parts[2].isdigit():
                raise InputError(f"word count {parts[2]!r} is not a non-negative integer", path=path, line=lineno)
            hyps.append(ScoredHypothesis(" ".join(parts[3:]), {"am": ascore * LN10, "lm": lscore * LN10}))
            continue
        m = _SCORE.match(s)
        if m is None:
            raise InputError(f"expected '(score) words ...' in an {form} list", path=path, line=lineno)
        total = _number(m.group(1), path, lineno, "score")
        if form == "NBestList1.0":
            hyps.append(ScoredHypothesis(" ".join(m.group(2).split()), {"am": total * BYTELOG_TO_LN}))
        else:
            words, ac, lm = _decipher2(m.group(2), path, lineno)
            hyps.append(ScoredHypothesis(" ".join(words), {"am": ac * BYTELOG_TO_LN, "lm": lm * BYTELOG_TO_LN}))
    if form in ("NBestList1.0", "NBestList2.0") and not hyps:
        raise InputError(f"{form} header but no hypotheses", path=path)
    return NBestList(utt_id or srilm_utt_id(path), tuple(hyps))


def read_srilm_nbest(
    paths: str | Path | Sequence[str | Path], *, refs: str | Path | None = None
) -> list[NBestList]:
    """Read SRILM n-best files: a file, a directory of them (sorted by name), or a sequence of files.

    ``refs``: an optional Kaldi-style ``<utt> words`` file of references.

    Raises:
        InputError: a malformed line (file and line named), a missing file, or two files with one utterance id.
    """
    if isinstance(paths, (str, Path)):
        p = Path(paths)
        files = sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p]
    else:
        files = [Path(x) for x in paths]
    if not files:
        raise InputError("no n-best files", path=str(paths))
    out: list[NBestList] = []
    seen: dict[str, Path] = {}
    for f in files:
        nb = read_srilm_nbest_file(f)
        if nb.utt_id in seen:
            raise InputError(f"utterance id {nb.utt_id!r} also comes from {seen[nb.utt_id]}", path=f)
        seen[nb.utt_id] = f
        out.append(nb)
    if refs is not None:
        table = {k: " ".join(v.split()) for k, (_, v) in _read_kaldi_table(refs, "references").items()}
        out = [NBestList(nb.utt_id, nb.hyps, table.get(nb.utt_id, nb.ref), nb.tags) for nb in out]
    return out
