"""``lmfusion ppl``: perplexity of one LM, or of a linear mix of several, on text."""

from __future__ import annotations

import argparse
import json


def add_lm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lm", nargs="+", required=True, metavar="[NAME=]PATH",
        help="LMs: KenLM files (ARPA/binary) or neural LM checkpoint directories",
    )
    p.add_argument("--spm", help="sentencepiece model of token-level KenLM n-grams")
    p.add_argument(
        "--units", choices=["auto", "word", "token"], default="auto",
        help="auto: when the LMs' units differ (word KenLM + subword neural LM), score subword LMs per word; "
        "word: always per word; token: as they are",
    )


def load_lms(args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    from fusion.loading import load_lm
    from fusion.units import bridge_units

    models = [load_lm(spec, tokenizer=args.spm) for spec in args.lm]
    return bridge_units(models, getattr(args, "units", "auto"))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ppl", help="perplexity of an LM or a linear mix on text")
    add_lm_arguments(p)
    p.add_argument("--text", required=True, help="text, one sentence per line")
    p.add_argument(
        "--weights", help="linear mix weights: a JSON file from `lmfusion mix`, or comma-separated numbers"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def parse_weights(spec: str | None, names: list[str]) -> dict[str, float] | list[float] | None:
    from pathlib import Path

    from fusion.errors import InputError
    from fusion.io import read_json

    if spec is None:
        return None
    if Path(spec).is_file():
        obj = read_json(spec)
        w = obj.get("weights", obj) if isinstance(obj, dict) else obj
        if not isinstance(w, (dict, list)):
            raise InputError("expected a 'weights' object", path=spec, field="weights")
        return w
    try:
        return [float(x) for x in spec.split(",")]
    except ValueError:
        raise InputError(f"--weights {spec!r}: not a file and not comma-separated numbers") from None


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fusion.errors import InputError
    from fusion.interpolate import LinearInterpolation
    from fusion.io import read_sentences
    from fusion.lm import PerplexityReport

    models = load_lms(args)
    sents = read_sentences(args.text)
    if not sents:
        raise InputError("no sentences", path=args.text)
    weights = parse_weights(args.weights, [m.name for m in models])
    if weights is not None and len(models) < 2:
        raise InputError("--weights given for a single model")
    targets = list(models)
    if weights is not None:
        targets.append(LinearInterpolation(models, weights))
    reports = []
    for m in targets:
        tokenized = [m.tokenize(s) for s in sents]
        scores = m.score_sentences(tqdm(tokenized, desc=m.name, unit="sent", disable=args.quiet, leave=False))
        reports.append(
            PerplexityReport(
                name=m.name,
                logprob=sum(s.total for s in scores),
                n_sentences=len(scores),
                n_predictions=sum(s.n_predictions for s in scores),
                n_oov=sum(s.n_oov for s in scores),
            )
        )
    if args.json:
        print(json.dumps([{**r.__dict__, "ppl": r.ppl} for r in reports], indent=2))
    else:
        print(f"{'model':<32} {'sents':>7} {'preds':>8} {'oov':>6} {'logprob(ln)':>13} {'ppl':>10}")
        for r in reports:
            print(
                f"{r.name:<32} {r.n_sentences:>7} {r.n_predictions:>8} {r.n_oov:>6} {r.logprob:>13.2f} {r.ppl:>10.2f}"
            )
    return 0
