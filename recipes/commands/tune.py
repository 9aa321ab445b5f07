"""``lmfusion tune``: tune fusion weights on dev n-best lists, report dev / CV / test, save JSON, a policy, a plot.

Without ``--components`` the tuned components are ``am`` (fixed at 1), the LM components and ``words``
(:func:`fusion.tuning.stable.default_components`: counts and the recogniser's own ``lm`` are left out when
another LM is present). Default bounds come from each component's spread
(:func:`fusion.tuning.stable.scale_aware_bounds`); a weight that ends on a bound is reported.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from recipes.cli_args import (
    SubParsers,
    add_output_argument,
    add_scheduler_argument,
    parse_numbers,
    parse_pairs,
    parse_ranges,
)
from recipes.commands.rescore import add_nbest_input_arguments

if TYPE_CHECKING:
    from decoders.hypothesis import NBestList
    from fusion.tuning import TuningProblem

METRICS = ("wer", "cer", "bleu", "chrf")


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "tune",
        help="tune fusion weights (am, LMs, word bonus) on dev n-best lists with cached scores",
        description="Optimise the weights of the score components over cached scores (run `lmfusion "
        "rescore` first to add LM scores). Methods: mert (exact line search, Och 2003), smooth (expected "
        "error under the fused posterior, annealed), grid, coordinate, optuna (TPE). Optionally per "
        "condition (--by, shrunk toward the global weights), adaptive (--adaptive) and MBR (--mbr).",
    )
    p.add_argument("--dev", nargs="+", required=True, help="dev n-best file (kaldi: text ac_cost lm_cost)")
    p.add_argument("--test", nargs="+", help="test n-best file(s), same format: scored with the tuned weights")
    add_nbest_input_arguments(p)
    p.add_argument("--components", help="comma-separated components to weigh (default: am, the LMs and words)")
    p.add_argument("--method", nargs="+", default=["mert"], choices=["mert", "smooth", "grid", "coordinate", "optuna"])
    p.add_argument("--metric", choices=METRICS, default=None, help="wer (default), cer, bleu or chrf (sacrebleu)")
    p.add_argument("--fixed", nargs="+", metavar="NAME=VALUE", help="fixed weights (default am=1)")
    p.add_argument("--init", nargs="+", metavar="NAME=VALUE", help="start point (default 0 for free weights)")
    p.add_argument("--bounds", nargs="+", metavar="NAME=LO:HI",
                   help="search ranges (default: from each component's spread)")
    p.add_argument("--unit", choices=["word", "char"], default="word", help="word (WER) or char (CER)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="tune with seeds seed..seed+N-1, report the spread (1)")
    p.add_argument("--points", type=int, default=20, help="grid points per weight (grid: 20, coordinate: 41)")
    p.add_argument("--restarts", type=int, default=8, help="MERT / smooth random restarts (8)")
    p.add_argument("--trials", type=int, default=200, help="optuna trials (200)")
    p.add_argument("--l2", type=float, default=0.0, help="smooth: L2 pull toward --prior (default the start)")
    p.add_argument("--prior", nargs="+", metavar="NAME=VALUE", help="smooth: the L2 pull's target")
    p.add_argument("--kfold", type=int, default=0, help="print a k-fold cross-validated dev estimate (0: none)")
    p.add_argument("--by", help="per-condition weights by these tags, e.g. domain,noise,snr (shrunk to global)")
    p.add_argument("--snr-edges", default="10,17.5,25", help="dB edges bucketing a numeric snr tag (--by snr)")
    p.add_argument("--adaptive", help="fit weights as a function of run-time features, e.g. snr,margin,entropy")
    p.add_argument("--domain-lms", nargs="+", metavar="DOMAIN=COMPONENT",
                   help="adaptive: the domain LMs for the p_domain features")
    p.add_argument("--policy", help="JSON file for the --by or --adaptive policy (for rescore --weights)")
    p.add_argument("--mbr", action="store_true", help="also report minimum-Bayes-risk selection (scale tuned)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples on test (0: none)")
    p.add_argument(
        "--baseline",
        choices=["first", "start"],
        default="first",
        help="what the bootstrap compares the tuned weights with: each list's first hypothesis (the "
        "recogniser's 1-best when lists are in decoder order; default) or the start weights",
    )
    add_output_argument(p, help="JSON file for the tuned weights (what --weights reads) with dev and test WER")
    p.add_argument("--plot", help="save a plot of dev WER over two weights (PNG)")
    p.add_argument("--plot-axes", default=None, help="the plot's weights X[,Y] (default: the first LM and 'words')")
    add_scheduler_argument(p)
    p.set_defaults(func=run)


def split_report(
    problem: TuningProblem, weights: Mapping[str, float], start: Mapping[str, float]
) -> dict[str, Any]:
    """One split's entry of the ``tune`` report (the JSON it writes, and the recipe's per condition):
    utterances, and the error rate under the tuned weights, the start weights, the recogniser's first
    hypothesis and the n-best oracle."""
    from fusion.tuning import error_rate

    return {
        "n_utts": problem.n_utts,
        "error_rate": error_rate(problem, weights),
        "start_error_rate": error_rate(problem, start),
        "first_error_rate": problem.first_error_rate(),
        "oracle_error_rate": problem.oracle_error_rate(),
    }


def _problems(
    args: argparse.Namespace, dev: list[Any], test: list[Any] | None, comps: list[str]
) -> tuple[Any, Any, str]:
    """Dev and test problems for the metric (BLEU/chrF: sentence losses), and the metric's display name."""
    from decoders.nbest import to_tuning_problem
    from fusion.metrics import Unit
    from fusion.tuning.sentence_loss import loss_problem

    metric = args.metric or ("cer" if args.unit == "char" else "wer")
    unit: Unit = "char" if metric == "cer" else "word"
    dev_p = to_tuning_problem(dev, comps, unit)
    test_p = to_tuning_problem(test, comps, unit) if test else None
    if metric in ("bleu", "chrf"):
        dev_p = loss_problem(dev_p, [[h.text for h in nb.hyps] for nb in dev], [nb.ref for nb in dev], metric)
        if test_p is not None and test:
            refs = [nb.ref for nb in test]
            test_p = loss_problem(test_p, [[h.text for h in nb.hyps] for nb in test], refs, metric)
    names = {"wer": "WER", "cer": "CER", "bleu": "1-sentBLEU", "chrf": "1-sentchrF"}
    return dev_p, test_p, names[metric]


