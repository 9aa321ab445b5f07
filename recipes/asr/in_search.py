"""The ASR recipe's ``in_search`` stage: Whisper decodes the test audio with the LMs inside ``generate()``.

Three systems on the same test utterances: Whisper's beam search alone, fused with the globally tuned
weights, and fused with the fusion profile's weights per utterance (domain and SNR tags). The LMs are
the utterance's domain mix (``dlm``) and, when the recipe has one, the neural LM (``nnlm``); see
:mod:`recipes.asr.whisper_fusion`. Writes ``in_search.json`` and a Markdown table ``in_search.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from decoders.hypothesis import NBestList, read_nbest_jsonl
from fusion.io import atomic_write_json, atomic_write_text, read_json
from fusion.profile import FusionProfile
from recipes.asr.lm_stages import domain_mixes
from recipes.asr.make_audio import read_manifest
from recipes.asr.settings import bucket_of, domain_of, recipe_paths
from recipes.asr.whisper_fusion import WhisperFusion, condition_rows, decode_groups, in_search_markdown
from recipes.pipeline import StageContext


def stage_in_search(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    """Decode the test audio with Whisper + fusion inside the search (plain, global weights, profile)."""
    import torch

    p = recipe_paths(cfg)
    test = read_nbest_jsonl(p["test_rescored"])
    wav_of = {u.utt_id: u.wav for u in read_manifest(p["audio"] / "manifest.jsonl")}
    mixes = domain_mixes(cfg)
    nnlm = None
    if cfg["lms"]["neural"]["enabled"]:
        from fusion.loading import load_lm

        nnlm = load_lm(p["lms"] / "nnlm", name="nnlm")
    tuned = read_json(p["tune"])
    prof = FusionProfile.load(p["profile"])

    def lms_of(nb: NBestList) -> tuple[Any, dict[str, Any]]:
        dom = domain_of(nb.tags, cfg)
        dom = dom if dom in mixes else None
        return dom, {"dlm": mixes[dom], **({"nnlm": nnlm} if nnlm is not None else {})}

    opts = cfg["in_search"]
    torch.set_num_threads(cfg["audio"]["threads"])
    fz = WhisperFusion(beam=opts["beam"])
    runs = (("Whisper beam (no LM)", lambda nb: None),
            ("in-search fusion, global weights", lambda nb: tuned["global"]["weights"]),
            ("in-search fusion, per-condition (tags)", lambda nb: prof.select(nb.tags).fusion))  # fmt: skip
    systems: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for name, weights_of in runs:
        systems[name], seconds[name] = decode_groups(fz, test, wav_of, lms_of, weights_of, batch=opts["batch"],
                                                     progress=ctx.progress)  # fmt: skip
    refs = [nb.ref or "" for nb in test]
    conds = [(domain_of(nb.tags, cfg) or "?", bucket_of(nb.tags, cfg) or "?") for nb in test]
    order = sorted(set(conds), key=lambda c: (c[0], -cfg["conditions"]["buckets"].get(c[1], -1e9)))
    plain, glob, per = systems
    table = condition_rows(refs, conds, systems, [(plain, glob), (plain, per), (glob, per)],
                           n_boot=cfg["evaluate"]["bootstrap"], seed=cfg["seed"], order=order)  # fmt: skip
    result = {"systems": list(systems), "table": table, "seconds": seconds, "beam": opts["beam"], "n_utts": len(test)}
    atomic_write_json(p["in_search"], result)
    atomic_write_text(p["in_search"].with_suffix(".md"), in_search_markdown(result))
