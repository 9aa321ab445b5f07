"""The ASR recipe's ``in_search_tune`` stage: fusion weights tuned *in the search* on the dev audio.

Weights tuned on n-best lists do not carry over to fusion inside ``generate()`` (the open-word scorer,
``length_penalty=0`` and pruning change what a weight does), so this stage decodes the dev audio with
Whisper and the LMs inside the search at every point of a small grid (``in_search.grid``: values per free
weight, e.g. ``dlm`` and ``words``) plus plain Whisper (no LM), through the decode cache of
:mod:`recipes.asr.decode_cache` (resumable, encoder run once per utterance). From the cached decodes it
picks the point with the lowest dev WER globally, then per domain, per SNR bucket and per (domain, bucket),
each condition with ``conditions.min_utts`` utterances; with ``tune.cv_folds`` > 1 a condition keeps its own
point only if that beats its parent's in K-fold cross-validation on dev (the walk of the n-best tuner,
:func:`fusion.tuning.walk.walk_conditions`), else it backs off. The same walk then picks a point per
bucket of the *blind* SNR estimate of each utterance's waveform (:func:`blind_bucket`: no condition tag
read), for the tags-free system of the ``in_search`` stage. Writes ``in_search_tuning.json`` (the n-best
tuner's form, plus the grid's dev WERs and ``blind_snr``), its Markdown, the fusion profile
``in_search_profile.json`` and the plot ``in_search_weights_by_snr.png`` (the picked weights against the
SNR bucket, true and estimated).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
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


class GridTuner:
    """The in-search side of :func:`fusion.tuning.walk.walk_conditions`: a subset's weights are the grid
    point with the fewest errors there (``errors [points, utts]``; ``init`` is not needed)."""

    def __init__(self, errors: np.ndarray, ref_words: np.ndarray, points: Sequence[Mapping[str, float]]) -> None:
        self.errors, self.words, self.points = errors, ref_words, [dict(w) for w in points]

    def point_of(self, weights: Mapping[str, float]) -> int:
        """The row of a grid point's weights."""
        return self.points.index(dict(weights))

    def ref_words(self, idx: Sequence[int]) -> int:
        return int(self.words[list(idx)].sum())

    def error_rate(self, idx: Sequence[int], weights: Mapping[str, float]) -> float:
        return float(self.errors[self.point_of(weights), list(idx)].sum() / max(1, self.ref_words(idx)))

    def fit(self, idx: Sequence[int], init: Mapping[str, float] | None) -> dict[str, Any]:
        w = self.points[best_point(self.errors, idx)]
        return {"weights": dict(w), "dev": {"error_rate": self.error_rate(idx, w), "n_utts": len(idx),
                                            "ref_words": self.ref_words(idx)}}  # fmt: skip


def pick_weights(errors: np.ndarray, ref_words: np.ndarray, conds: Sequence[Cond],
                 points: Sequence[Mapping[str, float]], *, min_utts: int, folds: int,
                 seed: int) -> dict[str, Any]:  # fmt: skip
    """Global and per-condition grid points from the per-utterance errors of every point.

    ``conds[i]`` is utterance i's (domain, bucket) (either may be ``None``: e.g. ``(None, blind bucket)``
    tunes per SNR bucket only). The walk over the conditions, their parents and the K-fold back-off is
    :func:`fusion.tuning.walk.walk_conditions`, as for the n-best tuner. Returns the tuning result in the
    n-best tuner's form (``global``, ``conditions`` with ``weights``, ``dev``, ``parent``, ``backoff``,
    ``cv``), plus each one's grid ``point`` (and ``tuned_point`` when backed off).
    """
    from fusion.tuning.walk import walk_conditions

    tuner = GridTuner(errors, ref_words, points)
    glob = tuner.fit(range(errors.shape[1]), None)
    rows = walk_conditions(tuner, conds, glob["weights"], min_utts=min_utts, folds=folds, seed=seed)
    for r in [glob, *rows]:
        r["point"] = tuner.point_of(r["weights"])
        if "tuned_weights" in r:
            r["tuned_point"] = tuner.point_of(r["tuned_weights"])
    return {"global": glob, "conditions": rows}


def blind_bucket(u: Utterance, cfg: Mapping[str, Any]) -> str | None:
    """The SNR bucket of an utterance's blind SNR estimate (:func:`recipes.asr.manifest_decode.blind_snr`
    of its waveform, the n-best lists' ``snr_est`` tag): no condition tag is read."""
    from recipes.asr.make_audio import read_wav
    from recipes.asr.manifest_decode import blind_snr
    from recipes.asr.settings import bucket_of

    return bucket_of({cfg["conditions"]["snr_tag"]: blind_snr(read_wav(u.wav))}, cfg)


