"""CTC decoding with a KenLM word LM: lmfusion vs pyctcdecode 0.5.0 vs flashlight-text 0.0.7, honestly.

One run, the same emissions, the same word 3-gram KenLM binary (lmplz on ``data/text/<domain>.train.txt``),
the same LM weight (0.5 on ln P; flashlight gets ``0.5 * ln 10`` because its KenLM scores are log10) and
word bonus (1.5). Emissions are peaky synthetic log-probabilities (:mod:`decoders.emissions`) towards the
held-out ``<domain>.test.txt`` sentences, over a 29-symbol character vocabulary and over sentencepiece
vocabularies of 256 / 1k / 4k pieces trained on the bundled text (``--vocabs``).

Systems (``beam_prune_logp`` -10 open vocabulary as pyctcdecode, flashlight's ``beam_threshold`` 25 in
lexicon mode):

* ``pyctcdecode``: ``build_ctcdecoder(alpha, beta, unigrams=<LM vocabulary>)``, ``decode(beam_width=B)``
  (its default ``token_min_logp`` -5);
* ``lmfusion``: :class:`decoders.ctc.CTCDecoder`, open vocabulary, ``token_min_logp`` -5, pyctcdecode's
  unknown-word offset (``CTCOptions.unk_score_offset`` -10, its default; no ``oov`` weight on top);
* ``flashlight all-tok`` / ``lmfusion lex all-tok``: lexicon mode (only LM words) with NO token pruning on
  either side (``beam_size_token = V``; ``token_min_logp = -inf``);
* ``flashlight top-k`` / ``lmfusion lex``: lexicon mode with matched token pruning: lmfusion keeps tokens
  with log-prob >= -5, flashlight keeps the top ``k`` tokens per frame, ``k`` the 99th percentile of the
  number of tokens (blank included) lmfusion keeps per frame on this set (its mean is about 2).

Honesty rules: every timed run decodes the whole set with NEW decoder and LM objects (nothing cached
survives: lmfusion's fusion cache, its (state, unit) caches and the ``KenLM`` object's cache are checked
empty before the clock starts), the median of ``--repeat`` (>= 3) runs counts, and the compile /
cache-load cost is paid before timing (one utterance on a throw-away decoder). Time to first result and
peak memory come from a FRESH subprocess per system (``python`` start + import + build + first decode;
then the whole set, ``--rss-utts`` utterances, for the peak RSS).

    .venv/bin/python benchmarks/ctc_vs_anchors.py --quick          # a minute or two
    nice -n 10 .venv/bin/python benchmarks/ctc_vs_anchors.py       # the full run (README table)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ALPHA, BETA = 0.5, 1.5
TOKEN_MIN_LOGP = -5.0
OPEN_PRUNE, LEX_PRUNE = -10.0, -25.0
SYSTEMS = ("pyctcdecode", "lmfusion", "flashlight all-tok", "lmfusion lex all-tok", "flashlight top-k", "lmfusion lex")
CHILD_SYSTEMS = ("pyctcdecode", "lmfusion", "flashlight top-k", "lmfusion lex")
BPE_SIZES = {"bpe256": 256, "bpe1k": 1000, "bpe4k": 4000}


# ----------------------------------------------------------------------------------------------
# Inputs: vocabularies, emissions, the LM (written to a work dir so child processes can load them)
# ----------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """One vocabulary's inputs, as files a fresh process can load."""

    name: str
    labels: list[str]
    lm: Path  # KenLM binary (with its .vocab sidecar)
    emissions: Path  # .npz with arrays arr_0 .. arr_{n-1}
    refs: list[str]
    words: list[str]  # the LM's vocabulary (pyctcdecode's unigrams, the lexicon)
    spellings: dict[str, list[int]]  # word -> token ids (flashlight's lexicon)
    topk: int  # flashlight's beam_size_token matched to lmfusion's pruning

    def load(self, n: int | None = None) -> list[np.ndarray]:
        with np.load(self.emissions) as z:
            m = len(z.files)
            return [z[f"arr_{i % m}"] for i in range(m if n is None else n)]

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Setup:
        return cls(**{**d, "lm": Path(d["lm"]), "emissions": Path(d["emissions"])})


