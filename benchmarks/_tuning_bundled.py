"""Tuning that generalises, on the bundled pocketsphinx n-best lists (``data/asr/{dev,test}.jsonl``).

Run through ``benchmarks/bench_tuning.py`` (the default mode). Everything is tuned on dev and scored on
test; each comparison is a paired bootstrap over test utterances (1,000 resamples, 95 % CI).

Systems:

* ``recogniser``: each list's first hypothesis (pocketsphinx's own order);
* ``reference``: the plain baseline, ``am + w * LM + b * words`` with one in-domain word 4-gram (KenLM
  on both domains' training text), ``w`` in {0, 2, ..., 14}, ``b`` in {-4, ..., 8}, grid on dev;
* ``global``: the tuned system, one weight set: the default components (``am`` = 1, the 4-gram, the
  blind-domain mix ``dmix`` and ``words``; the recogniser's own ``lm`` left out by the default rule) by the
  smoothed objective; ``dmix`` is a linear mix of the bible and tech 4-grams whose λ per utterance is the
  domain posterior from the n-best (no domain tag used), floored at 0.05;
* ``global (MERT)``: the same components by MERT (for the seed spread);
* ``per-condition``: ``--by domain,snr`` weights shrunk toward global (κ by 5-fold CV);
* ``adaptive``: weights a linear function of run-time features (SNR estimate, margin, entropy);
* ``MBR``: minimum-Bayes-risk choice under the global weights' posterior (scale tuned on dev).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from _common import REPO, kenlm_models

from decoders.hypothesis import NBestList, read_nbest_jsonl
from decoders.nbest import rescore, to_tuning_problem
from fusion.adaptive import DOMAIN_PREFIX, FeatureSpec, condition_key, nbest_features, numeric_snr
from fusion.metrics import bootstrap_from_counts
from fusion.ngram import KenLM
from fusion.tuning import TuningProblem, error_rate, total_errors_batch, tune
from fusion.tuning.adaptive_fit import fit_adaptive
from fusion.tuning.conditions import fit_conditions
from fusion.tuning.mbr import mbr_errors, pairwise_distances, tune_mbr_scale
from fusion.tuning.stable import (
    bound_warnings,
    cross_validate,
    default_components,
    scale_aware_bounds,
    utterance_errors,
)
from fusion.utterance_mix import mix_scores, unit_logprobs

DOMAINS = ("bible", "tech")
FLOOR = 0.05
SEEDS = (0, 1, 2, 3, 4)


@dataclass
class Data:
    dev: list[NBestList]
    test: list[NBestList]
    dev_feats: list[dict[str, float]]
    test_feats: list[dict[str, float]]


def _scores(nb: NBestList, comps: Sequence[str]) -> dict[str, np.ndarray]:
    return {c: np.array([h.scores[c] for h in nb.hyps]) for c in comps if nb.hyps and c in nb.hyps[0].scores}


def _add_mix(nbs: list[NBestList], lms: Mapping[str, KenLM], spec: FeatureSpec) -> list[tuple[NBestList, dict]]:
    """Per utterance: features, then the ``dmix`` component mixed with λ = floored domain posterior."""
    out = []
    models = [lms[d] for d in DOMAINS]
    for nb in nbs:
        feats = nbest_features(_scores(nb, ["am", "words", *DOMAINS]), spec, words=_scores(nb, ["words"]).get("words"))
        snr = numeric_snr(nb.tags)
        if snr is not None:
            feats["snr"] = snr
        post = [feats.get(DOMAIN_PREFIX + d, 1.0 / len(DOMAINS)) for d in DOMAINS]  # an empty list: uniform
        lam = np.array([(1 - FLOOR) * p + FLOOR / len(DOMAINS) for p in post])
        texts = [h.text for h in nb.hyps]
        mixed = mix_scores(unit_logprobs(models, texts), lam) if texts else np.zeros(0)
        hyps = tuple(h.with_scores(dmix=float(m)) for h, m in zip(nb.hyps, mixed, strict=True))
        out.append((NBestList(nb.utt_id, hyps, nb.ref, nb.tags), feats))
    return out


def load_data() -> Data:
    """Rescore the bundled lists with the 4-grams (cached under ``.cache/bench``) and add ``dmix``."""
    paths = kenlm_models(order=4)
    lms = {n: KenLM(p, name=n) for n, p in paths.items()}
    raw = {s: read_nbest_jsonl(REPO / "data" / "asr" / f"{s}.jsonl") for s in ("dev", "test")}
    scored = {s: rescore(v, lms, True, count_oov=False) for s, v in raw.items()}
    am_std = np.median([np.std([h.scores["am"] for h in nb.hyps]) for nb in scored["dev"] if len(nb.hyps) > 1])
    spec = FeatureSpec("am", float(1.0 / am_std), {d: d for d in DOMAINS})
    dev = _add_mix(scored["dev"], lms, spec)
    test = _add_mix(scored["test"], lms, spec)
    return Data([a for a, _ in dev], [a for a, _ in test], [b for _, b in dev], [b for _, b in test])


def reference_grid(dev: TuningProblem) -> dict[str, float]:
    """The plain baseline: ``am + w * general + b * words`` on the issue's grid, best dev WER (first on ties)."""
    grid = [(float(w), float(b)) for w in range(0, 16, 2) for b in range(-4, 9)]
    W = np.zeros((len(grid), len(dev.components)))
    W[:, dev.components.index("am")] = 1.0
    for i, (w, b) in enumerate(grid):
        W[i, dev.components.index("general")] = w
        W[i, dev.components.index("words")] = b
    errs = total_errors_batch(dev, W)
    w, b = grid[int(np.argmin(errs))]
    return {"am": 1.0, "general": w, "words": b}


