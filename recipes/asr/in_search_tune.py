"""The ASR recipe's ``in_search_tune`` stage: fusion weights tuned *in the search* on the dev audio.

Weights tuned on n-best lists do not carry over to fusion inside ``generate()`` (the open-word scorer,
``length_penalty=0`` and pruning change what a weight does), so this stage decodes the dev audio with
Whisper and the LMs inside the search at every point of a small grid (``in_search.grid``: values per free
weight, e.g. ``dlm`` and ``words``) plus plain Whisper (no LM), through the decode cache of
:mod:`recipes.asr.decode_cache` (resumable, encoder run once per utterance). From the cached decodes it
picks the point with the lowest dev WER globally, then per domain, per SNR bucket and per (domain, bucket),
each condition with ``conditions.min_utts`` utterances; with ``tune.cv_folds`` > 1 a condition keeps its own
point only if that beats its parent's in K-fold cross-validation on dev (as the n-best tuner,
:func:`recipes.asr.tune_stages.stage_tune`), else it backs off. Writes ``in_search_tuning.json`` (the
n-best tuner's form, plus the grid's dev WERs) and the fusion profile ``in_search_profile.json``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fusion.io import atomic_write_json, atomic_write_text
from fusion.weights import check_weights
from recipes.asr.make_audio import Utterance, read_manifest
from recipes.pipeline import StageContext

Cond = tuple[str | None, str | None]


def grid_points(grid: Mapping[str, Sequence[float]], components: Sequence[str]) -> list[dict[str, float]]:
    """Plain Whisper (``{"am": 1}``) first, then every combination of the grid's values (am fixed at 1)."""
    names = sorted(grid)
    check_weights({n: 0.0 for n in names}, components, where="in_search.grid")
    points = [{"am": 1.0}]
    for vals in itertools.product(*(grid[n] for n in names)):
        w = {"am": 1.0, **{n: float(v) for n, v in zip(names, vals, strict=True)}}
        if any(v != 0.0 for k, v in w.items() if k != "am") and w not in points:
            points.append(w)
    return points


def best_point(errors: np.ndarray, idx: Sequence[int]) -> int:
    """The grid point (row of ``errors [points, utts]``) with the fewest errors on ``idx``; ties: the first."""
    return int(np.argmin(errors[:, list(idx)].sum(axis=1)))


def cv_errors(errors: np.ndarray, idx: Sequence[int], parent: int, folds: int, seed: int) -> tuple[int, int]:
    """K-fold CV over ``idx``: ``(errors of the point picked on the other folds, errors of ``parent``)``,
    summed over the held-out folds."""
    order = np.asarray(idx)[np.random.default_rng(seed).permutation(len(idx))]
    parts = [order[k::folds] for k in range(folds)]
    e_own = e_parent = 0
    for k in range(folds):
        train = [i for j, part in enumerate(parts) if j != k for i in part]
        if not len(parts[k]) or not train:
            continue
        e_own += int(errors[best_point(errors, train), parts[k]].sum())
        e_parent += int(errors[parent, parts[k]].sum())
    return e_own, e_parent


def pick_weights(errors: np.ndarray, ref_words: np.ndarray, conds: Sequence[Cond],
                 points: Sequence[Mapping[str, float]], *, min_utts: int, folds: int,
                 seed: int) -> dict[str, Any]:  # fmt: skip
    """Global and per-condition grid points from the per-utterance errors of every point.

    ``conds[i]`` is utterance i's (domain, bucket). Conditions: (domain, *), (*, bucket), then (domain,
    bucket), whose parent is (domain, *); each needs ``min_utts`` utterances. Returns the tuning result in
    the n-best tuner's form (``global``, ``conditions`` with ``weights``, ``dev``, ``parent``, ``backoff``,
    ``cv``).
    """
    words = lambda idx: int(ref_words[list(idx)].sum())  # noqa: E731
    wer = lambda k, idx: float(errors[k, list(idx)].sum() / max(1, words(idx)))  # noqa: E731
    every = list(range(errors.shape[1]))
    g = best_point(errors, every)
    out: dict[str, Any] = {"global": {"weights": dict(points[g]), "point": g, "dev": {"error_rate": wer(g, every)}}}
    groups: dict[Cond, list[int]] = {}
    for i, (d, b) in enumerate(conds):
        for key in ((d, None), (None, b), (d, b)):
            groups.setdefault(key, []).append(i)
    kept: dict[Cond, int] = {(None, None): g}
    rows = []
    todo = sorted((k for k in groups if k != (None, None)), key=lambda k: (k[0] is not None and k[1] is not None,
                                                                          k[0] or "", k[1] or ""))  # fmt: skip
    for d, b in todo:
        idx = groups[(d, b)]
        if len(idx) < min_utts:
            continue
        parent_key: Cond = (d, None) if (d is not None and b is not None and (d, None) in kept) else (None, None)
        parent = kept[parent_key]
        own = best_point(errors, idx)
        r: dict[str, Any] = {"domain": d, "bucket": b, "parent": "/".join(x or "*" for x in parent_key),
                             "global_dev_wer": wer(g, idx), "point": own}  # fmt: skip
        r["backoff"] = False
        if folds > 1:
            e_own, e_parent = cv_errors(errors, idx, parent, folds, seed)
            n = words(idx)
            r["cv"] = {"folds": folds, "wer_own": e_own / n if n else None,
                       "wer_parent": e_parent / n if n else None, "ref_words": n}  # fmt: skip
            if n and e_own >= e_parent:  # its own point does not generalise: back off to the parent's
                r["tuned_weights"], r["point"], r["backoff"] = dict(points[own]), parent, True
        r["weights"] = dict(points[r["point"]])
        r["dev"] = {"error_rate": wer(r["point"], idx), "n_utts": len(idx), "ref_words": words(idx)}
        kept[(d, b)] = r["point"]
        rows.append(r)
    out["conditions"] = rows
    return out