def load_sentences(domain: str, n: int, chars: set[str]) -> list[str]:
    out = []
    for line in (REPO / "data" / "text" / f"{domain}.test.txt").read_text(encoding="utf-8").splitlines():
        s = " ".join(line.split())
        if s and set(s) <= chars:
            out.append(s)
    return out[:n]


def matched_topk(ems: Sequence[np.ndarray], blank: int) -> int:
    """Tokens per frame (blank included) lmfusion's ``token_min_logp`` pruning keeps: the 99th percentile."""
    from decoders.ctc import token_candidates

    kept = np.concatenate([token_candidates(e, blank, TOKEN_MIN_LOGP)[0].sum(axis=1) + 1 for e in ems])
    return math.ceil(float(np.percentile(kept, 99)))


def make_setup(name: str, domain: str, n: int, seed: int, noise: str, work: Path, lm: Path) -> Setup:
    from decoders.emissions import CHAR_LABELS, make_emission_set, piece_confusions, synth_piece_emissions
    from decoders.emissions import NOISE_LEVELS as LEVELS
    from fusion.ngram import vocab_sidecar

    words = sorted(w for w in vocab_sidecar(lm).read_text(encoding="utf-8").split() if not w.startswith("<"))
    if name == "char":
        labels = list(CHAR_LABELS)
        refs = load_sentences(domain, n, set(CHAR_LABELS[1:]))
        ems = make_emission_set(refs, config=noise, seed=seed)
        idx = {c: i for i, c in enumerate(labels)}
        spellings = {w: [idx[c] for c in w] + [idx[" "]] for w in words if set(w) <= set(CHAR_LABELS[2:])}
    else:
        from benchmarks._common import bench_spm

        sp = bench_spm(BPE_SIZES[name])
        labels = ["<blank>", *(sp.sp.IdToPiece(i) for i in range(1, len(sp)))]
        refs = load_sentences(domain, n, set(CHAR_LABELS[1:]))
        conf = piece_confusions(labels)
        cfg = LEVELS[noise]
        ems = [
            synth_piece_emissions(sp.encode_ids(r), len(labels), confusions=conf, config=cfg,
                                  seed=np.random.default_rng([seed, i]))
            for i, r in enumerate(refs)
        ]
        spellings = {w: sp.encode_ids(w) for w in words}
    path = work / f"{name}.npz"
    np.savez(path, *ems)  # arr_0 .. arr_{n-1}
    return Setup(name, labels, lm, path, refs, words, spellings, matched_topk(ems, 0))


# ----------------------------------------------------------------------------------------------
# The systems: each builder returns decode(emission) -> text, built from scratch (empty caches)
# ----------------------------------------------------------------------------------------------
def build_pyctcdecode(s: Setup, beam: int) -> Callable[[np.ndarray], str]:
    from pyctcdecode import build_ctcdecoder

    dec = build_ctcdecoder(["", *s.labels[1:]], kenlm_model_path=str(s.lm), unigrams=s.words, alpha=ALPHA,
                           beta=BETA)
    return lambda e: dec.decode(e, beam_width=beam, token_min_logp=TOKEN_MIN_LOGP, beam_prune_logp=OPEN_PRUNE)


def build_lmfusion_decoder(s: Setup, beam: int, lexicon: bool, all_tokens: bool) -> Any:
    """A new lmfusion decoder over a new ``KenLM`` object (nothing cached)."""
    from decoders.ctc import CTCDecoder, CTCOptions
    from fusion.ngram import KenLM

    lm = KenLM(s.lm, name="lm")
    opts = CTCOptions(beam_width=beam, nbest=1, lexicon_constrained=lexicon, lookahead=lexicon,
                      beam_prune_logp=LEX_PRUNE if lexicon else OPEN_PRUNE,
                      token_min_logp=-math.inf if all_tokens else TOKEN_MIN_LOGP)
    # unknown words: CTCOptions.unk_score_offset (-10, log10, on the LM score: pyctcdecode's default) and no extra
    # "oov" weight, which would charge them a second time
    return CTCDecoder(s.labels, [lm], {"lm": ALPHA, "words": BETA}, options=opts)


