"""Which compiled kernels the CTC search runs: ahead-of-time compiled (no numba at run time) or numba's JIT.

The kernels (the frame loop :func:`decoders.ctc.kernel.run_frames`, the scans of :mod:`decoders.ctc.scan`, the
n-gram steps of :mod:`decoders.ctc.lmkernel`, the trie walk of :mod:`decoders.ctc.csrkernel`, the alignment of
:mod:`decoders.ctc.alignkernel` and the map growth of :mod:`decoders.ctc.hashmap`) are numba functions. ``make
setup`` also compiles them ahead of time into the extension ``decoders/ctc/_aot*.so``
(:mod:`decoders.ctc.build_aot`, numba's ``pycc``), which needs only numpy to load: a fresh process then neither
imports numba (about 0.75 s and 70 MB) nor loads numba's cached machine code (about 1.5 s).

:func:`load` gives either set under the same names. ``"aot"`` wraps each exported function in a check of its
array arguments (dtype, number of dimensions, C order: the extension would read a wrong array as raw memory);
``"jit"`` imports numba. :func:`default_kind`: the extension when it is built, unless ``LMFUSION_CTC_KERNELS=jit``.
This module imports neither numba nor the extension until asked.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import itertools
import operator
import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from decoders.ctc.aot_spec import CTC_KERNEL_FILES, EXPORTS, SOURCES, Arg
from fusion.errors import LMFusionError

STATUS_DONE = 0
STATUS_NEED_LM = 1
STATUS_GROW = 2
STATUS_DEAD = 3
STATUS_GROW_LM = 4
STATUS_GROW_INDEX = 5

# lmst: [number of contexts, number of entries, kernel LM steps made]
LM_NCTX = 0
LM_NENT = 1
LM_CALLS = 2

TEXT_P = 0x100000001B3
"""The base of the polynomial text hash (:func:`decoders.ctc.scan.text_hashes`)."""

MAX_LOAD = 0.6
"""The largest share of a :mod:`decoders.ctc.hashmap` map's slots that may hold keys (the kernels use 3/5)."""

AOT_MODULE = "decoders.ctc._aot"
ENV = "LMFUSION_CTC_KERNELS"

_LOADED: dict[str, SimpleNamespace] = {}


@functools.cache
def aot_state() -> str:
    """The ahead-of-time extension: ``"fresh"`` (built from the kernel sources here), ``"stale"`` (built from
    other sources or another numba: ``python -m decoders.ctc.build_aot`` again) or ``"absent"``; looked up once."""
    from fusion.aot import aot_state as state_of

    return state_of(Path(__file__).parent, AOT_MODULE.rpartition(".")[2], CTC_KERNEL_FILES)


def aot_available() -> bool:
    """Whether the ahead-of-time extension is built from the kernel sources here (:func:`aot_state`)."""
    return aot_state() == "fresh"


@functools.cache
def jit_available() -> bool:
    """Whether numba is installed (without importing it; looked up once)."""
    return importlib.util.find_spec("numba") is not None


def default_kind() -> str:
    """``"aot"`` when the extension is built, else ``"jit"`` (``LMFUSION_CTC_KERNELS=aot|jit`` decides instead)."""
    want = os.environ.get(ENV, "").strip().lower()
    if want in ("aot", "jit"):
        return want
    if want:
        raise LMFusionError(f"{ENV} must be 'aot' or 'jit', got {want!r}")
    if aot_state() == "stale":
        _warn_stale()
    return "aot" if aot_available() else "jit"


@functools.cache
def _warn_stale() -> None:
    warnings.warn(f"{Path(__file__).parent}/_aot*.so was compiled from other kernel sources (or another numba); "
                  "the CTC search runs numba's JIT (CTCDecoder.backend says 'compiled-jit') until it is rebuilt: "
                  "`python -m decoders.ctc.build_aot` (make setup does)", RuntimeWarning, stacklevel=3)


def load(kind: str | None = None) -> SimpleNamespace:
    """The kernels of ``kind`` (``"aot"``, ``"jit"``; ``None``: :func:`default_kind`), loaded once."""
    kind = kind or default_kind()
    if kind not in _LOADED:
        if kind == "aot":
            _LOADED[kind] = _load_aot()
        elif kind == "jit":
            _LOADED[kind] = _load_jit()
        else:
            raise LMFusionError(f"CTC kernels: 'aot' or 'jit', got {kind!r}")
    return _LOADED[kind]


def _load_jit() -> SimpleNamespace:
    fns: dict[str, Any] = {}
    for name, source in SOURCES.items():
        mod, _, attr = source.rpartition(".")
        fns[name] = getattr(importlib.import_module(mod), attr)
    return SimpleNamespace(kind="jit", **fns)


def _load_aot() -> SimpleNamespace:
    if aot_state() == "stale":
        raise LMFusionError("the ahead-of-time CTC kernels were compiled from other kernel sources (or another "
                            "numba); rebuild them: `python -m decoders.ctc.build_aot` (make setup does)")
    try:
        ext = importlib.import_module(AOT_MODULE)
    except ImportError as err:
        raise LMFusionError(f"the ahead-of-time CTC kernels are not built ({err}); run "
                            "`python -m decoders.ctc.build_aot` (make setup does)") from None
    variants: dict[str, list[tuple[Callable[..., Any], Sequence[Arg]]]] = {}
    for e in EXPORTS:
        variants.setdefault(e.name, []).append((getattr(ext, e.symbol), e.args))
    return SimpleNamespace(kind="aot", **{name: _checked(name, v) for name, v in variants.items()})


