"""The ASR recipe: per-domain LMs, EM mixes, fusion weights per condition, evaluation, a fusion profile.

Driven by one YAML config (``recipes/configs/asr.yaml``, ``recipes/configs/demo.yaml``); each stage is
skipped when its inputs and parameters are unchanged (:mod:`recipes.pipeline`):

0. ``audio`` (optional, ``audio.enabled``): flite voices x speeds, pink/babble noise by sox at the
   configured SNRs, decoded by pocketsphinx into n-best lists with separate ``am``/``lm`` scores;
1. ``build_lms``: a KenLM per domain (lmplz), a general KenLM over all domains' training text, a
   sentencepiece model and (``lms.neural.enabled``) a neural LM, all from plain text;
2. ``interpolate``: EM weights of (in-domain, general) on each domain's held-out text;
3. ``rescore``: every hypothesis gets ``dlm`` = ln P under its domain's mix (and ``nnlm``);
4. ``tune``: fusion weights (am fixed at 1) globally, per domain, per noise bucket and per
   (domain, bucket) on the dev lists; a no-LM baseline (am + word bonus);
5. ``profile``: the versioned fusion profile (conditions, interpolation + fusion weights, how measured);
6. ``evaluate``: test WER per condition for the recogniser's 1-best, no LM, global weights,
   per-condition weights (chosen by tags, and by the blind SNR estimate), and the n-best oracle,
   with paired bootstrap CIs; an overlap check of test sentences against the LM training text;
7. ``report``: Markdown + PNG plots.

Components: ``am`` (acoustic), ``lm`` (the recogniser's own LM), ``dlm`` (the domain mix), ``nnlm``
(neural, optional), ``words`` (word count, for the word bonus).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decoders.hypothesis import NBestList, read_nbest_jsonl, write_nbest_jsonl
from fusion.errors import LMFusionError
from fusion.io import atomic_write_json, atomic_write_text, read_json, read_sentences
from fusion.profile import ConditionWeights, FusionProfile, default_buckets, now_iso
from recipes.config import Field, load_config, non_empty, positive
from recipes.pipeline import Pipeline, Stage, StageContext, hash_path

# ----------------------------------------------------------------------------------------------
# Config schema
# ----------------------------------------------------------------------------------------------

def _bounds_check(v: Any) -> str | None:
    for k, b in v.items():
        if not (isinstance(b, list) and len(b) == 2 and all(isinstance(x, (int, float)) for x in b) and b[0] <= b[1]):
            return f"bounds of {k!r} must be [lo, hi] numbers with lo <= hi, got {b!r}"
    return None

def _buckets_check(v: Any) -> str | None:
    if not v:
        return "needs at least one bucket"
    for k, c in v.items():
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            return f"bucket {k!r}: centre must be a number (dB), got {c!r}"
    return None

SCHEMA: dict[str, Field] = {
    "name": Field(str, "asr"),
    "work_dir": Field(str, doc="where every output goes"),
    "seed": Field(int, 0),
    "text": Field(schema={
        "dir": Field(str, "data/text"),
        "domains": Field(list, items=Field(str), check=non_empty, doc="domain names: <dir>/<domain>.train.txt ..."),
        "train": Field(str, "{domain}.train.txt"),
        "heldout": Field(str, "{domain}.dev.txt"),
        "general": Field(list, [], items=Field(str),
                         doc="text files of the general LM (default: every domain's training text)"),
    }),
    "audio": Field(schema={
        "enabled": Field(bool, False),
        "per_split": Field(int, 30, check=positive),
        "snrs": Field(list, ["clean", "30", "20", "15"], items=Field(str)),
        "voices": Field(list, ["slt", "rms", "awb", "kal16"], items=Field(str)),
        "nbest": Field(int, 20, check=positive),
    }),
    "nbest": Field(schema={
        "dev": Field(str, doc="dev n-best JSONL (ignored when audio.enabled)"),
        "test": Field(str, doc="test n-best JSONL (ignored when audio.enabled)"),
        "max_hyps": Field(int, 20, check=positive),
    }),
    "lms": Field(schema={
        "order": Field(int, 3, check=positive),
        "spm_vocab": Field(int, 800, check=positive),
        "neural": Field(schema={
            "enabled": Field(bool, False),
            "arch": Field(str, "lstm", choices=("lstm", "transformer")),
            "emb": Field(int, 64, check=positive),
            "hidden": Field(int, 128, check=positive),
            "epochs": Field(int, 1, check=positive),
            "max_steps": Field(int, 300, check=positive),
            "batch_tokens": Field(int, 4096, check=positive),
        }),
    }),
    "conditions": Field(schema={
        "domain_tag": Field(str, "domain"),
        "snr_tag": Field(str, "snr"),
        "buckets": Field(dict, {"15": 15.0, "20": 20.0, "30": 30.0, "clean": 45.0}, values=Field(float),
                         check=_buckets_check, doc="noise bucket name -> nominal SNR (dB)"),
        "min_utts": Field(int, 10, check=positive),
    }),
    "tune": Field(schema={
        "method": Field(str, "mert", choices=("mert", "grid", "coordinate", "optuna")),
        "free": Field(list, ["lm", "dlm", "words"], items=Field(str), check=non_empty),
        "per_condition": Field(str, "scale", choices=("scale", "full"),
                               doc="per condition tune an LM scale + word bonus (scale) or every weight (full)"),
        "scale_bounds": Field(list, [0.0, 4.0], items=Field(float)),
        "cv_folds": Field(int, 5, doc="K-fold CV on dev decides if a condition keeps its own weights (<2: always)"),
        "bounds": Field(dict, {"lm": [0, 40], "dlm": [0, 40], "nnlm": [0, 40], "words": [-40, 40]},
                        check=_bounds_check),
    }),
    "evaluate": Field(schema={
        "bootstrap": Field(int, 1000, check=positive),
    }),
}

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def _paths(cfg: Mapping[str, Any]) -> dict[str, Path]:
    w = Path(cfg["work_dir"])
    p = {
        "work": w,
        "lms": w / "lms",
        "em": w / "interpolation.json",
        "dev_rescored": w / "rescored" / "dev.jsonl",
        "test_rescored": w / "rescored" / "test.jsonl",
        "tune": w / "tuning.json",
        "profile": w / "profile.json",
        "eval": w / "evaluation.json",
        "report": w / "report.md",
        "audio": w / "audio",
        "nbest_dir": w / "nbest",
    }
    if cfg["audio"]["enabled"]:
        p["dev_nbest"] = p["nbest_dir"] / "dev.jsonl"
        p["test_nbest"] = p["nbest_dir"] / "test.jsonl"
    else:
        p["dev_nbest"] = Path(cfg["nbest"]["dev"])
        p["test_nbest"] = Path(cfg["nbest"]["test"])
    return p

def _text_files(cfg: Mapping[str, Any], key: str) -> dict[str, Path]:
    d = Path(cfg["text"]["dir"])
    return {dom: d / cfg["text"][key].format(domain=dom) for dom in cfg["text"]["domains"]}

def _general_files(cfg: Mapping[str, Any]) -> list[Path]:
    return [Path(f) for f in cfg["text"]["general"]] or list(_text_files(cfg, "train").values())


def _bucket_of(tags: Mapping[str, Any], cfg: Mapping[str, Any]) -> str | None:
    v = tags.get(cfg["conditions"]["snr_tag"])
    if v is None:
        return None
    buckets = cfg["conditions"]["buckets"]
    if str(v) in buckets:
        return str(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    for b in default_buckets(buckets):
        if b.contains(x):
            return b.name
    return None

def _domain_of(tags: Mapping[str, Any], cfg: Mapping[str, Any]) -> str | None:
    v = tags.get(cfg["conditions"]["domain_tag"])
    return None if v is None else str(v)

def _components(cfg: Mapping[str, Any]) -> list[str]:
    free = list(cfg["tune"]["free"])
    if cfg["lms"]["neural"]["enabled"] and "nnlm" not in free:
        free.append("nnlm")
    if not cfg["lms"]["neural"]["enabled"] and "nnlm" in free:
        free.remove("nnlm")
    return ["am", *free]

# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------
def stage_audio(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from recipes.asr.decode_pocketsphinx import decode_manifest
    from recipes.asr.make_audio import plan_utterances, render, write_manifest

    p = _paths(cfg)
    a = cfg["audio"]
    text_dir = Path(cfg["text"]["dir"])
    utts = plan_utterances(text_dir, cfg["text"]["domains"], ["dev", "test"], a["per_split"], p["audio"],
                           voices=a["voices"], snrs=a["snrs"])  # fmt: skip
    babble = [s for f in _text_files(cfg, "train").values() for s in read_sentences(f)[:40]]
    render(utts, p["audio"], babble, progress=ctx.progress)
    write_manifest(utts, p["audio"] / "manifest.jsonl")
    p["nbest_dir"].mkdir(parents=True, exist_ok=True)
    for split in ("dev", "test"):
        part = p["nbest_dir"] / f"{split}.partial.jsonl"
        decode_manifest(p["audio"] / "manifest.jsonl", part, n=a["nbest"], splits=[split], progress=ctx.progress)
        part.replace(p[f"{split}_nbest"])

def stage_build_lms(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from fusion.ngram import build_ngram
    from fusion.tokenizers import train_sentencepiece

    p = _paths(cfg)
    out = p["lms"]
    out.mkdir(parents=True, exist_ok=True)
    train = _text_files(cfg, "train")
    order = cfg["lms"]["order"]
    for dom, f in train.items():
        key = f"kenlm:{dom}"
        if not ctx.is_done(key):
            build_ngram([f], out / f"{dom}.bin", order=order, progress=ctx.progress)
            ctx.mark_done(key)
    if not ctx.is_done("kenlm:general"):
        build_ngram(_general_files(cfg), out / "general.bin", order=order, progress=ctx.progress)
        ctx.mark_done("kenlm:general")
    if not ctx.is_done("spm"):
        train_sentencepiece(list(train.values()), out / "spm", vocab_size=cfg["lms"]["spm_vocab"])
        ctx.mark_done("spm")
    nn = cfg["lms"]["neural"]
    if nn["enabled"] and not ctx.is_done("nnlm"):
        import torch

        from fusion.nnlm_train import TrainConfig, train_nnlm

        torch.set_num_threads(1)
        model = {"arch": nn["arch"]}
        if nn["arch"] == "lstm":
            model.update(emb=nn["emb"], hidden=nn["hidden"])
        else:
            model.update(d_model=nn["emb"], d_ff=nn["hidden"] * 2)
        train_nnlm(TrainConfig(
            text=[str(f) for f in train.values()], dev=[str(f) for f in _text_files(cfg, "heldout").values()],
            spm=str(out / "spm.model"), output=str(out / "nnlm"), model=model, epochs=nn["epochs"],
            max_steps=nn["max_steps"], batch_tokens=nn["batch_tokens"], seed=cfg["seed"], threads=1,
            progress=ctx.progress, name="nnlm",
        ))  # fmt: skip
        ctx.mark_done("nnlm")
    atomic_write_json(out / "manifest.json", {"domains": list(train), "order": order, "neural": nn["enabled"]})

def _load_kenlms(cfg: Mapping[str, Any]) -> dict[str, Any]:
    from fusion.ngram import KenLM

    d = _paths(cfg)["lms"]
    lms = {dom: KenLM(d / f"{dom}.bin", name=dom) for dom in cfg["text"]["domains"]}
    lms["general"] = KenLM(d / "general.bin", name="general")
    return lms

def stage_interpolate(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from fusion.em import estimate_weights

    lms = _load_kenlms(cfg)
    out: dict[str, Any] = {}
    for dom, f in _text_files(cfg, "heldout").items():
        est = estimate_weights([lms[dom], lms["general"]], f, oov="skip")  # as the published demo ran
        out[dom] = {"weights": est.weights, "ppl": est.ppl, "heldout": str(f), "n_sentences": est.n_sentences,
                    "iterations": est.iterations}  # fmt: skip
    atomic_write_json(_paths(cfg)["em"], out)

def _mixes(cfg: Mapping[str, Any]) -> dict[str | None, Any]:
    from fusion.interpolate import LinearInterpolation

    lms = _load_kenlms(cfg)
    em = read_json(_paths(cfg)["em"])
    mixes: dict[str | None, Any] = {
        dom: LinearInterpolation([lms[dom], lms["general"]], em[dom]["weights"], name="dlm")
        for dom in cfg["text"]["domains"]
    }
    mixes[None] = lms["general"]  # utterances of an unknown domain: the general LM
    return mixes

def load_lists(path: Path, max_hyps: int) -> list[NBestList]:
    """Read n-best JSONL, keeping the first ``max_hyps`` hypotheses of each list (with a warning naming how
    many lists were cut, and their longest length: raise ``nbest.max_hyps`` to keep them whole)."""
    import warnings

    lists = read_nbest_jsonl(path)
    cut = [len(nb.hyps) for nb in lists if len(nb.hyps) > max_hyps]
    if cut:
        warnings.warn(
            f"{path}: nbest.max_hyps={max_hyps} cuts {len(cut)} of {len(lists)} lists (up to {max(cut)} "
            "hypotheses); raise nbest.max_hyps to keep them whole",
            stacklevel=2,
        )
    return [NBestList(nb.utt_id, nb.hyps[:max_hyps], nb.ref, nb.tags) for nb in lists]

def stage_rescore(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from decoders.nbest import rescore

    p = _paths(cfg)
    mixes = _mixes(cfg)
    nnlm = None
    if cfg["lms"]["neural"]["enabled"]:
        from fusion.loading import load_lm

        nnlm = load_lm(p["lms"] / "nnlm", name="nnlm")
    for split in ("dev", "test"):
        nbs = load_lists(p[f"{split}_nbest"], cfg["nbest"]["max_hyps"])
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, nb in enumerate(nbs):
            dom = _domain_of(nb.tags, cfg)
            groups[dom if dom in mixes else None].append(i)
        out: list[NBestList | None] = [None] * len(nbs)
        for dom, idx in groups.items():
            lms = {"dlm": mixes[dom]}
            if nnlm is not None:
                lms["nnlm"] = nnlm
            for i, nb in zip(idx, rescore([nbs[i] for i in idx], lms, progress=ctx.progress), strict=True):
                out[i] = nb
        write_nbest_jsonl(p[f"{split}_rescored"], [nb for nb in out if nb is not None])

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
    else:
        res = tune(prob, cfg["tune"]["method"], fixed={"am": 1.0}, bounds=bounds, init=init or None, seed=cfg["seed"])
        weights, extra = res.weights, {}
    from fusion.tuning import error_rate

    return {"weights": weights, "dev_wer": error_rate(prob, weights), "n_utts": len(nbs),
            "start_dev_wer": res.start_error_rate, "oracle_dev_wer": prob.oracle_error_rate(), **extra}  # fmt: skip


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
    from tqdm import tqdm

    from decoders.nbest import to_tuning_problem
    from fusion.tuning import error_rate

    p = _paths(cfg)
    dev = read_nbest_jsonl(p["dev_rescored"])
    comps = _components(cfg)
    min_utts = cfg["conditions"]["min_utts"]
    folds = cfg["tune"]["cv_folds"]
    out: dict[str, Any] = {"components": comps, "method": cfg["tune"]["method"], "cv_folds": folds}
    out["no_lm"] = _tune_subset(dev, ["am", "words"], cfg)
    glob = _tune_subset(dev, comps, cfg)
    out["global"] = glob
    groups: dict[tuple[str | None, str | None], list[NBestList]] = defaultdict(list)
    for nb in dev:
        d, b = _domain_of(nb.tags, cfg), _bucket_of(nb.tags, cfg)
        groups[(d, None)].append(nb)
        groups[(None, b)].append(nb)
        groups[(d, b)].append(nb)
    kept: dict[tuple[str | None, str | None], dict[str, float]] = {(None, None): glob["weights"]}
    conds = []
    # parents first: (d, *) and (*, b) before (d, b)
    todo = sorted((k for k in groups if k != (None, None)), key=lambda k: (k[0] is not None and k[1] is not None,
                                                                          k[0] or "", k[1] or ""))  # fmt: skip
    for d, b in tqdm(todo, desc="tune per condition", disable=not ctx.progress):
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
            r["cv"] = {"folds": folds, "wer_own": e_t / n, "wer_parent": e_p / n, "ref_words": n}
            if e_t >= e_p:  # own weights do not generalise: back off to the parent's
                r["tuned_weights"], r["weights"] = r["weights"], dict(parent)
                r["dev_wer"] = error_rate(prob, parent)
                r["backoff"] = True
        r.setdefault("backoff", False)
        kept[(d, b)] = r["weights"]
        conds.append({"domain": d, "bucket": b, **r})
    out["conditions"] = conds
    atomic_write_json(p["tune"], out)


def stage_profile(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    p = _paths(cfg)
    tuned = read_json(p["tune"])
    em = read_json(p["em"])
    interp = {dom: v["weights"] for dom, v in em.items()}

    def measured(r: Mapping[str, Any]) -> dict[str, Any]:
        keys = ("dev_wer", "global_dev_wer", "oracle_dev_wer", "n_utts", "parent", "backoff", "cv")
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
    prof = FusionProfile(
        default=ConditionWeights(tuned["global"]["weights"], measured=measured(tuned["global"])),
        buckets=default_buckets(cfg["conditions"]["buckets"]),
        conditions=conds,
        name=cfg["name"],
        domain_tag=cfg["conditions"]["domain_tag"],
        snr_tag=cfg["conditions"]["snr_tag"],
        provenance={
            "created": now_iso(),
            "metric": "WER (word edit distance / reference words) on the dev n-best lists",
            "method": f"{tuned['method']} over cached n-best scores, am fixed at 1",
            "components": tuned["components"],
            "dev_nbest": {"path": str(p["dev_nbest"]),
                          "sha1": hash_path(p["dev_nbest"]) if p["dev_nbest"].exists() else None},
            "interpolation": "EM on each domain's held-out text: " + ", ".join(
                f"{d}: {v['heldout']}" for d, v in em.items()),
            "lms": {d: str(p["lms"] / f"{d}.bin") for d in [*cfg["text"]["domains"], "general"]},
            "min_utts_per_condition": cfg["conditions"]["min_utts"],
            "tool": "lmfusion recipes.asr.run",
        },
    )  # fmt: skip
    prof.save(p["profile"])

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

    p = _paths(cfg)
    test = read_nbest_jsonl(p["test_rescored"])
    prof = FusionProfile.load(p["profile"])
    tuned = read_json(p["tune"])
    systems = _system_hyps(test, cfg, prof, tuned)
    refs = [nb.ref or "" for nb in test]
    conds = [(_domain_of(nb.tags, cfg) or "?", _bucket_of(nb.tags, cfg) or "?") for nb in test]
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
    overlap = check_overlap(refs, list(dict.fromkeys([*_text_files(cfg, "train").values(), *_general_files(cfg)])))
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

# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"

def wer_table_markdown(ev: Mapping[str, Any]) -> str:
    """The WER table (per condition and overall) as Markdown."""
    systems = ev["systems"]
    head = "| condition | utts | " + " | ".join(systems) + " | gap closed (global / per-cond) |"
    lines = [head, "|" + "---|" * (len(systems) + 3)]
    for key, row in ev["table"].items():
        gc = row["gap closed"]
        gap = " / ".join(
            _pct(gc.get(k)) + ("" if gc.get(k) is None else "%") for k in ("global weights", "per-condition (tags)")
        )
        cells = " | ".join(_pct(row[s]) for s in systems)
        name = f"**{key}**" if key == "all/all" else key
        lines.append(f"| {name} | {row['n_utts']} | {cells} | {gap} |")
    return "\n".join(lines)

def plot_report(cfg: Mapping[str, Any], ev: Mapping[str, Any], tuned: Mapping[str, Any], out_dir: Path) -> list[Path]:
    from fusion.plots import _pyplot

    plt = _pyplot()
    buckets = cfg["conditions"]["buckets"]
    paths = []
    doms = sorted({k.split("/")[0] for k in ev["table"] if k != "all/all"})
    fig, axes = plt.subplots(1, len(doms), figsize=(5 * len(doms), 4), squeeze=False)
    for ax, dom in zip(axes[0], doms, strict=True):
        keys = [k for k in ev["table"] if k.startswith(dom + "/")]
        keys.sort(key=lambda k: buckets.get(k.split("/")[1], 0.0))
        xs = [buckets.get(k.split("/")[1], float("nan")) for k in keys]
        for s in ev["systems"]:
            ax.plot(xs, [100 * ev["table"][k][s] for k in keys], marker="o", label=s)
        ax.set_xticks(xs, [k.split("/")[1] for k in keys])
        ax.set_xlabel("SNR bucket (dB)")
        ax.set_ylabel("WER %")
        ax.set_title(f"domain: {dom}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    f = out_dir / "wer_by_condition.png"
    fig.savefig(f, dpi=110)
    plt.close(fig)
    paths.append(f)

    comps = [c for c in tuned["components"] if c != "am"]
    fig, axes = plt.subplots(1, len(comps), figsize=(4.5 * len(comps), 3.8), squeeze=False)
    for ax, comp in zip(axes[0], comps, strict=True):
        for dom in doms:
            rows = [c for c in tuned["conditions"] if c["domain"] == dom and c["bucket"] is not None]
            rows.sort(key=lambda c: buckets.get(c["bucket"], 0.0))
            ax.plot([buckets[c["bucket"]] for c in rows], [c["weights"][comp] for c in rows], marker="o", label=dom)
        ax.axhline(tuned["global"]["weights"][comp], color="k", ls="--", lw=1, label="global")
        ax.set_title(f"tuned weight: {comp}")
        ax.set_xlabel("SNR bucket centre (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    f = out_dir / "weights_by_condition.png"
    fig.savefig(f, dpi=110)
    plt.close(fig)
    paths.append(f)
    return paths

def stage_report(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    p = _paths(cfg)
    ev = read_json(p["eval"])
    tuned = read_json(p["tune"])
    em = read_json(p["em"])
    plots = plot_report(cfg, ev, tuned, p["work"])
    comps = [c for c in tuned["components"] if c != "am"]
    allrow = ev["table"]["all/all"]
    d = allrow["per-condition minus global"]
    verdict = ("per-condition weights beat global weights" if d["hi"] < 0 else
               "global weights beat per-condition weights" if d["lo"] > 0 else
               "no significant difference between per-condition and global weights")  # fmt: skip
    lines = [f"# Recipe report: {cfg['name']}", "",
             f"Profile: `{p['profile']}`. Components: {', '.join(tuned['components'])} (am fixed at 1; "
             f"tuned by {tuned['method']} on the dev n-best lists).", "",
             "## Interpolation weights (EM on each domain's held-out text)", "",
             "| domain | weights | held-out ppl (domain / general / mix) |", "|---|---|---|"]  # fmt: skip
    for dom, v in em.items():
        w = ", ".join(f"{k} {x:.3f}" for k, x in v["weights"].items())
        ppl = v["ppl"]
        lines.append(f"| {dom} | {w} | {ppl[dom]:.1f} / {ppl['general']:.1f} / {ppl['mix']:.1f} |")
    if not cfg["text"]["general"] and any(v["weights"].get("general", 1.0) < 0.01 for v in em.values()):
        lines += ["", "The general LM is trained on every domain's training text (no `text.general` given), so it "
                  "holds each domain's own text, diluted: EM on in-domain held-out text gives it almost no weight. "
                  "Point `text.general` at general-purpose text for a real in-domain/general mix."]  # fmt: skip
    what = "one LM scale on the parent weights + word bonus" if cfg["tune"]["per_condition"] == "scale" else "all"
    lines += ["", "## Fusion weights per condition (dev)", "",
              f"Per condition: {what}"
              f", started from the parent's weights (global, or the domain's); kept only if better than the "
              f"parent's in {tuned.get('cv_folds', 0)}-fold cross-validation on dev, else backed off to the parent.",
              "",
              "| condition | dev utts | " + " | ".join(comps) + " | LM scale (tuned) | dev WER | dev WER global w. "
              "| CV WER own / parent | kept |",
              "|" + "---|" * (len(comps) + 7)]  # fmt: skip
    g = tuned["global"]
    gw = " | ".join(f"{g['weights'][c]:.2f}" for c in comps)
    lines.append(f"| global | {g['n_utts']} | {gw} | 1.00 | {_pct(g['dev_wer'])} | {_pct(g['dev_wer'])} | | |")
    for c in tuned["conditions"]:
        name = f"{c['domain'] or '*'}/{c['bucket'] or '*'}"
        cv = c.get("cv")
        cvs = f"{_pct(cv['wer_own'])} / {_pct(cv['wer_parent'])}" if cv else ""
        kept = f"no (-> {c['parent']})" if c.get("backoff") else "yes"
        scale = f"{c['lm_scale']:.2f}" if "lm_scale" in c else ""
        ws = " | ".join(f"{c['weights'][k]:.2f}" for k in comps)
        lines.append(f"| {name} | {c['n_utts']} | {ws} | {scale} | {_pct(c['dev_wer'])} | "
                     f"{_pct(c['global_dev_wer'])} | {cvs} | {kept} |")  # fmt: skip
    lines += ["", "## Test WER (%) per condition", "", wer_table_markdown(ev), "",
              "Gap closed = (1-best WER - system WER) / (1-best WER - oracle WER).", "",
              "## Per-condition vs global weights (paired bootstrap, test)", "",
              "| condition | WER(per-cond) - WER(global) | 95% CI | p(per-cond not better) |",
              "|---|---|---|---|"]  # fmt: skip
    for key, row in ev["table"].items():
        b = row["per-condition minus global"]
        lines.append(f"| {key} | {100 * b['delta']:+.2f} | [{100 * b['lo']:+.2f}, {100 * b['hi']:+.2f}] | "
                     f"{b['p_not_better']:.3f} |")  # fmt: skip
    b2 = allrow["global minus 1-best"]
    lines += ["", f"**Verdict (all test utterances): {verdict}** "
              f"(Δ = {100 * d['delta']:+.2f} WER points, 95% CI [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}]). "
              f"Global-weight rescoring vs the recogniser's 1-best: Δ = {100 * b2['delta']:+.2f} "
              f"[{100 * b2['lo']:+.2f}, {100 * b2['hi']:+.2f}].", ""]  # fmt: skip
    ov = ev["overlap"]
    order = ov["ngram_order"]
    rate = ov[f"test_{order}gram_overlap"]
    lines += ["## Test/training overlap", "",
              f"{ov['in_training_text']} of {ov['test_sentences']} test sentences occur verbatim in the LM training "
              f"text; {100 * rate:.1f}% of test {order}-grams "
              "occur in it (shared phrases of the domain, not copied sentences).", ""]  # fmt: skip
    if ev.get("snr_estimate_abs_error_db"):
        e = ev["snr_estimate_abs_error_db"]
        lines += [f"Blind SNR estimate (noise floor) vs mixing SNR: mean absolute error {e['mean']:.1f} dB "
                  f"over {e['n']} noisy test utterances.", ""]  # fmt: skip
    lines += ["## Plots", ""] + [f"![{q.stem}]({q.name})" for q in plots] + [""]
    atomic_write_text(p["report"], "\n".join(lines))

# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def build_stages(cfg: Mapping[str, Any]) -> list[Stage]:
    p = _paths(cfg)
    train = list(dict.fromkeys([*_text_files(cfg, "train").values(), *_general_files(cfg)]))
    held = list(_text_files(cfg, "heldout").values())
    lm_files = [p["lms"] / f"{d}.bin" for d in [*cfg["text"]["domains"], "general"]]
    stages = []
    if cfg["audio"]["enabled"]:
        held_text = list(_text_files(cfg, "heldout").values())
        test_text = [Path(cfg["text"]["dir"]) / f"{d}.test.txt" for d in cfg["text"]["domains"]]
        stages.append(Stage("audio", lambda c: stage_audio(cfg, c), [*held_text, *test_text],
                            [p["dev_nbest"], p["test_nbest"]], dict(cfg["audio"]),
                            "flite + sox audio, pocketsphinx n-best"))  # fmt: skip
    stages += [
        Stage("build_lms", lambda c: stage_build_lms(cfg, c), train, [*lm_files, p["lms"] / "spm.model"],
              {"lms": cfg["lms"], "seed": cfg["seed"]}, "KenLM per domain + general, sentencepiece, neural LM"),
        Stage("interpolate", lambda c: stage_interpolate(cfg, c), [*lm_files, *held], [p["em"]], {},
              "EM interpolation weights per domain"),
        Stage("rescore", lambda c: stage_rescore(cfg, c), [p["em"], p["dev_nbest"], p["test_nbest"], *lm_files],
              [p["dev_rescored"], p["test_rescored"]], {"max_hyps": cfg["nbest"]["max_hyps"],
                                                        "neural": cfg["lms"]["neural"]["enabled"]},
              "rescore n-best lists with the domain mixes"),
        Stage("tune", lambda c: stage_tune(cfg, c), [p["dev_rescored"]], [p["tune"]],
              {"tune": cfg["tune"], "conditions": cfg["conditions"], "seed": cfg["seed"]},
              "fusion weights: global, per domain, per noise bucket, per (domain, bucket)"),
        Stage("profile", lambda c: stage_profile(cfg, c), [p["tune"], p["em"]], [p["profile"]],
              {"name": cfg["name"], "conditions": cfg["conditions"]}, "write the fusion profile"),
        Stage("evaluate", lambda c: stage_evaluate(cfg, c), [p["test_rescored"], p["profile"], p["tune"], *train],
              [p["eval"]], {"evaluate": cfg["evaluate"], "seed": cfg["seed"]},
              "test WER per condition with paired bootstrap CIs"),
        Stage("report", lambda c: stage_report(cfg, c), [p["eval"], p["tune"], p["em"]], [p["report"]], {},
              "Markdown report + PNG plots"),
    ]  # fmt: skip
    return stages

def run_recipe(config: str | Path, *, overrides: Mapping[str, Any] | None = None, force: Sequence[str] = (),
               only: Sequence[str] | None = None, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Load + validate the config, run the stages; returns the config and the stage reports."""
    cfg = load_config(config, SCHEMA, overrides)
    Path(cfg["work_dir"]).mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(cfg["work_dir"], progress=progress)
    reports = pipe.run(build_stages(cfg), force=force, only=only)
    return {"config": cfg, "reports": reports, "paths": _paths(cfg)}

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the ASR recipe from a YAML config.")
    ap.add_argument("config")
    ap.add_argument("--force", nargs="*", default=[], help="stages to re-run even when up to date")
    ap.add_argument("--only", nargs="*", help="run only these stages")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    try:
        out = run_recipe(a.config, force=a.force, only=a.only, progress=not a.quiet)
    except LMFusionError as e:
        print(f"error: {e}")
        return 2
    p = out["paths"]
    if p["eval"].exists():
        print(wer_table_markdown(read_json(p["eval"])))
    print(f"report: {p['report']}\nprofile: {p['profile']}")
    return 0

__all__ = ["SCHEMA", "build_stages", "check_overlap", "load_lists", "main", "run_recipe", "wer_table_markdown"]

if __name__ == "__main__":
    raise SystemExit(main())
