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
7. ``report``: Markdown + PNG plots;
8. ``in_search_tune`` (optional, Whisper only, ``in_search.tune``): weights tuned in the search on the dev
   audio over a grid of cached decodes, per condition and per blind-SNR bucket, with the same walk and CV
   back-off as ``tune`` (:mod:`recipes.asr.in_search_tune`, :mod:`fusion.tuning.walk`);
9. ``in_search`` (optional, Whisper only): test decoded with the LMs inside ``generate()``
   (:mod:`recipes.asr.in_search`).

``audio.recogniser`` picks who makes the n-best lists: pocketsphinx, or Whisper tiny.en
(:mod:`recipes.asr.decode_whisper`; ``recipes/configs/whisper.yaml``).

Components: ``am`` (acoustic), ``lm`` (the recogniser's own LM), ``dlm`` (the domain mix), ``nnlm``
(neural, optional), ``words`` (word count, for the word bonus).

The stages live by job: :mod:`recipes.asr.settings` (schema, paths), :mod:`recipes.asr.lm_stages` (audio,
LMs, interpolation, rescoring), :mod:`recipes.asr.tune_stages` (tuning, profile),
:mod:`recipes.asr.evaluate` and :mod:`recipes.asr.report`. Run it with ``lmfusion recipe run CONFIG``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusion.errors import LMFusionError
from fusion.executor import Executor
from recipes.asr.evaluate import stage_evaluate
from recipes.asr.in_search import stage_in_search
from recipes.asr.in_search_tune import stage_in_search_tune
from recipes.asr.lm_stages import stage_audio, stage_build_lms, stage_interpolate, stage_rescore
from recipes.asr.report import stage_report
from recipes.asr.settings import (
    SCHEMA,
    general_files,
    load_recipe,
    recipe_paths,
    text_files,
)
from recipes.asr.tune_stages import stage_profile, stage_tune
from recipes.pipeline import Pipeline, Stage


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def build_stages(cfg: Mapping[str, Any]) -> list[Stage]:
    p = recipe_paths(cfg)
    train = list(dict.fromkeys([*text_files(cfg, "train").values(), *general_files(cfg)]))
    held = list(text_files(cfg, "heldout").values())
    lm_files = [p["lms"] / f"{d}.bin" for d in [*cfg["text"]["domains"], "general"]]
    stages = []
    if cfg["audio"]["enabled"]:
        held_text = list(text_files(cfg, "heldout").values())
        test_text = [Path(cfg["text"]["dir"]) / f"{d}.test.txt" for d in cfg["text"]["domains"]]
        stages.append(Stage("audio", lambda c: stage_audio(cfg, c), [*held_text, *test_text],
                            [p["dev_nbest"], p["test_nbest"]], dict(cfg["audio"]),
                            f"flite + sox audio, {cfg['audio']['recogniser']} n-best"))  # fmt: skip
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
              {"tune": cfg["tune"], "conditions": cfg["conditions"], "seed": cfg["seed"], "format": 2},
              "fusion weights: global, per domain, per noise bucket, per (domain, bucket)"),
        Stage("profile", lambda c: stage_profile(cfg, c), [p["tune"], p["em"]], [p["profile"]],
              {"name": cfg["name"], "conditions": cfg["conditions"]}, "write the fusion profile"),
        Stage("evaluate", lambda c: stage_evaluate(cfg, c), [p["test_rescored"], p["profile"], p["tune"], *train],
              [p["eval"]], {"evaluate": cfg["evaluate"], "seed": cfg["seed"]},
              "test WER per condition with paired bootstrap CIs"),
        Stage("report", lambda c: stage_report(cfg, c), [p["eval"], p["tune"], p["em"]], [p["report"]], {},
              "Markdown report + PNG plots"),
    ]  # fmt: skip
    if cfg["in_search"]["enabled"]:
        if not cfg["audio"]["enabled"] or cfg["audio"]["recogniser"] != "whisper":
            raise LMFusionError("in_search.enabled needs audio.enabled and audio.recogniser: whisper")
        manifest = p["audio"] / "manifest.jsonl"
        tuned: list[Path] = []
        if cfg["in_search"]["tune"]:
            tuned = [p["in_search_tune"], p["in_search_profile"], p["in_search_weights_plot"]]
            stages.append(Stage("in_search_tune", lambda c: stage_in_search_tune(cfg, c),
                                [manifest, p["em"], *lm_files], tuned,
                                {"in_search": cfg["in_search"], "tune": cfg["tune"], "conditions": cfg["conditions"],
                                 "seed": cfg["seed"]},
                                "weights tuned in the search: dev audio decoded on a grid (cached), per condition"))
        stages.append(Stage("in_search", lambda c: stage_in_search(cfg, c),
                            [manifest, p["profile"], p["tune"], p["em"], *lm_files, *tuned], [p["in_search"]],
                            {"in_search": cfg["in_search"], "seed": cfg["seed"],
                             "bootstrap": cfg["evaluate"]["bootstrap"]},
                            "Whisper generate() with the LMs in the search on test: plain and fused systems"))
    return stages

def run_recipe(config: str | Path, *, overrides: Mapping[str, Any] | None = None, force: Sequence[str] = (),
               only: Sequence[str] | None = None, progress: bool = True,
               executor: Executor | None = None) -> dict[str, Any]:  # fmt: skip
    """Load + validate the config, run the stages (independent ones side by side on ``executor``);
    returns the config and the stage reports."""
    cfg = load_recipe(config, overrides)
    Path(cfg["work_dir"]).mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(cfg["work_dir"], progress=progress)
    reports = pipe.run(build_stages(cfg), force=force, only=only, executor=executor)
    return {"config": cfg, "reports": reports, "paths": recipe_paths(cfg)}


__all__ = ["SCHEMA", "build_stages", "run_recipe"]
