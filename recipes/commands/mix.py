"""``lmfusion mix``: EM interpolation weights on held-out text, written to JSON."""

from __future__ import annotations

import argparse

from recipes.cli_args import SubParsers, add_lm_arguments, add_output_argument
from recipes.commands.ppl import add_units_argument, load_lms


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "mix",
        help="estimate linear interpolation weights by EM on held-out text (like compute-best-mix)",
        description="Estimate the interpolation weights λ of a linear mixture of the --lm models by EM. "
        "The JSON it writes is what `ppl` and `rescore` take as --interpolation.",
    )
    add_lm_arguments(p)
    add_units_argument(p)
    p.add_argument("--heldout", required=True, help="held-out text, one sentence per line")
    add_output_argument(p, help="JSON file to write (λ under 'weights', perplexities, EM trace)")
    p.add_argument("--tol", type=float, default=1e-7, help="stop when no weight moves by more (1e-7)")
    p.add_argument("--oov", choices=["skip", "include"], default="include",
                   help="include (default): every prediction, each model scoring its own OOVs with its <unk>, so "
                   "no figure depends on the other models; skip: drop predictions any model has OOV (SRILM)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fusion.em import estimate_weights
    from fusion.io import atomic_write_json

    models = load_lms(args)
    est = estimate_weights(models, args.heldout, tol=args.tol, oov=args.oov, progress=not args.quiet)
    print(f"EM: {est.iterations} iterations, converged={est.converged}, "
          f"{est.n_predictions} predictions ({est.n_oov_skipped} OOV skipped)")
    print(f"{'model':<32} {'lambda':>8} {'ppl':>10} {'oov':>7}")
    for name, w in est.weights.items():
        print(f"{name:<32} {w:>8.4f} {est.ppl[name]:>10.2f} {est.n_oov.get(name, 0):>7}")
    print(f"{'mix':<32} {'':>8} {est.ppl['mix']:>10.2f}")
    if args.output:
        atomic_write_json(args.output, est.to_json())
        print(f"wrote {args.output}")
    else:
        print(json.dumps(est.weights))
    return 0