def _tune_methods(
    args: argparse.Namespace,
    dev_p: Any,
    test_p: Any,
    fixed: dict[str, Any],
    init: dict[str, Any],
    bounds: dict[str, Any],
) -> list[Any]:
    from fusion.tune_jobs import TuneJob, tune_jobs
    from fusion.tuning import error_rate
    from fusion.tuning.stable import SeedSpread
    from recipes.scale import executor_from_args

    out = []
    seeds = list(range(args.seed, args.seed + max(1, args.seeds)))
    jobs: list[TuneJob] = []
    for m in args.method:
        opts: dict[str, object] = {}
        if m in ("grid", "coordinate") and args.points:
            opts["points"] = args.points if m == "grid" else max(args.points, 2)
        if m in ("mert", "smooth"):
            opts["restarts"] = args.restarts
        if m == "smooth" and args.l2:
            opts["l2"] = args.l2
            opts["prior"] = parse_numbers(args.prior, "--prior") or None
        if m == "optuna":
            opts["n_trials"] = args.trials
        jobs += [TuneJob(dev_p, m, fixed, init or None, bounds, s, opts, label=m) for s in seeds]
    with executor_from_args(args) as ex:  # every (method, seed) is an independent job: side by side
        done = tune_jobs(jobs, ex, progress=not args.quiet)
    for i, m in enumerate(args.method):
        results = tuple(done[i * len(seeds) : (i + 1) * len(seeds)])
        spread = SeedSpread(results, tuple(seeds), min(results, key=lambda r: r.error_rate))  # as tune_seeds
        res = spread.chosen
        if len(seeds) > 1:
            tests = spread.rates_on(test_p) if test_p else []
            print(
                f"{m}: dev over seeds {seeds}: "
                + " ".join(f"{100 * x:.2f}" for x in spread.dev_rates)
                + ("; test: " + " ".join(f"{100 * x:.2f}" for x in tests) if tests else "")
                + (f" (spread {100 * (max(tests) - min(tests)):.2f} points)" if tests else "")
            )
        out.append((res, error_rate(test_p, res.weights) if test_p else None))
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _print_table(
    rows: list[Any], dev_p: Any, test_p: Any, metric: str, comps: list[str], fixed: dict[str, Any]
) -> None:
    print(f"dev: {dev_p.n_utts} utterances, {dev_p.n_hyps} hypotheses; components {', '.join(comps)}; fixed {fixed}")
    print(f"{'method':<12} {'dev ' + metric:>9} {'test ' + metric:>9} {'seconds':>8}  weights")
    for name, d, t, s, w in rows:
        ws = " ".join(f"{k}={v:.4g}" for k, v in w.items())
        print(f"{name:<12} {_pct(d):>9} {_pct(t):>9} {s:>8.2f}  {ws}")
    tf = test_p.first_error_rate() if test_p else None
    print(f"{'first hyp':<12} {_pct(dev_p.first_error_rate()):>9} {_pct(tf):>9}")
    print(
        f"{'oracle':<12} {_pct(dev_p.oracle_error_rate()):>9} {_pct(test_p.oracle_error_rate() if test_p else None):>9}"
    )


