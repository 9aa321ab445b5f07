"""Progress bars: one rule for every bar in lmfusion.

A bar is shown only when the caller asks for progress *and* standard error is a terminal, so logs,
CI output and redirected runs stay free of carriage-return noise (the convention of Kaldi/ESPnet
scripts and of ``tqdm(disable=None)``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["progress_bar", "show_progress"]

T = TypeVar("T")


def show_progress(progress: bool | None) -> bool:
    """Whether a bar asked for with ``progress`` is drawn (``None`` counts as yes): only on a terminal."""
    if progress is False:
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress_bar(iterable: Iterable[T] | None = None, *, progress: bool | None = True, **kwargs: Any) -> Any:
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``), silent unless :func:`show_progress`."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not show_progress(progress), **kwargs)
