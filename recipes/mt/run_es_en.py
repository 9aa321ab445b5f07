"""The Spanish -> English fusion result in one command: data, model, evaluation (each stage skipped when done).

    python -m recipes.mt.run_es_en runs/mt-es-en [--train-minutes 30] [--test-n 300]

Stages: :mod:`recipes.mt.make_es_en` (``DIR/data``), :mod:`recipes.mt.train` (``DIR/model``: one shared
4k sentencepiece model, Marian 2+2 layers, d=128 (1.57M parameters); resumed from ``DIR/model/last`` when there), then
:mod:`recipes.mt.evaluate` ``--task es-en`` (``DIR/eval``: no fusion, the KJV word n-gram (the open word charged
at every token, over the whole vocabulary), the KJV neural LM over the model's pieces, their log-linear combination
and their EM linear interpolation, the density ratio against the WEB n-gram and against a WEB neural LM; weights
swept on dev for BLEU, paired-bootstrap CIs; the density-ratio weights through ``generate()`` +
``FusionLogitsProcessor`` on 100 test verses against plain ``generate()``, and the neural LM's incremental
scoring against prefix re-reading, medians of 3).
"""

from __future__ import annotations

import argparse
from pathlib import Path

TRAIN_ARGS = ["--train", "train", "--dev", "dev", "--src-ext", "es", "--tgt-ext", "web", "--shared-vocab",
              "--vocab-size", "4000", "--d-model", "128", "--layers", "2", "--heads", "4", "--ffn", "512",
              "--lr", "1.5e-3", "--warmup", "300", "--label-smoothing", "0.1", "--dropout", "0.05",
              "--max-tokens", "2500", "--eval-every", "250", "--threads", "1"]
"""The settings of the model in the README (trained under a wall-clock cap on a shared 2-core machine). One torch
thread: on a loaded machine two threads spun and cost about 6x the CPU time per step (3 s instead of 0.45 s)."""

CONFIGS = ["no fusion", "n-gram", "neural LM", "n-gram + neural (log-linear)", "n-gram + neural (linear, EM)",
           "density ratio (n-gram)", "density ratio (neural)"]
"""The README table's rows: each LM alone, their log-linear combination and their linear interpolation (λ by EM on
the dev KJV references, fused as one word LM), the density ratio with word and neural LMs."""
EVAL_ARGS = ["--task", "es-en", "--select", "bleu", "--beam", "4", "--threads", "1",
             "--grid", "ngram=0.1,0.3,0.6", "nnlm=0.1,0.3", "mix=0.3,0.6", "source_lm=-0.3,-0.6",
             "nnlm_source=-0.1,-0.3", "words=0,1", "--generate-n", "100", "--nnlm-speed-n", "20", "--repeats", "3"]
"""Weights swept in search on dev for BLEU (every combination of a configuration's weights). The word n-grams are
fused over the whole vocabulary (``--word-scorer vocab``): with a pre-beam the register words never reach them."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--train-minutes", type=float, default=30.0, help="wall-clock cap of the training run")
    ap.add_argument("--train-cpu-minutes", type=float, default=200.0, help="CPU-time cap of the training run")
    ap.add_argument("--dev-n", type=int, default=100, help="dev verses of the weight sweep")
    ap.add_argument("--test-n", type=int, default=756, help="test verses (756 = all)")
    ap.add_argument("--configs", nargs="*", default=CONFIGS, help="rows of the table (recipes.mt.evaluate.CONFIGS)")
    ap.add_argument("--word-scorer", choices=("boundary", "open", "vocab"), default="vocab",
                    help="how the word n-grams are fused (recipes.mt.evaluate.WORD_SCORERS)")
    args = ap.parse_args(argv)

    from recipes.mt import evaluate, make_es_en, train

    d: Path = args.dir
    data, model, ev = d / "data", d / "model", d / "eval"
    if not (data / "data-info.json").is_file():
        make_es_en.main([str(data)])
    if not (model / "train-info.json").is_file():
        # the shared sentencepiece model also sees the KJV LM text (training books only): KJV words (thee, unto,
        # hath, saith) are then one piece each instead of 2-3, so the fused n-gram can reach them in a small beam
        train.main([str(data), str(model), *TRAIN_ARGS, "--spm-extra", str(data / "kjv.lm.txt"),
                    "--minutes", str(args.train_minutes),
                    "--cpu-minutes", str(args.train_cpu_minutes), "--resume"])
    sizes = ["--dev-n", str(args.dev_n), "--test-n", str(args.test_n), "--word-scorer", args.word_scorer]
    return evaluate.main([str(data), str(model), str(ev), *EVAL_ARGS, "--configs", *args.configs, *sizes])


if __name__ == "__main__":
    raise SystemExit(main())
