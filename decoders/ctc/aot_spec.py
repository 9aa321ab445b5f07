"""The argument types of the CTC kernels compiled ahead of time (:mod:`decoders.ctc.build_aot`).

One :class:`Export` per compiled variant: the kernel's name in :mod:`decoders.ctc.kernels` (its numba function:
:data:`SOURCES`), its symbol in the extension, and its arguments as :class:`Arg` s. The build turns them into numba
types; at run time :mod:`decoders.ctc.kernels` checks every array argument against them (the extension does not).
No numba here. The variants are the argument types the JIT sees in the CTC tests and ``decoders.warmup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import fusion

SOURCES = {
    "run_frames": "decoders.ctc.kernel.run_frames",
    "token_chain": "decoders.ctc.kernel.token_chain",
    "candidates": "decoders.ctc.scan.candidates",
    "checked_candidates": "decoders.ctc.scan.checked_candidates",
    "row_mass": "decoders.ctc.scan.row_mass",
    "row_mass32": "decoders.ctc.scan.row_mass32",
    "text_hashes": "decoders.ctc.scan.text_hashes",
    "csr_step_many": "decoders.ctc.csrkernel.csr_step_many",
    "csr_pairs": "decoders.ctc.csrkernel.csr_pairs",
    "intern_rows": "decoders.ctc.lmkernel.intern_rows",
    "fused_steps": "decoders.ctc.lmkernel.fused_steps",
    "close_beam": "decoders.ctc.lmkernel.close_beam",
    "viterbi": "decoders.ctc.alignkernel.viterbi",
    "summaries": "decoders.ctc.alignkernel.summaries",
    "rehash3": "decoders.ctc.hashmap.rehash3",
    "rehash1": "decoders.ctc.hashmap.rehash1",
}
"""Each kernel's numba function (``module.function``)."""

_HERE = Path(__file__).parent
CTC_KERNEL_FILES = (*(_HERE / f for f in ("kernel.py", "lmkernel.py", "scan.py", "csrkernel.py", "alignkernel.py",
                                          "hashmap.py", "kernels.py", "aot_spec.py", "build_aot.py")),
                    Path(fusion.__file__).parent / "_ngram_kernel.py")  # fmt: skip
"""The sources the extension ``decoders/ctc/_aot*.so`` is compiled from (its fingerprint: :mod:`fusion.aot`)."""


_INT64 = np.dtype(np.int64)


@dataclass(frozen=True)
class Arg:
    """An argument: an array (``dtype``, ``ndim``, C order), a scalar (``dtype``) or a tuple of ``items``."""

    kind: str
    dtype: np.dtype = _INT64
    ndim: int = 0
    items: tuple[Arg, ...] = ()

    def __str__(self) -> str:
        if self.kind == "tuple":
            return "(" + ", ".join(str(a) for a in self.items) + ")"
        if self.kind == "array":
            return f"{self.dtype}[{self.ndim}d]"
        return str(self.dtype)


def A(dtype: str, ndim: int = 1) -> Arg:
    """A C-ordered array."""
    return Arg("array", np.dtype(dtype), ndim)


def S(dtype: str) -> Arg:
    """A scalar."""
    return Arg("scalar", np.dtype(dtype))


def T(*items: Arg) -> Arg:
    """A tuple."""
    return Arg("tuple", items=items)


@dataclass(frozen=True)
class Export:
    """One compiled variant; ``symbol`` is its name in the extension (numba infers the return type)."""

    name: str
    symbol: str
    args: tuple[Arg, ...]


def _run_frames_args(emissions: Arg) -> tuple[Arg, ...]:
    """``run_frames``' arguments; its two variants differ only in the emissions' dtype (float64, float32)."""
    return (
        emissions,
        S("i8"),
        S("i8"),
        A("i8", 1),
        A("i8", 1),
        A("i4", 1),
        A("i4", 1),
        A("i4", 1),
        A("f8", 1),
        A("f8", 1),
        A("i4", 1),
        A("i4", 1),
        A("i4", 1),
        A("i4", 1),
        A("i4", 1),
        A("f8", 2),
        A("i4", 1),
        A("i4", 1),
        A("i4", 1),
        A("i8", 1),
        A("i8", 1),
        A("f8", 1),
        A("f8", 1),
        A("i8", 1),
        A("f8", 1),
        A("i8", 1),
        T(A("i8", 1), A("i8", 1), A("i8", 1), A("bool", 1)),
        A("bool", 1),
        A("bool", 1),
        A("bool", 1),
        A("i8", 1),
        A("i8", 1),
        A("i8", 2),
        A("i8", 1),
        A("f8", 1),
        A("i8", 1),
        A("i8", 1),
        A("f8", 2),
        S("i8"),
        S("i8"),
        S("f8"),
        S("bool"),
        S("f8"),
        S("f8"),
        S("f8"),
        S("f8"),
        S("bool"),
        S("bool"),
        S("bool"),
        A("f8", 1),
        S("bool"),
        A("i8", 1),
        A("i8", 1),
        A("i8", 1),
        A("i8", 2),
        A("i8", 1),
        S("i8"),
        S("bool"),
        T(
            A("i8", 2),
            A("i8", 1),
            A("i8", 1),
            A("u8", 1),
            A("i4", 2),
            A("f4", 1),
            A("f4", 1),
            A("bool", 1),
            A("bool", 1),
            A("i8", 2),
            A("i8", 2),
        ),
        A("i4", 2),
        A("i8", 1),
        A("i8", 2),
        A("i8", 1),
        A("f8", 1),
        S("f8"),
        S("bool"),
        T(A("i8", 1), A("i8", 1), A("i8", 1), A("i8", 1), A("i8", 1), A("f8", 1), A("f8", 1)),
        S("f8"),
        A("i8", 1),
        A("f8", 1),
    )


