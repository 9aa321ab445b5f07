"""Whisper in-search fusion: does the fused search's length penalty matter? (issue 11 follow-up)

The recipe's fused Whisper search ranks finished beams by the plain fused sum (``length_penalty=0``),
while plain Whisper keeps its own length normalisation (``length_penalty=1``), so "fused vs plain"
changes two things at once. This script decodes one split of the Whisper recipe's audio (a finished
``lmfusion recipe run recipes/configs/whisper.yaml`` work dir: its manifest, KenLM mixes and EM weights)
with plain Whisper and each fused system given as ``dlm=W,words=B,lp=P`` and prints WER per system and
the paired-bootstrap 95% CI of each system minus plain (beam 5, batches of 4 of one domain, one thread).
Whisper's encoder runs once per batch and every system decodes from its output (the seconds printed are
the decoder's alone).

    python benchmarks/whisper_length_penalty.py --split dev --snrs clean 20 \\
        --systems "dlm=0,lp=0" "dlm=0.1,lp=0" "dlm=0.1,lp=1" --out runs/lp-dev.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def parse_system(text: str) -> dict[str, float]:
    """``"dlm=0.1,words=0,lp=1"`` -> ``{"dlm": 0.1, "words": 0.0, "lp": 1.0}`` (``words`` and ``lp`` default 0)."""
    out = {"words": 0.0, "lp": 0.0}
    for part in text.split(","):
        key, _, val = part.partition("=")
        if key.strip() not in ("dlm", "words", "lp") or not val:
            raise SystemExit(f"--systems: {text!r}: expected dlm=W[,words=B][,lp=P]")
        out[key.strip()] = float(val)
    if "dlm" not in out:
        raise SystemExit(f"--systems: {text!r} has no dlm weight")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="recipes/configs/whisper.yaml")
    ap.add_argument("--split", default="dev", choices=["dev", "test"])
    ap.add_argument("--snrs", nargs="+", default=["clean", "20"])
    ap.add_argument("--systems", nargs="+", required=True, help='fused systems, e.g. "dlm=0.1,lp=1"')
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)

    import torch

    from fusion.io import atomic_write_json
    from fusion.metrics import error_counts, paired_bootstrap
    from recipes.asr.lm_stages import domain_mixes
    from recipes.asr.make_audio import read_manifest, read_wav
    from recipes.asr.settings import load_recipe, recipe_paths
    from recipes.asr.whisper_fusion import WhisperFusion

    torch.set_num_threads(1)
    cfg = load_recipe(a.config)
    mixes = domain_mixes(cfg)
    utts = [u for u in read_manifest(recipe_paths(cfg)["audio"] / "manifest.jsonl")
            if u.split == a.split and u.snr in a.snrs]  # fmt: skip
    if not utts:
        raise SystemExit(f"no {a.split} utterances at SNR {a.snrs} in the recipe's manifest")
    fz = WhisperFusion(beam=a.beam)
    refs = [u.text for u in utts]
    systems: dict[str, dict[str, float] | None] = {"plain": None, **{s: parse_system(s) for s in a.systems}}
    out: dict[str, dict[str, str]] = {name: {} for name in systems}
    seconds = dict.fromkeys(systems, 0.0)
    for dom in sorted({u.domain for u in utts}):
        group = [u for u in utts if u.domain == dom]
        scorers = fz.scorers({"dlm": mixes[dom]})
        for i in range(0, len(group), 4):
            batch = group[i : i + 4]
            encoded = fz.encode([read_wav(u.wav) for u in batch])  # once per batch, shared by every system
            for name, sysw in systems.items():
                t0 = time.perf_counter()
                fz.fused_length_penalty = 0.0 if sysw is None else sysw["lp"]
                w = None if sysw is None else {"dlm": sysw["dlm"], "words": sysw["words"]}
                texts = fz.transcribe(None, None if sysw is None else scorers, w, encoded=encoded)
                out[name].update((u.utt_id, h) for u, h in zip(batch, texts, strict=True))
                seconds[name] += time.perf_counter() - t0
    hyps = {name: [out[name][u.utt_id] for u in utts] for name in systems}
    result: dict[str, Any] = {"split": a.split, "snrs": a.snrs, "n_utts": len(utts), "beam": a.beam, "systems": {}}
    for name in systems:
        e, n = error_counts(refs, hyps[name])
        row: dict[str, Any] = {"wer": sum(e) / sum(n), "seconds": seconds[name]}
        if name != "plain":
            bs = paired_bootstrap(refs, hyps["plain"], hyps[name], n=a.bootstrap, seed=0)
            row.update(delta=bs.delta, ci=[bs.lo, bs.hi])
        result["systems"][name] = row
        ci = row.get("ci")
        extra = f"  {row['delta'] * 100:+.1f} [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else ""
        print(f"{name:24s} WER {row['wer'] * 100:5.1f} %{extra}  ({seconds[name]:.0f} s)")
    if a.out:
        atomic_write_json(a.out, {**result, "hyps": hyps, "refs": refs})


if __name__ == "__main__":
    main()
