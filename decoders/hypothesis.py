"""Scored hypotheses and n-best lists: what every decoder emits and every tuner reads.

The file form is JSONL, one utterance a line::

    {"utt_id": "u1", "ref": "the cat", "tags": {"domain": "tech", "snr": 20.0},
     "hyps": [{"text": "the cat", "scores": {"am": -12.3, "lm": -8.1}}, ...]}

``scores`` are natural-log component scores (higher is better); the combined score of a hypothesis
under weights ``w`` is ``Σ_k w[k] * scores[k]``. ``tokens`` and ``words`` (word timings) are optional.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fusion.errors import InputError
from fusion.io import AtomicWriter, iter_text_lines
from fusion.weights import check_weights

MAX_LINE_CHARS = 64 * 1024 * 1024
"""Longest JSONL line read (one utterance); a longer one is refused before parsing."""


@dataclass(frozen=True)
class ScoredHypothesis:
    """One hypothesis with its per-component scores (natural log)."""

    text: str
    scores: Mapping[str, float]
    tokens: tuple[str, ...] = ()
    words: tuple[tuple[str, int, int], ...] = ()
    """Optional ``(word, start_frame, end_frame)`` triples."""
    timesteps: tuple[int, ...] = ()
    """Optional frame of each token (CTC: the first frame of the token on the best alignment)."""
    confidence: tuple[float, ...] = ()
    """Optional confidence in ``[0, 1]`` of each word (CTC: see :mod:`decoders.ctc.align`)."""

    def total(self, weights: Mapping[str, float]) -> float:
        """``Σ_k weights[k] * scores[k]`` under :func:`~fusion.weights.check_weights` (``am`` defaults
        to 1, a component without a weight counts 0, an unknown name is an error)."""
        s = 0.0
        for k, w in check_weights(weights, self.scores, where=f"weights of {self.text!r}").items():
            if w == 0.0:
                continue
            if k not in self.scores:
                raise KeyError(f"hypothesis {self.text!r} has no score {k!r} (has {sorted(self.scores)})")
            s += w * self.scores[k]
        return s

    def with_scores(self, **extra: float) -> ScoredHypothesis:
        """A copy with more (or replaced) component scores."""
        return replace(self, scores={**self.scores, **extra})

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text, "scores": dict(self.scores)}
        if self.tokens:
            d["tokens"] = list(self.tokens)
        if self.words:
            d["words"] = [list(w) for w in self.words]
        if self.timesteps:
            d["timesteps"] = list(self.timesteps)
        if self.confidence:
            d["confidence"] = list(self.confidence)
        return d


@dataclass(frozen=True)
class NBestList:
    """The hypotheses of one utterance, with its reference and condition tags when known."""

    utt_id: str
    hyps: tuple[ScoredHypothesis, ...]
    ref: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)

    def best(self, weights: Mapping[str, float]) -> ScoredHypothesis | None:
        """The highest-scoring hypothesis under ``weights`` (first one on ties); None if empty."""
        if not self.hyps:
            return None
        return max(self.hyps, key=lambda h: h.total(weights))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"utt_id": self.utt_id}
        if self.ref is not None:
            d["ref"] = self.ref
        if self.tags:
            d["tags"] = dict(self.tags)
        d["hyps"] = [h.to_json() for h in self.hyps]
        return d


def check_utt_id(utt: str, path: Path | str, lineno: int | None) -> None:
    """Refuse an utterance id that would break a ``<utt_id> <text>`` line (whitespace, control chars)."""
    if not utt or any(c.isspace() or not c.isprintable() for c in utt):
        raise InputError(
            f"utterance id {utt[:80]!r} is empty or holds whitespace or control characters", path=path, line=lineno,
            field="utt_id",
        )


def _check_finite_tree(obj: Any, path: Path | str, lineno: int, where: str) -> None:
    """Refuse NaN/infinity anywhere in a JSON value (it could not be written back as JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise InputError("value is not finite", path=path, line=lineno, field=where)
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite_tree(v, path, lineno, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_finite_tree(v, path, lineno, f"{where}[{i}]")


def _parse_hyp(obj: Any, path: Path | str, lineno: int, i: int) -> ScoredHypothesis:
    where = f"hyps[{i}]"
    if not isinstance(obj, dict):
        raise InputError("hypothesis must be an object", path=path, line=lineno, field=where)
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError("missing or non-string 'text'", path=path, line=lineno, field=f"{where}.text")
    scores = obj.get("scores", {})
    if not isinstance(scores, dict):
        raise InputError("'scores' must be an object", path=path, line=lineno, field=f"{where}.scores")
    clean: dict[str, float] = {}
    for k, v in scores.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"score {k!r} is not a number", path=path, line=lineno, field=f"{where}.scores.{k}")
        try:
            x = float(v)
        except OverflowError:
            x = math.inf
        if not math.isfinite(x):
            raise InputError(f"score {k!r} is not finite", path=path, line=lineno, field=f"{where}.scores.{k}")
        clean[k] = x
    tokens = obj.get("tokens", [])
    words = obj.get("words", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise InputError("'tokens' must be a list of strings", path=path, line=lineno, field=f"{where}.tokens")
    try:
        wtuple = tuple((str(w), int(s), int(e)) for w, s, e in words)
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            "'words' must be [word, start, end] triples", path=path, line=lineno, field=f"{where}.words"
        ) from None
    steps, conf = obj.get("timesteps", []), obj.get("confidence", [])
    if not isinstance(steps, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in steps):
        raise InputError("'timesteps' must be a list of integers", path=path, line=lineno, field=f"{where}.timesteps")
    if not isinstance(conf, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= x <= 1.0 for x in conf
    ):
        raise InputError("'confidence' must be a list of numbers in [0, 1]", path=path, line=lineno,
                         field=f"{where}.confidence")
    return ScoredHypothesis(" ".join(text.split()), clean, tuple(tokens), wtuple, tuple(steps),
                            tuple(float(x) for x in conf))


CONDITION_FIELDS = ("domain", "condition", "snr", "noise")
"""Top-level fields of an n-best record read as condition tags (``tags`` takes precedence)."""


def parse_nbest_line(line: str, *, path: Path | str = "<string>", lineno: int = 1) -> NBestList:
    """Parse one JSONL line into an :class:`NBestList`, with located errors."""
    if len(line) > MAX_LINE_CHARS:
        raise InputError(f"line of {len(line)} characters is longer than {MAX_LINE_CHARS}", path=path, line=lineno)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=lineno) from None
    except RecursionError:
        raise InputError("JSON nested too deeply", path=path, line=lineno) from None
    except ValueError as e:  # integers over Python's digit limit
        msg = str(e).split(";")[0]
        raise InputError(f"invalid JSON number: {msg}", path=path, line=lineno) from None
    if not isinstance(obj, dict):
        raise InputError("each line must be a JSON object", path=path, line=lineno)
    utt = obj.get("utt_id")
    if not isinstance(utt, str) or not utt:
        raise InputError("missing or empty 'utt_id'", path=path, line=lineno, field="utt_id")
    check_utt_id(utt, path, lineno)
    hyps = obj.get("hyps")
    if not isinstance(hyps, list):
        raise InputError("'hyps' must be a list", path=path, line=lineno, field="hyps")
    ref = obj.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise InputError("'ref' must be a string", path=path, line=lineno, field="ref")
    tags = obj.get("tags", {})
    if not isinstance(tags, dict):
        raise InputError("'tags' must be an object", path=path, line=lineno, field="tags")
    top = {k: obj[k] for k in CONDITION_FIELDS if k in obj and k not in tags}
    if top:  # condition fields at the top level count as tags (a tag of the same name wins)
        tags = {**tags, **top}
    _check_finite_tree(tags, path, lineno, "tags")
    return NBestList(
        utt_id=utt,
        hyps=tuple(_parse_hyp(h, path, lineno, i) for i, h in enumerate(hyps)),
        ref=None if ref is None else " ".join(ref.split()),
        tags=tags,
    )