def _test_errors(problem: Any, weights: dict[str, Any]) -> Any:
    from fusion.tuning.stable import utterance_errors

    return utterance_errors(problem, weights)


def common_components(lists: Iterable[NBestList]) -> tuple[list[str], dict[str, str]]:
    """Components every hypothesis has (first-seen order), and ``{dropped component: first utterance
    lacking it}`` for components some hypotheses have and others lack (one pass over a stream)."""
    from decoders.nbest import ComponentTracker

    t = ComponentTracker()
    for nb in lists:
        for h in nb.hyps:
            t.update(nb.utt_id, h.scores)
    return t.common or [], t.dropped


def _default_components(args: argparse.Namespace, names: list[str], dropped: dict[str, str]) -> list[str]:
    """Without ``--components``: ``am``, the LMs and ``words`` of the components every dev hypothesis has
    (and any named in ``--bounds``), saying which were left out and why."""
    import sys

    from fusion.errors import LMFusionError
    from fusion.tuning.stable import default_components

    for c, utt in dropped.items():
        print(f"tune: component {c!r} is left out: utterance {utt!r} has hypotheses without it "
              "(give --components to choose)", file=sys.stderr)
    comps = default_components(names)
    print(
        f"components (default: am, the LMs, words; counts and the recogniser's lm beside another LM left out): "
        f"{', '.join(comps)}"
    )
    named = [k for k in parse_ranges(args.bounds, "--bounds") if k not in comps and k in names]
    if named:  # a bound names a component the default rule left out: the user wants it tuned
        comps = [c for c in names if c in {*comps, *named}]  # in the file's order
        print(f"also tuned, as --bounds names them: {', '.join(named)}")
    if not comps:
        raise LMFusionError("no score component is present in every dev hypothesis")
    return comps


def _needs_lists(args: argparse.Namespace) -> bool:
    """Whether an option reads more of the lists than their scores and error counts (texts, tags)."""
    return args.metric in ("bleu", "chrf") or bool(args.mbr or args.by or args.adaptive)


def _read_problems(args: argparse.Namespace) -> tuple[Any, Any, str, list[str], list[Any], list[Any] | None]:
    """Dev and test problems, the metric's name, the components, and the lists when an option needs them
    (:func:`_needs_lists`; else no lists: ``[]`` and None).

    Without ``--mbr``, ``--by``, ``--adaptive`` or a BLEU/chrF metric the input is streamed in batches
    (:func:`decoders.nbest.stream_tuning_problem`): only the score matrix and error counts are kept.
    """
    from decoders.nbest import stream_tuning_problem
    from fusion.metrics import Unit
    from recipes.commands.rescore import iter_input, read_input

    given = [c.strip() for c in args.components.split(",")] if args.components else None
    if _needs_lists(args):
        dev = read_input(args, args.dev)
        test = read_input(args, args.test) if args.test else None
        comps = given if given is not None else _default_components(args, *common_components(dev))
        dev_p, test_p, metric = _problems(args, dev, test, comps)
        return dev_p, test_p, metric, comps, dev, test
    metric = args.metric or ("cer" if args.unit == "char" else "wer")
    unit: Unit = "char" if metric == "cer" else "word"

    def choose(names: list[str], dropped: dict[str, str]) -> list[str]:
        return _default_components(args, names, dropped)

    dev_p = stream_tuning_problem(iter_input(args, args.dev), given, unit, choose=None if given else choose)
    comps = list(dev_p.components)
    test_p = stream_tuning_problem(iter_input(args, args.test), comps, unit) if args.test else None
    if test_p is not None and test_p.n_utts == 0:
        test_p = None  # as an empty test list: no test report
    return dev_p, test_p, metric.upper(), comps, [], None


