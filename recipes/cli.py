"""The ``lmfusion`` command line.

Each subcommand lives in its own module under :mod:`recipes.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the parsed
arguments and returning an exit status. Modules are discovered, so adding a command touches no
other file. Options shared by several commands (``--lm``, ``--weights``, ``--interpolation``, ``-o``...)
are defined once, in :mod:`recipes.cli_args`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from fusion.errors import LMFusionError


def build_parser() -> argparse.ArgumentParser:
    import recipes.commands as commands

    parser = argparse.ArgumentParser(
        prog="lmfusion",
        description="Language-model fusion for ASR and MT decoding: KenLM and neural LMs, "
        "EM interpolation, n-best rescoring, shallow fusion, weight tuning.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"recipes.commands.{info.name}")
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LMFusionError as e:
        print(f"lmfusion {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
