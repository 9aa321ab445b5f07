"""The ASR recipe's ``in_search`` stage: Whisper decodes the test audio with the LMs inside ``generate()``.

Systems on the same test utterances: Whisper's beam search alone; fused with the weights tuned on the
dev n-best lists (global, ``in_search.nbest_global``); and, when ``in_search.tune`` is on, fused with
the weights tuned *in the search* on the dev audio (:mod:`recipes.asr.in_search_tune`): global, per
domain, per SNR bucket, and per (domain, bucket) through its fusion profile (utterance tags), and per
bucket of the blind SNR estimate of the waveform (tags-free: the weights picked per estimated bucket on
dev, :func:`recipes.asr.in_search_tune.blind_bucket`; a grid point, never a mixture of two). Without
in-search tuning the n-best profile's per-condition weights are decoded instead. The LMs are the
utterance's domain mix (``dlm``) and, when the recipe has one, the neural LM (``nnlm``); decodes go
through the resumable cache of :mod:`recipes.asr.decode_cache`. Writes ``in_search.json`` (WER per
(domain, SNR) and overall, paired-bootstrap CIs of each fused system vs no LM and of each per-condition
system vs the in-search global one) and a Markdown table ``in_search.md`` (with the verdict: does an
SNR-following weight set beat one global set, tags-free?).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fusion.errors import LMFusionError
from fusion.io import atomic_write_json, atomic_write_text, read_json
from fusion.profile import FusionProfile
from recipes.asr.make_audio import Utterance, read_manifest
from recipes.asr.settings import bucket_of, condition_tags, recipe_paths
from recipes.asr.whisper_fusion import condition_rows, in_search_markdown
from recipes.pipeline import StageContext

PLAIN = "Whisper beam (no LM)"
GLOBAL = "fusion, in-search-tuned global"
BLIND = "in-search-tuned per blind-SNR bucket (tags-free)"
WeightsOf = Callable[[Utterance], Mapping[str, float]]


def _condition_weights(tuned: Mapping[str, Any], cfg: Mapping[str, Any], by: str) -> WeightsOf:
    """Weights per utterance from a tuning result's ``by`` = "domain" or "bucket" conditions (else global)."""
    table = {(c["domain"], c["bucket"]): c["weights"] for c in tuned["conditions"]}

    def weights_of(u: Utterance) -> Mapping[str, float]:
        key = (u.domain, None) if by == "domain" else (None, bucket_of(condition_tags(u, cfg), cfg))
        return table.get(key, tuned["global"]["weights"])

    return weights_of


def _blind_weights(tuned: Mapping[str, Any], cfg: Mapping[str, Any]) -> WeightsOf:
    """Weights per utterance from the bucket of its blind SNR estimate (``tuned["blind_snr"]``), else global."""
    from recipes.asr.in_search_tune import blind_bucket

    if "blind_snr" not in tuned:
        raise LMFusionError("in_search_tuning.json has no blind_snr picks (an older run): re-run "
                            "`lmfusion recipe run CONFIG --force in_search_tune`")  # fmt: skip
    table = {c["bucket"]: c["weights"] for c in tuned["blind_snr"]["conditions"]}
    buckets: dict[str, str | None] = {}

    def weights_of(u: Utterance) -> Mapping[str, float]:
        if u.utt_id not in buckets:
            buckets[u.utt_id] = blind_bucket(u, cfg)
        return table.get(buckets[u.utt_id], tuned["global"]["weights"])

    return weights_of