@dataclass
class Row:
    name: str
    dev: float
    test: float
    test_errs: np.ndarray
    note: str = ""


def _row(name: str, dev: TuningProblem, test: TuningProblem, w: Mapping[str, float], note: str = "") -> Row:
    return Row(name, error_rate(dev, w), error_rate(test, w), utterance_errors(test, w), note)


def _global_fit(comps: Sequence[str], bounds: Mapping[str, tuple[float, float]], method: str, seed: int
                ) -> Callable[[TuningProblem], dict[str, float]]:
    def fit(p: TuningProblem) -> dict[str, float]:
        return tune(p, method, fixed={"am": 1.0}, bounds=bounds, seed=seed, restarts=4).weights

    return fit


def seed_spread(dev: TuningProblem, test: TuningProblem, bounds: Mapping[str, tuple[float, float]]) -> list[str]:
    lines = []
    for method in ("smooth", "mert"):
        rates = []
        for s in SEEDS:
            r = tune(dev, method, fixed={"am": 1.0}, bounds=bounds, seed=s, restarts=4)
            rates.append(100 * error_rate(test, r.weights))
        lines.append(
            f"{method:>6}: test WER over seeds {list(SEEDS)}: " + " ".join(f"{x:.2f}" for x in rates)
            + f"  (spread {max(rates) - min(rates):.2f} points)"
        )
    return lines


