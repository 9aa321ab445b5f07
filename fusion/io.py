"""File I/O at the edges: atomic writes, strict UTF-8 reading with located errors."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fusion.errors import InputError, OutputError

PathLike = str | os.PathLike[str]


def _umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0666 less the process umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Remove ``.NAME.<pid>.*.tmp`` files (or folders) a killed writer of ``path`` left behind (dead pid only)."""
    try:
        entries = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return
    for e in entries:
        pid = e.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                if e.is_dir() and not e.is_symlink():
                    shutil.rmtree(e)
                else:
                    e.unlink()
            except OSError:
                pass


def is_file(spec: PathLike) -> bool:
    """Whether ``spec`` names an existing regular file; False (not an error) for strings that cannot be
    paths at all: too long for the file system, or holding a NUL byte."""
    try:
        return Path(spec).is_file()
    except (OSError, ValueError):
        return False


def check_output_path(path: PathLike, *, inputs: Iterable[PathLike] = (), what: str = "output") -> Path:
    """Refuse an output path that is a directory or the same file as one of ``inputs``.

    Raises:
        OutputError: naming the path and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a directory; give a file name")
    for i in inputs:
        ip = Path(i)
        try:
            same = path.exists() and ip.exists() and os.path.samefile(path, ip)
        except OSError:
            same = False
        if same or path.resolve() == ip.resolve():
            raise OutputError(f"{what} {str(path)!r} is also an input; write to another file")
    return path


class AtomicWriter:
    """A file written in pieces that appears at ``path`` only when complete (``with`` block).

    The temporary file (``.NAME.<pid>.<random>.tmp`` beside ``path``) is removed on any error, and
    temporaries left by killed writers are removed the next time ``path`` is written. The file gets
    the mode a plain ``open()`` would (umask respected). Write errors (disk full) raise
    :class:`~fusion.errors.OutputError`.
    """

    def __init__(self, path: PathLike, *, text: bool = True) -> None:
        self.path = check_output_path(path)
        self.text = text
        self._f: Any = None
        self._tmp = ""

    def __enter__(self) -> Any:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.path)
            fd, self._tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.{os.getpid()}.", suffix=".tmp", dir=self.path.parent
            )
            os.fchmod(fd, _umask_mode())
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        raw = os.fdopen(fd, "wb")
        self._f = io.TextIOWrapper(raw, encoding="utf-8", newline="\n") if self.text else raw
        return self._f

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        f, self._f = self._f, None
        try:
            if exc_type is None:
                f.flush()
                os.fsync(f.fileno())
                f.close()
                os.replace(self._tmp, self.path)
                return
        except OSError as e:
            self._discard(f)
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._discard(f)
        if isinstance(exc, OSError) and not isinstance(exc, InputError):
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _discard(self, f: Any) -> None:
        try:
            f.close()
        except OSError:
            pass
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of it."""
    with AtomicWriter(path, text=False) as f:
        f.write(data)


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


def read_appended_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """The JSON objects of an append-only JSONL file that an interrupted run may have left torn.

    One object per line. A last line that is not a JSON object is the append an interruption cut short:
    it is dropped and the file rewritten atomically without it, so the next append starts on a clean
    line. A bad line before the last is not an interruption, and dropping it would lose the lines after
    it: it is an :class:`InputError` naming the file and line. A missing file has no objects.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif lineno == len(lines):
            atomic_write_lines(path, lines[:-1])
        else:
            raise InputError("not a JSON object (not the last line, so not a torn append)", path=path, line=lineno)
    return rows


def read_sentences(path: PathLike, *, skip_empty: bool = True) -> list[str]:
    """Read one sentence per line, whitespace-normalised; empty lines are skipped by default."""
    out = []
    for _, line in iter_text_lines(path):
        s = " ".join(line.split())
        if s or not skip_empty:
            out.append(s)
    return out


def read_json(path: PathLike) -> Any:
    """Read a JSON file, turning every parse problem into a located :class:`InputError`.

    Refused with a clear error: a missing file or a directory, bytes that are not UTF-8, invalid JSON,
    nesting deeper than Python's recursion limit, integers longer than Python's digit limit.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory, not a JSON file", path=path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("not valid UTF-8", path=path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=e.lineno) from None
    except RecursionError:
        raise InputError("JSON nested too deeply", path=path) from None
    except ValueError as e:  # an integer over Python's digit limit
        raise InputError(f"invalid JSON number: {str(e).split(';')[0]}", path=path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path=path) from None
