"""Kaldi n-best lists in binary archives (``ark``/``scp``), read into :class:`~decoders.hypothesis.NBestList`.

``nbest-to-linear`` writes an n-best lattice as tables keyed ``<utt>-<n>``: the word ids (an int32 vector
per key) and the acoustic and LM (graph) costs (one float per key). Without ``ark,t:`` they are binary.
The word-id vectors are read with ``kaldiio`` (binary ``ark``, or ``scp`` pointing into one); the cost
tables are Kaldi's single-float tables, which ``kaldiio`` does not read, so this module parses them
(binary ``\\0B`` + size byte + IEEE float, or text ``<key> <cost>`` lines). Word ids become words through
``words.txt``, which binary archives always need. Costs are negated into scores (``am = -ac_cost``,
``lm = -lm_cost``), as for Kaldi's text triplet.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.nbest.formats import _read_kaldi_table, _read_symbols, _split_key
from fusion.errors import InputError

__all__ = ["read_float_table", "read_int_vectors", "read_kaldi_ark_nbest"]


def _is_scp(path: Path) -> bool:
    return path.suffix == ".scp"


def read_int_vectors(path: str | Path) -> dict[str, np.ndarray]:
    """``{key: int32 vector}`` of a binary Kaldi ``ark`` (or an ``scp`` into one), through ``kaldiio``."""
    import kaldiio

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    try:
        pairs = kaldiio.load_scp(str(path)).items() if _is_scp(path) else kaldiio.load_ark(str(path))
        out = {str(k): np.asarray(v) for k, v in pairs}
    except Exception as e:  # kaldiio raises assertion and value errors on malformed archives
        raise InputError(f"not a Kaldi int32-vector archive ({type(e).__name__}: {e})", path=path) from None
    for k, v in out.items():
        if v.ndim != 1 or not np.issubdtype(v.dtype, np.integer):
            raise InputError(f"entry {k!r} is not an integer vector (shape {v.shape}, {v.dtype})", path=path)
    return out


def _read_token(f: BinaryIO) -> bytes:
    """A Kaldi archive key: bytes up to the next space (leading whitespace skipped); b'' at the end."""
    out = bytearray()
    while True:
        c = f.read(1)
        if not c:
            return bytes(out)
        if c == b" ":
            if out:
                return bytes(out)
            continue
        if c in b"\n\r\t" and not out:
            continue
        out += c


def _read_float_value(f: BinaryIO, path: Path, key: str) -> float:
    """One float after a key: binary (``\\0B``, size byte 4 or 8, the value) or text up to the newline."""
    head = f.read(2)
    if head == b"\0B":
        size = f.read(1)
        if size not in (b"\4", b"\x08"):
            raise InputError(f"entry {key!r} is not a single float (size byte {size!r})", path=path)
        raw = f.read(ord(size))
        if len(raw) != ord(size):
            raise InputError(f"entry {key!r} is truncated", path=path)
        return float(struct.unpack("<f" if size == b"\4" else "<d", raw)[0])
    text = (head + f.readline()).decode("utf-8", "replace").strip()
    try:
        return float(text)
    except ValueError:
        raise InputError(f"entry {key!r}: cost {text!r} is not a number", path=path) from None


def read_float_table(path: str | Path) -> dict[str, float]:
    """``{key: float}`` of a Kaldi single-float table: a binary or text ``ark``, or an ``scp`` into arks."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    out: dict[str, float] = {}
    if _is_scp(path):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            key, _, where = line.strip().partition(" ")
            ark, colon, offset = where.strip().rpartition(":")
            if not colon or not offset.isdigit():
                raise InputError(f"expected '<key> <ark>:<offset>', got {line!r}", path=path, line=lineno)
            with open(ark, "rb") as f:
                f.seek(int(offset))
                out[key] = _read_float_value(f, Path(ark), key)
        return out
    with path.open("rb") as f:
        while True:
            key = _read_token(f).decode("utf-8", "replace")
            if not key:
                return out
            if key in out:
                raise InputError(f"duplicate key {key!r}", path=path)
            out[key] = _read_float_value(f, path, key)


def read_kaldi_ark_nbest(
    words: str | Path,
    ac_cost: str | Path,
    lm_cost: str | Path,
    *,
    words_txt: str | Path,
    refs: str | Path | None = None,
    names: tuple[str, str] = ("am", "lm"),
) -> list[NBestList]:
    """Read an n-best list from Kaldi binary tables (see the module docstring).

    Args:
        words: ``ark``/``scp`` of int32 word-id vectors, keys ``<utt>-<n>``.
        ac_cost, lm_cost: ``ark``/``scp`` of single-float costs with the same keys.
        words_txt: the symbol table (``<word> <id>`` lines).
        refs: optional Kaldi ``text`` file of references, ``<utt> w1 w2 ...``.
        names: component names for the acoustic and LM (graph) scores.

    Raises:
        InputError: a key missing from a table, a word id outside ``words_txt``, a non-finite cost.
    """
    ids = read_int_vectors(words)
    symbols = _read_symbols(words_txt)
    tables = [(read_float_table(p), Path(p), n) for p, n in ((ac_cost, names[0]), (lm_cost, names[1]))]
    for table, p, _ in tables:
        extra = sorted(set(table) - set(ids))
        if extra:
            raise InputError(f"{len(extra)} keys have a cost but no word ids in {words} (e.g. {extra[0]!r})", path=p)
    groups: dict[str, list[tuple[int, ScoredHypothesis]]] = {}
    for key, vec in ids.items():
        utt, n = _split_key(key, words, 0)
        try:
            toks = [symbols[str(int(i))] for i in vec]
        except KeyError as e:
            raise InputError(f"word id {e.args[0]} of {key!r} is not in {words_txt}", path=words) from None
        scores: dict[str, float] = {}
        for table, p, name in tables:
            if key not in table:
                raise InputError(f"hypothesis {key!r} has no entry", path=p)
            if not math.isfinite(table[key]):
                raise InputError(f"cost of {key!r} is not finite ({table[key]})", path=p)
            scores[name] = -table[key]
        groups.setdefault(utt, []).append((n, ScoredHypothesis(" ".join(toks), scores)))
    ref_table = {} if refs is None else _read_kaldi_table(refs, "references")
    ref_map = {k: " ".join(v.split()) for k, (_, v) in ref_table.items()}
    out = []
    for utt, hs in groups.items():
        hs.sort(key=lambda t: t[0])
        out.append(NBestList(utt, tuple(h for _, h in hs), ref_map.get(utt)))
    return out