def run(k: int = 5, n_boot: int = 1000) -> None:
    t0 = time.perf_counter()
    data = load_data()
    comps = default_components(list(data.dev[0].hyps[0].scores))
    base_comps = ("am", "general", "words")
    dev_b, test_b = to_tuning_problem(data.dev, base_comps), to_tuning_problem(data.test, base_comps)
    dev, test = to_tuning_problem(data.dev, comps), to_tuning_problem(data.test, comps)
    print(f"bundled n-best: dev {dev.n_utts} / test {test.n_utts} utterances; tuned components {comps}")
    ref_w = reference_grid(dev_b)
    bounds = scale_aware_bounds(dev, {"am": 1.0})
    print("scale-aware bounds: " + ", ".join(f"{c}={lo:g}:{hi:g}" for c, (lo, hi) in bounds.items()))
    res = tune(dev, "smooth", fixed={"am": 1.0}, bounds=bounds, seed=0, restarts=4)
    for msg in bound_warnings(res):
        print("warning:", msg)
    g = res.weights
    rows = [
        Row("recogniser 1-best", dev.first_error_rate(), test.first_error_rate(),
            np.array([e[0] if len(e) else n for e, n in zip(test.errors, test.ref_lengths, strict=True)])),
        _row("reference grid (am + w*4gram + b*words)", dev_b, test_b, ref_w, str(ref_w)),
        _row("global, smoothed objective", dev, test, g, " ".join(f"{c}={v:.3g}" for c, v in g.items())),
    ]
    mert = tune(dev, "mert", fixed={"am": 1.0}, bounds=bounds, seed=0, restarts=4).weights
    rows.append(_row("global, MERT", dev, test, mert))
    cv = cross_validate(dev, _global_fit(comps, bounds, "smooth", 0), k=k, seed=0)
    by = ("domain", "snr")
    keys_dev = [condition_key(nb.tags, by) for nb in data.dev]
    cf = fit_conditions(dev, keys_dev, _global_fit(comps, bounds, "smooth", 0), by=by, k=k, seed=0)
    pol = cf.table
    keys_test = [condition_key(nb.tags, by) for nb in data.test]
    rows.append(_per_utt_row(f"per-condition {','.join(by)} (kappa={cf.kappa:g})", dev, test, keys_dev, keys_test,
                             lambda key: pol.table.get(key, pol.global_weights)))
    rows.append(_adaptive_row(data, dev, test, g, bounds, k, ["snr", "margin", "entropy"]))
    rows.append(_adaptive_row(data, dev, test, g, bounds, k, ["snr", "margin", "entropy", "p_domain=bible"]))
    dd = [pairwise_distances([h.text for h in nb.hyps]) for nb in data.dev]
    dt = [pairwise_distances([h.text for h in nb.hyps]) for nb in data.test]
    scale, dev_mbr = tune_mbr_scale(dev, dd, g)
    te = mbr_errors(test, dt, g, scale)
    mbr_rate = te.sum() / test.total_ref_length
    rows.append(Row("MBR under the global weights", dev_mbr, mbr_rate, te, f"scale {scale:.3g}"))
    _report(rows, test, cv.error_rate, n_boot, cf)
    for line in seed_spread(dev, test, bounds):
        print(line)
    without_blind_mix(data, [c for c in comps if c != "dmix"], k, n_boot)
    print(f"({time.perf_counter() - t0:.0f} s)")


def without_blind_mix(data: Data, comps: Sequence[str], k: int, n_boot: int) -> None:
    """Per-condition vs global when the global system has no domain information (no ``dmix``)."""
    dev, test = to_tuning_problem(data.dev, comps), to_tuning_problem(data.test, comps)
    bounds = scale_aware_bounds(dev, {"am": 1.0})
    fit = _global_fit(comps, bounds, "smooth", 0)
    g = fit(dev)
    glob = utterance_errors(test, g)
    print(f"\nwithout the blind-domain mix (components {list(comps)}): global test {100 * error_rate(test, g):.2f}%")
    for by in (("domain",), ("domain", "snr"), ("noise", "snr")):
        kd = [condition_key(nb.tags, by) for nb in data.dev]
        kt = [condition_key(nb.tags, by) for nb in data.test]
        cf = fit_conditions(dev, kd, fit, by=by, k=k, seed=0)
        pol = cf.table
        row = _per_utt_row("", dev, test, kd, kt, lambda key, pol=pol: pol.table.get(key, pol.global_weights))
        b = bootstrap_from_counts(glob, row.test_errs, test.ref_lengths, n=n_boot, seed=0)
        print(f"  per-condition by {','.join(by):<12} kappa={cf.kappa:<4g} test {100 * row.test:.2f}%, minus global "
              f"{100 * b.delta:+.2f} [{100 * b.lo:+.2f}, {100 * b.hi:+.2f}]")


