"""Exceptions raised by lmfusion.

Every error about user input names where the problem is: the file, the line, or the field.
"""

from __future__ import annotations

from os import PathLike


class LMFusionError(ValueError):
    """Base class of every error lmfusion raises about its inputs."""


class InputError(LMFusionError):
    """Bad input data, located by file and (optionally) line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        elif line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UnitMismatchError(LMFusionError):
    """Models or scorers that must share units (word, or token of one tokenizer) do not."""


class WeightsError(LMFusionError):
    """Weights that are negative, NaN, missing, or (for a linear mix) do not sum to one."""


class OutputError(LMFusionError):
    """An output that cannot or must not be written: a directory, an input, a full disk, a folder that
    holds files the user did not name (without ``--overwrite``/``--resume``)."""