def lmfusion_cache_sizes(dec: Any) -> dict[str, int]:
    """Entries in every cache an lmfusion decoder can carry from one utterance to the next."""
    return {
        "fusion": dec._shared.size() if dec._shared is not None else 0,
        "lm_pairs": sum(len(c._pairs) for c in dec._lm_caches),
        "lm_end": sum(len(c._ends) for c in dec._lm_caches),
        "kenlm": sum(len(getattr(m, "_cache", ())) for m in dec.lms),
    }


def clear_lmfusion_caches(dec: Any) -> None:
    """Empty every cache of an lmfusion decoder and of its LMs."""
    dec.clear_caches()  # the fused-step cache, the per-LM (state, unit) and end caches, re-weighted mixtures
    for m in dec.lms:
        if hasattr(m, "clear_cache"):
            m.clear_cache()


def build_lmfusion(s: Setup, beam: int, lexicon: bool = False, all_tokens: bool = False) -> Callable[[np.ndarray], str]:
    dec = build_lmfusion_decoder(s, beam, lexicon, all_tokens)
    clear_lmfusion_caches(dec)  # the look-ahead table's build scored every word through the KenLM cache
    sizes = lmfusion_cache_sizes(dec)
    if any(sizes.values()):
        raise RuntimeError(f"a new lmfusion decoder has non-empty caches: {sizes}")
    return _Run(dec)


@dataclass
class _Run:
    """An lmfusion decoder as ``decode(emission) -> text``, with the back end that runs it."""

    dec: Any

    @property
    def backend(self) -> str:
        """The search back end and where the LM is scored (``numba+compiled-ngram``: inside the compiled loop)."""
        return f"{self.dec.backend}+{self.dec.lm_backend}"

    def __call__(self, em: np.ndarray) -> str:
        return str(self.dec.decode_text(em))


class Flashlight:
    """flashlight-text's LexiconDecoder with a KenLM word LM over the LM's vocabulary."""

    def __init__(self, s: Setup, beam: int, beam_size_token: int) -> None:
        from flashlight.lib.text.decoder import CriterionType, LexiconDecoder, LexiconDecoderOptions, SmearingMode, Trie
        from flashlight.lib.text.decoder import KenLM as FLKenLM
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict

        char = s.name == "char"
        # a piece vocabulary has no silence token: flashlight gets one extra that never fires (-1e9)
        tokens = ["<blank>", "|", *s.labels[2:]] if char else [*(f"t{i}" for i in range(len(s.labels))), "|"]
        self.pad = not char
        self.tokens = Dictionary(tokens)
        self.words = create_word_dict({**{w: [[]] for w in s.spellings}, "<unk>": [["<unk>"]]})
        self.lm = FLKenLM(str(s.lm), self.words)
        sil = self.tokens.get_index("|")
        trie = Trie(len(tokens), sil)
        start = self.lm.start(False)
        for w, sp in s.spellings.items():
            wi = self.words.get_index(w)
            _, score = self.lm.score(start, wi)
            trie.insert(sp, wi, score)
        trie.smear(SmearingMode.MAX)
        opts = LexiconDecoderOptions(
            beam_size=beam, beam_size_token=beam_size_token, beam_threshold=-LEX_PRUNE,
            lm_weight=ALPHA * math.log(10.0), word_score=BETA, unk_score=-math.inf, sil_score=0.0, log_add=False,
            criterion_type=CriterionType.CTC,
        )
        self.decoder = LexiconDecoder(opts, trie, self.lm, sil, 0, self.words.get_index("<unk>"), [], False)

    def __call__(self, em: np.ndarray) -> str:
        e = np.ascontiguousarray(em, dtype=np.float32)
        if self.pad:
            e = np.concatenate([e, np.full((len(e), 1), -1e9, np.float32)], axis=1)
        res = self.decoder.decode(e.ctypes.data, e.shape[0], e.shape[1])
        if not res:
            return ""
        return " ".join(self.words.get_entry(i) for i in res[0].words if i >= 0)


def builder(system: str, s: Setup, beam: int) -> Callable[[np.ndarray], str]:
    if system == "pyctcdecode":
        return build_pyctcdecode(s, beam)
    if system == "lmfusion":
        return build_lmfusion(s, beam)
    if system == "lmfusion lex":
        return build_lmfusion(s, beam, lexicon=True)
    if system == "lmfusion lex all-tok":
        return build_lmfusion(s, beam, lexicon=True, all_tokens=True)
    if system == "flashlight all-tok":
        return Flashlight(s, beam, len(s.labels))
    if system == "flashlight top-k":
        return Flashlight(s, beam, s.topk)
    raise ValueError(system)


