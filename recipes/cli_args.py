"""The one argument grammar of every ``lmfusion`` command.

Each option that more than one command takes is defined here, once, with one meaning:

* ``--lm NAME=PATH ...`` — language models (KenLM files or neural checkpoint directories); ``NAME`` is
  the LM's score component and weight name (default: the file name). Repeatable, several per flag.
* ``--spm MODEL`` — the sentencepiece model of token-level KenLM n-grams.
* ``--weights SPEC`` — **fusion weights** (ESPnet's meaning, :mod:`fusion.weights`): a JSON file with
  ``weights`` (e.g. from ``lmfusion tune``), a fusion profile JSON (weights per utterance from its tags),
  a learned policy JSON (``lmfusion tune --by/--adaptive --policy``), or ``NAME=VALUE`` pairs.
* ``--interpolation SPEC`` — **λ of a linear mixture** of the ``--lm`` models (never called weights on
  the command line): a JSON file from ``lmfusion mix``, ``NAME=VALUE`` pairs, or numbers in ``--lm``
  order (``0.3,0.7``).
* ``-o/--output``, ``--overwrite``, ``--tag KEY=VALUE``, and the ``--scheduler`` hook point.

One ``KEY=VALUE`` grammar serves every flag that takes pairs: ``NAME=VALUE`` items, several per item
separated by commas or given as separate words (``--weights am=1,lm=0.5`` = ``--weights am=1 lm=0.5``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fusion.errors import InputError, LMFusionError
from fusion.io import is_file

if TYPE_CHECKING:
    from fusion.lm import LanguageModel
    from fusion.profile import FusionProfile
    from fusion.weights import WeightPolicy

__all__ = [
    "SubParsers",
    "add_interpolation_argument",
    "add_lm_arguments",
    "add_output_argument",
    "add_overwrite_argument",
    "add_scheduler_argument",
    "add_tag_argument",
    "add_weights_argument",
    "open_lms",
    "parse_numbers",
    "parse_pairs",
    "parse_ranges",
    "read_interpolation",
    "read_weights",
]

Items = str | Sequence[str] | None


class SubParsers(Protocol):
    """What a command's ``register`` gets: the ``add_parser`` of ``ArgumentParser.add_subparsers()``."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Add the parser of one subcommand."""
        ...


# ----------------------------------------------------------------------------------------------
# The KEY=VALUE grammar
# ----------------------------------------------------------------------------------------------
def _words(items: Items) -> list[str]:
    if items is None:
        return []
    seq = [items] if isinstance(items, str) else list(items)
    return [part for item in seq for part in item.split(",") if part.strip()]


def parse_pairs(items: Items, flag: str) -> dict[str, str]:
    """``NAME=VALUE`` items (comma-separated or separate words) -> ``{NAME: VALUE}``, in order.

    Raises:
        InputError: an item without ``=``, an empty name or value, or a name given twice.
    """
    out: dict[str, str] = {}
    for part in _words(items):
        k, eq, v = part.partition("=")
        k, v = k.strip(), v.strip()
        if not eq or not k or not v:
            raise InputError(f"{flag}: expected NAME=VALUE, got {part!r}", field=flag)
        if k in out:
            raise InputError(f"{flag}: {k!r} given twice", field=flag)
        out[k] = v
    return out