def stage_in_search_tune(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    """Decode dev at every grid point (cached), pick the weights, write the tuning result and the profile."""
    from fusion.metrics import error_counts
    from recipes.asr.decode_cache import recipe_decoder, timing, weights_key
    from recipes.asr.settings import bucket_of, condition_tags, recipe_paths, tuned_components
    from recipes.asr.tune_stages import profile_from_tuning

    p = recipe_paths(cfg)
    opts = cfg["in_search"]
    dev: list[Utterance] = [u for u in read_manifest(p["audio"] / "manifest.jsonl") if u.split == "dev"]
    points = grid_points(opts["grid"], tuned_components(cfg))
    run, cache = recipe_decoder(cfg, "dev")
    # point by point: a cut-short run leaves whole points behind, and the encoder runs in the first one
    texts = run([(u, w) for w in points for u in dev], progress=ctx.progress, desc="in-search tune (dev)")
    refs = [u.text for u in dev]
    conds = [(u.domain, bucket_of(condition_tags(u, cfg), cfg)) for u in dev]
    errors = np.stack([error_counts(refs, [texts[(u.utt_id, weights_key(w))] for u in dev])[0] for w in points])
    ref_words = error_counts(refs, refs)[1]
    tuned = pick_weights(errors, ref_words, conds, points, min_utts=cfg["conditions"]["min_utts"],
                         folds=cfg["tune"]["cv_folds"], seed=cfg["seed"])  # fmt: skip
    tuned.update(components=tuned_components(cfg), method="grid over cached in-search decodes of the dev audio",
                 cv_folds=cfg["tune"]["cv_folds"], beam=opts["beam"], n_utts=len(dev),
                 grid=[{"weights": w, "dev_wer": float(errors[k].sum() / ref_words.sum())}
                       for k, w in enumerate(points)],
                 timing=timing(cache, {weights_key(w) for w in points}))  # fmt: skip
    atomic_write_json(p["in_search_tune"], tuned)
    atomic_write_text(p["in_search_tune"].with_suffix(".md"), grid_markdown(tuned))
    prof = profile_from_tuning(cfg, tuned, metric="WER on the dev audio, Whisper decoding with the LMs in the search",
                               method=tuned["method"], source=p["audio"] / "manifest.jsonl")  # fmt: skip
    prof.save(p["in_search_profile"])


def grid_markdown(tuned: Mapping[str, Any]) -> str:
    """The grid's dev WERs and the picked points per condition, as Markdown."""
    fmt = lambda w: ", ".join(f"{k} {v:g}" for k, v in w.items() if k != "am") or "no LM"  # noqa: E731
    lines = [f"In-search tuning on {tuned['n_utts']} dev utterances, beam {tuned['beam']}; WER %.", "",
             "| weights | dev WER |", "|---|---|"]  # fmt: skip
    lines += [f"| {fmt(r['weights'])} | {100 * r['dev_wer']:.1f} |" for r in tuned["grid"]]
    lines += ["", "| condition | picked | dev WER | CV own / parent | backed off |", "|---|---|---|---|---|"]
    g = tuned["global"]
    lines.append(f"| global | {fmt(g['weights'])} | {100 * g['dev']['error_rate']:.1f} | | |")
    for c in tuned["conditions"]:
        cv = c.get("cv") or {}
        cvs = f"{100 * cv['wer_own']:.1f} / {100 * cv['wer_parent']:.1f}" if cv.get("ref_words") else ""
        name = f"{c['domain'] or '*'}/{c['bucket'] or '*'}"
        lines.append(f"| {name} | {fmt(c['weights'])} | {100 * c['dev']['error_rate']:.1f} | {cvs} | {c['backoff']} |")
    return "\n".join(lines) + "\n"
