"""Checkpoint directories of neural LMs: ``lmfusion-lm.json`` (config), safetensors weights, tokenizer.

Writing is atomic (the directory is built beside the target, then swapped in). Reading never unpickles:
pickles, zip archives (``torch.save``), truncated and corrupt safetensors files are refused with an
error naming the file. A config of format :data:`HF_FORMAT` marks a Hugging Face model directory
(:func:`fusion.hf_lm.mark_hf_dir`); :func:`fusion.loading.load_lm` opens either kind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion.errors import InputError, OutputError
from fusion.io import atomic_write_bytes, atomic_write_json, read_json, remove_stale_temps
from fusion.tokenizers import SentencePieceTokenizer

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "lmfusion-lm.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "lmfusion-neural-lm"
FORMAT_VERSION = 1
HF_FORMAT = "lmfusion-hf-lm"
"""``lmfusion-lm.json`` of this format marks a Hugging Face model directory (see :mod:`fusion.hf_lm`)."""


# ----------------------------------------------------------------------------------------------
# Checkpoint I/O
# ----------------------------------------------------------------------------------------------
def _replace_dir(tmp: Path, target: Path) -> None:
    """Move directory ``tmp`` to ``target``, replacing it; a reader sees the old or the new one."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def save_checkpoint(
    directory: str | Path,
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    tokenizer_file: str | Path,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write ``config`` JSON + safetensors weights + the tokenizer file into ``directory``, atomically."""
    from safetensors.torch import save as st_save

    target = Path(directory)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)  # left by a writer that was killed
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # a checkpoint is as readable as any file the user makes
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        tok = Path(tokenizer_file)
        atomic_write_bytes(tmp / tok.name, tok.read_bytes())
        atomic_write_bytes(tmp / WEIGHTS_NAME, st_save(dict(tensors), metadata={"format": FORMAT}))
        for name, data in (extra_files or {}).items():
            atomic_write_bytes(tmp / name, data)
        atomic_write_json(tmp / CONFIG_NAME, dict(config))
        _replace_dir(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


PICKLE_HINT = "lmfusion never unpickles weights; convert them with safetensors.torch.save_file"


def check_safetensors_file(path: str | Path) -> None:
    """Refuse pickles and truncated or corrupt safetensors files with a located, specific error."""
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path=path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        raise InputError(f"a zip archive (torch.save/pickle format), expected safetensors; {PICKLE_HINT}", path=path)
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        raise InputError(f"a Python pickle, expected safetensors; {PICKLE_HINT}", path=path)
    if size < 8:
        raise InputError(f"truncated safetensors file ({size} bytes)", path=path)
    n = int.from_bytes(head[:8], "little")
    if n <= 0 or 8 + n > size:
        raise InputError(f"truncated or corrupt safetensors file (header says {n} bytes, file has {size})", path=path)
    with path.open("rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        hdr = json.loads(raw)
        end = max((int(v["data_offsets"][1]) for k, v in hdr.items() if k != "__metadata__"), default=0)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise InputError("corrupt safetensors header", path=path) from None
    if 8 + n + end > size:
        raise InputError(f"truncated safetensors file: tensors need {8 + n + end} bytes, file has {size}", path=path)


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing pickles and explaining truncated or corrupt files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"unreadable safetensors file ({e})", path=path) from None


def check_checkpoint_tensors(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], path: Path,
                  config_desc: str) -> None:
    """Raise a clear error when ``found`` tensors do not match the names and shapes a config needs."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise InputError(
            f"weights do not match the config ({config_desc}): missing tensors {missing[:5]}, "
            f"unexpected tensors {extra[:5]}", path=path)
    for k, t in expected.items():
        if tuple(found[k].shape) != tuple(t.shape):
            raise InputError(
                f"weights do not match the config ({config_desc}): tensor {k!r} has shape "
                f"{list(found[k].shape)} in the file but the config needs {list(t.shape)}", path=path)
        if found[k].is_floating_point() != t.is_floating_point():
            raise InputError(
                f"tensor {k!r} has dtype {str(found[k].dtype).replace('torch.', '')} in the file but the model "
                f"needs {str(t.dtype).replace('torch.', '')} (integer weights would be cast silently)", path=path)
        if not found[k].isfinite().all():
            raise InputError(f"tensor {k!r} contains NaN or infinity", path=path)


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """Read and check ``lmfusion-lm.json`` of a checkpoint directory."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError("neural LM checkpoint directory not found", path=d)
    cfg_path = d / CONFIG_NAME
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise InputError("expected a JSON object", path=cfg_path)
    if cfg.get("format") != FORMAT:
        raise InputError(f"not an lmfusion neural LM config (format {cfg.get('format')!r}, expected {FORMAT!r})",
                         path=cfg_path, field="format")
    if cfg.get("version") != FORMAT_VERSION:
        raise InputError(f"unsupported version {cfg.get('version')!r}", path=cfg_path, field="version")
    for f in ("model", "tokenizer"):
        if not isinstance(cfg.get(f), dict):
            raise InputError("missing or not an object", path=cfg_path, field=f)
    return cfg


def load_tokenizer(directory: Path, tok_cfg: Mapping[str, Any], cfg_path: Path) -> SentencePieceTokenizer:
    """The tokenizer a checkpoint config names, checked against the identity it recorded."""
    kind = tok_cfg.get("type")
    if kind != "sentencepiece":
        raise InputError(f"unknown tokenizer type {kind!r} (this loader knows 'sentencepiece')",
                         path=cfg_path, field="tokenizer.type")
    fname = tok_cfg.get("file")
    if not isinstance(fname, str) or not fname or Path(fname).name != fname:
        raise InputError(f"tokenizer file must be a plain file name, got {fname!r}", path=cfg_path,
                         field="tokenizer.file")
    tok = SentencePieceTokenizer(directory / fname)
    want = tok_cfg.get("identity")
    if want is not None and want != tok.identity:
        raise InputError(f"tokenizer {tok.identity} is not the one the model was trained with ({want})",
                         path=directory / fname, field="tokenizer.identity")
    return tok
