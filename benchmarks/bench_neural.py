"""Neural LM benchmarks: incremental vs re-running the prefix, batched vs one-at-a-time, and the
cross-domain perplexity table (KenLM alone, neural alone, EM mix).

    .venv/bin/python benchmarks/bench_neural.py            # everything (trains two small models, ~minutes)
    .venv/bin/python benchmarks/bench_neural.py --speed    # only the speed ratios
    .venv/bin/python benchmarks/bench_neural.py --ppl      # only the perplexity table

Each comparison runs the anchor and lmfusion in the same process on the same model and prints the
ratio; results are also checked to agree (so a fast path cannot win by computing something else).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import TEXT, WORK, bench_spm, best_of, table
from fusion.incremental import NeuralState
from fusion.neural import NeuralLM
from fusion.nn_models import sequence_logprobs
from fusion.tokenizers import SentencePieceTokenizer, train_sentencepiece

SPEED_MODELS = {
    "transformer": {"arch": "transformer", "d_model": 128, "layers": 2, "heads": 4, "d_ff": 512, "dropout": 0.0,
                    "max_len": 256},
    "lstm": {"arch": "lstm", "emb": 128, "hidden": 256, "layers": 2, "dropout": 0.0},
}



# ------------------------------------------------------------------------------------------------
# 1. incremental vs re-running the prefix
# ------------------------------------------------------------------------------------------------
def extension_paths(n_hyps: int, steps: int, vocab: int, seed: int = 0) -> np.ndarray:
    """Random token paths ``[n_hyps, steps]`` (each hypothesis is extended by one token per step)."""
    return np.random.default_rng(seed).integers(0, vocab, size=(n_hyps, steps))


def run_incremental(lm: NeuralLM, paths: np.ndarray) -> np.ndarray:
    """lmfusion: each step scores every hypothesis' next token from its state (one batched step)."""
    lm.clear_cache()
    states = [lm.begin()] * paths.shape[0]
    out = np.empty(paths.shape)
    for t in range(paths.shape[1]):
        units = [lm.pieces[i] for i in paths[:, t]]
        out[:, t], states = lm.score_pairs(states, units)
    return out


@torch.inference_mode()
def run_rerun_prefix(lm: NeuralLM, paths: np.ndarray) -> np.ndarray:
    """Anchor: at each step re-run the whole prefix of all hypotheses (one batched full forward per step)."""
    out = np.empty(paths.shape)
    for t in range(paths.shape[1]):
        prefixes = [list(map(int, p[: t + 1])) for p in paths]
        lps = sequence_logprobs(lm.model, prefixes, lm.bos_id, lm.eos_id)
        out[:, t] = [float(lp[t]) for lp in lps]
    return out


# ------------------------------------------------------------------------------------------------
# 2. batched B x K vs one at a time
# ------------------------------------------------------------------------------------------------
def fresh_states(lm: NeuralLM, n: int, depth: int, seed: int = 1) -> tuple[list[NeuralState], list[NeuralState]]:
    """``n`` hypotheses of ``depth`` tokens: their parents materialised, themselves not (as in a beam search
    after pruning, where the survivors are next states created by the previous scoring call)."""
    rng = np.random.default_rng(seed)
    parents = [lm.extend_ids(lm.begin(), rng.integers(0, len(lm.pieces), depth - 1).tolist()) for _ in range(n)]
    kids = [lm.extend_ids(p, [int(rng.integers(0, len(lm.pieces)))]) for p in parents]
    return parents, kids


def prepare(lm: NeuralLM, parents: list) -> None:
    """Untimed set-up: a cold cache holding only the parents (the previous step's survivors)."""
    lm.clear_cache()
    lm.logprobs_tensor(parents)


def run_batched(lm: NeuralLM, kids: list, cands: list[str]) -> np.ndarray:
    """lmfusion: one ``score_batch`` call (the 64 kids are materialised in one batched forward)."""
    return lm.score_batch(kids, cands)[0]


def run_one_at_a_time(lm: NeuralLM, kids: list, cands: list[str]) -> np.ndarray:
    """Anchor: a decoder that asks for one (state, unit) score at a time."""
    out = np.empty((len(kids), len(cands)))
    for b, st in enumerate(kids):
        for k, c in enumerate(cands):
            out[b, k] = lm.score(st, c)[0]
    return out