def _check_args(args: argparse.Namespace) -> None:
    """Flag values the tuners would fail on later, and outputs that would replace an input or a folder."""
    from fusion.errors import LMFusionError
    from fusion.io import check_output_path
    from recipes.commands.rescore import input_files

    for flag, low in (("trials", 1), ("points", 2), ("restarts", 0), ("bootstrap", 0)):
        if getattr(args, flag, low) < low:
            raise LMFusionError(f"--{flag} must be >= {low}, got {getattr(args, flag)}")
    inputs = input_files(args, [*args.dev, *(args.test or [])])
    for flag in ("output", "plot"):
        if getattr(args, flag, None):
            check_output_path(getattr(args, flag), inputs=inputs, what=f"--{flag}")


def run(args: argparse.Namespace) -> int:
    from fusion.metrics import bootstrap_from_counts
    from fusion.tuning import error_rate
    from fusion.tuning.stable import bound_warnings, scale_aware_bounds

    _check_args(args)
    dev_p, test_p, metric, comps, dev, test = _read_problems(args)
    fixed = parse_numbers(args.fixed, "--fixed") if args.fixed else ({"am": 1.0} if "am" in comps else {comps[0]: 1.0})
    init = parse_numbers(args.init, "--init")
    bounds = {**scale_aware_bounds(dev_p, fixed), **parse_ranges(args.bounds, "--bounds")}
    results = _tune_methods(args, dev_p, test_p, fixed, init, bounds)
    start = results[0][0].start_weights
    rows = [("start", results[0][0].start_error_rate, error_rate(test_p, start) if test_p else None, 0.0, start)]
    rows += [(r.method, r.error_rate, t, r.seconds, r.weights) for r, t in results]
    best_res = min(results, key=lambda r: r[0].error_rate)[0]
    _print_table(rows, dev_p, test_p, metric, comps, fixed)
    print("bounds: " + ", ".join(f"{k}={lo:.4g}:{hi:.4g}" for k, (lo, hi) in best_res.extra["bounds"].items()))
    for msg in bound_warnings(best_res):
        print(f"warning: {msg}")
    cv_rate = _kfold(args, dev_p, best_res, fixed, bounds)
    boot = None
    if test_p is not None and args.bootstrap > 0:
        import numpy as np

        if args.baseline == "first":
            base = np.array([e[0] if len(e) else n for e, n in zip(test_p.errors, test_p.ref_lengths, strict=True)])
        else:
            base = _test_errors(test_p, start)
        boot = bootstrap_from_counts(
            base, _test_errors(test_p, best_res.weights), test_p.ref_lengths, n=args.bootstrap, seed=args.seed
        )
        print(f"test {metric}, tuned - {args.baseline}: {boot}")
    if args.metric in ("bleu", "chrf"):
        _print_corpus_metric(args.metric, dev, test, best_res.weights)
    extra: dict[str, Any] = {}
    if args.mbr:
        extra["mbr"] = _mbr(dev, test, dev_p, test_p, best_res.weights, args.unit)
    if args.by:
        extra["conditions"] = _by(args, dev, test, dev_p, test_p, best_res, fixed, bounds)
    if args.adaptive:
        extra["adaptive"] = _adaptive(args, dev, test, dev_p, test_p, best_res, fixed, bounds)
    if args.plot:
        _plot(args, comps, fixed, dev_p, best_res, bounds, metric)
    if args.output:
        _write(args, comps, fixed, metric, dev_p, test_p, best_res, start, boot, results, cv_rate, extra)
    return 0


