"""Where an open-vocabulary CTC decode spends its CPU: the compiled loop vs the Python around it.

The inputs of ``ctc_vs_anchors.py`` (character vocabulary, the bible 3-gram word KenLM, its ARPA read into the
compiled n-gram arrays, noisy synthetic emissions), decoded with ``decode_text`` (what that benchmark times) and
with ``decode`` (the full n-best list, force-aligned). Each timed run empties every cache first; CPU time
(``time.process_time``), the median of ``--repeat`` runs, per utterance. The compiled loop's share is timed by
wrapping :func:`decoders.ctc.kernel.run_frames` (ahead of time compiled or JIT: :mod:`decoders.ctc.kernels`).

    .venv/bin/python benchmarks/ctc_cpu_split.py            # 50 utterances, beam 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _timed_kernel() -> list[float]:
    """Wrap ``run_frames`` (as the compiled search calls it: the default kernel set of
    :mod:`decoders.ctc.kernels`) to add its CPU time to the returned cell."""
    from decoders.ctc import kernels

    K = kernels.load()

    spent = [0.0]
    inner = K.run_frames

    def run_frames(*args: Any) -> Any:
        t = time.process_time()
        try:
            return inner(*args)
        finally:
            spent[0] += time.process_time() - t

    K.run_frames = run_frames
    return spent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="utterances")
    ap.add_argument("--beam", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs; the median counts")
    args = ap.parse_args(argv)
    import benchmarks.ctc_vs_anchors as B
    from fusion.ngram import build_ngram

    with tempfile.TemporaryDirectory(prefix="ctcsplit-") as tmp:
        work = Path(tmp)
        lm = build_ngram([REPO / "data" / "text" / "bible.train.txt"], work / "lm.bin", order=3, progress=False,
                         keep_arpa=True)
        s = B.make_setup("char", "bible", args.n, 0, "noisy", work, lm)
        ems = s.load()
        run: Any = B.build_lmfusion(s, args.beam)
        dec = run.dec
        print(f"{len(ems)} utterances, beam {args.beam}, back end {run.backend}")
        run(ems[0])  # compiled code loaded before timing
        spent = _timed_kernel()
        ways: dict[str, Callable[[Any], Any]] = {"decode_text": dec.decode_text, "decode (n-best, aligned)": dec.decode}
        for name, fn in ways.items():
            totals, kernel = [], []
            for _ in range(args.repeat):
                B.clear_lmfusion_caches(dec)
                spent[0] = 0.0
                t = time.process_time()
                for e in ems:
                    fn(e)
                totals.append((time.process_time() - t) / len(ems) * 1e3)
                kernel.append(spent[0] / len(ems) * 1e3)
            tot, ker = statistics.median(totals), statistics.median(kernel)
            print(f"{name:26s} {tot:.2f} ms/utt CPU: {ker:.2f} in run_frames, {tot - ker:.2f} around it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
