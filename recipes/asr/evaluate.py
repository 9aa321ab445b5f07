"""ASR recipe evaluation: test WER per condition and system with paired bootstrap CIs; a test/train overlap check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decoders.hypothesis import NBestList, read_nbest_jsonl
from fusion.io import atomic_write_json, read_json, read_sentences
from fusion.profile import FusionProfile
from recipes.asr.settings import (
    bucket_of,
    domain_of,
    general_files,
    recipe_paths,
    text_files,
)
from recipes.pipeline import StageContext


def _system_hyps(nbs: Sequence[NBestList], cfg: Mapping[str, Any], prof: FusionProfile,
                 tuned: Mapping[str, Any]) -> dict[str, list[str]]:  # fmt: skip
    from decoders.nbest import apply_weights
    from fusion.metrics import edit_distance, units_of

    systems: dict[str, list[str]] = {}
    systems["recogniser 1-best"] = [
        str(nb.tags.get("decoder_1best", nb.hyps[0].text if nb.hyps else "")) for nb in nbs
    ]
    systems["no LM (am + word bonus)"] = apply_weights(nbs, tuned["no_lm"]["weights"])
    systems["global weights"] = apply_weights(nbs, tuned["global"]["weights"])
    by_tag, by_est = [], []
    for nb in nbs:
        by_tag.extend(apply_weights([nb], prof.select(nb.tags).fusion))
        est = nb.tags.get("snr_est")
        dom_only = {k: v for k, v in nb.tags.items() if k != prof.snr_tag}
        w = prof.select(dom_only, snr=float(est)).fusion if est is not None else prof.select(dom_only).fusion
        by_est.extend(apply_weights([nb], w))
    systems["per-condition (tags)"] = by_tag
    if any("snr_est" in nb.tags for nb in nbs):
        systems["per-condition (estimated SNR)"] = by_est
    oracle = []
    for nb in nbs:
        ref = units_of(nb.ref or "")
        oracle.append(min(nb.hyps, key=lambda h: edit_distance(ref, units_of(h.text))).text if nb.hyps else "")
    systems["n-best oracle"] = oracle
    return systems

def check_overlap(test_refs: Sequence[str], train_files: Sequence[Path], n: int = 5) -> dict[str, Any]:
    """How many test sentences occur verbatim in the LM training text, and the test n-gram overlap rate."""
    train_sents: set[str] = set()
    train_ngrams: set[tuple[str, ...]] = set()
    for f in train_files:
        for s in read_sentences(f):
            train_sents.add(s)
            w = s.split()
            train_ngrams.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    refs = sorted(set(test_refs))
    exact = [r for r in refs if r in train_sents]
    total = hit = 0
    for r in refs:
        w = r.split()
        for i in range(len(w) - n + 1):
            total += 1
            hit += tuple(w[i : i + n]) in train_ngrams
    return {"test_sentences": len(refs), "in_training_text": len(exact), "examples": exact[:5],
            f"test_{n}gram_overlap": hit / total if total else 0.0, "ngram_order": n}  # fmt: skip

def stage_evaluate(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from fusion.metrics import error_counts, paired_bootstrap

    p = recipe_paths(cfg)
    test = read_nbest_jsonl(p["test_rescored"])
    prof = FusionProfile.load(p["profile"])
    tuned = read_json(p["tune"])
    systems = _system_hyps(test, cfg, prof, tuned)
    refs = [nb.ref or "" for nb in test]
    conds = [(domain_of(nb.tags, cfg) or "?", bucket_of(nb.tags, cfg) or "?") for nb in test]
    errs = {name: error_counts(refs, hyps)[0] for name, hyps in systems.items()}
    lens = error_counts(refs, refs)[1]
    keys = sorted(set(conds), key=lambda c: (c[0], -cfg["conditions"]["buckets"].get(c[1], -1e9)))
    table: dict[str, dict[str, Any]] = {}
    B = cfg["evaluate"]["bootstrap"]
    for key in [*keys, ("all", "all")]:
        idx = [i for i, c in enumerate(conds) if key == ("all", "all") or c == key]
        row: dict[str, Any] = {"n_utts": len(idx), "ref_words": int(lens[idx].sum())}
        for name in systems:
            row[name] = float(errs[name][idx].sum() / max(1, lens[idx].sum()))
        sub = [refs[i] for i in idx]
        bs = paired_bootstrap(sub, [systems["global weights"][i] for i in idx],
                              [systems["per-condition (tags)"][i] for i in idx], n=B, seed=cfg["seed"])  # fmt: skip
        row["per-condition minus global"] = {"delta": bs.delta, "lo": bs.lo, "hi": bs.hi,
                                             "p_not_better": bs.p_b_not_better}  # fmt: skip
        bs2 = paired_bootstrap(sub, [systems["recogniser 1-best"][i] for i in idx],
                               [systems["global weights"][i] for i in idx], n=B, seed=cfg["seed"])  # fmt: skip
        row["global minus 1-best"] = {"delta": bs2.delta, "lo": bs2.lo, "hi": bs2.hi,
                                      "p_not_better": bs2.p_b_not_better}  # fmt: skip
        gap = row["recogniser 1-best"] - row["n-best oracle"]
        row["gap closed"] = {
            name: (row["recogniser 1-best"] - row[name]) / gap if gap > 0 else None
            for name in ("global weights", "per-condition (tags)", "per-condition (estimated SNR)") if name in row
        }
        table["/".join(key)] = row
    overlap = check_overlap(refs, list(dict.fromkeys([*text_files(cfg, "train").values(), *general_files(cfg)])))
    st = cfg["conditions"]["snr_tag"]
    snr_err = [abs(float(nb.tags["snr_est"]) - float(nb.tags[st]))
               for nb in test if "snr_est" in nb.tags and _is_number(nb.tags.get(st))]  # fmt: skip
    atomic_write_json(p["eval"], {
        "systems": list(systems), "table": table, "overlap": overlap,
        "snr_estimate_abs_error_db": {"mean": float(np.mean(snr_err)), "n": len(snr_err)} if snr_err else None,
    })  # fmt: skip

def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