def _kfold(
    args: argparse.Namespace, dev_p: Any, best_res: Any, fixed: dict[str, Any], bounds: dict[str, Any]
) -> float | None:
    from fusion.tuning import tune
    from fusion.tuning.stable import cross_validate

    if args.kfold < 2:
        return None
    opts = {"restarts": args.restarts} if best_res.method in ("mert", "smooth") else {}

    def fit(p: Any) -> dict[str, float]:
        return tune(p, best_res.method, fixed=fixed, bounds=bounds, seed=args.seed, **opts).weights

    cv = cross_validate(dev_p, fit, k=args.kfold, seed=args.seed)
    print(
        f"{best_res.method}: dev {_pct(best_res.error_rate)}, {cv.k}-fold CV {_pct(cv.error_rate)} "
        f"(fold spread {100 * cv.spread:.2f})"
    )
    return cv.error_rate


def _print_corpus_metric(metric: str, dev: list[Any], test: list[Any] | None, weights: dict[str, Any]) -> None:
    from decoders.nbest import apply_weights
    from fusion.tuning.sentence_loss import corpus_score

    for name, nbs in (("dev", dev), ("test", test)):
        if nbs:
            s = corpus_score(metric, apply_weights(nbs, weights), [nb.ref or "" for nb in nbs])
            print(f"{name} corpus {metric.upper()} of the tuned 1-bests: {s:.2f}")


def _mbr(
    dev: list[Any], test: list[Any] | None, dev_p: Any, test_p: Any, weights: dict[str, Any], unit: str
) -> dict[str, Any]:
    from fusion.tuning.mbr import mbr_errors, pairwise_distances, tune_mbr_scale

    dd = [pairwise_distances([h.text for h in nb.hyps], "char" if unit == "char" else "word") for nb in dev]
    scale, dev_rate = tune_mbr_scale(dev_p, dd, weights)
    out = {"scale": scale, "dev": dev_rate, "test": None}
    if test and test_p is not None:
        dt = [pairwise_distances([h.text for h in nb.hyps], "char" if unit == "char" else "word") for nb in test]
        out["test"] = float(mbr_errors(test_p, dt, weights, scale).sum()) / test_p.total_ref_length
    print(f"MBR (scale {scale:.4g}): dev {_pct(dev_rate)}, test {_pct(out['test'])}")
    return out


def _by(
    args: argparse.Namespace,
    dev: list[Any],
    test: list[Any] | None,
    dev_p: Any,
    test_p: Any,
    best_res: Any,
    fixed: dict[str, Any],
    bounds: dict[str, Any],
) -> dict[str, Any]:
    from fusion.adaptive import condition_key, save_policy
    from fusion.tuning import tune
    from fusion.tuning.conditions import fit_conditions

    by = [b.strip() for b in args.by.split(",") if b.strip()]
    edges = tuple(float(x) for x in args.snr_edges.split(",")) if args.snr_edges else ()
    opts = {"restarts": args.restarts} if best_res.method in ("mert", "smooth") else {}

    def fit(p: Any) -> dict[str, float]:
        return tune(p, best_res.method, fixed=fixed, bounds=bounds, seed=args.seed, **opts).weights

    keys = [condition_key(nb.tags, by, edges) for nb in dev]
    cf = fit_conditions(dev_p, keys, fit, by=by, k=max(2, args.kfold or 5), seed=args.seed, snr_edges=edges)
    pol = cf.table
    print(
        f"per condition by {','.join(by)}: {len(cf.counts)} conditions on dev "
        f"({', '.join(f'{k}:{n}' for k, n in sorted(cf.counts.items()))})"
    )
    print(
        "CV errors by kappa: "
        + ", ".join(f"{k:g}:{v}" for k, v in cf.cv_errors.items())
        + f"; chosen kappa {cf.kappa:g}"
        + (" (global weights everywhere)" if not pol.table else "")
    )
    out: dict[str, Any] = {"kappa": None if cf.kappa == float("inf") else cf.kappa, "conditions": len(cf.counts)}
    if test and test_p is not None:
        rate = _policy_rate(test, test_p, pol)
        out["test"] = rate
        print(f"per-condition test {_pct(rate)} vs global {_pct(error_rate_of(test_p, best_res.weights))}")
    if args.policy:
        save_policy(pol, args.policy)
        print(f"wrote {args.policy}")
    return out


