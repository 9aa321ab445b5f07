"""``lmfusion ppl``: perplexity of one LM, or of a linear mix of several, on text."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from recipes.cli_args import SubParsers, add_interpolation_argument, add_lm_arguments

if TYPE_CHECKING:
    from fusion.lm import LanguageModel


def add_units_argument(p: argparse.ArgumentParser) -> None:
    """``--units``: how LMs over different units are compared (``ppl`` and ``mix``)."""
    p.add_argument(
        "--units", choices=["auto", "word", "token"], default="auto",
        help="auto: when the LMs' units differ (word KenLM + subword neural LM), score subword LMs per word; "
        "word: always per word; token: as they are",
    )  # fmt: skip


def load_lms(args: argparse.Namespace) -> list[LanguageModel]:
    """The ``--lm`` models, bridged to common units (``--units``)."""
    from fusion.units import bridge_units
    from recipes.cli_args import open_lms

    return bridge_units(open_lms(args), getattr(args, "units", "auto"))


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "ppl",
        help="perplexity of an LM or a linear mix on text",
        description="Perplexity of each --lm model on the text; with --interpolation, also of their linear "
        "mixture with those λ (--interpolation, not --weights: --weights means fusion weights in every command).",
    )
    add_lm_arguments(p)
    add_units_argument(p)
    p.add_argument("--text", required=True, help="text, one sentence per line")
    add_interpolation_argument(p, help="also report the mixture's perplexity")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusion.errors import InputError
    from fusion.interpolate import LinearInterpolation
    from fusion.io import read_sentences
    from fusion.lm import perplexity_report
    from recipes.cli_args import read_interpolation

    models = load_lms(args)
    sents = read_sentences(args.text)
    if not sents:
        raise InputError("no sentences", path=args.text)
    lambdas = read_interpolation(args.interpolation)
    if lambdas is not None and len(models) < 2:
        raise InputError("--interpolation given for a single model")
    targets = list(models)
    if lambdas is not None:
        targets.append(LinearInterpolation(models, lambdas))
    reports = [perplexity_report(m, sents, progress=not args.quiet) for m in targets]
    if args.json:
        print(json.dumps([{**r.__dict__, "ppl": r.ppl} for r in reports], indent=2))
    else:
        print(f"{'model':<32} {'sents':>7} {'preds':>8} {'oov':>6} {'logprob(ln)':>13} {'ppl':>10}")
        for r in reports:
            print(
                f"{r.name:<32} {r.n_sentences:>7} {r.n_predictions:>8} {r.n_oov:>6} {r.logprob:>13.2f} {r.ppl:>10.2f}"
            )
    return 0