def _fits(x: Any, a: Arg) -> bool:
    if a.kind == "tuple":
        return (isinstance(x, tuple) and len(x) == len(a.items)
                and all(_fits(y, b) for y, b in zip(x, a.items, strict=True)))
    if a.kind != "array":
        return True  # scalars: the extension converts them (a TypeError when it cannot)
    return (type(x) is np.ndarray and x.dtype == a.dtype and x.ndim == a.ndim
            and (a.ndim == 0 or x.flags.c_contiguous))


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype}[{x.ndim}d, {'C' if x.flags.c_contiguous else 'strided'}]"
    if isinstance(x, tuple):
        return "(" + ", ".join(_describe(y) for y in x) + ")"
    return type(x).__name__


def _fits_fast(x: Any, a: Arg) -> bool:
    """:func:`_fits` of an array argument."""
    return (type(x) is np.ndarray and (x.dtype is a.dtype or x.dtype == a.dtype) and x.ndim == a.ndim
            and (a.ndim == 0 or x.flags.c_contiguous))


def _pick(idx: tuple[int, ...], xs: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(xs[i] for i in idx)


class _Layout:
    """A variant's array arguments in one flat list: those passed as they are (read by one ``itemgetter``), then
    the items of the tuple arguments (every item an array), with their types."""

    def __init__(self, fn: Callable[..., Any], spec: Sequence[Arg]) -> None:
        self.fn, self.spec = fn, spec
        top = [i for i, a in enumerate(spec) if a.kind == "array"]
        self.get_top: Callable[[Sequence[Any]], Sequence[Any]] = (
            operator.itemgetter(*top) if len(top) > 1 else functools.partial(_pick, tuple(top)))
        self.tuple_pos = [i for i, a in enumerate(spec) if a.kind == "tuple"]
        self.tuple_lens = [len(spec[i].items) for i in self.tuple_pos]
        self.types = [spec[i] for i in top] + [b for i in self.tuple_pos for b in spec[i].items]
        if any(b.kind != "array" for i in self.tuple_pos for b in spec[i].items):
            raise LMFusionError("CTC kernels: tuple arguments hold arrays only")

    def arrays(self, args: Sequence[Any]) -> Sequence[Any] | None:
        """The array arguments, flat; ``None`` if a tuple argument is not a tuple of the right length."""
        tup = [args[i] for i in self.tuple_pos]
        if not all([type(x) is tuple and len(x) == n for x, n in zip(tup, self.tuple_lens, strict=True)]):
            return None
        top = self.get_top(args)
        return (*top, *itertools.chain.from_iterable(tup)) if tup else top


def _checked(name: str, variants: list[tuple[Callable[..., Any], Sequence[Arg]]]) -> Callable[..., Any]:
    """``name``'s exported variants behind one function that calls the one whose array types the arguments have.

    The arrays of the last call that passed are remembered by ``id``, each with a weak reference whose callback
    blanks its ``id`` when the array is freed (so an ``id`` seen again in its place is the same array): a call
    checks only the arrays that are not the very same objects as in that call (a search calls its kernels again
    and again with its own arrays; an array's dtype, dimensions and memory order do not change). The comparison
    runs in C (``map``)."""
    layouts = [_Layout(fn, spec) for fn, spec in variants]
    memo: list[Any] = [None, [], []]  # the layout that took the last call, the ids of its arrays, weak references

    def dead(k: int, _ref: Any) -> None:
        ids = memo[1]
        if k < len(ids):
            ids[k] = -1

    forget = [functools.partial(dead, k) for k in range(max(len(lay.types) for lay in layouts))]

    def call(*args: Any) -> Any:
        lay = memo[0]
        if lay is not None and len(args) == len(lay.spec):
            objs = lay.arrays(args)
            if objs is not None:
                ids = list(map(id, objs))
                old, refs = memo[1], memo[2]
                if ids == old:
                    return lay.fn(*args)
                for k in itertools.compress(range(len(ids)), map(operator.ne, ids, old)):
                    if not _fits_fast(objs[k], lay.types[k]):
                        memo[0] = None  # some references were renewed: never trust these ids again
                        break
                    refs[k] = weakref.ref(objs[k], forget[k])
                else:
                    memo[1] = ids
                    return lay.fn(*args)
        for lay in layouts:
            if len(args) == len(lay.spec) and all(_fits(x, a) for x, a in zip(args, lay.spec, strict=True)):
                objs = lay.arrays(args)
                assert objs is not None
                memo[:] = [lay, list(map(id, objs)), [weakref.ref(x, forget[k]) for k, x in enumerate(objs)]]
                return lay.fn(*args)
        got = ", ".join(_describe(x) for x in args)
        raise LMFusionError(f"ahead-of-time CTC kernel {name}: no compiled variant takes these arguments ({got}); "
                            f"the variants are {[tuple(str(a) for a in s) for _, s in variants]}")

    call.__name__ = name
    return call


# -- the two hash maps (decoders.ctc.hashmap) --------------------------------------------------------------------
def new_map(width: int, keys: int) -> np.ndarray:
    """An empty map for ``keys`` keys of ``width - 1`` ints (a power of two of slots, at most :data:`MAX_LOAD`
    full)."""
    cap = 16
    while keys > cap * 3 // 5:
        cap *= 2
    return np.full((cap, width), -1, np.int64)


def map_room(K: SimpleNamespace, tab: np.ndarray, n_keys: int, more: int) -> np.ndarray:
    """``tab`` (holding ``n_keys`` keys) or, when ``more`` keys would fill it over :data:`MAX_LOAD`, a bigger copy."""
    if n_keys + more <= tab.shape[0] * 3 // 5:
        return tab
    new = new_map(tab.shape[1], max(n_keys + more, 2 * n_keys))
    (K.rehash3 if tab.shape[1] == 4 else K.rehash1)(tab, new)
    return new