def iter_nbest_jsonl(path: str | Path) -> Iterator[NBestList]:
    """Stream n-best lists from a JSONL file; blank lines are skipped, duplicate ids are errors."""
    seen: dict[str, int] = {}
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        nb = parse_nbest_line(line, path=path, lineno=lineno)
        if nb.utt_id in seen:
            raise InputError(
                f"duplicate utt_id {nb.utt_id!r} (first on line {seen[nb.utt_id]})", path=path, line=lineno
            )
        seen[nb.utt_id] = lineno
        yield nb


def read_nbest_jsonl(path: str | Path) -> list[NBestList]:
    """Read a whole n-best JSONL file."""
    return list(iter_nbest_jsonl(path))


def format_nbest_jsonl(nbests: Iterable[NBestList]) -> str:
    return "".join(json.dumps(nb.to_json(), ensure_ascii=False, allow_nan=False) + "\n" for nb in nbests)


def write_nbest_jsonl(path: str | Path, nbests: Iterable[NBestList]) -> None:
    """Atomically write n-best lists as JSONL (streamed: ``nbests`` may be a generator)."""
    with AtomicWriter(path) as f:
        for nb in nbests:
            f.write(json.dumps(nb.to_json(), ensure_ascii=False, allow_nan=False) + "\n")


def component_names(nbests: Sequence[NBestList]) -> list[str]:
    """Score components present in every hypothesis of every list, in first-seen order."""
    names: list[str] | None = None
    for nb in nbests:
        for h in nb.hyps:
            if names is None:
                names = list(h.scores)
            else:
                names = [n for n in names if n in h.scores]
    return names or []