def error_rate_of(problem: Any, weights: dict[str, Any]) -> float:
    from fusion.tuning import error_rate

    return error_rate(problem, weights)


def _policy_rate(nbs: list[Any], problem: Any, policy: Any) -> float:
    """Error rate of each list ranked with its own policy weights."""
    from decoders.nbest import weights_per_list
    from fusion.tuning.stable import utterance_errors

    ws = weights_per_list(nbs, policy)
    errs = sum(int(utterance_errors(problem.subset([i]), w)[0]) for i, w in enumerate(ws))
    return errs / problem.total_ref_length


def _adaptive(
    args: argparse.Namespace,
    dev: list[Any],
    test: list[Any] | None,
    dev_p: Any,
    test_p: Any,
    best_res: Any,
    fixed: dict[str, Any],
    bounds: dict[str, Any],
) -> dict[str, Any]:
    import numpy as np

    from decoders.nbest import list_context
    from fusion.adaptive import AdaptiveWeights, FeatureSpec, save_policy
    from fusion.tuning.adaptive_fit import fit_adaptive

    names = [f.strip() for f in args.adaptive.split(",") if f.strip()]
    doms = parse_pairs(args.domain_lms, "--domain-lms")
    stds = [np.std([h.scores["am"] for h in nb.hyps]) for nb in dev if len(nb.hyps) > 1 and "am" in nb.hyps[0].scores]
    spec = FeatureSpec("am", float(1.0 / np.median(stds)) if stds else 1.0, doms)
    probe = AdaptiveWeights({}, spec=spec)
    feats = [dict(list_context(nb, probe).features) for nb in dev]
    if doms and not any(n.startswith("p_domain=") for n in names):  # D-1 posteriors: they sum to 1
        names += [f"p_domain={d}" for d in list(doms)[:-1]]
    fit = fit_adaptive(
        dev_p, feats, names, best_res.weights, bounds, fixed=fixed, spec=spec, seed=args.seed, k=max(2, args.kfold or 5)
    )
    pol = fit.policy
    out: dict[str, Any] = {"l2": fit.l2, "features": names, "dev": _policy_rate(dev, dev_p, pol)}
    print(
        f"adaptive on {','.join(names)}: l2 {fit.l2:g} (CV "
        + ", ".join(f"{k:g}:{_pct(v)}" for k, v in fit.cv.items())
        + f"), dev {_pct(out['dev'])}"
    )
    if test and test_p is not None:
        out["test"] = _policy_rate(test, test_p, pol)
        print(f"adaptive test {_pct(out['test'])} vs global {_pct(error_rate_of(test_p, best_res.weights))}")
    if args.policy:
        save_policy(pol, args.policy)
        print(f"wrote {args.policy}")
    return out


def _plot(
    args: argparse.Namespace,
    comps: list[str],
    fixed: dict[str, Any],
    dev_p: Any,
    best_res: Any,
    bounds: dict[str, Any],
    metric: str,
) -> None:
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
        args.plot, dev_p, best_res.weights, axes[0], axes[1] if len(axes) > 1 else None, bounds=bounds, metric=metric
    )
    print(f"wrote {args.plot}")


def _write(
    args: argparse.Namespace,
    comps: list[str],
    fixed: dict[str, Any],
    metric: str,
    dev_p: Any,
    test_p: Any,
    best_res: Any,
    start: dict[str, Any],
    boot: Any,
    results: list[Any],
    cv_rate: float | None,
    extra: dict[str, Any],
) -> None:
    import datetime

    from fusion.io import atomic_write_json

    doc = {
        "weights": best_res.weights,
        "method": best_res.method,
        "metric": metric,
        "unit": args.unit,
        "components": comps,
        "fixed": fixed,
        "bounds": {k: list(v) for k, v in best_res.extra["bounds"].items()},
        "seed": args.seed,
        "seeds": args.seeds,
        "dev": {"files": args.dev, **split_report(dev_p, best_res.weights, start), "cv_error_rate": cv_rate},
        "test": None
        if test_p is None
        else {
            "files": args.test,
            **split_report(test_p, best_res.weights, start),
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
        **extra,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(args.output, doc)
    print(f"wrote {args.output}")
