"""ASR recipe stages that make LMs and scores: audio + n-best lists, LM building, EM interpolation, rescoring."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from decoders.hypothesis import NBestList, write_nbest_jsonl
from fusion.io import atomic_write_json, read_json, read_sentences
from recipes.asr.settings import (
    domain_of,
    general_files,
    load_lists,
    recipe_paths,
    text_files,
)
from recipes.pipeline import StageContext


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------
def stage_audio(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from recipes.asr.decode_pocketsphinx import decode_manifest
    from recipes.asr.make_audio import plan_utterances, render, write_manifest

    p = recipe_paths(cfg)
    a = cfg["audio"]
    text_dir = Path(cfg["text"]["dir"])
    utts = plan_utterances(text_dir, cfg["text"]["domains"], ["dev", "test"], a["per_split"], p["audio"],
                           voices=a["voices"], snrs=a["snrs"])  # fmt: skip
    babble = [s for f in text_files(cfg, "train").values() for s in read_sentences(f)[:40]]
    render(utts, p["audio"], babble, progress=ctx.progress)
    write_manifest(utts, p["audio"] / "manifest.jsonl")
    p["nbest_dir"].mkdir(parents=True, exist_ok=True)
    for split in ("dev", "test"):
        part = p["nbest_dir"] / f"{split}.partial.jsonl"
        if a["recogniser"] == "pocketsphinx":
            decode_manifest(p["audio"] / "manifest.jsonl", part, n=a["nbest"], splits=[split], progress=ctx.progress)
        else:
            from recipes.asr import decode_whisper

            backend = "ct2" if a["recogniser"] == "whisper-ct2" else "hf"
            decode_whisper.decode_manifest(p["audio"] / "manifest.jsonl", part, backend=backend, n=a["nbest"],
                                           beam=a["beam"], splits=[split], threads=a["threads"],
                                           progress=ctx.progress)  # fmt: skip
        part.replace(p[f"{split}_nbest"])

def stage_build_lms(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from fusion.ngram import build_ngram
    from fusion.tokenizers import train_sentencepiece

    p = recipe_paths(cfg)
    out = p["lms"]
    out.mkdir(parents=True, exist_ok=True)
    train = text_files(cfg, "train")
    order = cfg["lms"]["order"]
    for dom, f in train.items():
        key = f"kenlm:{dom}"
        if not ctx.is_done(key):
            build_ngram([f], out / f"{dom}.bin", order=order, progress=ctx.progress)
            ctx.mark_done(key)
    if not ctx.is_done("kenlm:general"):
        build_ngram(general_files(cfg), out / "general.bin", order=order, progress=ctx.progress)
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
            text=[str(f) for f in train.values()], dev=[str(f) for f in text_files(cfg, "heldout").values()],
            spm=str(out / "spm.model"), output=str(out / "nnlm"), model=model, epochs=nn["epochs"],
            max_steps=nn["max_steps"], batch_tokens=nn["batch_tokens"], seed=cfg["seed"], threads=1,
            progress=ctx.progress, name="nnlm",
        ))  # fmt: skip
        ctx.mark_done("nnlm")
    atomic_write_json(out / "manifest.json", {"domains": list(train), "order": order, "neural": nn["enabled"]})

def _load_kenlms(cfg: Mapping[str, Any]) -> dict[str, Any]:
    from fusion.ngram import KenLM

    d = recipe_paths(cfg)["lms"]
    lms = {dom: KenLM(d / f"{dom}.bin", name=dom) for dom in cfg["text"]["domains"]}
    lms["general"] = KenLM(d / "general.bin", name="general")
    return lms

def stage_interpolate(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from fusion.em import estimate_weights

    lms = _load_kenlms(cfg)
    out: dict[str, Any] = {}
    for dom, f in text_files(cfg, "heldout").items():
        est = estimate_weights([lms[dom], lms["general"]], f, oov="skip")  # as the published demo ran
        out[dom] = {"weights": est.weights, "ppl": est.ppl, "heldout": str(f), "n_sentences": est.n_sentences,
                    "iterations": est.iterations}  # fmt: skip
    atomic_write_json(recipe_paths(cfg)["em"], out)

def domain_mixes(cfg: Mapping[str, Any]) -> dict[str | None, Any]:
    from fusion.interpolate import LinearInterpolation

    lms = _load_kenlms(cfg)
    em = read_json(recipe_paths(cfg)["em"])
    mixes: dict[str | None, Any] = {
        dom: LinearInterpolation([lms[dom], lms["general"]], em[dom]["weights"], name="dlm")
        for dom in cfg["text"]["domains"]
    }
    mixes[None] = lms["general"]  # utterances of an unknown domain: the general LM
    return mixes


def stage_rescore(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    from decoders.nbest import rescore

    p = recipe_paths(cfg)
    mixes = domain_mixes(cfg)
    nnlm = None
    if cfg["lms"]["neural"]["enabled"]:
        from fusion.loading import load_lm

        nnlm = load_lm(p["lms"] / "nnlm", name="nnlm")
    for split in ("dev", "test"):
        nbs = load_lists(p[f"{split}_nbest"], cfg["nbest"]["max_hyps"])
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, nb in enumerate(nbs):
            dom = domain_of(nb.tags, cfg)
            groups[dom if dom in mixes else None].append(i)
        out: list[NBestList | None] = [None] * len(nbs)
        for dom, idx in groups.items():
            lms = {"dlm": mixes[dom]}
            if nnlm is not None:
                lms["nnlm"] = nnlm
            for i, nb in zip(idx, rescore([nbs[i] for i in idx], lms, progress=ctx.progress), strict=True):
                out[i] = nb
        write_nbest_jsonl(p[f"{split}_rescored"], [nb for nb in out if nb is not None])
