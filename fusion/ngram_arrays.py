"""A back-off n-gram LM as flat, sorted numpy arrays (in the spirit of NeMo's NGPU-LM).

:func:`read_arpa` loads an ARPA file into :class:`NgramArrays`: one row per n-gram of every order,
unigrams first in word-id order (row ``id``), then each higher order sorted by a 64-bit hash of its
word ids (FNV-1a over ``id + 1``, oldest word first), with the ids themselves kept for checking
(collisions are resolved by comparing them). Scores and back-offs are kept as KenLM keeps them (the
ARPA's log10, float32) and summed as KenLM sums them (float32, the matched n-gram's score first, then
the back-offs shortest context first), so every score is bit-identical to KenLM's; the API returns
natural logs (that log10 sum times ln 10, in float64, as :class:`fusion.ngram.KenLM` converts).
A flag per row says whether the n-gram begins a longer one.

Scoring follows KenLM exactly: the longest n-gram ``(context suffix, word)`` found gives the
probability, plus the back-offs of the longer context suffixes that did not match; the new state is
the longest suffix of ``(context, word)``, at most ``order - 1`` words, that is an n-gram beginning a
longer one (KenLM's right-state minimisation, so two histories KenLM merges get one state here too).
An unknown word is ``<unk>`` (id 0).

States are int32 arrays of ``order - 1`` word ids, most recent first, padded with -1. Three ways to
score, all on the same arrays:

* :func:`score_one` (numba, compiled, ``cache=True``): one ``(state, word)``; meant to be called from
  compiled searches;
* :func:`score_many` (numba): a batch;
* :func:`score_after` (numba): many words after one state, no next states (a whole vocabulary's row);
* :meth:`NgramArrays.score_batch` (plain numpy, vectorised over the batch): the same lookups as array
  operations (``searchsorted`` + gathers), the shape a torch port on a GPU takes.

The plain reference is KenLM itself (``tests/test_ngram_arrays.py`` checks every score and state).
"""

from __future__ import annotations

import functools
import gzip
import importlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fusion.errors import InputError

LN10 = math.log(10.0)
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
UNK = 0


