"""Foundation benchmark: KenLM adapter vs raw ``kenlm.Model``, and EM on 1M predictions x 3 models.

Everything is measured in this one process, side by side; ratios are what to read (the machine is
shared and noisy). Run: ``.venv/bin/python benchmarks/bench_foundation.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import kenlm
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TEXT, best_of, kenlm_models, table

from fusion.em import em_mixture_weights, estimate_weights, heldout_logprob_matrix
from fusion.ngram import KenLM


def bench_adapter(paths: dict[str, Path]) -> None:
    sents = (TEXT / "bible.train.txt").read_text().splitlines() + (TEXT / "tech.train.txt").read_text().splitlines()
    sents = sents * 3
    n_words = sum(len(s.split()) + 1 for s in sents)
    raw = kenlm.Model(str(paths["general"]))
    lm = KenLM(paths["general"])
    split = [s.split() for s in sents]

    t_raw_total = best_of(lambda: [raw.score(s) for s in sents])
    t_ad_total = best_of(lambda: [lm.sentence_logprob(s) for s in sents])
    t_ad_batch = best_of(lambda: lm.sentence_logprobs(sents))
    t_raw_full = best_of(lambda: [list(raw.full_scores(s)) for s in sents])
    t_ad_full = best_of(lambda: [lm.score_sentence(w) for w in split])

    once = split[: len(split) // 3]  # each sentence once: no help from the adapter's cache
    n_once = sum(len(w) + 1 for w in once)

    def raw_incremental() -> None:
        for words in once:
            a, b = kenlm.State(), kenlm.State()
            raw.BeginSentenceWrite(a)
            for w in words:
                raw.BaseScore(a, w, b)
                a, b = b, a
            raw.BaseScore(a, "</s>", b)

    def ad_incremental() -> None:
        lm.clear_cache()
        for words in once:
            st = lm.begin()
            for w in words:
                _, st = lm.score(st, w)
            lm.end(st)

    lm.clear_cache()
    t_raw_inc = best_of(raw_incremental)
    t_ad_inc = best_of(ad_incremental)
    rows = [
        ["sentence totals, batch (sentence_logprobs)", n_words / t_raw_total, n_words / t_ad_batch,
         t_raw_total / t_ad_batch],
        ["sentence total, one call each (sentence_logprob)", n_words / t_raw_total, n_words / t_ad_total,
         t_raw_total / t_ad_total],
        ["per-word scores (full_scores)", n_words / t_raw_full, n_words / t_ad_full, t_raw_full / t_ad_full],
        ["state passing, cold cache (BaseScore)", n_once / t_raw_inc, n_once / t_ad_inc, t_raw_inc / t_ad_inc],
    ]
    print(f"\nKenLM adapter vs raw kenlm.Model, {len(sents)} sentences / {n_words} words (goal >= 0.8 for sentences)")
    print(table(rows, ["path", "raw words/s", "lmfusion words/s", "ratio (lmfusion/raw)"]))


def bench_em(paths: dict[str, Path]) -> None:
    models = [KenLM(p, name=n) for n, p in paths.items()]
    heldout = (TEXT / "bible.dev.txt").read_text().splitlines() + (TEXT / "tech.dev.txt").read_text().splitlines()
    t = time.perf_counter()
    mat, _ = heldout_logprob_matrix(models, heldout)
    t_score = time.perf_counter() - t
    reps = int(np.ceil(1_000_000 / mat.shape[1]))
    big = np.tile(mat, reps)  # whole copies: the same optimum as the original
    t0 = time.perf_counter()
    trace = em_mixture_weights(big)
    t_em = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = em_mixture_weights(big, accelerate=False)
    t_plain = time.perf_counter() - t0
    small = em_mixture_weights(mat)
    gap = trace.loglik[-1] - plain.loglik[-1]
    dw = float(np.abs(plain.weights - trace.weights).max())
    print(f"\nEM on {big.shape[1]:,} predictions x {big.shape[0]} models (tiled real held-out scores), "
          f"after scoring ({mat.shape[1]:,} real predictions scored in {t_score:.2f} s):")
    print(table(
        [["SQUAREM-accelerated EM (default)", t_em, trace.iterations, trace.converged, 0.0, 0.0],
         ["plain EM", t_plain, plain.iterations, plain.converged, -gap, dw]],
        ["EM", "seconds (goal < 2)", "iterations", "converged", "loglik vs default (nats)", "max |Δλ|"],
    ))
    assert np.allclose(trace.weights, small.weights, atol=1e-4), "tiling must not change the optimum"


def ppl_table(paths: dict[str, Path]) -> None:
    models = {n: KenLM(p, name=n) for n, p in paths.items()}
    rows = []
    for dom in ("bible", "tech"):
        est = estimate_weights(  # SRILM convention (OOVs skipped): how the README table was measured
            [models["bible"], models["tech"], models["general"]], TEXT / f"{dom}.dev.txt", oov="skip"
        )
        w = " / ".join(f"{est.weights[n]:.2f}" for n in ("bible", "tech", "general"))
        rows.append([f"{dom}.dev", est.ppl["bible"], est.ppl["tech"], est.ppl["general"], est.ppl["mix"], w])
    print("\nHeld-out perplexity (word 3-grams; EM weights bible / tech / general)")
    print(table(rows, ["held-out", "bible LM", "tech LM", "general LM", "EM mix", "λ"]))


if __name__ == "__main__":
    paths = kenlm_models()
    bench_adapter(paths)
    bench_em(paths)
    ppl_table(paths)
