"""The ASR recipe's config schema and what every stage derives from the config: paths, text files, conditions."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from decoders.hypothesis import NBestList, read_nbest_jsonl
from fusion.profile import default_buckets
from recipes.config import Field, load_config, non_empty, non_negative, positive

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
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            return f"bucket {k!r}: centre must be a finite number (dB), got {c!r}"
    if len(set(v.values())) != len(v):
        return f"two buckets share a centre: {dict(v)}"
    return None

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")

def _names_check(v: Any) -> str | None:
    """Domain names become file names under the work dir: plain names only (no '/', '..', spaces)."""
    for name in v:
        if not _SAFE_NAME.fullmatch(name) or ".." in name:
            return f"domain {name!r} is not a plain name (letters, digits, '_', '.', '+', '-'; no '/' or '..')"
    if len(set(v)) != len(v):
        return "a domain is named twice"
    if "general" in v:
        return "'general' is the name of the all-domain LM; call the domain something else"
    return None

def _template_check(v: Any) -> str | None:
    """A file-name template with ``{domain}`` as its only placeholder (filled by plain replacement)."""
    rest = v.replace("{domain}", "")
    if "{" in rest or "}" in rest:
        return f"{v!r}: the only placeholder allowed is {{domain}}"
    if "{domain}" not in v:
        return f"{v!r} must contain {{domain}}"
    return None

def _pair_check(v: Any) -> str | None:
    if len(v) != 2 or not v[0] <= v[1] or not all(math.isfinite(x) for x in v):
        return f"must be [lo, hi] finite numbers with lo <= hi, got {v!r}"
    return None

def check_recipe(cfg: Mapping[str, Any], source: str | Path = "<config>") -> dict[str, Any]:
    """Checks across keys that the stages would otherwise fail on later (``recipe check`` runs them too)."""
    from recipes.config import ConfigError

    c, t = cfg["conditions"], cfg["tune"]
    if t["cv_folds"] > 1 and c["min_utts"] < t["cv_folds"]:
        raise ConfigError(f"conditions.min_utts ({c['min_utts']}) must be >= tune.cv_folds ({t['cv_folds']}) "
                          "for cross-validation to have data in every fold", path=source, field="conditions.min_utts")
    work = Path(cfg["work_dir"]).resolve()
    for dom in cfg["text"]["domains"]:
        if work not in (work / "lms" / f"{dom}.bin").resolve().parents:
            raise ConfigError(f"domain {dom!r} would write outside the work dir", path=source, field="text.domains")
    return dict(cfg)

def load_recipe(config: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read, validate and cross-check a recipe config: the one validation ``recipe check`` and ``run`` share."""
    return check_recipe(load_config(config, SCHEMA, overrides), config)

SCHEMA: dict[str, Field] = {
    "name": Field(str, "asr"),
    "work_dir": Field(str, doc="where every output goes"),
    "seed": Field(int, 0, check=non_negative),
    "text": Field(schema={
        "dir": Field(str, "data/text"),
        "domains": Field(list, items=Field(str), check=lambda v: non_empty(v) or _names_check(v),
                         doc="domain names: <dir>/<domain>.train.txt ..."),
        "train": Field(str, "{domain}.train.txt", check=_template_check),
        "heldout": Field(str, "{domain}.dev.txt", check=_template_check),
        "general": Field(list, [], items=Field(str),
                         doc="text files of the general LM (default: every domain's training text)"),
    }),
    "audio": Field(schema={
        "enabled": Field(bool, False),
        "per_split": Field(int, 30, check=positive),
        "snrs": Field(list, ["clean", "30", "20", "15"], items=Field(str)),
        "voices": Field(list, ["slt", "rms", "awb", "kal16"], items=Field(str)),
        "nbest": Field(int, 20, check=positive),
        "recogniser": Field(str, "pocketsphinx", choices=("pocketsphinx", "whisper", "whisper-ct2"),
                            doc="who makes the n-best lists: pocketsphinx, or Whisper tiny.en (HF or CTranslate2)"),
        "beam": Field(int, 8, check=positive, doc="the recogniser's beam (Whisper)"),
        "threads": Field(int, 1, check=positive,
                         doc="torch/CTranslate2 threads for Whisper (1 avoids spin-waiting on a busy machine)"),
    }),
    "in_search": Field(schema={
        "enabled": Field(bool, False, doc="Whisper only: decode test with the LMs inside generate()"),
        "beam": Field(int, 5, check=positive),
        "batch": Field(int, 4, check=positive, doc="utterances per generate() call"),
        "workers": Field(int, 1, check=positive,
                         doc="decoding processes (each with audio.threads torch threads, Whisper + LMs loaded once)"),
        "tune": Field(bool, True, doc="tune weights in the search on the dev audio (in_search_tune stage)"),
        "grid": Field(dict, {"dlm": [0.1, 0.25, 0.5], "words": [-0.5, 0.0, 1.0, 2.0]},
                      values=Field(list, items=Field(float)),
                      doc="in-search tuning grid: values per free weight (am fixed at 1); plain Whisper is one too"),
        "nbest_global": Field(bool, True, doc="also decode test with the weights tuned on the n-best lists"),
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
        "scale_bounds": Field(list, [0.0, 4.0], items=Field(float), check=_pair_check),
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
def recipe_paths(cfg: Mapping[str, Any]) -> dict[str, Path]:
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
        "in_search": w / "in_search.json",
        "in_search_tune": w / "in_search_tuning.json",
        "in_search_profile": w / "in_search_profile.json",
        "in_search_weights_plot": w / "in_search_weights_by_snr.png",
        "decode_cache": w / "in_search_cache",
    }
    if cfg["audio"]["enabled"]:
        p["dev_nbest"] = p["nbest_dir"] / "dev.jsonl"
        p["test_nbest"] = p["nbest_dir"] / "test.jsonl"
    else:
        p["dev_nbest"] = Path(cfg["nbest"]["dev"])
        p["test_nbest"] = Path(cfg["nbest"]["test"])
    return p

def text_files(cfg: Mapping[str, Any], key: str) -> dict[str, Path]:
    d = Path(cfg["text"]["dir"])
    return {dom: d / cfg["text"][key].replace("{domain}", dom) for dom in cfg["text"]["domains"]}

def general_files(cfg: Mapping[str, Any]) -> list[Path]:
    return [Path(f) for f in cfg["text"]["general"]] or list(text_files(cfg, "train").values())


def bucket_of(tags: Mapping[str, Any], cfg: Mapping[str, Any]) -> str | None:
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

def condition_tags(u: Any, cfg: Mapping[str, Any]) -> dict[str, str]:
    """The condition tags (domain, SNR) of a manifest utterance, under the config's tag names."""
    return {cfg["conditions"]["domain_tag"]: u.domain, cfg["conditions"]["snr_tag"]: u.snr}

def domain_of(tags: Mapping[str, Any], cfg: Mapping[str, Any]) -> str | None:
    v = tags.get(cfg["conditions"]["domain_tag"])
    return None if v is None else str(v)

def tuned_components(cfg: Mapping[str, Any]) -> list[str]:
    free = list(cfg["tune"]["free"])
    if cfg["lms"]["neural"]["enabled"] and "nnlm" not in free:
        free.append("nnlm")
    if not cfg["lms"]["neural"]["enabled"] and "nnlm" in free:
        free.remove("nnlm")
    return ["am", *free]


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