def hash_rows(ids: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a hashes of rows of word ids ``[n, k]`` (oldest word first); wraps modulo 2**64."""
    h = np.full(len(ids), FNV_OFFSET, dtype=np.uint64)
    for j in range(ids.shape[1]):
        h = (h ^ (ids[:, j].astype(np.uint64) + np.uint64(1))) * FNV_PRIME
    return h


@dataclass
class NgramArrays:
    """An n-gram LM as arrays (see the module docstring).

    Attributes:
        order: the highest order ``N``.
        vocab: word -> id (``<unk>`` is 0).
        offsets: ``[N + 1]``: rows of order ``n`` are ``offsets[n-1]:offsets[n]``.
        keys: ``[rows]`` uint64 hash of each n-gram's ids (unigram rows: unused, in id order).
        ids: ``[rows, N]`` int32 word ids, oldest first, padded with -1.
        logp: ``[rows]`` float32 log10 P(word | context) (KenLM's number).
        backoff: ``[rows]`` float32 log10 back-off weight of the n-gram as a context.
        extends: ``[rows]`` bool: the n-gram is the context of a longer one (or has a back-off).
    """

    order: int
    vocab: dict[str, int]
    offsets: np.ndarray
    keys: np.ndarray
    ids: np.ndarray
    logp: np.ndarray
    backoff: np.ndarray
    extends: np.ndarray

    @property
    def bos(self) -> int:
        return self.vocab.get("<s>", UNK)

    @property
    def eos(self) -> int:
        return self.vocab.get("</s>", UNK)

    def word_id(self, word: str) -> int:
        """A word's id, 0 (``<unk>``) when unknown."""
        return self.vocab.get(word, UNK)

    def null_state(self) -> np.ndarray:
        """No context."""
        return np.full(max(1, self.order - 1), -1, np.int32)

    def begin_state(self) -> np.ndarray:
        """The sentence-start context ``<s>``."""
        s = self.null_state()
        if self.order > 1:
            s[0] = self.bos
        return s

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return int(sum(a.nbytes for a in (self.offsets, self.keys, self.ids, self.logp, self.backoff, self.extends)))

    def score(self, state: np.ndarray, word: int) -> tuple[float, np.ndarray]:
        """ln P(word | state) and the next state (compiled :func:`score_one`)."""
        out = np.empty_like(state)
        lp = score_one(self.offsets, self.keys, self.ids, self.logp, self.backoff, self.extends,
                       np.ascontiguousarray(state, dtype=np.int32), int(word), out)
        return lp, out

    def unit_ids(self, units: Sequence[str]) -> np.ndarray:
        """Ids of many units (0, ``<unk>``, for unknown ones), int64."""
        get = self.vocab.get
        return np.fromiter((get(u, UNK) for u in units), np.int64, len(units))

    def score_sentence(self, words: Sequence[str], *, bos: bool = True, eos: bool = True) -> np.ndarray:
        """Per-word ln P of a sentence (as KenLM's ``full_scores``: one per word, plus ``</s>``)."""
        state = self.begin_state() if bos else self.null_state()
        ids = [self.word_id(w) for w in words] + ([self.eos] if eos else [])
        out = np.empty(len(ids))
        for i, w in enumerate(ids):
            out[i], state = self.score(state, w)
        return out

    # -- the vectorised numpy scorer ------------------------------------------------------------
    def _lookup(self, n: int, grams: np.ndarray) -> np.ndarray:
        """Row index of each n-gram ``grams [B, n]`` (oldest first), -1 where absent or any id < 0."""
        B = len(grams)
        valid: np.ndarray = np.asarray((grams >= 0).all(axis=1))
        if n == 1:
            return np.where(valid, grams[:, 0], -1).astype(np.int64)
        a, b = int(self.offsets[n - 1]), int(self.offsets[n])
        keys = self.keys[a:b]
        h = hash_rows(np.where(valid[:, None], grams, 0))
        pos = np.searchsorted(keys, h)
        out = np.full(B, -1, np.int64)
        todo = valid & (pos < b - a)
        # walk equal keys (hash collisions are rare; the loop ends after the longest run)
        while todo.any():
            i = np.flatnonzero(todo)
            p = pos[i]
            same_key = keys[np.minimum(p, b - a - 1)] == h[i]
            ok = same_key & (self.ids[a + p, :n] == grams[i]).all(axis=1)
            out[i[ok]] = a + p[ok]
            todo[i[ok | ~same_key]] = False
            pos[i] += 1
            todo &= pos < b - a
        return out

    def score_batch(self, states: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ln P for ``B`` ``(state, word)`` pairs at once: ``states [B, N-1]``, ``words [B]``.

        Returns ``(ln P [B] float64, next states [B, N-1] int32)``; the same numbers as
        :func:`score_many`, computed with whole-batch array operations only.
        """
        st = np.asarray(states, dtype=np.int32).reshape(len(words), -1)
        w = np.asarray(words, dtype=np.int32)
        B, C = st.shape
        N = self.order
        L = (st >= 0).sum(axis=1) if N > 1 else np.zeros(B, np.int64)
        match = np.zeros(B, np.int64)
        lp = np.zeros(B, np.float32)
        for n in range(min(N, C + 1), 0, -1):
            ctx = st[:, : n - 1][:, ::-1]  # oldest first
            rows = self._lookup(n, np.concatenate([ctx, w[:, None]], axis=1))
            hit = (match == 0) & (rows >= 0) & (L >= n - 1)
            lp[hit] = self.logp[rows[hit]]
            match[hit] = n
        # KenLM's order: back-offs of the longer context suffixes, shortest first, in float32
        for j in range(1, min(N - 1, C) + 1):
            use = (match > 0) & (j >= match) & (j <= L)
            if use.any():
                crow = self._lookup(j, st[:, :j][:, ::-1])
                use &= crow >= 0
                lp[use] = lp[use] + self.backoff[crow[use]]
        # next state: the longest suffix of (word, context...) that is an n-gram that extends
        full = np.concatenate([w[:, None], st], axis=1)  # most recent first
        nxt = np.full((B, C), -1, np.int32)
        done = np.zeros(B, bool)
        for m in range(min(C, N - 1), 0, -1):
            rows = self._lookup(m, full[:, :m][:, ::-1])
            ok = ~done & (rows >= 0) & (L + 1 >= m)
            ok[ok] &= self.extends[rows[ok]]
            nxt[ok, :m] = full[ok, :m]
            done |= ok
        return lp.astype(np.float64) * LN10, nxt


# ----------------------------------------------------------------------------------------------
# Reading ARPA
# ----------------------------------------------------------------------------------------------
def _open_text(path: Path) -> TextIO:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def read_arpa(path: str | Path) -> NgramArrays:
    """Load an ARPA file (optionally ``.gz``) into :class:`NgramArrays`.

    Raises:
        InputError: not an ARPA file, or a malformed line (named with its line number).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("ARPA file not found", path=path)
    counts: dict[int, int] = {}
    grams: dict[int, list[tuple[tuple[str, ...], float, float]]] = {}
    cur = 0
    with _open_text(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("\\"):
                if line == "\\data\\":
                    cur = 0
                elif line.endswith("-grams:"):
                    try:
                        cur = int(line[1:].split("-")[0])
                    except ValueError:
                        raise InputError(f"bad section header {line!r}", path=path, line=lineno) from None
                    grams[cur] = []
                elif line == "\\end\\":
                    break
                continue
            if cur == 0:
                if line.startswith("ngram "):
                    ks, cs = line[6:].split("=")
                    counts[int(ks)] = int(cs)
                continue
            parts = line.split()
            if len(parts) not in (cur + 1, cur + 2):
                raise InputError(f"expected a {cur}-gram line, got {line[:80]!r}", path=path, line=lineno)
            try:
                lp = float(parts[0])
                bo = float(parts[cur + 1]) if len(parts) == cur + 2 else 0.0
            except ValueError:
                raise InputError(f"bad number in {line[:80]!r}", path=path, line=lineno) from None
            grams[cur].append((tuple(parts[1 : cur + 1]), lp, bo))
    if not counts or 1 not in grams:
        raise InputError("not an ARPA file (no \\data\\ section or no 1-grams)", path=path)
    N = max(grams)
    for n, c in counts.items():
        if len(grams.get(n, ())) != c:
            raise InputError(f"header says {c} {n}-grams, file has {len(grams.get(n, ()))}", path=path)
    words = [g[0][0] for g in grams[1]]
    if "<unk>" not in words:
        words.insert(0, "<unk>")
        grams[1].insert(0, (("<unk>",), -100.0, 0.0))
    else:  # <unk> first: id 0
        iu = words.index("<unk>")
        grams[1].insert(0, grams[1].pop(iu))
        words.insert(0, words.pop(iu))
    vocab = {w: i for i, w in enumerate(words)}
    offsets = np.zeros(N + 1, np.int64)
    id_blocks, key_blocks, lp_blocks, bo_blocks = [], [], [], []
    for n in range(1, N + 1):
        g = grams.get(n, [])
        ids = np.full((len(g), N), -1, np.int32)
        if g:
            try:
                ids[:, :n] = [[vocab[w] for w in t[0]] for t in g]
            except KeyError as e:
                raise InputError(f"{n}-gram uses word {e.args[0]!r} missing from the 1-grams", path=path) from None
        lps: np.ndarray = np.array([t[1] for t in g], np.float32)
        bos: np.ndarray = np.array([t[2] for t in g], np.float32)
        key = hash_rows(ids[:, :n]) if n > 1 else np.zeros(len(g), np.uint64)
        if n > 1:
            perm = np.argsort(key, kind="stable")
            ids, lps, bos, key = ids[perm], lps[perm], bos[perm], key[perm]
        id_blocks.append(ids)
        key_blocks.append(key)
        lp_blocks.append(lps)
        bo_blocks.append(bos)
        offsets[n] = offsets[n - 1] + len(g)
    arr = NgramArrays(
        order=N, vocab=vocab, offsets=offsets, keys=np.concatenate(key_blocks),
        ids=np.concatenate(id_blocks), logp=np.concatenate(lp_blocks).astype(np.float32),
        backoff=np.concatenate(bo_blocks).astype(np.float32), extends=np.zeros(int(offsets[N]), bool),
    )
    arr.extends[:] = arr.backoff != 0.0
    for n in range(2, N + 1):  # a context of an n-gram extends
        a, b = int(offsets[n - 1]), int(offsets[n])
        rows = arr._lookup(n - 1, arr.ids[a:b, : n - 1])
        arr.extends[rows[rows >= 0]] = True
    return arr


CACHE_VERSION = 1
_ARRAY_FIELDS = ("offsets", "keys", "ids", "logp", "backoff", "extends")


def arrays_cache_path(arpa: Path) -> Path:
    """Where :func:`load_ngram_arrays` keeps the arrays read from ``arpa`` (beside it)."""
    return arpa.with_name(arpa.name + ".arrays.npz")


def _stamp(arpa: Path) -> np.ndarray:
    st = arpa.stat()
    return np.array([CACHE_VERSION, st.st_size, st.st_mtime_ns], np.int64)


def read_arpa_cached(arpa: Path) -> NgramArrays:
    """:func:`read_arpa`, through a ``.arrays.npz`` beside the ARPA (valid while the ARPA's size and modification
    time are those it was made from; written atomically; skipped where the directory is read-only)."""
    cache = arrays_cache_path(arpa)
    stamp = _stamp(arpa)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if np.array_equal(z["stamp"], stamp):
                    words = z["vocab"].tolist()
                    return NgramArrays(order=int(z["order"]), vocab={w: i for i, w in enumerate(words)},
                                       **{k: z[k] for k in _ARRAY_FIELDS})
        except (OSError, ValueError, KeyError):
            pass  # unreadable or from another version: read the ARPA again and rewrite it
    arr = read_arpa(arpa)
    words = sorted(arr.vocab, key=arr.vocab.__getitem__)
    import io

    from fusion.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, stamp=stamp, order=np.int64(arr.order), vocab=np.array(words, dtype=str),
             **{k: getattr(arr, k) for k in _ARRAY_FIELDS})
    try:
        atomic_write_bytes(cache, buf.getvalue())
    except OSError:
        pass  # a read-only model directory: the arrays are simply read from the ARPA each time
    return arr


def load_ngram_arrays(path: str | Path) -> NgramArrays:
    """:func:`read_arpa` on an ARPA file, or on the ARPA kept beside a KenLM binary (cached as ``.arrays.npz``
    beside the ARPA, so later processes load it in milliseconds).

    Raises:
        InputError: a binary model without its ARPA (rebuild it with ``build_ngram(..., keep_arpa=True)``).
    """
    from fusion.ngram import _check_lm_file, arpa_beside

    path = Path(path)
    if path.suffix == ".gz" or _check_lm_file(path) == "arpa":
        return read_arpa_cached(path)
    beside = arpa_beside(path)
    if beside.is_file():
        return read_arpa_cached(beside)
    raise InputError(
        f"a KenLM binary cannot be read into arrays and {beside.name} is not there; "
        "build the model with build_ngram(..., keep_arpa=True) or pass the ARPA file", path=path
    )


# ----------------------------------------------------------------------------------------------
# Compiled scoring (numba; imported lazily so the module loads without it)
# ----------------------------------------------------------------------------------------------
NGRAM_KERNEL_FILES = (Path(__file__).parent / "_ngram_kernel.py",)
"""The sources of the extension ``fusion/_ngram_aot*.so`` (its fingerprint: :mod:`fusion.aot`)."""

_AOT_TYPES = (np.dtype(np.int64), np.dtype(np.uint64), np.dtype(np.int32), np.dtype(np.float32),
              np.dtype(np.float32), np.dtype(bool))


def _compiled(*arrays: np.ndarray) -> Any:
    """The compiled scorers: the ahead-of-time extension ``fusion/_ngram_aot*.so`` (numpy only; built with the CTC
    kernels by ``python -m decoders.ctc.build_aot``) unless ``LMFUSION_CTC_KERNELS=jit``, it is not built or it is
    stale (built from other sources: :mod:`fusion.aot`), else numba's JIT (:mod:`fusion._ngram_kernel`; same
    scores). ``arrays``: the model's six arrays, whose types the extension needs (it reads memory as it is told;
    the JIT adapts)."""
    if (os.environ.get("LMFUSION_CTC_KERNELS", "").strip().lower() != "jit" and _ngram_aot_fresh()
            and all(a.dtype == t and a.flags.c_contiguous for a, t in zip(arrays, _AOT_TYPES, strict=True))):
        return importlib.import_module("fusion._ngram_aot")
    from fusion import _ngram_kernel

    return _ngram_kernel


@functools.cache
def _ngram_aot_fresh() -> bool:
    """Whether ``fusion/_ngram_aot*.so`` is built from the sources here (looked up once per process)."""
    from fusion.aot import aot_state

    return aot_state(Path(__file__).parent, "_ngram_aot", NGRAM_KERNEL_FILES) == "fresh"


def score_one(offsets: np.ndarray, keys: np.ndarray, ids: np.ndarray, logp: np.ndarray, backoff: np.ndarray,
              extends: np.ndarray, state: np.ndarray, word: int, out_state: np.ndarray) -> float:
    """ln P(word | state) (KenLM's float32 log10 times ln 10); writes the next state into ``out_state``."""
    state = np.ascontiguousarray(state, dtype=np.int32)
    out = out_state if out_state.dtype == np.int32 and out_state.flags.c_contiguous else np.empty_like(state)
    lp10 = _compiled(offsets, keys, ids, logp, backoff, extends).score_one(offsets, keys, ids, logp, backoff, extends,
                                                                           state, int(word), out)
    if out is not out_state:
        out_state[:] = out
    return float(lp10) * LN10


def score_after(lm: NgramArrays, state: np.ndarray, words: np.ndarray) -> np.ndarray:
    """ln P of many words after one state (compiled loop, no next states; the numbers of :func:`score_many`)."""
    from fusion import _ngram_rows

    lp = np.empty(len(words))
    _ngram_rows.score_after(lm.offsets, lm.keys, lm.ids, lm.logp, lm.backoff,
                            np.ascontiguousarray(state, dtype=np.int32), np.ascontiguousarray(words, dtype=np.int64),
                            lp)
    return lp


def score_many(lm: NgramArrays, states: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ln P for a batch of ``(state, word)`` pairs (compiled loop): ``(logp [B], next states [B, N-1])``."""
    st = np.ascontiguousarray(states, dtype=np.int32).reshape(len(words), -1)
    out = np.empty_like(st)
    lp = np.empty(len(words))
    arrays = (lm.offsets, lm.keys, lm.ids, lm.logp, lm.backoff, lm.extends)
    _compiled(*arrays).score_many(*arrays, st, np.ascontiguousarray(words, dtype=np.int64), lp, out)
    return lp, out