def available(system: str) -> bool:
    mod = {"pyctcdecode": "pyctcdecode", "flashlight": "flashlight.lib.text.decoder"}.get(system.split()[0])
    if mod is None:
        return True
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Timing in this process, first result and peak RSS in a fresh one
# ----------------------------------------------------------------------------------------------
def timed(system: str, s: Setup, ems: list[np.ndarray], beam: int, repeat: int) -> dict[str, Any]:
    """Median wall time of ``repeat`` runs over the whole set, every run starting with empty caches.

    lmfusion's decoder (whose lexicon trie takes a while to build for large piece vocabularies) is
    built once and every cache it and its LMs hold is emptied before each run (checked empty); the
    anchors are rebuilt for every run (cheap). The first decode (compile or cache load) is untimed.
    """
    keep = builder(system, s, beam)
    keep(ems[0])
    times, hyps = [], []
    for _ in range(repeat):
        if isinstance(keep, _Run):
            clear_lmfusion_caches(keep.dec)
            sizes = lmfusion_cache_sizes(keep.dec)
            if any(sizes.values()):
                raise RuntimeError(f"lmfusion caches not empty before a timed run: {sizes}")
            fn: Callable[[np.ndarray], str] = keep
        else:
            fn = builder(system, s, beam)
        t = time.perf_counter()
        hyps = [fn(e) for e in ems]
        times.append(time.perf_counter() - t)
    from fusion.metrics import wer

    med = statistics.median(times)
    return {"utt_per_s": len(ems) / med, "seconds": med, "runs": times, "wer": wer(s.refs, hyps),
            "backend": getattr(keep, "backend", "-")}