def timed(setup, fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Fastest of ``repeats`` runs of ``fn`` (``setup`` runs untimed before each)."""
    best = float("inf")
    for _ in range(repeats):
        setup()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def speed(args: argparse.Namespace) -> list[list[object]]:
    tok = bench_spm()
    rows: list[list[object]] = []
    for arch in args.archs:
        lm = NeuralLM.from_config(SPEED_MODELS[arch], tok, seed=0, name=arch, device=args.device)
        paths = extension_paths(64, args.steps, len(lm.pieces) - 1)
        paths[paths == 0] = 5  # avoid <unk> so every id round-trips through its piece string
        inc = run_incremental(lm, paths)
        ref = run_rerun_prefix(lm, paths)
        assert np.max(np.abs(inc - ref)) < 1e-3, np.max(np.abs(inc - ref))
        t_inc = best_of(lambda lm=lm, paths=paths: run_incremental(lm, paths), args.repeats)
        t_ref = best_of(lambda lm=lm, paths=paths: run_rerun_prefix(lm, paths), args.repeats)
        rows.append([arch, f"extend 64 hyps x {args.steps} steps", "re-run prefix (batched full forward)",
                     t_ref, t_inc, t_ref / t_inc])

        parents, kids = fresh_states(lm, 64, 20)
        rng = np.random.default_rng(2)
        cands = [lm.pieces[i] for i in rng.integers(1, len(lm.pieces), 16)]
        prepare(lm, parents)
        a = run_batched(lm, kids, cands)
        prepare(lm, parents)
        b = run_one_at_a_time(lm, kids, cands)
        assert np.max(np.abs(a - b)) < 1e-4
        reps = max(args.repeats, 3)
        t_b = timed(lambda lm=lm, p=parents: prepare(lm, p), lambda lm=lm, k=kids, c=cands: run_batched(lm, k, c),
                    reps)
        t_1 = timed(lambda lm=lm, p=parents: prepare(lm, p),
                    lambda lm=lm, k=kids, c=cands: run_one_at_a_time(lm, k, c), reps)
        rows.append([arch, "score 64 states x 16 candidates", "one (state, unit) at a time", t_1, t_b, t_1 / t_b])
    return rows


# ------------------------------------------------------------------------------------------------
# 3. perplexity across domains
# ------------------------------------------------------------------------------------------------
def ppl_table(args: argparse.Namespace) -> tuple[list[list[object]], dict[str, float]]:
    """KenLM and a neural LM trained on bible + a little tech ("general") text; EM weights on tech dev;
    word-level perplexity on tech test (same predictions for all three: words OOV for KenLM skipped)."""
    from fusion.em import estimate_weights, heldout_logprob_matrix
    from fusion.interpolate import linear_mix_logprobs
    from fusion.io import atomic_write_lines, read_sentences
    from fusion.lm import perplexity
    from fusion.ngram import KenLM, build_ngram
    from fusion.nnlm_train import TrainConfig, train_nnlm
    from fusion.units import WordLevelLM

    work = WORK / "neural_ppl"
    work.mkdir(parents=True, exist_ok=True)
    general = read_sentences(TEXT / "tech.train.txt")[: args.general]
    train_file = work / f"train.bible+tech{args.general}.txt"
    if not train_file.is_file():
        atomic_write_lines(train_file, read_sentences(TEXT / "bible.train.txt") + general)
    ken_path = work / f"ken.o{args.order}.{train_file.stem}.arpa"
    if not ken_path.is_file():
        build_ngram([train_file], ken_path, order=args.order, progress=False)
    tok = train_sentencepiece([train_file], work / f"spm{args.vocab}", vocab_size=args.vocab) \
        if not (work / f"spm{args.vocab}.model").is_file() else SentencePieceTokenizer(work / f"spm{args.vocab}.model")
    model = {"arch": args.arch, **({"emb": 128, "hidden": 256, "layers": 1, "dropout": 0.2} if args.arch == "lstm"
                                   else {"d_model": 128, "layers": 2, "heads": 4, "d_ff": 512, "dropout": 0.2,
                                         "max_len": 256})}
    out = work / f"nnlm-{args.arch}-spm{args.vocab}-b{args.batch_tokens}-lr{args.lr:g}-g{args.general}"
    t0 = time.perf_counter()
    res = train_nnlm(TrainConfig(text=[str(train_file)], dev=[str(TEXT / "bible.dev.txt")], spm=str(tok.path),
                                 output=str(out), model=model, epochs=args.epochs, batch_tokens=args.batch_tokens,
                                 lr=args.lr, seed=0, threads=args.threads, device=args.device, name="neural",
                                 progress=not args.quiet))
    train_s = time.perf_counter() - t0
    from fusion.neural import load_checkpoint

    ken = KenLM(ken_path, name="kenlm")
    nn = WordLevelLM(load_checkpoint(out, name="neural", device=args.device))
    est = estimate_weights([ken, nn], TEXT / "tech.dev.txt", oov="skip")  # as published (SRILM convention)
    w = np.array([est.weights["kenlm"], est.weights["neural"]])
    test = read_sentences(TEXT / "tech.test.txt")
    mat, skipped = heldout_logprob_matrix([ken, nn], test, oov="skip")
    t = mat.shape[1]
    ppl_k = perplexity(float(mat[0].sum()), t)
    ppl_n = perplexity(float(mat[1].sum()), t)
    ppl_m = perplexity(float(linear_mix_logprobs(mat, w).sum()), t)
    # in-domain reference (bible test), same weights
    mat_b, _ = heldout_logprob_matrix([ken, nn], read_sentences(TEXT / "bible.test.txt"), oov="skip")
    tb = mat_b.shape[1]
    rows: list[list[object]] = [
        ["KenLM 3-gram (word)", f"{ppl_k:.1f}", f"{perplexity(float(mat_b[0].sum()), tb):.1f}", "-"],
        [f"neural {args.arch} (spm{args.vocab}, per word)", f"{ppl_n:.1f}",
         f"{perplexity(float(mat_b[1].sum()), tb):.1f}", "-"],
        ["EM mix (weights from tech dev)", f"{ppl_m:.1f}",
         f"{perplexity(float(linear_mix_logprobs(mat_b, w).sum()), tb):.1f}",
         f"kenlm {w[0]:.2f} / neural {w[1]:.2f}"],
    ]
    info = {"predictions": t, "oov_skipped": skipped, "train_s": train_s, "steps": res.steps,
            "dev_ppl_piece": res.dev_ppl or math.nan, "mix": ppl_m, "kenlm": ppl_k, "neural": ppl_n}
    return rows, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed", action="store_true", help="only the speed ratios")
    ap.add_argument("--ppl", action="store_true", help="only the perplexity table")
    ap.add_argument("--archs", nargs="+", default=["transformer", "lstm"], choices=sorted(SPEED_MODELS))
    ap.add_argument("--steps", type=int, default=100, help="extension steps (100)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machines are shared)")
    ap.add_argument("--arch", default="lstm", choices=["lstm", "transformer"], help="neural LM of the ppl table")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--general", type=int, default=400, help="tech training sentences added as 'general' data")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    both = not (args.speed or args.ppl)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if args.speed or both:
        rows = speed(args)
        print(f"\n## Speed (seconds, best of {args.repeats}; ratio = anchor / lmfusion)\n")
        print(table(rows, ["model", "task", "anchor", "anchor s", "lmfusion s", "ratio"]))
    if args.ppl or both:
        rows, info = ppl_table(args)
        print(f"\n## Word perplexity: trained on bible + {args.general} tech sentences; tested on tech test "
              "(other domain) and bible test\n")
        print(table(rows, ["model", "tech test ppl", "bible test ppl", "EM weights"]))
        print(f"\n{info['predictions']} tech-test predictions ({info['oov_skipped']} KenLM-OOV skipped); neural "
              f"trained {info['steps']} steps in {info['train_s']:.0f} s (cached after the first run); "
              f"mix beats both: {info['mix'] < min(info['kenlm'], info['neural'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
