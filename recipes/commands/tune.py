"""``lmfusion tune``: tune fusion weights on dev n-best lists, report dev/test WER, save JSON and a plot."""

from __future__ import annotations

import argparse

from recipes.commands.rescore import add_nbest_input_arguments


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "tune",
        help="tune fusion weights (am, LMs, word bonus) on dev n-best lists with cached scores",
        description="Optimise the weights of the score components over cached scores (run `lmfusion "
        "rescore` first to add LM scores). Methods: mert (exact line search, Och 2003), grid, coordinate, "
        "optuna (TPE). The best dev result is written atomically to JSON with its dev and test WER.",
    )
    p.add_argument("--dev", nargs="+", required=True, help="dev n-best file (kaldi: text ac_cost lm_cost)")
    p.add_argument("--test", nargs="+", help="test n-best file(s), same format: scored with the tuned weights")
    add_nbest_input_arguments(p)
    p.add_argument("--components", help="comma-separated components to weigh (default: all in every hypothesis)")
    p.add_argument("--method", nargs="+", default=["mert"], choices=["mert", "grid", "coordinate", "optuna"])
    p.add_argument("--fixed", default=None, help="fixed weights NAME=VALUE,... (default am=1)")
    p.add_argument("--init", help="start point NAME=VALUE,... (default 0 for free weights)")
    p.add_argument("--bounds", help="search ranges NAME=LO:HI,... (default lm-like 0:2, words -5:5)")
    p.add_argument("--unit", choices=["word", "char"], default="word", help="word (WER) or char (CER)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--points", type=int, default=20, help="grid points per weight (grid: 20, coordinate: 41)")
    p.add_argument("--restarts", type=int, default=8, help="MERT random restarts (8)")
    p.add_argument("--trials", type=int, default=200, help="optuna trials (200)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples on test (0: none)")
    p.add_argument(
        "--baseline",
        choices=["first", "start"],
        default="first",
        help="what the bootstrap compares the tuned weights with: each list's first hypothesis (the "
        "recogniser's 1-best when lists are in decoder order; default) or the start weights",
    )
    p.add_argument("-o", "--output", help="JSON file for the tuned weights with dev and test WER")
    p.add_argument("--plot", help="save a plot of dev WER over two weights (PNG)")
    p.add_argument("--plot-axes", default=None, help="the plot's weights X[,Y] (default: the first LM and 'words')")
    p.set_defaults(func=run)


def _pairs(spec: str | None, what: str) -> dict[str, str]:
    from fusion.errors import InputError

    out: dict[str, str] = {}
    if not spec:
        return out
    for part in spec.split(","):
        k, eq, v = part.partition("=")
        if not eq or not k.strip() or not v.strip():
            raise InputError(f"--{what} {spec!r}: expected NAME=VALUE,... (bad part {part!r})")
        out[k.strip()] = v.strip()
    return out


def _floats(spec: str | None, what: str) -> dict[str, float]:
    from fusion.errors import InputError

    out = {}
    for k, v in _pairs(spec, what).items():
        try:
            out[k] = float(v)
        except ValueError:
            raise InputError(f"--{what}: {k}={v!r} is not a number") from None
    return out


def _bounds(spec: str | None) -> dict[str, tuple[float, float]]:
    from fusion.errors import InputError

    out = {}
    for k, v in _pairs(spec, "bounds").items():
        lo, colon, hi = v.partition(":")
        try:
            out[k] = (float(lo), float(hi))
        except ValueError:
            colon = ""
        if not colon:
            raise InputError(f"--bounds: {k}={v!r} is not LO:HI")
    return out