def _number(flag: str, name: str, value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise InputError(f"{flag}: {name}={value!r} is not a finite number", field=flag)
    return x


def parse_numbers(items: Items, flag: str) -> dict[str, float]:
    """``NAME=NUMBER`` items -> ``{NAME: float}`` (finite numbers only)."""
    return {k: _number(flag, k, v) for k, v in parse_pairs(items, flag).items()}


def parse_ranges(items: Items, flag: str) -> dict[str, tuple[float, float]]:
    """``NAME=LO:HI`` items -> ``{NAME: (lo, hi)}``."""
    out = {}
    for k, v in parse_pairs(items, flag).items():
        lo, colon, hi = v.partition(":")
        if not colon:
            raise InputError(f"{flag}: {k}={v!r} is not LO:HI", field=flag)
        out[k] = (_number(flag, k, lo), _number(flag, k, hi))
    return out


def _single_file(items: Items) -> Path | None:
    words = [items] if isinstance(items, str) else list(items or [])
    if len(words) == 1 and "=" not in words[0] and is_file(words[0]):  # a string too long for a path is no file
        return Path(words[0])
    return None


# ----------------------------------------------------------------------------------------------
# Language models
# ----------------------------------------------------------------------------------------------
def add_lm_arguments(p: argparse.ArgumentParser, *, required: bool = True, help: str = "") -> None:
    """``--lm NAME=PATH ...`` (repeatable) and ``--spm``."""
    p.add_argument(
        "--lm", nargs="+", action="extend", default=[] if not required else None, required=required,
        metavar="NAME=PATH",
        help="language models: KenLM files (ARPA/binary) or neural LM checkpoint directories; NAME (default: "
        "the file name) is the LM's score component and weight name" + (f"; {help}" if help else ""),
    )  # fmt: skip
    p.add_argument("--spm", metavar="MODEL", help="sentencepiece model of token-level KenLM n-grams")


def open_lms(args: argparse.Namespace) -> list[LanguageModel]:
    """The ``--lm`` models, opened with :func:`fusion.loading.load_lm`; names must differ."""
    from fusion.loading import load_lm

    models: list[LanguageModel] = []
    for spec in args.lm or []:
        lm = load_lm(spec, tokenizer=args.spm)
        if any(m.name == lm.name for m in models):
            raise LMFusionError(f"two LMs named {lm.name!r}: name them --lm NAME=PATH")
        models.append(lm)
    return models


# ----------------------------------------------------------------------------------------------
# Fusion weights and interpolation weights
# ----------------------------------------------------------------------------------------------
def add_weights_argument(p: argparse.ArgumentParser, *, help: str = "") -> None:
    """``--weights``: fusion weights (see the module docstring)."""
    p.add_argument(
        "--weights", nargs="+", metavar="SPEC",
        help="fusion weights (a missing component counts 0, am defaults to 1): a JSON file with 'weights' "
        "(e.g. from `lmfusion tune`), a fusion profile JSON (weights per utterance from its tags), a learned "
        "policy JSON (`lmfusion tune --policy`), or NAME=VALUE pairs" + (f"; {help}" if help else ""),
    )  # fmt: skip


def read_weights(items: Items) -> dict[str, float] | FusionProfile | WeightPolicy | None:
    """The value of ``--weights``: ``{name: weight}``, a :class:`~fusion.profile.FusionProfile`, a learned
    :class:`~fusion.weights.WeightPolicy`, or None."""
    from fusion.adaptive import POLICY_FORMAT, policy_from_json
    from fusion.io import read_json
    from fusion.profile import FORMAT, FusionProfile

    if not items:
        return None
    path = _single_file(items)
    if path is None:
        return parse_numbers(items, "--weights")
    obj = read_json(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return FusionProfile.load(path)
    if isinstance(obj, dict) and obj.get("format") == POLICY_FORMAT:
        return policy_from_json(obj, path)
    w = obj.get("weights", obj) if isinstance(obj, dict) else None
    if not isinstance(w, dict):
        raise InputError("expected an object of weights (or one under 'weights')", path=path, field="weights")
    out = {}
    for k, v in w.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"weight {k!r} is not a finite number", path=path, field=f"weights.{k}")
        out[str(k)] = float(v)
    return out


def add_interpolation_argument(p: argparse.ArgumentParser, *, help: str = "") -> None:
    """``--interpolation``: λ of a linear mixture of the ``--lm`` models."""
    p.add_argument(
        "--interpolation", nargs="+", metavar="SPEC",
        help="interpolation weights λ of a linear mixture of the --lm models (not fusion weights): a JSON file "
        "from `lmfusion mix`, NAME=VALUE pairs, or numbers in --lm order" + (f"; {help}" if help else ""),
    )  # fmt: skip


def read_interpolation(items: Items) -> dict[str, float] | list[float] | None:
    """The value of ``--interpolation``: ``{name: λ}``, λ in ``--lm`` order, or None."""
    from fusion.io import read_json

    if not items:
        return None
    path = _single_file(items)
    if path is not None:
        obj = read_json(path)
        w = obj.get("weights", obj) if isinstance(obj, dict) else obj
        if not isinstance(w, (dict, list)):
            raise InputError("expected a 'weights' object", path=path, field="weights")
        return w
    words = _words(items)
    if all("=" in w for w in words):
        return parse_numbers(words, "--interpolation")
    try:
        return [float(x) for x in words]
    except ValueError:
        raise InputError(
            f"--interpolation {' '.join(words)!r}: not a file, NAME=VALUE pairs or numbers", field="--interpolation"
        ) from None


# ----------------------------------------------------------------------------------------------
# Outputs, tags, execution
# ----------------------------------------------------------------------------------------------
def add_output_argument(p: argparse.ArgumentParser, *, required: bool = False, help: str = "file to write") -> None:
    """``-o/--output``."""
    p.add_argument("-o", "--output", required=required, help=help)


def add_overwrite_argument(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--overwrite``: what it replaces is the command's to say."""
    p.add_argument("--overwrite", action="store_true", help=help)


def add_tag_argument(p: argparse.ArgumentParser) -> None:
    """``--tag KEY=VALUE`` (repeatable): utterance tags."""
    p.add_argument("--tag", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="utterance tags, e.g. domain=bible snr=clean")  # fmt: skip


def add_scheduler_argument(p: argparse.ArgumentParser) -> None:
    """``--scheduler``: where batch work runs (the hook point of the executor layer)."""
    p.add_argument(
        "--scheduler", metavar="SPEC", default=None,
        help="where batch work runs: omitted = in this process; 'processes' or 'processes:N' = local worker "
        "processes; a Dask scheduler address (tcp://HOST:PORT); default $LMFUSION_SCHEDULER",
    )  # fmt: skip
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to reach the Dask scheduler (10)")  # fmt: skip
