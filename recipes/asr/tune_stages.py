"""ASR recipe stages that tune fusion weights (global and per condition, with cross-validated back-off)
and write the fusion profile. Each tuning result is the `lmfusion tune` report of its split
(:func:`recipes.commands.tune.split_report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decoders.hypothesis import NBestList, read_nbest_jsonl
from fusion.io import atomic_write_json, read_json
from fusion.profile import ConditionWeights, FusionProfile, default_buckets, now_iso
from recipes.asr.settings import (
    bucket_of,
    domain_of,
    recipe_paths,
    tuned_components,
)
from recipes.commands.tune import split_report
from recipes.pipeline import StageContext, hash_path

LENGTH = ("words", "tokens")


def _scaled_problem(prob: Any, base: Mapping[str, float]) -> Any:
    """Collapse the LM columns into one ``lm_scale`` column ``Σ_k base[k] * score_k`` (am, length kept)."""
    from fusion.tuning import TuningProblem

    comps = prob.components
    lm_idx = [i for i, c in enumerate(comps) if c != "am" and c not in LENGTH]
    keep = [i for i, c in enumerate(comps) if c == "am" or c in LENGTH]
    wv = np.array([float(base.get(comps[i], 0.0)) for i in lm_idx])
    feats = [np.column_stack([f[:, keep], f[:, lm_idx] @ wv]) for f in prob.feats]
    names = (*tuple(comps[i] for i in keep), "lm_scale")
    return TuningProblem(names, feats, prob.errors, prob.ref_lengths, prob.utt_ids)


def _tune_subset(nbs: Sequence[NBestList], comps: Sequence[str], cfg: Mapping[str, Any],
                 init: Mapping[str, float] | None = None, *, scale: bool = False) -> dict[str, Any]:  # fmt: skip
    """Tune on some lists (am fixed at 1). With ``scale``: only one factor on all LM weights of ``init``
    (the LM scale) and the length bonus are free, which needs far less data than every weight."""
    from decoders.nbest import to_tuning_problem
    from fusion.tuning import tune

    prob = to_tuning_problem(nbs, comps)
    bounds = {k: tuple(v) for k, v in cfg["tune"]["bounds"].items() if k in comps and k != "am"}
    init = {k: v for k, v in (init or {}).items() if k in comps and k != "am"}
    if scale and init:
        sp = _scaled_problem(prob, init)
        lb = {k: v for k, v in bounds.items() if k in sp.components}
        lb["lm_scale"] = tuple(cfg["tune"]["scale_bounds"])
        sinit = {**{k: v for k, v in init.items() if k in sp.components}, "lm_scale": 1.0}
        res = tune(sp, cfg["tune"]["method"], fixed={"am": 1.0}, bounds=lb, init=sinit, seed=cfg["seed"])
        a = res.weights["lm_scale"]
        weights = {"am": 1.0, **{k: (v if k in LENGTH else a * v) for k, v in init.items()}}
        for k in sp.components:
            if k in LENGTH:
                weights[k] = res.weights[k]
        extra: dict[str, Any] = {"lm_scale": a}
        start = {"am": 1.0, **init}  # lm_scale 1 on the parent's weights
    else:
        res = tune(prob, cfg["tune"]["method"], fixed={"am": 1.0}, bounds=bounds, init=init or None, seed=cfg["seed"])
        weights, extra, start = res.weights, {}, res.start_weights
    return {"weights": weights, "dev": split_report(prob, weights, start), **extra}


class NBestTuner:
    """The n-best side of :func:`fusion.tuning.walk.walk_conditions`: MERT (or the configured method) on the
    dev n-best lists ``nbs``, scored by their WER (see :func:`_tune_subset`)."""

    def __init__(self, nbs: Sequence[NBestList], comps: Sequence[str], cfg: Mapping[str, Any]) -> None:
        self.nbs, self.comps, self.cfg = list(nbs), list(comps), cfg
        self.scale = cfg["tune"]["per_condition"] == "scale"
        self._problems: dict[tuple[int, ...], Any] = {}

    def _problem(self, idx: Sequence[int]) -> Any:
        from decoders.nbest import to_tuning_problem

        key = tuple(idx)
        if key not in self._problems:
            if len(self._problems) > 64:
                self._problems.clear()
            self._problems[key] = to_tuning_problem([self.nbs[i] for i in idx], self.comps)
        return self._problems[key]

    def fit(self, idx: Sequence[int], init: Mapping[str, float] | None) -> dict[str, Any]:
        return _tune_subset([self.nbs[i] for i in idx], self.comps, self.cfg, init=init, scale=self.scale)

    def error_rate(self, idx: Sequence[int], weights: Mapping[str, float]) -> float:
        from fusion.tuning import error_rate

        return float(error_rate(self._problem(idx), weights))

    def ref_words(self, idx: Sequence[int]) -> int:
        return int(self._problem(idx).total_ref_length)


def stage_tune(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    """Global, then per domain / bucket / (domain, bucket) weights, each started from its parent's.

    With ``tune.cv_folds`` > 1 a condition keeps its own weights only if they beat its parent's in
    K-fold cross-validation on dev; otherwise it backs off to the parent's weights (recorded). The walk
    over the conditions is :func:`fusion.tuning.walk.walk_conditions` (shared with the in-search tuner).
    """
    from fusion.tuning.walk import walk_conditions

    p = recipe_paths(cfg)
    dev = read_nbest_jsonl(p["dev_rescored"])
    comps = tuned_components(cfg)
    folds = cfg["tune"]["cv_folds"]
    out: dict[str, Any] = {"components": comps, "method": cfg["tune"]["method"], "cv_folds": folds}
    out["no_lm"] = _tune_subset(dev, ["am", "words"], cfg)
    glob = _tune_subset(dev, comps, cfg)
    out["global"] = glob
    conds = [(domain_of(nb.tags, cfg), bucket_of(nb.tags, cfg)) for nb in dev]
    out["conditions"] = walk_conditions(NBestTuner(dev, comps, cfg), conds, glob["weights"],
                                        min_utts=cfg["conditions"]["min_utts"], folds=folds, seed=cfg["seed"],
                                        progress=ctx.progress)  # fmt: skip
    atomic_write_json(p["tune"], out)


def stage_profile(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    p = recipe_paths(cfg)
    tuned = read_json(p["tune"])
    prof = profile_from_tuning(cfg, tuned, metric="WER (word edit distance / reference words) on the dev n-best lists",
                               method=f"{tuned['method']} over cached n-best scores, am fixed at 1",
                               source=p["dev_nbest"])  # fmt: skip
    prof.save(p["profile"])


def profile_from_tuning(cfg: Mapping[str, Any], tuned: Mapping[str, Any], *, metric: str, method: str,
                        source: Path) -> FusionProfile:  # fmt: skip
    """The fusion profile of a tuning result (``global`` + ``conditions``, as :func:`stage_tune` writes
    them; the in-search tuner writes the same form), with the EM interpolation weights of each domain."""
    p = recipe_paths(cfg)
    em = read_json(p["em"])
    interp = {dom: v["weights"] for dom, v in em.items()}

    def measured(r: Mapping[str, Any]) -> dict[str, Any]:
        keys = ("dev", "global_dev_wer", "parent", "backoff", "cv")
        return {k: r[k] for k in keys if k in r}

    conds = tuple(
        ConditionWeights(
            fusion=c["weights"],
            interpolation=interp.get(c["domain"], {}) if c["domain"] else {},
            domain=c["domain"],
            bucket=c["bucket"],
            measured=measured(c),
        )
        for c in tuned["conditions"]
    )
    return FusionProfile(
        default=ConditionWeights(tuned["global"]["weights"], measured=measured(tuned["global"])),
        buckets=default_buckets(cfg["conditions"]["buckets"]),
        conditions=conds,
        name=cfg["name"],
        domain_tag=cfg["conditions"]["domain_tag"],
        snr_tag=cfg["conditions"]["snr_tag"],
        provenance={
            "created": now_iso(),
            "metric": metric,
            "method": method,
            "components": tuned["components"],
            "dev_data": {"path": str(source), "sha1": hash_path(source) if source.exists() else None},
            "interpolation": "EM on each domain's held-out text: " + ", ".join(
                f"{d}: {v['heldout']}" for d, v in em.items()),
            "lms": {d: str(p["lms"] / f"{d}.bin") for d in [*cfg["text"]["domains"], "general"]},
            "min_utts_per_condition": cfg["conditions"]["min_utts"],
            "tool": "lmfusion recipes.asr.run",
        },
    )  # fmt: skip
