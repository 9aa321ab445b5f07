"""Tuning benchmarks, one command each.

Default: tuning that generalises, on the bundled pocketsphinx n-best lists (``data/asr``): the plain
reference grid vs the tuned, per-condition, adaptive and MBR systems on test with paired-bootstrap CIs,
the oracle gap closed, the k-fold CV estimate and the test WER over 5 seeds (see
``benchmarks/_tuning_bundled.py``)::

    .venv/bin/python benchmarks/bench_tuning.py

``--synthetic``: exact MERT line search vs a 20x20x20 grid (and the other optimisers).
A synthetic dev set of 1,000 utterances x 50-best with four components (am fixed at 1; three free
weights: two LMs and a word bonus). Scores are noisy functions of each hypothesis' errors, so the
weights matter. Both optimisers read the same cached score matrices; neither re-scores anything.

    .venv/bin/python benchmarks/bench_tuning.py --synthetic [--utts 1000] [--nbest 50] [--points 20] [--repeat 3]
        [--all]

Prints dev WER and seconds of each method and the ratios MERT vs grid (goal: same or lower WER, >= 20x faster).
"""

from __future__ import annotations

import argparse
import os
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one core each, so CPU seconds compare like for like

import numpy as np  # noqa: E402

from fusion.tuning import TuningProblem, error_rate, tune  # noqa: E402


def synthetic_problem(utts: int, nbest: int, seed: int) -> TuningProblem:
    """Per hypothesis: e substitutions/insertions/deletions; am, two LM scores and a word count."""
    rng = np.random.default_rng(seed)
    feats, errors, lens = [], [], []
    for _ in range(utts):
        ref_len = int(rng.integers(5, 25))
        sub = rng.poisson(1.5, size=nbest)
        ins = rng.poisson(0.4, size=nbest)
        dele = rng.poisson(0.4, size=nbest)
        e = sub + ins + dele
        words = ref_len + ins - dele
        am = -2.0 * words - 1.0 * e + rng.normal(0, 3.0, size=nbest)  # the acoustic model likes short outputs
        lm1 = -2.5 * words - 1.2 * sub + rng.normal(0, 2.5, size=nbest)  # a general LM
        lm2 = -2.4 * words - 1.0 * e + rng.normal(0, 3.0, size=nbest)  # an in-domain LM
        feats.append(np.stack([am, lm1, lm2, words.astype(float)], axis=1))
        errors.append(e)
        lens.append(ref_len)
    return TuningProblem(("am", "ngram", "nnlm", "words"), feats, errors, np.array(lens))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="MERT vs grid speed on synthetic lists")
    ap.add_argument("--folds", type=int, default=5, help="bundled: k of the k-fold CV (5)")
    ap.add_argument("--utts", type=int, default=1000)
    ap.add_argument("--nbest", type=int, default=50)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=None, help="MERT random restarts (default: tune's, 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="time MERT and grid N times, keep the fastest (3)")
    ap.add_argument("--all", action="store_true", help="also run coordinate ascent and optuna TPE")
    ap.add_argument("--no-prune-too", action="store_true", help="also run MERT without dominated-hypothesis pruning")
    args = ap.parse_args()
    if not args.synthetic:
        from _tuning_bundled import run

        run(k=args.folds)
        return

    prob = synthetic_problem(args.utts, args.nbest, args.seed)
    bounds = {"ngram": (0.0, 2.0), "nnlm": (0.0, 2.0), "words": (-5.0, 5.0)}
    print(f"{prob.n_utts} utterances x {args.nbest}-best, components {prob.components}, am fixed at 1")
    print(
        f"start (lm weights 0) WER {100 * error_rate(prob, {'am': 1.0}):.2f}%, "
        f"first-in-list {100 * prob.first_error_rate():.2f}%, oracle {100 * prob.oracle_error_rate():.2f}%"
    )
    mert_opts = {} if args.restarts is None else {"restarts": args.restarts}
    runs = [("mert", mert_opts), ("grid", {"points": args.points})]
    if args.no_prune_too:
        runs.insert(1, ("mert", {**mert_opts, "prune": False}))
    if args.all:
        runs += [("coordinate", {"points": 41}), ("optuna", {"n_trials": 200})]
    res = {}
    print(f"{'method':<16} {'dev WER':>8} {'cpu s':>7} {'wall s':>7} {'evals':>6}  weights")
    for m, opts in runs:
        name = m if opts.get("prune", True) else f"{m} (no prune)"
        cpu = wall = float("inf")
        for _ in range(args.repeat if m in ("mert", "grid") else 1):  # best of N: the machine is shared
            w0, c0 = time.perf_counter(), time.process_time()
            r = tune(prob, m, bounds=bounds, seed=args.seed, **opts)
            cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - w0)
        res.setdefault(m, (r, cpu))
        ws = " ".join(f"{k}={v:.3f}" for k, v in r.weights.items())
        print(f"{name:<16} {100 * r.error_rate:>7.2f}% {cpu:>7.2f} {wall:>7.2f} {r.n_evals:>6}  {ws}")
    (mr, ms), (gr, gs) = res["mert"], res["grid"]
    print(
        f"MERT vs {args.points}^3 grid: dev WER {100 * mr.error_rate:.2f}% vs {100 * gr.error_rate:.2f}% "
        f"({'same or lower' if mr.error_rate <= gr.error_rate else 'HIGHER'}); "
        f"speed ratio grid/MERT (CPU seconds) = {gs / ms:.1f}x (goal >= 20x)"
    )


if __name__ == "__main__":
    main()
