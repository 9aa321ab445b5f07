"""ASR recipe stages that tune fusion weights (global and per condition, with cross-validated back-off)
and write the fusion profile. Each tuning result is the `lmfusion tune` report of its split
(:func:`recipes.commands.tune.split_report`).
"""

from __future__ import annotations

from collections import defaultdict
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


def cv_errors(nbs: Sequence[NBestList], comps: Sequence[str], cfg: Mapping[str, Any], base: Mapping[str, float],
              folds: int, seed: int) -> tuple[int, int, int]:  # fmt: skip
    """K-fold cross-validation on dev: ``(errors with weights tuned on the other folds, errors with
    ``base`` weights, reference words)``, summed over the held-out folds."""
    from decoders.nbest import to_tuning_problem
    from fusion.tuning import error_rate

    order = np.random.default_rng(seed).permutation(len(nbs))
    parts = [order[k::folds] for k in range(folds)]
    e_tuned = e_base = words = 0
    for k in range(folds):
        held = [nbs[i] for i in parts[k]]
        train = [nbs[i] for j, part in enumerate(parts) if j != k for i in part]
        if not held or not train:
            continue
        w = _tune_subset(train, comps, cfg, init=base, scale=cfg["tune"]["per_condition"] == "scale")["weights"]
        prob = to_tuning_problem(held, comps)
        n = prob.total_ref_length
        e_tuned += round(error_rate(prob, w) * n)
        e_base += round(error_rate(prob, base) * n)
        words += n
    return e_tuned, e_base, words


def stage_tune(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    """Global, then per domain / bucket / (domain, bucket) weights, each started from its parent's.

    With ``tune.cv_folds`` > 1 a condition keeps its own weights only if they beat its parent's in
    K-fold cross-validation on dev; otherwise it backs off to the parent's weights (recorded).
    """
    from decoders.nbest import to_tuning_problem
    from fusion.progress import progress_bar
    from fusion.tuning import error_rate

    p = recipe_paths(cfg)
    dev = read_nbest_jsonl(p["dev_rescored"])
    comps = tuned_components(cfg)
    min_utts = cfg["conditions"]["min_utts"]
    folds = cfg["tune"]["cv_folds"]
    out: dict[str, Any] = {"components": comps, "method": cfg["tune"]["method"], "cv_folds": folds}
    out["no_lm"] = _tune_subset(dev, ["am", "words"], cfg)
    glob = _tune_subset(dev, comps, cfg)
    out["global"] = glob
    groups: dict[tuple[str | None, str | None], list[NBestList]] = defaultdict(list)
    for nb in dev:
        d, b = domain_of(nb.tags, cfg), bucket_of(nb.tags, cfg)
        groups[(d, None)].append(nb)
        groups[(None, b)].append(nb)
        groups[(d, b)].append(nb)
    kept: dict[tuple[str | None, str | None], dict[str, float]] = {(None, None): glob["weights"]}
    conds = []
    # parents first: (d, *) and (*, b) before (d, b)
    todo = sorted((k for k in groups if k != (None, None)), key=lambda k: (k[0] is not None and k[1] is not None,
                                                                          k[0] or "", k[1] or ""))  # fmt: skip
    for d, b in progress_bar(todo, desc="tune per condition", progress=ctx.progress):
        nbs = groups[(d, b)]
        if len(nbs) < min_utts:
            continue
        parent_key = (d, None) if (d is not None and b is not None and (d, None) in kept) else (None, None)
        parent = kept[parent_key]
        r = _tune_subset(nbs, comps, cfg, init=parent, scale=cfg["tune"]["per_condition"] == "scale")
        prob = to_tuning_problem(nbs, comps)
        r["global_dev_wer"] = error_rate(prob, glob["weights"])
        r["parent"] = "/".join(x or "*" for x in parent_key)
        if folds > 1:
            e_t, e_p, n = cv_errors(nbs, comps, cfg, parent, folds, cfg["seed"])
            r["cv"] = {"folds": folds, "wer_own": e_t / n if n else None, "wer_parent": e_p / n if n else None,
                       "ref_words": n}
            if n and e_t >= e_p:  # own weights do not generalise: back off to the parent's
                r["tuned_weights"], r["weights"] = r["weights"], dict(parent)
                r["dev"]["error_rate"] = error_rate(prob, parent)
                r["backoff"] = True
        r.setdefault("backoff", False)
        kept[(d, b)] = r["weights"]
        conds.append({"domain": d, "bucket": b, **r})
    out["conditions"] = conds
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
