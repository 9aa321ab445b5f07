"""Validation of the emissions the CTC decoder is given: ``[T, V]`` log-probabilities (numpy or torch)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fusion.errors import InputError


class Candidates(NamedTuple):
    """Per-frame token candidates of an utterance (:func:`decoders.ctc.scan.candidates`: frame ``t``'s labels are
    ``tok[ptr[t]:ptr[t + 1]]``), made for a search with this ``blank`` and float32 ``min_logp``."""

    ptr: np.ndarray
    tok: np.ndarray
    blank: int
    min_logp: np.float32


def as_logprobs(x: Any, vocab_size: int, *, check_normalized: bool = True, what: str = "emissions",
                logits: bool = False) -> np.ndarray:
    """Validate emissions ``[T, V]`` (numpy or torch) and return them as numpy: float32 input stays float32
    (no copy; half precision becomes float32), float64 stays float64, anything else becomes float64; logits
    are log-softmaxed in float64.

    With ``logits=True`` the rows are raw scores: log-softmax is applied (and the check is not needed).

    Raises:
        InputError: not 2-D, wrong vocabulary size, empty, NaN or +inf cells, or rows that are not
            log-probabilities (when ``check_normalized``).
    """
    arr, tol = _as_array(x, vocab_size, what, logits)
    _check_values(arr, check_normalized, tol, what)
    return arr


def logprobs_and_candidates(x: Any, vocab_size: int, K: Any, blank: int, min_logp: float, *,
                            check_normalized: bool = True, what: str = "emissions",
                            logits: bool = False) -> tuple[np.ndarray, Candidates | None]:
    """:func:`as_logprobs` and, for float32 emissions and a compiled kernel set ``K`` (:mod:`decoders.ctc.kernels`;
    ``None``: none), the token candidates for ``blank`` and ``min_logp`` from the same read of each row
    (:func:`decoders.ctc.scan.checked_candidates`), else ``None``. The same checks and errors as
    :func:`as_logprobs`: emissions the one-pass check doubts (a NaN or infinite cell, or a row's mass off 1) go
    through :func:`as_logprobs`'s own checks, which name the frame.

    Raises:
        InputError: as :func:`as_logprobs`.
    """
    arr, tol = _as_array(x, vocab_size, what, logits)
    if K is None or arr.dtype != np.float32 or not arr.flags.c_contiguous:
        _check_values(arr, check_normalized, tol, what)
        return arr, None
    lo = np.float32(min_logp)
    ptr, tok, dev, bad = K.checked_candidates(arr, blank, lo, check_normalized)
    if bad >= 0 or not dev <= tol:
        _check_values(arr, check_normalized, tol, what)  # raises, unless only -inf cells made the pass doubt
        return arr, None
    return arr, Candidates(ptr, tok, blank, lo)


def _as_array(x: Any, vocab_size: int, what: str, logits: bool) -> tuple[np.ndarray, float]:
    """The emissions as a numpy ``[T, V]`` array (see :func:`as_logprobs`) and the normalization check's
    tolerance."""
    # rows of half-precision log-probabilities sum to 1 only within their rounding
    if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64):
        low = False  # the common case, without formatting the dtype
    else:
        low = str(getattr(x, "dtype", "")).replace("torch.", "") in ("float16", "bfloat16")
    tol = 5e-2 if low else 1e-3
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().float().numpy()
    try:
        arr = np.asarray(x)
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        elif arr.dtype not in (np.float32, np.float64):
            arr = np.asarray(arr, dtype=np.float64)
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
    if logits and np.isfinite(arr).all():  # a new array anyway: log-softmax in float64
        arr = np.asarray(arr, dtype=np.float64)
        m = arr.max(axis=1, keepdims=True)
        arr = arr - (m + np.log(np.exp(arr - m).sum(axis=1, keepdims=True)))
    return arr, tol


def _check_values(arr: np.ndarray, check_normalized: bool, tol: float, what: str) -> None:
    """No NaN or +inf cell; with ``check_normalized``, every row's probabilities sum to 1 within ``tol``."""
    # a row's maximum is NaN if the row holds a NaN, +inf if it holds +inf, -inf if every cell is -inf
    m = arr.max(axis=1, keepdims=True)
    finite_rows = bool(np.isfinite(m).all())
    if not finite_rows:
        bad = np.isnan(arr) | (arr == np.inf)
        if bad.any():
            t, v = np.argwhere(bad)[0]
            kind = "NaN" if np.isnan(arr[t, v]) else "+inf"
            raise InputError(
                f"{what} contain {kind} (first at frame {t}, label {v}); {int(bad.sum())} bad cells", field=what
            )
    if check_normalized:
        if not finite_rows:
            t = int(np.flatnonzero(~np.isfinite(m[:, 0]))[0])
            raise InputError(f"{what}: frame {t} has probability zero for every label", field=what)
        mass = _row_mass(arr)  # 1 for log-probabilities (huge or inf for large logits: rejected)
        dev = np.abs(mass - 1.0)
        if not dev.max() <= tol:
            worst = int(np.argmax(dev))
            lse = float(m[worst, 0] + np.log(np.exp(arr[worst] - m[worst]).sum()))
            raise InputError(
                f"{what} are not log-probabilities: frame {worst} has logsumexp {lse:.4g} (expected 0); "
                "apply log_softmax to the model's logits first",
                field=what,
            )


def _row_mass(arr: np.ndarray) -> np.ndarray:
    """``sum(exp(row))`` per row: compiled (:func:`decoders.ctc.scan.row_mass`) when the kernels are there
    (:mod:`decoders.ctc.kernels`)."""
    from decoders.ctc import kernels

    if not (kernels.aot_available() or kernels.jit_available()):
        with np.errstate(over="ignore"):
            return np.asarray(np.exp(arr).sum(axis=1, dtype=np.float64))
    K = kernels.load()
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.float32:
        return np.asarray(K.row_mass32(arr))
    return np.asarray(K.row_mass(np.ascontiguousarray(arr, dtype=np.float64)))


def split_batch(x: Any, lengths: Any = None, *, what: str = "emissions") -> list[Any]:
    """Rows of a batch: a ``[B, T, V]`` array or tensor cut to ``lengths`` (default: all ``T``), or a
    sequence of ``[T, V]`` arrays as they are.

    Raises:
        InputError: ``lengths`` not one per row, or outside ``[1, T]``.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().float().numpy()
    if isinstance(x, np.ndarray) and x.ndim == 3:
        B, T = x.shape[:2]
        if lengths is None:
            return [x[b] for b in range(B)]
        if hasattr(lengths, "detach"):
            lengths = lengths.detach().cpu().numpy()
        ln = np.asarray(lengths).reshape(-1)
        if ln.size != B:
            raise InputError(f"{what}: {B} rows but {ln.size} lengths", field="lengths")
        bad = np.flatnonzero((ln < 1) | (ln > T))
        if bad.size:
            raise InputError(f"{what}: length {int(ln[bad[0]])} of row {int(bad[0])} is outside [1, {T}]",
                             field="lengths")
        return [x[b, : int(ln[b])] for b in range(B)]
    if lengths is not None:
        rows = list(x)
        lens = np.asarray(lengths).reshape(-1).tolist()
        if len(lens) != len(rows):
            raise InputError(f"{what}: {len(rows)} rows but {len(lens)} lengths", field="lengths")
        return [r[: int(n)] for r, n in zip(rows, lens, strict=True)]
    return list(x)
