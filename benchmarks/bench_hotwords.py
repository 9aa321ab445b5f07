"""Hotword boosting cost and benefit: lmfusion's CTC decoder vs pyctcdecode 0.5.0, same job, one run.

Job: ``--n`` held-out tech sentences (``data/text/tech.test.txt``, < 90 characters), noisy synthetic character
emissions (:mod:`decoders.emissions`), the 3-gram KenLM on ``tech.train.txt``; alpha 0.5, beta 1.5, beam 32 for
both decoders. *Targets* are the test words the LM does not know (the "rare words" biasing should recover);
a list of N hotwords is the targets (up to N) plus distractor words from ``bible.train.txt`` up to N.

* lmfusion: ``CTCDecoder.decode(..., hotwords=list, hotword_weight=--weight)`` (bonus ``weight`` per matched
  character, taken back when a phrase breaks); caches emptied before every timed run.
* pyctcdecode: ``decode(..., hotwords=list, hotword_weight=--pyctc-weight)`` (its default 10); a new decoder
  (empty caches) built untimed before every timed run. It may run on fewer utterances (``--pyctc-n``)
  because it is slow with many hotwords: its times per utterance are then over those (said in the table).

Median of ``--repeat`` (default 3) timed runs; recall = share of target-word occurrences of the references that
appear in the hypotheses; WER over the lmfusion utterances (pyctcdecode: over its utterances).

    .venv/bin/python benchmarks/bench_hotwords.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import TEXT, kenlm_models, table
from decoders.ctc import CTCDecoder, CTCOptions
from decoders.emissions import CHAR_LABELS, make_emission_set
from fusion.metrics import wer
from fusion.ngram import KenLM


def recall(refs: list[str], hyps: list[str], targets: set[str]) -> float:
    hit = tot = 0
    for r, h in zip(refs, hyps, strict=True):
        want = Counter(w for w in r.split() if w in targets)
        got = Counter(h.split())
        tot += sum(want.values())
        hit += sum(min(c, got[w]) for w, c in want.items())
    return hit / tot if tot else float("nan")


def timed(fn, repeat: int, setup=None):  # type: ignore[no-untyped-def]
    """Median wall time of ``fn(setup())`` (``setup`` untimed: empties caches / builds a fresh decoder)."""
    times, out = [], None
    for _ in range(repeat):
        arg = setup() if setup is not None else None
        t = time.perf_counter()
        out = fn(arg)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--pyctc-n", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 100, 1000])
    ap.add_argument("--weight", type=float, default=2.0)
    ap.add_argument("--pyctc-weight", type=float, default=10.0)
    ap.add_argument("--beam", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    arpa = kenlm_models()["tech"]
    lm = KenLM(arpa, name="lm")
    refs = [s.strip() for s in (TEXT / "tech.test.txt").read_text().splitlines() if 0 < len(s.strip()) < 90][: a.n]
    ems = make_emission_set(refs, config="noisy", seed=0)
    targets = sorted({w for r in refs for w in r.split() if lm.is_oov(w)})
    ref_words = {w for r in refs for w in r.split()}
    distract = [w for w in dict.fromkeys((TEXT / "bible.train.txt").read_text().split()) if w not in ref_words]
    lists = {N: (targets[:N] + distract)[:N] for N in a.sizes}
    print(f"{len(refs)} utterances, {len(targets)} target (LM-unknown) words; pyctcdecode on {a.pyctc_n}")

    dec = CTCDecoder(CHAR_LABELS, [lm], {"lm": 0.5, "words": 1.5}, options=CTCOptions(beam_width=a.beam))
    dec.decode_text(ems[0])  # warm-up (numba compile)
    rows = []
    base = None
    for N, hw in lists.items():
        def run_ours(_: object, hw: list[str] = hw) -> list[str]:
            return [dec.decode(e, hotwords=hw, hotword_weight=a.weight if hw else None).hyps[0].text for e in ems]
        t, hyps = timed(run_ours, a.repeat, dec.clear_caches)
        base = t if N == 0 else base
        rows.append(["lmfusion", N, len(refs), t / len(refs) * 1000, t / base if base else 1.0,
                     wer(refs, hyps), recall(refs, hyps, set(targets))])
    try:
        import pyctcdecode
    except ImportError:
        pyctcdecode = None
    if pyctcdecode is not None and a.pyctc_n > 0:
        labels = ["", *CHAR_LABELS[1:]]
        unigrams = sorted(lm.vocab or ())  # a binary KenLM does not list them
        sub_r, sub_e = refs[: a.pyctc_n], ems[: a.pyctc_n]
        pbase = None
        for N, hw in lists.items():
            def build() -> object:
                return pyctcdecode.build_ctcdecoder(labels, kenlm_model_path=str(arpa), unigrams=unigrams,
                                                   alpha=0.5, beta=1.5)

            def run_theirs(d: object, hw: list[str] = hw) -> list[str]:
                return [d.decode(e, beam_width=a.beam, hotwords=hw or None, hotword_weight=a.pyctc_weight)
                        for e in sub_e]
            t, hyps = timed(run_theirs, a.repeat, build)
            pbase = t if N == 0 else pbase
            rows.append(["pyctcdecode", N, len(sub_r), t / len(sub_r) * 1000, t / pbase if pbase else 1.0,
                         wer(sub_r, hyps), recall(sub_r, hyps, set(targets))])
    print(table(rows, ["decoder", "hotwords", "utts", f"ms/utt (median of {a.repeat})", "x no hotwords", "WER",
                       "target recall"]))


if __name__ == "__main__":
    main()
