"""File I/O at the edges: atomic writes, strict UTF-8 reading with located errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fusion.errors import InputError

PathLike = str | os.PathLike[str]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN and infinity are refused)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_write_lines(path: PathLike, lines: Iterable[str]) -> None:
    """Atomically write one string per line."""
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def iter_text_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file (gzip-compressed or not), without the newline.

    Raises:
        InputError: the file is missing or a line is not valid UTF-8 (names file and line).
    """
    import gzip

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    with path.open("rb") as raw_f:
        gz = raw_f.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gz else path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})", path=path, line=lineno
                ) from None
            yield lineno, line.rstrip("\r\n")


def read_sentences(path: PathLike, *, skip_empty: bool = True) -> list[str]:
    """Read one sentence per line, whitespace-normalised; empty lines are skipped by default."""
    out = []
    for _, line in iter_text_lines(path):
        s = " ".join(line.split())
        if s or not skip_empty:
            out.append(s)
    return out


def read_json(path: PathLike) -> Any:
    """Read a JSON file, turning parse errors into located errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("not valid UTF-8", path=path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=e.lineno) from None
