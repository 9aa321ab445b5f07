"""Is an extension compiled ahead of time still the machine code of the sources beside it?

An ahead-of-time extension (``decoders/ctc/_aot*.so``, ``fusion/_ngram_aot*.so``, built by
``python -m decoders.ctc.build_aot``) is compiled from numba functions; if those sources change and the
extension is not rebuilt, it would run the *old* kernels, possibly with another memory layout for the same
arrays. So the build writes a fingerprint beside each extension (``<name>.fingerprint``: a SHA-256 of the
sources and of numba's version) and the loaders use an extension only when its fingerprint is that of the
sources now (:func:`aot_state`). Reading and hashing the sources takes about a millisecond; numba is not
imported.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

from fusion.io import atomic_write_text

__all__ = ["aot_state", "fingerprint_file", "source_fingerprint", "write_fingerprint"]


def source_fingerprint(files: Sequence[Path], target: str = "") -> str:
    """SHA-256 of the bytes of ``files`` (in order, each with its name), numba's version and ``target``."""
    h = hashlib.sha256()
    try:
        h.update(importlib.metadata.version("numba").encode())
    except importlib.metadata.PackageNotFoundError:
        h.update(b"no numba")
    h.update(target.encode())
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def fingerprint_file(ext_dir: Path, name: str) -> Path:
    """Where the fingerprint of extension ``name`` (e.g. ``"_aot"``) in ``ext_dir`` is kept."""
    return ext_dir / f"{name}.fingerprint"


def write_fingerprint(ext_dir: Path, name: str, digest: str, target: str) -> None:
    """Record that extension ``name`` in ``ext_dir`` was just compiled for CPU ``target`` from sources whose
    :func:`source_fingerprint` was ``digest`` *when the build began* (a file edited during the build then
    makes the extension stale, as it is)."""
    atomic_write_text(fingerprint_file(ext_dir, name), f"{target}\n{digest}\n")


def aot_state(ext_dir: Path, name: str, files: Sequence[Path]) -> str:
    """``"absent"`` (no ``name.*.so`` in ``ext_dir``), ``"stale"`` (built from other sources, other numba, or
    with no fingerprint) or ``"fresh"``."""
    if not any(ext_dir.glob(f"{name}.*.so")):
        return "absent"
    fp = fingerprint_file(ext_dir, name)
    if not fp.is_file():
        return "stale"
    target, _, digest = fp.read_text(encoding="utf-8").partition("\n")
    return "fresh" if digest.strip() == source_fingerprint(files, target) else "stale"