def test_system_weights(cfg: Mapping[str, Any]) -> tuple[dict[str, WeightsOf], list[tuple[str, str]]]:
    """The systems decoded on test (name -> weights per utterance) and the (a, b) pairs compared."""
    p = recipe_paths(cfg)
    opts = cfg["in_search"]
    nb_tuned = read_json(p["tune"])
    systems: dict[str, WeightsOf] = {PLAIN: lambda u: {}}
    if opts["nbest_global"]:
        systems["fusion, n-best-tuned global"] = lambda u: nb_tuned["global"]["weights"]
    pairs: list[tuple[str, str]] = []
    if opts["tune"]:
        ist = read_json(p["in_search_tune"])
        prof = FusionProfile.load(p["in_search_profile"])
        glob = GLOBAL
        systems[glob] = lambda u: ist["global"]["weights"]
        systems["in-search-tuned per domain"] = _condition_weights(ist, cfg, "domain")
        systems["in-search-tuned per SNR bucket"] = _condition_weights(ist, cfg, "bucket")
        systems["in-search-tuned per (domain, SNR)"] = lambda u: prof.select(condition_tags(u, cfg)).fusion
        systems[BLIND] = _blind_weights(ist, cfg)
        pairs = [(glob, s) for s in list(systems)[-4:]]
    else:
        nb_prof = FusionProfile.load(p["profile"])
        systems["fusion, n-best profile per condition"] = lambda u: nb_prof.select(condition_tags(u, cfg)).fusion
    return systems, [*((PLAIN, s) for s in list(systems)[1:]), *pairs]


def stage_in_search(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    """Decode the test audio with Whisper + fusion inside the search for every system; WER tables with CIs."""
    from recipes.asr.decode_cache import recipe_decoder, timing, weights_key

    p = recipe_paths(cfg)
    opts = cfg["in_search"]
    test = [u for u in read_manifest(p["audio"] / "manifest.jsonl") if u.split == "test"]
    systems, pairs = test_system_weights(cfg)
    run, cache = recipe_decoder(cfg, "test")
    # system by system: plain first, then the global weights, then the per-condition ones
    texts = run([(u, w(u)) for w in systems.values() for u in test], progress=ctx.progress,
                desc="in-search decode (test)")  # fmt: skip
    hyps = {name: [texts[(u.utt_id, weights_key(w(u)))] for u in test] for name, w in systems.items()}
    refs = [u.text for u in test]
    conds = [(u.domain, bucket_of(condition_tags(u, cfg), cfg) or "?") for u in test]
    order = sorted(set(conds), key=lambda c: (c[0], -cfg["conditions"]["buckets"].get(c[1], -1e9)))
    table = condition_rows(refs, conds, hyps, pairs, n_boot=cfg["evaluate"]["bootstrap"], seed=cfg["seed"],
                           order=order)  # fmt: skip
    keys = {name: sorted({weights_key(w(u)) for u in test}) for name, w in systems.items()}
    result = {"systems": list(systems), "pairs": [list(pr) for pr in pairs], "table": table, "beam": opts["beam"],
              "n_utts": len(test), "weights": keys, "timing": timing(cache), "hyps": hyps}  # fmt: skip
    if BLIND in systems:
        from recipes.asr.in_search_tune import blind_bucket, bucket_agreement

        result["blind_snr_test_buckets"] = bucket_agreement([c[1] for c in conds], [blind_bucket(u, cfg) for u in test])
        result["verdicts"] = [blind_verdict(table["all/all"][f"{BLIND} minus {GLOBAL}"])]
    if p["in_search_weights_plot"].exists():
        result["plots"] = [p["in_search_weights_plot"].name]
    atomic_write_json(p["in_search"], result)
    atomic_write_text(p["in_search"].with_suffix(".md"), in_search_markdown(result))


def blind_verdict(d: Mapping[str, float]) -> str:
    """The answer to "does an SNR-following weight set beat one global set, tags-free?" from the paired
    bootstrap of (blind-SNR weights - global weights) over all test utterances."""
    ci = f"{100 * d['delta']:+.1f} WER points [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
    if d["hi"] < 0:
        return f"Weights following the blind SNR estimate beat the one global in-search set, tags-free: {ci}."
    if d["lo"] > 0:
        return f"Weights following the blind SNR estimate are worse than the one global in-search set: {ci}."
    return (f"Weights following the blind SNR estimate do not beat the one global in-search set (95% CI includes 0): "
            f"{ci}; see the picked weights against SNR.")  # fmt: skip
