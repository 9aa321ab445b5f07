"""The Spanish -> English fusion result in one command: data, model, evaluation (each stage skipped when done).

    python -m recipes.mt.run_es_en runs/mt-es-en [--train-minutes 64] [--quick]

Stages: :mod:`recipes.mt.make_es_en` (``DIR/data``), :mod:`recipes.mt.train` (``DIR/model``: one shared
4k sentencepiece model, Marian 2+2 layers, d=192; resumed from ``DIR/model/last`` when there), then
:mod:`recipes.mt.evaluate` ``--task es-en`` (``DIR/eval``: no fusion, the KJV n-gram, the density ratio
against the WEB n-gram, weights swept on dev for BLEU, paired-bootstrap CIs, the density-ratio weights
through ``generate()`` + ``FusionLogitsProcessor``). ``--quick`` evaluates on fewer sentences.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TRAIN_ARGS = ["--train", "train", "--dev", "dev", "--src-ext", "es", "--tgt-ext", "web", "--shared-vocab",
              "--vocab-size", "4000", "--d-model", "192", "--layers", "2", "--heads", "4", "--ffn", "768",
              "--lr", "1e-3", "--warmup", "300", "--label-smoothing", "0.1", "--dropout", "0.05",
              "--max-tokens", "3000", "--eval-every", "250", "--threads", "2"]
"""The settings of the model in the README (trained under a wall-clock cap on a shared 2-core machine)."""

EVAL_ARGS = ["--task", "es-en", "--configs", "no fusion", "n-gram", "density ratio (n-gram)",
             "--select", "bleu", "--beam", "4", "--threads", "2",
             "--grid", "ngram=0.15,0.3", "source_lm=-0.1,-0.2", "words=0.5,1.5"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--train-minutes", type=float, default=64.0, help="wall-clock cap of the training run")
    ap.add_argument("--train-cpu-minutes", type=float, default=200.0, help="CPU-time cap of the training run")
    ap.add_argument("--quick", action="store_true", help="evaluate on 40 dev / 200 test verses")
    args = ap.parse_args(argv)

    from recipes.mt import evaluate, make_es_en, train

    d: Path = args.dir
    data, model, ev = d / "data", d / "model", d / "eval"
    if not (data / "data-info.json").is_file():
        make_es_en.main([str(data)])
    if not (model / "train-info.json").is_file():
        train.main([str(data), str(model), *TRAIN_ARGS, "--minutes", str(args.train_minutes),
                    "--cpu-minutes", str(args.train_cpu_minutes), "--resume"])
    sizes = ["--dev-n", "40", "--test-n", "200", "--generate-n", "40"] if args.quick else \
        ["--dev-n", "100", "--test-n", "756", "--generate-n", "100"]
    return evaluate.main([str(data), str(model), str(ev), *EVAL_ARGS, *sizes])


if __name__ == "__main__":
    raise SystemExit(main())