def peak_rss_mb() -> float:
    """This process' peak resident set (``VmHWM``; ``ru_maxrss`` survives ``exec`` on Linux, so not that)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_main(system: str, setup_json: Path, beam: int, n: int) -> int:
    """In a fresh process: import + build + first decode (timed), then ``n`` utterances; print JSON."""
    import psutil

    started = time.time() - psutil.Process().create_time()  # interpreter start + numpy, before any system
    t0 = time.perf_counter()
    s = Setup.from_json(json.loads(setup_json.read_text()))
    ems = s.load(n)
    t_io = time.perf_counter() - t0
    t1 = time.perf_counter()
    fn = builder(system, s, beam)
    t_build = time.perf_counter() - t1
    fn(ems[0])
    t_first = time.perf_counter() - t1
    for e in ems[1:]:
        fn(e)
    rss_mb = peak_rss_mb()
    print(json.dumps({"first_s": t_first, "first_wall_s": started + t_first, "python_start_s": started,
                      "build_s": t_build, "io_s": t_io, "rss_mb": rss_mb, "backend": getattr(fn, "backend", "-")}))
    return 0


def fresh_process(system: str, setup_json: Path, beam: int, n: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", system, "--child-setup", str(setup_json), "--beams", str(beam),
           "--rss-utts", str(n)]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"{system} child failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return dict(out)


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def report(results: dict[str, Any]) -> str:
    lines = ["| vocab | beam | system | backend | utt/s | WER | vs anchor |",
             "|---|---|---|---|---|---|---|"]
    anchor = {"lmfusion": "pyctcdecode", "lmfusion lex": "flashlight top-k",
              "lmfusion lex all-tok": "flashlight all-tok"}
    for vname, v in results["vocabs"].items():
        for beam, rows in v["beams"].items():
            for sysname, r in rows.items():
                a = rows.get(anchor.get(sysname, ""))
                ratio = f"{r['utt_per_s'] / a['utt_per_s']:.2f}x {anchor[sysname]}" if a else ""
                lines.append(f"| {vname} (V={v['V']}) | {beam} | {sysname} | {r['backend']} | "
                             f"{r['utt_per_s']:.1f} | {r['wer']:.4f} | {ratio} |")
    lines += ["", "Fresh process (python start + import + build + first decode; peak RSS after "
              f"{results['rss_utts']} utterances at beam {results['rss_beam']}):", "",
              "| vocab | system | backend | first result s | of it build s | peak RSS MB | RSS / pyctcdecode |",
              "|---|---|---|---|---|---|---|"]
    for vname, v in results["vocabs"].items():
        fresh = v.get("fresh", {})
        base = fresh.get("pyctcdecode", {}).get("rss_mb")
        for sysname, r in fresh.items():
            rel = f"{r['rss_mb'] / base:.2f}x" if base else ""
            lines.append(f"| {vname} | {sysname} | {r.get('backend', '-')} | {r['first_wall_s']:.2f} | "
                         f"{r['build_s']:.2f} | {r['rss_mb']:.0f} | {rel} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="30 utterances, beams 16 64 (char) / 64 (bpe1k), 3 runs")
    ap.add_argument("--domain", default="bible", choices=["bible", "tech"])
    ap.add_argument("--n", type=int, default=200, help="utterances")
    ap.add_argument("--beams", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--vocabs", nargs="+", default=["char", *BPE_SIZES], choices=["char", *BPE_SIZES])
    ap.add_argument("--bpe-beams", type=int, nargs="+", default=[64], help="beams for the piece vocabularies")
    ap.add_argument("--all-tok-vocabs", nargs="+", default=["char"], choices=["char", *BPE_SIZES],
                    help="vocabularies that also get the no-token-pruning lexicon rows (slow for big V)")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--noise", default="noisy", choices=["clean", "noisy", "very_noisy"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per system (>= 3); the median counts")
    ap.add_argument("--rss-beam", type=int, default=64, help="beam of the fresh-process runs")
    ap.add_argument("--rss-utts", type=int, default=None, help="utterances a fresh process decodes (default --n)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-setup", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child, args.child_setup, args.beams[0], args.rss_utts)
    if args.quick:
        args.n, args.beams, args.bpe_beams, args.vocabs = 30, [16, 64], [64], ["char", "bpe1k"]
    if args.repeat < 3:
        ap.error("--repeat must be >= 3 (the median of at least three runs counts)")
    rss_utts = args.rss_utts or args.n
    systems = [x for x in args.systems if available(x)]
    skipped = sorted(set(args.systems) - set(systems))
    from fusion.ngram import build_ngram

    results: dict[str, Any] = {"n": args.n, "noise": args.noise, "domain": args.domain, "rss_beam": args.rss_beam,
                               "rss_utts": rss_utts, "repeat": args.repeat, "vocabs": {}}
    with tempfile.TemporaryDirectory(prefix="ctcbench-") as tmp:
        work = Path(tmp)
        # the binary for KenLM users (pyctcdecode, flashlight); its ARPA kept beside it for lmfusion's n-gram arrays
        lm = build_ngram([REPO / "data" / "text" / f"{args.domain}.train.txt"], work / "lm.bin", order=3,
                         progress=False, keep_arpa=True)
        for vname in args.vocabs:
            s = make_setup(vname, args.domain, args.n, args.seed, args.noise, work, lm)
            sj = work / f"{vname}.json"
            sj.write_text(json.dumps(s.to_json()))
            ems = s.load()
            frames = sum(len(e) for e in ems)
            print(f"[{vname}] V={len(s.labels)}, {len(ems)} utterances, {frames / len(ems):.0f} frames/utt, "
                  f"flashlight top-k k={s.topk}", file=sys.stderr, flush=True)
            v: dict[str, Any] = {"V": len(s.labels), "topk": s.topk, "beams": {}, "fresh": {}}
            for beam in args.beams if vname == "char" else args.bpe_beams:
                rows = {}
                for system in systems:
                    if "all-tok" in system and vname not in args.all_tok_vocabs:
                        continue
                    rows[system] = timed(system, s, ems, beam, args.repeat)
                    print(f"  beam {beam} {system}: {rows[system]['utt_per_s']:.1f} utt/s "
                          f"WER {rows[system]['wer']:.4f} ({rows[system]['backend']})", file=sys.stderr, flush=True)
                v["beams"][beam] = rows
            for system in (x for x in CHILD_SYSTEMS if x in systems):
                v["fresh"][system] = fresh_process(system, sj, args.rss_beam, rss_utts)
            results["vocabs"][vname] = v
    print(report(results))
    if skipped:
        print(f"\n(not installed, skipped: {', '.join(skipped)})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
