"""CTC decoding with a KenLM word LM: lmfusion vs pyctcdecode 0.5.0 vs flashlight-text 0.0.7.

One run, the same emissions, the same 3-gram KenLM (lmplz on ``data/text/<domain>.train.txt``), the same
beam widths. Emissions are peaky synthetic log-probabilities (29-symbol character vocabulary) towards the
held-out ``<domain>.test.txt`` sentences, with realistic confusions (:mod:`decoders.emissions`).

Decoders and their settings (LM weight 0.5 on ln P, word bonus 1.5, the same for all):

* ``pyctcdecode``: ``build_ctcdecoder(alpha=0.5, beta=1.5)``, ``decode(beam_width=B)`` (token_min_logp -5,
  beam_prune_logp -10: its defaults, which lmfusion shares);
* ``lmfusion``: :class:`decoders.ctc.CTCDecoder`, open vocabulary, weights ``{"lm": .5, "words": 1.5,
  "oov": .5 * -10 * ln 10}`` (pyctcdecode's unknown-word offset), n-best 1;
* ``lmfusion lexicon``: the same with ``lexicon_constrained=True`` (only words of the LM), the LM look-ahead
  of flashlight's smeared trie (``lookahead=True``) and flashlight's pruning threshold (``beam_prune_logp=-25``);
* ``flashlight``: ``LexiconDecoder`` over a trie of the LM's vocabulary (unigram scores smeared MAX),
  ``lm_weight = 0.5 * ln 10`` (flashlight's KenLM scores are log10), ``word_score = 1.5``,
  ``beam_size = B``, ``beam_size_token = 29``, ``beam_threshold = 25``, ``unk_score = -inf``.

Timing is wall-clock over the whole set, one utterance at a time in this process (no pools), after a
warm-up utterance (numba's compile is reported separately); the fastest of ``--repeat`` runs counts (shared
machines are noisy), and lmfusion's LM cache is emptied before every run. Prints a Markdown table and the ratios
against the goals: >= 5x pyctcdecode's throughput at <= its WER; lexicon mode within 2x of flashlight's
throughput at <= its WER.

    .venv/bin/python benchmarks/ctc_vs_anchors.py --n 200 --beams 16 64 128
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from decoders.ctc import CTCDecoder, CTCOptions  # noqa: E402
from decoders.emissions import CHAR_LABELS, NOISE_LEVELS, greedy_decode, make_emission_set  # noqa: E402
from fusion.metrics import wer  # noqa: E402
from fusion.ngram import KenLM, build_ngram  # noqa: E402

ALPHA, BETA = 0.5, 1.5
REPEAT = 1


def load_sentences(domain: str, n: int) -> list[str]:
    ok = set(CHAR_LABELS[1:])
    out = []
    for line in (REPO / "data" / "text" / f"{domain}.test.txt").read_text(encoding="utf-8").splitlines():
        s = " ".join(line.split())
        if s and set(s) <= ok:
            out.append(s)
    return out[:n]


def run_pyctcdecode(arpa: Path, ems: list[np.ndarray], beam: int) -> tuple[list[str], float] | None:
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        return None
    dec = build_ctcdecoder(["", *CHAR_LABELS[1:]], kenlm_model_path=str(arpa), alpha=ALPHA, beta=BETA)
    dec.decode(ems[0], beam_width=beam)
    best = math.inf
    for _ in range(REPEAT):
        t = time.perf_counter()
        hyps = [dec.decode(e, beam_width=beam) for e in ems]
        best = min(best, time.perf_counter() - t)
    return hyps, best


class Flashlight:
    """flashlight-text's LexiconDecoder with a KenLM word LM over the LM's vocabulary."""

    def __init__(self, arpa: Path, vocab: frozenset[str], beam: int) -> None:
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
        )
        from flashlight.lib.text.decoder import (
            KenLM as FLKenLM,
        )
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict

        tokens = ["<blank>", "|", *CHAR_LABELS[2:]]
        self.tokens = Dictionary(tokens)
        lexicon = {w: [[*w, "|"]] for w in sorted(vocab) if set(w) <= set(CHAR_LABELS[2:])}
        self.words = create_word_dict({**lexicon, "<unk>": [["<unk>"]]})
        self.lm = FLKenLM(str(arpa), self.words)
        sil = self.tokens.get_index("|")
        trie = Trie(self.tokens.index_size(), sil)
        start = self.lm.start(False)
        for w, spellings in lexicon.items():
            wi = self.words.get_index(w)
            _, score = self.lm.score(start, wi)
            for sp in spellings:
                trie.insert([self.tokens.get_index(t) for t in sp], wi, score)
        trie.smear(SmearingMode.MAX)
        opts = LexiconDecoderOptions(
            beam_size=beam, beam_size_token=len(tokens), beam_threshold=25.0, lm_weight=ALPHA * math.log(10.0),
            word_score=BETA, unk_score=-math.inf, sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC,
        )
        self.decoder = LexiconDecoder(opts, trie, self.lm, sil, 0, self.words.get_index("<unk>"), [], False)

    def decode(self, em: np.ndarray) -> str:
        e = np.ascontiguousarray(em, dtype=np.float32)
        res = self.decoder.decode(e.ctypes.data, e.shape[0], e.shape[1])
        if not res:
            return ""
        return " ".join(self.words.get_entry(i) for i in res[0].words if i >= 0)


def run_flashlight(
    arpa: Path, vocab: frozenset[str], ems: list[np.ndarray], beam: int
) -> tuple[list[str], float] | None:
    try:
        fl = Flashlight(arpa, vocab, beam)
    except ImportError:
        return None
    fl.decode(ems[0])
    best = math.inf
    for _ in range(REPEAT):
        t = time.perf_counter()
        hyps = [fl.decode(e) for e in ems]
        best = min(best, time.perf_counter() - t)
    return hyps, best


def run_lmfusion(
    lm: KenLM, ems: list[np.ndarray], beam: int, constrained: bool, lookahead: bool
) -> tuple[list[str], float, float]:
    oov = ALPHA * -10.0 * math.log(10.0)
    # lexicon mode prunes like flashlight (beam_threshold 25); open vocabulary like pyctcdecode (-10)
    opts = CTCOptions(beam_width=beam, nbest=1, lexicon_constrained=constrained, lookahead=lookahead,
                      beam_prune_logp=-25.0 if constrained else -10.0)
    dec = CTCDecoder(CHAR_LABELS, [lm], {"lm": ALPHA, "words": BETA, "oov": oov}, options=opts)
    t0 = time.perf_counter()
    dec.decode(ems[0])  # warm-up (numba compile or cache load)
    warm = time.perf_counter() - t0
    best = math.inf
    for _ in range(REPEAT):
        dec._shared = None  # every timed run starts with an empty LM cache
        t = time.perf_counter()
        hyps = [dec.decode_text(e) for e in ems]
        best = min(best, time.perf_counter() - t)
    return hyps, best, warm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", default="bible", choices=["bible", "tech"])
    ap.add_argument("--n", type=int, default=200, help="utterances")
    ap.add_argument("--beams", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--noise", default="noisy", choices=sorted(NOISE_LEVELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--lookahead", action="store_true", help="open-vocabulary lmfusion with the LM look-ahead too")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per decoder; the fastest counts")
    args = ap.parse_args(argv)
    global REPEAT
    REPEAT = max(1, args.repeat)

    refs = load_sentences(args.domain, args.n)
    ems = make_emission_set(refs, config=args.noise, seed=args.seed)
    frames = sum(len(e) for e in ems)
    with tempfile.TemporaryDirectory() as tmp:
        arpa = build_ngram([REPO / "data" / "text" / f"{args.domain}.train.txt"], Path(tmp) / "lm.arpa", order=3,
                           progress=False)
        lm = KenLM(arpa, name="lm")
        vocab = lm.vocab or frozenset()
        greedy_wer = wer(refs, [greedy_decode(e, CHAR_LABELS) for e in ems])
        print(f"{len(refs)} utterances, {frames} frames ({frames / len(refs):.0f}/utt), noise={args.noise}, "
              f"3-gram KenLM on {args.domain}.train ({len(vocab)} words); greedy WER {greedy_wer:.4f}\n")
        rows = []
        for beam in args.beams:
            res: dict[str, dict[str, float]] = {}
            for name, fn in (
                ("pyctcdecode", lambda b=beam: run_pyctcdecode(arpa, ems, b)),
                ("flashlight", lambda b=beam: run_flashlight(arpa, vocab, ems, b)),
                ("lmfusion", lambda b=beam: run_lmfusion(lm, ems, b, False, args.lookahead)),
                ("lmfusion lexicon", lambda b=beam: run_lmfusion(lm, ems, b, True, True)),
            ):
                out = fn()
                if out is None:
                    print(f"  ({name} not installed: skipped)")
                    continue
                hyps, secs = out[0], out[1]
                res[name] = {"utt_per_s": len(refs) / secs, "wer": wer(refs, hyps), "seconds": secs}
                if len(out) > 2:
                    res[name]["warmup_s"] = out[2]
            rows.append((beam, res))
    names = ["pyctcdecode", "lmfusion", "flashlight", "lmfusion lexicon"]
    print("| beam | " + " | ".join(f"{n} utt/s | {n} WER" for n in names) + " | lmfusion / pyctcdecode | "
          "lexicon / flashlight |")
    print("|---" * (2 * len(names) + 3) + "|")
    verdicts = []
    for beam, res in rows:
        cells = []
        for n in names:
            r = res.get(n)
            cells += [f"{r['utt_per_s']:.1f}", f"{r['wer']:.4f}"] if r else ["-", "-"]
        def ratio(a: str, b: str, res: dict[str, dict[str, float]] = res) -> str:
            return f"{res[a]['utt_per_s'] / res[b]['utt_per_s']:.2f}x" if a in res and b in res else "-"
        print(f"| {beam} | " + " | ".join(cells) + f" | {ratio('lmfusion', 'pyctcdecode')} | "
              f"{ratio('lmfusion lexicon', 'flashlight')} |")
        if "pyctcdecode" in res:
            p, m = res["pyctcdecode"], res["lmfusion"]
            verdicts.append(f"beam {beam}: lmfusion {m['utt_per_s'] / p['utt_per_s']:.2f}x pyctcdecode's throughput "
                            f"(goal >= 5x), WER {m['wer']:.4f} vs {p['wer']:.4f} (goal <=)")
        if "flashlight" in res:
            f, x = res["flashlight"], res["lmfusion lexicon"]
            verdicts.append(f"beam {beam}: lexicon mode at {x['utt_per_s'] / f['utt_per_s']:.2f}x flashlight's "
                            f"throughput (goal >= 0.5x), WER {x['wer']:.4f} vs {f['wer']:.4f} (goal <=)")
    print()
    for v in verdicts:
        print(v)
    warm = [r["lmfusion"].get("warmup_s", 0.0) for _, r in rows]
    print(f"\nlmfusion warm-up (first utterance incl. numba compile or cache load): {max(warm):.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"beams": {b: r for b, r in rows}, "greedy_wer": greedy_wer,
                                         "n": len(refs), "noise": args.noise}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