_FUSED_LM = (
    A("i8", 2), A("i8", 1), A("i8", 1), A("u8", 1), A("i4", 2), A("f4", 1), A("f4", 1), A("bool", 1), A("bool", 1),
    A("f8", 1), S("f8"), S("f8"), S("f8"),
    A("i4", 2), A("i8", 1), A("i8", 2), A("i8", 1), A("f8", 1), A("f8", 2),
)  # fmt: skip
"""The arguments ``fused_steps`` and ``close_beam`` (:mod:`decoders.ctc.lmkernel`) share, in order: the packed
n-gram models (``offsets, orders, widths, keys, ids, logp, backoff, extends, is_word``), the weights
(``w_lm, w_words, w_oov, unk_offset``), the context table (``ctx_tab, ctx_next, ctx_hash``), ``lmst``, ``deltas``,
``comps``."""


EXPORTS: list[Export] = [
    Export("run_frames", "run_frames_0", _run_frames_args(A("f8", 2))),
    Export("run_frames", "run_frames_1", _run_frames_args(A("f4", 2))),
    Export("token_chain", "token_chain_0", (A("i4", 1), A("i4", 1), A("i4", 1), S("i8"))),
    Export("candidates", "candidates_0", (A("f8", 2), S("i8"), S("f8"))),
    Export("candidates", "candidates_1", (A("f4", 2), S("i8"), S("f4"))),
    Export("checked_candidates", "checked_candidates_0", (A("f4", 2), S("i8"), S("f4"), S("bool"))),
    Export("row_mass", "row_mass_0", (A("f8", 2),)),
    Export("row_mass", "row_mass_1", (A("f4", 2),)),
    Export("row_mass32", "row_mass32_0", (A("f4", 2),)),
    Export(
        "text_hashes",
        "text_hashes_0",
        (A("i8", 1), A("i4", 1), A("i4", 1), A("u8", 1), A("u8", 1), A("i4", 1), A("bool", 1)),
    ),
    Export(
        "csr_step_many", "csr_step_many_0", (A("i8", 1), A("i8", 1), A("i8", 1), A("bool", 1), A("i8", 1), A("i8", 1))
    ),
    Export(
        "csr_pairs",
        "csr_pairs_0",
        (A("i8", 1), A("i8", 1), A("i8", 1), A("i8", 1), A("i8", 1), A("i8", 1), A("i8", 1), A("i8", 1), S("i8")),
    ),
    Export("intern_rows", "intern_rows_0", (A("i4", 2), A("i8", 1), A("i8", 2), A("i8", 1), A("i4", 2))),
    Export(
        "close_beam",
        "close_beam_0",
        (
            A("i8", 1),
            A("i4", 1),
            A("i4", 1),
            A("i4", 1),
            A("bool", 1),
            S("bool"),
            A("i8", 2),
            S("bool"),
            A("i8", 1),
            *_FUSED_LM,
            A("f8", 2),
            A("bool", 1),
        ),
    ),
    Export("viterbi", "viterbi_0", (A("f8", 2), A("i8", 1), S("i8"))),
    Export("summaries", "summaries_0", (A("f8", 2), A("i8", 1), A("i8", 1), A("bool", 1), A("bool", 1))),
    Export("rehash3", "rehash3_0", (A("i8", 2), A("i8", 2))),
    Export(
        "fused_steps",
        "fused_steps_0",
        (
            A("i8", 1),
            A("i8", 2),
            A("bool", 1),
            A("bool", 1),
            A("bool", 1),
            *_FUSED_LM,
            A("i8", 1),
        ),
    ),
    Export("rehash1", "rehash1_0", (A("i8", 2), A("i8", 2))),
]
