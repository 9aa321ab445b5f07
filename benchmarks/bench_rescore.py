"""KenLM n-best rescoring throughput: ``decoders.nbest.rescore`` vs a plain loop of ``kenlm.Model.score``.

Builds a 3-gram on the bundled bible+tech training text with lmplz (KenLM binary), makes n-best
lists of distinct hypotheses (dev/test sentences with random word edits, so many words are rare or
unseen), then scores every hypothesis

* anchor: ``[model.score(text, bos=True, eos=True) for every hypothesis]`` (the bare kenlm loop);
* lmfusion, score column: ``score_hypotheses(nbests, KenLM(...))`` -- every hypothesis' ln-score as a
  flat array (the score-cache column tuning reads): de-duplication, log10 -> ln; then again with
  ``count_oov=True`` (one split of every distinct text: costs about as much as KenLM's scoring);
* lmfusion, full: ``rescore(nbests, {"ngram": KenLM(...)})`` -- the above plus the word-count
  component and new immutable n-best records (what the CLI writes back as JSONL).

    .venv/bin/python benchmarks/bench_rescore.py [--utts 2000] [--nbest 20] [--repeat 5]

Prints hypotheses/second of both and the ratio lmfusion/anchor (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.nbest import rescore_with_stats, score_hypotheses
from fusion.ngram import LN10, KenLM, build_ngram

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


def make_nbests(utts: int, nbest: int, seed: int) -> list[NBestList]:
    rng = random.Random(seed)
    sents = []
    for name in ("bible.dev.txt", "tech.dev.txt", "bible.test.txt", "tech.test.txt"):
        sents += [s.strip() for s in (TEXT / name).read_text(encoding="utf-8").splitlines() if s.strip()]
    vocab = sorted({w for s in sents for w in s.split()}) + [f"unseen{i}" for i in range(50)]
    out = []
    for u in range(utts):
        ref = sents[u % len(sents)]
        texts: dict[str, None] = {ref: None}
        while len(texts) < nbest:
            ws = ref.split()
            for _ in range(rng.randint(1, 3)):
                j = rng.randrange(len(ws))
                ws[j] = rng.choice(vocab)
            texts[" ".join(ws)] = None
        hyps = tuple(ScoredHypothesis(t, {"am": -rng.random() * 50}) for t in texts)
        out.append(NBestList(f"utt{u}", hyps, ref))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utts", type=int, default=2000)
    ap.add_argument("--nbest", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5, help="best of N timings for each side")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lm_path = build_ngram(
            [TEXT / "bible.train.txt", TEXT / "tech.train.txt"], Path(tmp) / "lm.bin", order=3, progress=False
        )
        lm = KenLM(lm_path, name="ngram")
        model = lm.model
        nbests = make_nbests(args.utts, args.nbest, seed=0)
        texts = [h.text for nb in nbests for h in nb.hyps]
        n = len(texts)
        print(f"{len(nbests)} utterances, {n} hypotheses ({len(set(texts))} distinct), 3-gram KenLM binary")

        def anchor() -> list[float]:
            return [model.score(t, bos=True, eos=True) for t in texts]

        def column() -> list[float]:
            return score_hypotheses(nbests, lm, count_oov=False)[0].tolist()

        def column_oov() -> list[float]:
            return score_hypotheses(nbests, lm, count_oov=True)[0].tolist()

        def full() -> list[float]:
            out = rescore_with_stats(nbests, {"ngram": lm})[0]
            return [h.scores["ngram"] for nb in out for h in nb.hyps]

        sides = (("anchor", anchor), ("column", column), ("column_oov", column_oov), ("full", full))
        times: dict[str, list[float]] = {name: [] for name, _ in sides}
        results = {}
        for _ in range(args.repeat):  # interleaved, best of N: the machine is shared
            for name, fn in sides:
                t0 = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - t0)
        rate = {k: n / min(v) for k, v in times.items()}
        for name in ("column", "column_oov", "full"):
            worst = max(abs(g - r * LN10) for g, r in zip(results[name], results["anchor"], strict=True))
            assert worst < 1e-9, f"{name} differs from the anchor by {worst}"
        a = rate["anchor"]
        print(f"anchor  kenlm.Model.score loop:      {a:>9.0f} hyps/s")
        print(
            f"lmfusion score_hypotheses, scores:   {rate['column']:>9.0f} hyps/s  "
            f"ratio {rate['column'] / a:.2f} (goal >= 0.8)"
        )
        print(
            f"  ... with OOV counts (count_oov):   {rate['column_oov']:>9.0f} hyps/s  "
            f"ratio {rate['column_oov'] / a:.2f}"
        )
        print(f"lmfusion rescore, full records:      {rate['full']:>9.0f} hyps/s  ratio {rate['full'] / a:.2f}")


if __name__ == "__main__":
    main()