def stage_in_search_tune(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    """Decode dev at every grid point (cached), pick the weights (by tags and by blind SNR), write the
    tuning result, the profile and the plot."""
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
    pick: dict[str, int] = {"min_utts": cfg["conditions"]["min_utts"], "folds": cfg["tune"]["cv_folds"],
                            "seed": cfg["seed"]}  # fmt: skip
    tuned = pick_weights(errors, ref_words, conds, points, **pick)
    blind = [blind_bucket(u, cfg) for u in dev]
    tuned["blind_snr"] = {
        "estimator": "frame-energy noise floor (recipes.asr.manifest_decode.blind_snr)",
        "conditions": pick_weights(errors, ref_words, [(None, b) for b in blind], points, **pick)["conditions"],
        "dev_buckets": bucket_agreement([c[1] for c in conds], blind),
    }  # fmt: skip
    tuned.update(components=tuned_components(cfg), method="grid over cached in-search decodes of the dev audio",
                 cv_folds=cfg["tune"]["cv_folds"], beam=opts["beam"], n_utts=len(dev),
                 grid=[{"weights": w, "dev_wer": float(errors[k].sum() / ref_words.sum())}
                       for k, w in enumerate(points)],
                 timing=timing(cache, {weights_key(w) for w in points}))  # fmt: skip
    atomic_write_json(p["in_search_tune"], tuned)
    plot = plot_in_search_weights(cfg, tuned, p["in_search_weights_plot"])
    atomic_write_text(p["in_search_tune"].with_suffix(".md"), grid_markdown(tuned) + f"\n![{plot.stem}]({plot.name})\n")
    prof = profile_from_tuning(cfg, tuned, metric="WER on the dev audio, Whisper decoding with the LMs in the search",
                               method=tuned["method"], source=p["audio"] / "manifest.jsonl")  # fmt: skip
    prof.save(p["in_search_profile"])


def bucket_agreement(true: Sequence[str | None], est: Sequence[str | None]) -> dict[str, Any]:
    """How often the blind estimate's bucket is the true one: ``{"agree": fraction, "counts": {"true->est": n}}``."""
    counts: dict[str, int] = {}
    for t, e in zip(true, est, strict=True):
        k = f"{t or '?'}->{e or '?'}"
        counts[k] = counts.get(k, 0) + 1
    agree = sum(t == e for t, e in zip(true, est, strict=True))
    return {"agree": agree / len(true) if true else None, "counts": dict(sorted(counts.items()))}


def plot_in_search_weights(cfg: Mapping[str, Any], tuned: Mapping[str, Any], path: Path) -> Path:
    """The in-search weights picked per SNR bucket (per domain and all domains, by the true bucket; all
    domains by the blind estimate's bucket; and, for all domains, each bucket's own pick before the CV
    back-off) against the bucket centre, the global pick dashed."""
    from recipes.asr.report import plot_weights_by_snr

    conds = tuned["conditions"]
    series = {f"{d} (true SNR)": [c for c in conds if c["domain"] == d and c["bucket"] is not None]
              for d in sorted({c["domain"] for c in conds if c["domain"] is not None})}  # fmt: skip
    series["all domains (true SNR)"] = [c for c in conds if c["domain"] is None and c["bucket"] is not None]
    blind = [c for c in tuned["blind_snr"]["conditions"] if c["bucket"]]
    series["all domains (blind SNR estimate)"] = blind
    # what each bucket picked on its own before the CV back-off: the trend the back-off did not trust
    own = lambda rows: [{**c, "weights": c.get("tuned_weights", c["weights"])} for c in rows]  # noqa: E731
    series["all domains (true SNR), own pick before back-off"] = own(series["all domains (true SNR)"])
    series["all domains (blind SNR), own pick before back-off"] = own(blind)
    comps = [c for c in tuned["components"] if c != "am"]
    return plot_weights_by_snr({k: v for k, v in series.items() if v}, tuned["global"]["weights"], comps,
                               cfg["conditions"]["buckets"], path, title="in-search weight")  # fmt: skip


def grid_markdown(tuned: Mapping[str, Any]) -> str:
    """The grid's dev WERs and the picked points per condition (by tags, then by blind SNR), as Markdown."""
    fmt = lambda w: ", ".join(f"{k} {v:g}" for k, v in w.items() if k != "am") or "no LM"  # noqa: E731
    lines = [f"In-search tuning on {tuned['n_utts']} dev utterances, beam {tuned['beam']}; WER %.", "",
             "| weights | dev WER |", "|---|---|"]  # fmt: skip
    lines += [f"| {fmt(r['weights'])} | {100 * r['dev_wer']:.1f} |" for r in tuned["grid"]]
    lines += ["", "| condition | picked | dev WER | CV own / parent | backed off |", "|---|---|---|---|---|"]
    g = tuned["global"]
    lines.append(f"| global | {fmt(g['weights'])} | {100 * g['dev']['error_rate']:.1f} | | |")
    blind = (tuned.get("blind_snr") or {}).get("conditions", [])
    for c in [*tuned["conditions"], *({**c, "blind": True} for c in blind)]:
        cv = c.get("cv") or {}
        cvs = f"{100 * cv['wer_own']:.1f} / {100 * cv['wer_parent']:.1f}" if cv.get("ref_words") else ""
        name = f"{c['domain'] or '*'}/{c['bucket'] or '*'}" + (" (blind SNR)" if c.get("blind") else "")
        lines.append(f"| {name} | {fmt(c['weights'])} | {100 * c['dev']['error_rate']:.1f} | {cvs} | {c['backoff']} |")
    if blind:
        agree = tuned["blind_snr"]["dev_buckets"]["agree"]
        lines += ["", f"The blind SNR estimate ({tuned['blind_snr']['estimator']}) puts {100 * agree:.0f}% of the dev "
                  "utterances in their true SNR bucket."]  # fmt: skip
    return "\n".join(lines) + "\n"
