"""Open-addressing hash maps in plain int64 arrays, for the compiled CTC search (numba).

The compiled search keeps two maps that must cross the boundary between Python and compiled code (and an
ahead-of-time compiled extension, :mod:`decoders.ctc.aot`, which cannot pass numba's typed dictionaries):

* the LM-step index ``(context, word code, token) -> entry``: ``tab int64 [cap, 4]``, columns key, key, key,
  value (``-1``: empty slot);
* the context hash ``row hash -> first context``: ``tab int64 [cap, 2]``, columns key, value (``-1``: empty).

``cap`` is a power of two; linear probing. A map is grown (:func:`grow3` / :func:`grow1`, twice the slots,
every key re-inserted) by its owner before it could pass :data:`MAX_LOAD` of its slots, so a probe always ends.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_LOAD = 0.6
"""The largest share of slots a map's owner lets it fill (checked before inserting)."""

_M1 = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15
_M2 = np.int64(-4658895280553007687)  # 0xBF58476D1CE4E5B9
_M3 = np.int64(-7723592293110705685)  # 0x94D049BB133111EB


@njit(cache=True, inline="always")
def _mix(h):
    h = (h ^ ((h >> 30) & np.int64(0x3FFFFFFFF))) * _M2
    h = (h ^ ((h >> 27) & np.int64(0x1FFFFFFFFF))) * _M3
    return h ^ ((h >> 31) & np.int64(0x1FFFFFFFF))


@njit(cache=True, inline="always")
def get3(tab, a, b, c):
    """The value of key ``(a, b, c)``, ``-1`` when absent."""
    mask = tab.shape[0] - 1
    i = _mix(a * _M1 + _mix(b * _M1 + _mix(c))) & mask
    while True:
        v = tab[i, 3]
        if v < 0:
            return v
        if tab[i, 0] == a and tab[i, 1] == b and tab[i, 2] == c:
            return v
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def put3(tab, a, b, c, v):
    """Set key ``(a, b, c)`` to ``v >= 0``; returns 1 when the key is new, else 0. The map must have room."""
    mask = tab.shape[0] - 1
    i = _mix(a * _M1 + _mix(b * _M1 + _mix(c))) & mask
    while True:
        if tab[i, 3] < 0:
            tab[i, 0] = a
            tab[i, 1] = b
            tab[i, 2] = c
            tab[i, 3] = v
            return 1
        if tab[i, 0] == a and tab[i, 1] == b and tab[i, 2] == c:
            tab[i, 3] = v
            return 0
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def get1(tab, key):
    """The value of ``key``, ``-1`` when absent."""
    mask = tab.shape[0] - 1
    i = _mix(key) & mask
    while True:
        v = tab[i, 1]
        if v < 0 or tab[i, 0] == key:
            return v
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def put1(tab, key, v):
    """Set ``key`` to ``v >= 0``; returns 1 when the key is new, else 0. The map must have room."""
    mask = tab.shape[0] - 1
    i = _mix(key) & mask
    while True:
        if tab[i, 1] < 0:
            tab[i, 0] = key
            tab[i, 1] = v
            return 1
        if tab[i, 0] == key:
            tab[i, 1] = v
            return 0
        i = (i + 1) & mask


@njit(cache=True)
def rehash3(old, new):
    """Insert every key of ``old`` into the empty map ``new``."""
    for i in range(old.shape[0]):
        if old[i, 3] >= 0:
            put3(new, old[i, 0], old[i, 1], old[i, 2], old[i, 3])


@njit(cache=True)
def rehash1(old, new):
    """Insert every key of ``old`` into the empty map ``new``."""
    for i in range(old.shape[0]):
        if old[i, 1] >= 0:
            put1(new, old[i, 0], old[i, 1])