def run(args: argparse.Namespace) -> int:
    import datetime
    import time

    from decoders.hypothesis import component_names
    from decoders.nbest import to_tuning_problem
    from fusion.errors import LMFusionError
    from fusion.io import atomic_write_json
    from fusion.metrics import bootstrap_from_counts
    from fusion.tuning import best_indices, error_rate, tune
    from recipes.commands.rescore import read_input

    dev = read_input(args, args.dev)
    test = read_input(args, args.test) if args.test else None
    comps = [c.strip() for c in args.components.split(",")] if args.components else component_names(dev)
    if not comps:
        raise LMFusionError("no score component is present in every dev hypothesis")
    fixed = _floats(args.fixed, "fixed") if args.fixed else ({"am": 1.0} if "am" in comps else {comps[0]: 1.0})
    init = _floats(args.init, "init")
    bounds = _bounds(args.bounds)
    dev_p = to_tuning_problem(dev, comps, args.unit)
    test_p = to_tuning_problem(test, comps, args.unit) if test else None
    metric = "WER" if args.unit == "word" else "CER"

    rows = []
    results = []
    for m in args.method:
        opts: dict[str, object] = {}
        if m in ("grid", "coordinate") and args.points:
            opts["points"] = args.points if m == "grid" else max(args.points, 2)
        if m == "mert":
            opts["restarts"] = args.restarts
        if m == "optuna":
            opts["n_trials"] = args.trials
        t0 = time.perf_counter()
        res = tune(dev_p, m, fixed=fixed, init=init or None, bounds=bounds or None, seed=args.seed, **opts)
        secs = time.perf_counter() - t0
        test_rate = error_rate(test_p, res.weights) if test_p else None
        results.append((res, test_rate))
        rows.append((m, res.error_rate, test_rate, secs, res.weights))
    start = results[0][0].start_weights
    rows.insert(0, ("start", results[0][0].start_error_rate, error_rate(test_p, start) if test_p else None, 0.0, start))
    best_res, best_test = min(results, key=lambda r: r[0].error_rate)

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}"

    print(f"dev: {dev_p.n_utts} utterances, {dev_p.n_hyps} hypotheses; components {', '.join(comps)}; fixed {fixed}")
    print(f"{'method':<12} {'dev ' + metric:>9} {'test ' + metric:>9} {'seconds':>8}  weights")
    for name, d, t, s, w in rows:
        ws = " ".join(f"{k}={v:.4g}" for k, v in w.items())
        print(f"{name:<12} {pct(d):>9} {pct(t):>9} {s:>8.2f}  {ws}")
    print(
        f"{'first hyp':<12} {pct(dev_p.first_error_rate()):>9} {pct(test_p.first_error_rate() if test_p else None):>9}"
    )
    print(
        f"{'oracle':<12} {pct(dev_p.oracle_error_rate()):>9} {pct(test_p.oracle_error_rate() if test_p else None):>9}"
    )
    print("bounds: " + ", ".join(f"{k}={lo:g}:{hi:g}" for k, (lo, hi) in best_res.extra["bounds"].items()))

    boot = None
    if test_p is not None and args.bootstrap > 0:
        import numpy as np

        def errs(w: dict[str, float]) -> np.ndarray:
            assert test_p is not None
            idx = best_indices(test_p, w)
            return np.array(
                [e[i] if i >= 0 else n for e, i, n in zip(test_p.errors, idx, test_p.ref_lengths, strict=True)]
            )

        if args.baseline == "first":
            base = np.array([e[0] if len(e) else n for e, n in zip(test_p.errors, test_p.ref_lengths, strict=True)])
        else:
            base = errs(start)
        boot = bootstrap_from_counts(base, errs(best_res.weights), test_p.ref_lengths, n=args.bootstrap, seed=args.seed)
        print(f"test {metric}, tuned - {args.baseline}: {boot}")

    if args.plot:
        from fusion.plots import plot_error_surface

        if args.plot_axes:
            axes = [a.strip() for a in args.plot_axes.split(",")]
        else:
            free = [c for c in comps if c not in fixed]
            lm_like = [c for c in free if c not in ("words", "tokens")]
            axes = [lm_like[0] if lm_like else free[0]]
            if "words" in free and axes[0] != "words":
                axes.append("words")
        plot_error_surface(
            args.plot,
            dev_p,
            best_res.weights,
            axes[0],
            axes[1] if len(axes) > 1 else None,
            bounds=bounds,
            metric=metric,
        )
        print(f"wrote {args.plot}")

    if args.output:
        doc = {
            "weights": best_res.weights,
            "method": best_res.method,
            "metric": metric,
            "unit": args.unit,
            "components": comps,
            "fixed": fixed,
            "bounds": {k: list(v) for k, v in best_res.extra["bounds"].items()},
            "seed": args.seed,
            "dev": {
                "files": args.dev,
                "n_utts": dev_p.n_utts,
                "error_rate": best_res.error_rate,
                "start_error_rate": best_res.start_error_rate,
                "first_error_rate": dev_p.first_error_rate(),
                "oracle_error_rate": dev_p.oracle_error_rate(),
            },
            "test": None
            if test_p is None
            else {
                "files": args.test,
                "n_utts": test_p.n_utts,
                "error_rate": best_test,
                "start_error_rate": error_rate(test_p, start),
                "first_error_rate": test_p.first_error_rate(),
                "oracle_error_rate": test_p.oracle_error_rate(),
                "bootstrap": None
                if boot is None
                else {
                    "baseline": args.baseline,
                    "delta": boot.delta,
                    "lo": boot.lo,
                    "hi": boot.hi,
                    "n": boot.n,
                    "alpha": boot.alpha,
                },
            },
            "methods": {r.method: {"dev": r.error_rate, "test": t, "weights": r.weights} for r, t in results},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(args.output, doc)
        print(f"wrote {args.output}")
    return 0