def _per_utt_row(name: str, dev: TuningProblem, test: TuningProblem, kd: Sequence[str], kt: Sequence[str],
                 pick: Callable[[str], Mapping[str, float]]) -> Row:
    def errs(p: TuningProblem, keys: Sequence[str]) -> np.ndarray:
        out = np.zeros(p.n_utts, dtype=np.int64)
        for key in sorted(set(keys)):
            idx = np.array([i for i, x in enumerate(keys) if x == key])
            out[idx] = utterance_errors(p.subset(idx), pick(key))
        return out

    ed, et = errs(dev, kd), errs(test, kt)
    return Row(name, ed.sum() / dev.total_ref_length, et.sum() / test.total_ref_length, et)


def _adaptive_row(data: Data, dev: TuningProblem, test: TuningProblem, g: Mapping[str, float],
                  bounds: Mapping[str, tuple[float, float]], k: int, names: list[str]) -> Row:
    from fusion.weights import UtteranceContext

    fit = fit_adaptive(dev, data.dev_feats, names, g, bounds, k=k, seed=0)
    pol = fit.policy

    def errs(p: TuningProblem, nbs: list[NBestList], feats: list[dict[str, float]]) -> np.ndarray:
        ctxs = [UtteranceContext(nb.utt_id, nb.tags, features=f) for nb, f in zip(nbs, feats, strict=True)]
        ws = [pol.weights_for(c) for c in ctxs]
        return np.array([int(utterance_errors(p.subset([i]), w)[0]) for i, w in enumerate(ws)])

    ed, et = errs(dev, data.dev, data.dev_feats), errs(test, data.test, data.test_feats)
    note = f"l2={fit.l2:g}; slopes " + "; ".join(
        f"{c}: " + ",".join(f"{f}{v:+.2g}" for f, v in row.items()) for c, row in pol.slopes.items())
    return Row(f"adaptive ({', '.join(names)})", ed.sum() / dev.total_ref_length, et.sum() / test.total_ref_length,
               et, note)


def _report(rows: list[Row], test: TuningProblem, cv_rate: float, n_boot: int, cf: object) -> None:
    first, ref, glob = rows[0], rows[1], rows[2]
    oracle = test.oracle_error_rate()
    gap = first.test - oracle
    print(f"\n{'system':<48} {'dev WER':>8} {'test WER':>9} {'gap closed':>10}  vs reference [95% CI]; vs global")
    for r in rows:
        vs_ref = bootstrap_from_counts(ref.test_errs, r.test_errs, test.ref_lengths, n=n_boot, seed=0)
        vs_glob = bootstrap_from_counts(glob.test_errs, r.test_errs, test.ref_lengths, n=n_boot, seed=0)
        closed = (first.test - r.test) / gap if gap > 0 else float("nan")
        print(f"{r.name:<48} {100 * r.dev:>7.2f}% {100 * r.test:>8.2f}% {100 * closed:>9.0f}%  "
              f"{100 * vs_ref.delta:+.2f} [{100 * vs_ref.lo:+.2f}, {100 * vs_ref.hi:+.2f}]; "
              f"{100 * vs_glob.delta:+.2f} [{100 * vs_glob.lo:+.2f}, {100 * vs_glob.hi:+.2f}]  {r.note}")
    print(f"{'n-best oracle':<48} {'':>8} {100 * oracle:>8.2f}%")
    print(f"global smoothed: dev {100 * glob.dev:.2f}%, {5}-fold CV {100 * cv_rate:.2f}%, test {100 * glob.test:.2f}%")
    print(f"per-condition CV errors by kappa: {getattr(cf, 'cv_errors', {})}")


if __name__ == "__main__":
    run()

