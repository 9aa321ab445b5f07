"""Does the pre-beam keep the register words out? One configuration at fixed weights, decoded on dev with each word
scorer and pre-beam width: the word-boundary scorer, the open-word scorer over the pre-beam (1.5 x beam, and wider),
and the open-word scorer over the whole vocabulary.

    python -m recipes.mt.pre_beam runs/mt-es-en [--dev-n 100] [--weights ngram=0.3 source_lm=-0.3 words=1]

Prints one row per setting: dev BLEU and chrF, how often the King James words occur in the output, and the
seconds of the decode. A register word the model gives ln p -10.6 (the label-smoothing floor) is only ever
scored by the LM when it is among the candidates: the ``vocab`` row shows what the LM does when it always is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SETTINGS: tuple[tuple[str, float | int], ...] = (("boundary", 1.5), ("open", 1.5), ("open", 16.0), ("vocab", 1.5))
"""(word scorer, pre-beam) rows: a float is times the beam; ``vocab`` scores every token (its pre-beam unused)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("dir", type=Path, help="a run_es_en directory (data/, model/, eval/ with the 4-gram ARPAs)")
    ap.add_argument("--config", default="density ratio (n-gram)", help="a recipes.mt.evaluate configuration")
    ap.add_argument("--weights", nargs="*", default=["ngram=0.3", "source_lm=-0.3", "words=1"], metavar="NAME=W")
    ap.add_argument("--dev-n", type=int, default=100)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--batch", type=int, default=25)
    args = ap.parse_args(argv)

    import torch

    from fusion.io import read_sentences
    from fusion.ngram import KenLM
    from recipes.mt.diagnose import KJV_WORDS, word_counts
    from recipes.mt.evaluate import CONFIGS, best_texts, corpus_scores, decode, make_scorers, model_units
    from recipes.mt.model import load_model

    torch.set_num_threads(1)
    d: Path = args.dir
    weights = {"am": 1.0, **{k: float(v) for k, v in (w.split("=", 1) for w in args.weights)}}
    model, vocabs = load_model(d / "model")
    lms = {"ngram": KenLM(d / "eval" / "target.o4.arpa", name="ngram"),
           "source_lm": KenLM(d / "eval" / "source.o4.arpa", name="source_lm")}
    units, eos = model_units(model, vocabs), vocabs.eos_id
    src = read_sentences(d / "data" / "dev.es")[: args.dev_n]
    refs = read_sentences(d / "data" / "dev.kjv")[: args.dev_n]
    print(f"{args.config}, weights {weights}, {len(src)} dev verses, beam {args.beam}")
    print("| word scorer | pre-beam | dev BLEU | dev chrF | " + " | ".join(KJV_WORDS) + " | seconds |")
    print("|---|---|---|---|" + "---|" * len(KJV_WORDS) + "---|")
    c = word_counts(refs, KJV_WORDS)
    print("| (KJV references) | | | | " + " | ".join(str(c[w]) for w in KJV_WORDS) + " | |")
    for kind, pre in SETTINGS:
        scorers = make_scorers(CONFIGS[args.config], lms, units, eos, kind)
        t0 = time.perf_counter()
        texts = best_texts(decode(model, vocabs, src, refs, scorers, weights, args.beam, args.batch, "dev", 1.0, pre))
        secs = time.perf_counter() - t0
        sc, c = corpus_scores(refs, texts), word_counts(texts, KJV_WORDS)
        width = "all" if kind == "vocab" else f"{round(pre * args.beam)}"
        print(f"| {kind} | {width} | {sc['bleu']:.2f} | {sc['chrf']:.2f} | "
              + " | ".join(str(c[w]) for w in KJV_WORDS) + f" | {secs:.0f} |", flush=True)
        print(json.dumps({"word_scorer": kind, "pre_beam": pre, **sc, "counts": c, "seconds": secs}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
