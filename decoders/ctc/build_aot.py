"""Compile the CTC kernels ahead of time into ``decoders/ctc/_aot*.so``, and :mod:`fusion.ngram_arrays`' n-gram
scorers into ``fusion/_ngram_aot*.so`` (numba's ``pycc``): ``make setup`` runs ``python -m decoders.ctc.build_aot``.

Each variant of :data:`decoders.ctc.aot_spec.EXPORTS` is exported as a thin wrapper that calls the kernel's numba
function, so every kernel keeps its own compile options (``fastmath``, inlining) and the machine code does what
numba's JIT makes of the same function. The extension needs only numpy at run time (no numba, llvmlite or
scipy), which is what makes a fresh process decode its first utterance fast (:mod:`decoders.ctc.kernels`).

The code is compiled for this machine's CPU model (``--cpu host``, as numba's JIT does: the scans of
:mod:`decoders.ctc.scan` are several times faster with its vector units), so an extension built on one machine
belongs to that machine (``--cpu ''`` builds a portable, slower one). The build writes into a temporary folder and
moves the extension into place, so an interrupted build leaves the previous one (or none: the decoder then runs
numba's JIT and says so in ``CTCDecoder.backend``).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import decoders.ctc
import fusion
from decoders.ctc.aot_spec import CTC_KERNEL_FILES, EXPORTS, SOURCES, A, Arg, S
from fusion.aot import source_fingerprint, write_fingerprint
from fusion.ngram_arrays import NGRAM_KERNEL_FILES

_NUMBA_DTYPES = {"int64": "int64", "int32": "int32", "int8": "int8", "float64": "float64", "float32": "float32",
                 "bool": "boolean", "uint64": "uint64"}


def numba_type(a: Arg) -> Any:
    """The numba type of an :class:`~decoders.ctc.aot_spec.Arg`."""
    from numba import types

    if a.kind == "tuple":
        return types.Tuple(tuple(numba_type(b) for b in a.items))
    dt = getattr(types, _NUMBA_DTYPES[str(a.dtype)])
    if a.kind == "array":
        return types.Array(dt, a.ndim, "C")
    return dt


def _wrapper(source: str, n_args: int) -> Any:
    """``def w(a0, ..., a{n-1}): return <kernel>(a0, ..., a{n-1})`` (a module-level function for pycc)."""
    mod, _, attr = source.rpartition(".")
    fn = getattr(importlib.import_module(mod), attr)
    params = ", ".join(f"a{i}" for i in range(n_args))
    scope: dict[str, Any] = {"_kernel": fn}
    exec(f"def w({params}):\n    return _kernel({params})\n", scope)  # a fixed template
    return scope["w"]


# fusion.ngram_arrays' scorers (fusion/_ngram_aot*.so): offsets, keys, ids, logp, backoff, extends, then per call
_NGRAM = (A("i8", 1), A("u8", 1), A("i4", 2), A("f4", 1), A("f4", 1), A("bool", 1))
NGRAM_EXPORTS = {
    "score_one": (*_NGRAM, A("i4", 1), S("i8"), A("i4", 1)),
    "score_many": (*_NGRAM, A("i4", 2), A("i8", 1), A("f8", 1), A("i4", 2)),
}


def _compile(name: str, exports: list[tuple[str, Any, tuple[Arg, ...]]], out_dir: Path, cpu: str,
             verbose: bool, sources: tuple[Path, ...]) -> Path:
    """One extension ``name`` of ``(symbol, function, args)`` exports for CPU model ``cpu`` (``"host"``: this
    machine's, as numba's JIT; ``""``: any of the architecture), moved into ``out_dir`` when complete, then the
    fingerprint of its ``sources`` written beside it (:mod:`fusion.aot`: the loaders refuse a stale one)."""
    from numba.pycc import CC

    digest = source_fingerprint(sources, cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc's deprecation notice
        with tempfile.TemporaryDirectory(prefix="lmfusion-aot-") as tmp:
            cc = CC(name)
            cc.output_dir = tmp
            cc.target_cpu = cpu
            cc.verbose = verbose
            for symbol, fn, args in exports:
                cc.export(symbol, tuple(numba_type(a) for a in args))(fn)
            cc.compile()
            built = next(Path(tmp).glob(f"{name}.*"))
            out_dir.mkdir(parents=True, exist_ok=True)
            for old in out_dir.glob(f"{name}.*.so"):
                old.unlink()
            dest = out_dir / built.name
            shutil.copyfile(built, dest.with_suffix(".tmp"))
            dest.with_suffix(".tmp").replace(dest)
    write_fingerprint(out_dir, name, digest, cpu)
    return dest


def build(out_dir: Path, fusion_dir: Path, cpu: str = "host", verbose: bool = False) -> list[Path]:
    """Compile the CTC kernels into ``out_dir`` and the n-gram scorers into ``fusion_dir``; the extensions' paths."""
    ctc = [(e.symbol, _wrapper(SOURCES[e.name], len(e.args)), e.args) for e in EXPORTS]
    ngram = [(name, _wrapper(f"fusion._ngram_kernel.{name}", len(args)), args) for name, args in NGRAM_EXPORTS.items()]
    # the CTC extension last: its fingerprint is ``make``'s mark that the whole build is done
    first = _compile("_ngram_aot", ngram, fusion_dir, cpu, verbose, NGRAM_KERNEL_FILES)
    return [first, _compile("_aot", ctc, out_dir, cpu, verbose, CTC_KERNEL_FILES)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", default="host", help="CPU model to compile for: 'host' (default: this machine's, as "
                    "numba's JIT does; the vectorized scans need it) or '' (any x86-64: slower, portable)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    paths = build(Path(decoders.ctc.__file__).parent, Path(fusion.__file__).parent, args.cpu, args.verbose)
    print(f"CTC kernels compiled ahead of time in {time.perf_counter() - t:.0f} s: {', '.join(map(str, paths))}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
