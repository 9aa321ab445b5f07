"""Hotword boosting cost and benefit: lmfusion's CTC decoder vs pyctcdecode 0.5.0, same job, one run.

Job: ``--n`` held-out tech sentences (``data/text/tech.test.txt``, < 90 characters), noisy synthetic character
emissions (:mod:`decoders.emissions`), the 3-gram KenLM on ``tech.train.txt``; alpha 0.5, beta 1.5, beam 32 for
both decoders. *Targets* are the test words the LM does not know (the "rare words" biasing should recover);
a list of N hotwords is the targets (up to N) plus distractor words from ``bible.train.txt`` up to N.

* lmfusion: ``CTCDecoder.decode(..., hotwords=list, hotword_weight=--weight)`` (bonus ``weight`` per matched
  character, taken back when a phrase breaks).
* lmfusion-noalign: the same without the alignment of the n-best after the search (``CTCOptions(align=False)``:
  no token timesteps or word confidences), with no hotwords, to show what the alignment costs.
* pyctcdecode: ``decode(..., hotwords=list, hotword_weight=--pyctc-weight)`` (its default 10). It may run on
  fewer utterances (``--pyctc-n``) because it is slow with many hotwords: its times per utterance are then
  over those (said in the table).

Every timed run is a **fresh process** (so every cache is empty and peak memory is that run's own): it
imports its library, then builds the decoder (LM loading included) and decodes the utterances in order. Per
run: *time to first result* = decoder build + first utterance; *ms/utt* = the other utterances' decoding time /
their number (steady state: build and first utterance excluded); *peak RSS* = the process' peak resident
memory (interpreter and imports included). One untimed run per decoder first fills numba's on-disk compile
cache. Reported: the median of ``--repeat`` (default 3) runs. Recall = share of target-word occurrences of
the references that appear in the hypotheses; WER over the decoder's utterances.

    .venv/bin/python benchmarks/bench_hotwords.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import TEXT, kenlm_models, table


def recall(refs: list[str], hyps: list[str], targets: set[str]) -> float:
    hit = tot = 0
    for r, h in zip(refs, hyps, strict=True):
        want = Counter(w for w in r.split() if w in targets)
        got = Counter(h.split())
        tot += sum(want.values())
        hit += sum(min(c, got[w]) for w, c in want.items())
    return hit / tot if tot else float("nan")


def child(job: Path, which: str, size: int) -> None:
    """One timed run in this (fresh) process; prints a JSON line."""
    import numpy as np

    spec = json.loads((job / "job.json").read_text())
    hw = spec["lists"][str(size)]
    data = np.load(job / "ems.npz")
    ems = [data[f"e{i}"] for i in range(spec["n"] if which.startswith("lmfusion") else spec["pyctc_n"])]
    if which.startswith("lmfusion"):
        from decoders.ctc import CTCDecoder, CTCOptions
        from decoders.emissions import CHAR_LABELS
        from fusion.ngram import KenLM

        t0 = time.perf_counter()
        dec = CTCDecoder(CHAR_LABELS, [KenLM(spec["arpa"], name="lm")], {"lm": 0.5, "words": 1.5},
                         options=CTCOptions(beam_width=spec["beam"], align=which == "lmfusion"))

        def one(e: np.ndarray) -> str:
            return dec.decode(e, hotwords=hw, hotword_weight=spec["weight"] if hw else None).hyps[0].text
    else:
        import pyctcdecode

        from decoders.emissions import CHAR_LABELS

        t0 = time.perf_counter()
        d = pyctcdecode.build_ctcdecoder(["", *CHAR_LABELS[1:]], kenlm_model_path=spec["arpa"],
                                         unigrams=spec["unigrams"], alpha=0.5, beta=1.5)

        def one(e: np.ndarray) -> str:
            return str(d.decode(e, beam_width=spec["beam"], hotwords=hw or None, hotword_weight=spec["pyctc_weight"]))
    t_built = time.perf_counter()
    hyps = [one(ems[0])]
    t_first = time.perf_counter()
    hyps += [one(e) for e in ems[1:]]
    t_end = time.perf_counter()
    print(json.dumps({"hyps": hyps, "first": t_first - t0, "build": t_built - t0, "rest": t_end - t_first,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(job: Path, which: str, size: int) -> dict:  # type: ignore[type-arg]
    cmd = [sys.executable, __file__, "--child", which, "--job", str(job), "--size", str(size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--pyctc-n", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 100, 1000])
    ap.add_argument("--weight", type=float, default=2.0)
    ap.add_argument("--pyctc-weight", type=float, default=10.0)
    ap.add_argument("--beam", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", choices=["lmfusion", "lmfusion-noalign", "pyctcdecode"], help=argparse.SUPPRESS)
    ap.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.job, a.child, a.size)
        return

    import numpy as np

    from decoders.emissions import make_emission_set
    from fusion.metrics import wer
    from fusion.ngram import KenLM

    arpa = kenlm_models()["tech"]
    lm = KenLM(arpa, name="lm")
    refs = [s.strip() for s in (TEXT / "tech.test.txt").read_text().splitlines() if 0 < len(s.strip()) < 90][: a.n]
    ems = make_emission_set(refs, config="noisy", seed=0)
    targets = sorted({w for r in refs for w in r.split() if lm.is_oov(w)})
    ref_words = {w for r in refs for w in r.split()}
    distract = [w for w in dict.fromkeys((TEXT / "bible.train.txt").read_text().split()) if w not in ref_words]
    lists = {N: (targets[:N] + distract)[:N] for N in a.sizes}
    try:
        import pyctcdecode  # noqa: F401
        pyctc_n = min(a.pyctc_n, len(refs))
    except ImportError:
        pyctc_n = 0
    print(f"{len(refs)} utterances, {len(targets)} target (LM-unknown) words; pyctcdecode on {pyctc_n}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp)
        np.savez(job / "ems.npz", **{f"e{i}": e for i, e in enumerate(ems)})
        (job / "job.json").write_text(json.dumps({
            "arpa": str(arpa), "n": len(refs), "pyctc_n": pyctc_n, "beam": a.beam, "weight": a.weight,
            "pyctc_weight": a.pyctc_weight, "lists": {str(k): v for k, v in lists.items()},
            "unigrams": sorted(lm.vocab or ())}))  # a binary KenLM does not list them for pyctcdecode
        for which, n, sizes in (("lmfusion", len(refs), a.sizes), ("lmfusion-noalign", len(refs), a.sizes[:1]),
                                ("pyctcdecode", pyctc_n, a.sizes)):
            if n == 0:
                continue
            if which != "lmfusion-noalign":
                run_child(job, which, a.sizes[0])  # untimed: fills numba's compile cache
            base = None
            sub = refs[:n]
            for N in sizes:
                runs = [run_child(job, which, N) for _ in range(a.repeat)]
                ms = statistics.median(r["rest"] for r in runs) / max(1, n - 1) * 1000
                base = ms if base is None else base
                hyps = runs[0]["hyps"]
                rows.append([which, N, n, ms, ms / base, statistics.median(r["first"] for r in runs),
                             statistics.median(r["rss_mb"] for r in runs), wer(sub, hyps),
                             recall(sub, hyps, set(targets))])
                print(rows[-1], flush=True)
    print(table(rows, ["decoder", "hotwords", "utts", f"ms/utt (median of {a.repeat})", "x no hotwords",
                       "first result (s)", "peak RSS (MB)", "WER", "target recall"]))


if __name__ == "__main__":
    main()
