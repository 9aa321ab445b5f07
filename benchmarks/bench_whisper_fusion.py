"""Whisper tiny.en fusion speed: plain ``generate()`` vs fused, and incremental vs whisper-lm-style LM scoring.

(a) Whisper beam search (``generate``, beam 5) on the same utterances, plain vs with the KenLM mix
    (bible + tech word 3-grams, λ 0.5/0.5, the recipe's kind of ``dlm``) and the word bonus fused through
    :class:`decoders.hf.FusionLogitsProcessor` (:class:`~fusion.scorers.OpenWordLMScorer`, pre-beam
    candidates). Both runs use the same ``generate()`` settings (length penalty 0, Whisper's suppressed
    tokens); the table also gives the tokens each generated. Goal: fused <= 1.3x plain.
(b) A neural LM (an LSTM over a 1000-piece sentencepiece model, seen per word) fused the same way, two
    scorers that give the same fused scores (checked on every step of one utterance before timing):

    * incremental — :class:`~fusion.scorers.OpenWordLMScorer` over :class:`~fusion.units.WordLevelLM`: the
      LM state of every prefix is kept; each step walks all candidates' pieces of all beams as one trie,
      one batched LSTM step per piece depth over the distinct prefixes not cached yet;
    * re-read — :class:`fusion.reference.RereadWordLMScorer`, the amount of work whisper-lm's scorer does
      (its ``BeamSearchDecoderWithLLM``): for every beam and every candidate token it turns the whole
      hypothesis plus the candidate into text, tokenises that text afresh and runs one forward pass of
      the LM over it from the sentence start (batch of one), keeping nothing between steps. Like
      whisper-lm it reads every candidate, punctuation and end-of-text included, and never reads the
      prefix alone (the prefix's score comes from the step that chose it); unlike whisper-lm, which
      takes the last position's top probability, it turns the read into the word-level log-probability
      of the text (the same forward, a log-softmax and a sum over positions), so both scorers fuse the
      same numbers. Both get the same candidates (the processor's pre-beam top-k plus end-of-text, 11
      per beam), where whisper-lm takes beam + 1.

    Goal: >= 5x less LM scoring time (the time spent in the logits processor, which both share).

Every timed run is a fresh process (caches empty; peak RSS is that process's), repeated ``--repeats``
times; the table gives medians. "LM forwards" counts the neural LM's forward passes: batched one-step
forwards (incremental) or whole-text reads (re-read). Time to first result counts from the process start
(loading Whisper and the LMs included) to the first utterance's transcript. torch uses ``--threads`` threads.

    .venv/bin/python benchmarks/bench_whisper_fusion.py [--repeats 3] [--threads 1] [--utts 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, TEXT, WORK, bench_spm, kenlm_models, table

T0 = time.perf_counter()
AUDIO = WORK / "whisper"
SYSTEMS = ("plain", "kenlm", "nnlm-incremental", "nnlm-reread")
BEAM, MAX_NEW = 5, 96
GEN: dict[str, Any] = {"num_beams": BEAM, "max_new_tokens": MAX_NEW, "length_penalty": 0.0, "return_timestamps": False}
NN_CONFIG = {"arch": "lstm", "emb": 128, "hidden": 256, "layers": 1, "dropout": 0.0}


def utterances(n: int) -> list[Path]:
    """The bundled utterance and ``n - 1`` flite utterances of dev sentences of both domains (made once)."""
    from recipes.asr.make_audio import synth

    out = [REPO / "tests" / "data" / "speech_kal16.wav"]
    AUDIO.mkdir(parents=True, exist_ok=True)
    lines = [ln for d in ("bible", "tech") for ln in (TEXT / f"{d}.dev.txt").read_text().splitlines()[:n]]
    lines = [lines[i // 2 + (i % 2) * n] for i in range(2 * n)]  # alternate the domains
    for i, text in enumerate(lines[: n - 1]):
        wav = AUDIO / f"utt{i}.wav"
        if not wav.is_file():
            synth(text, ("slt", "rms", "awb", "kal16")[i % 4], 1.0, wav)
        out.append(wav)
    return out


def nnlm_word_view(*, retokenize: bool = False) -> Any:
    """The neural LM's word view (``retokenize``: each whole-text read tokenises afresh, as whisper-lm does)."""
    from fusion.neural import NeuralLM
    from fusion.units import WordLevelLM

    return WordLevelLM(NeuralLM.from_config(NN_CONFIG, bench_spm(), seed=0, name="nnlm"), retokenize=retokenize)


def reread_scorer(fz: Any) -> Any:
    """The whisper-lm-style scorer of (b): every candidate's whole text re-read, over its own LM copy."""
    from fusion.reference import RereadWordLMScorer

    return RereadWordLMScorer(nnlm_word_view(retokenize=True), fz.units, fz.eos, name="nnlm")


def lm_forwards(system: str, scorer: Any) -> int:
    """LM forward passes a neural system ran: batched one-step forwards, or whole-text reads."""
    return int(scorer.reads if system == "nnlm-reread" else scorer.lm.lm.forward_calls)


def worker(system: str, n_utts: int, threads: int) -> dict[str, Any]:
    """One timed run in this (fresh) process."""
    import torch
    from transformers import LogitsProcessorList

    from decoders.hf import FusionLogitsProcessor
    from decoders.hf_logits import TimedProcessor
    from recipes.asr.make_audio import read_wav
    from recipes.asr.whisper_fusion import WhisperFusion

    torch.set_num_threads(threads)
    fz = WhisperFusion(beam=BEAM)
    b = fz.bundle
    if system == "kenlm":
        from fusion.interpolate import LinearInterpolation
        from fusion.ngram import KenLM

        m = kenlm_models()
        lm = LinearInterpolation([KenLM(m["bible"], name="bible"), KenLM(m["tech"], name="tech")], [0.5, 0.5],
                                 name="dlm")  # fmt: skip
        scorers, weights = fz.scorers({"dlm": lm}), {"dlm": 0.5, "words": 1.0}
    elif system.startswith("nnlm"):
        scorers, weights = fz.scorers({"nnlm": nnlm_word_view()}), {"nnlm": 0.5, "words": 1.0}
        if system == "nnlm-reread":
            scorers[0] = reread_scorer(fz)
    audio = [read_wav(p) for p in utterances(n_utts)]
    kw = {**GEN, "suppress_tokens": fz.suppress}
    texts, tokens, lm_seconds, first = [], 0, 0.0, None
    t_dec = time.perf_counter()
    for x in audio:  # one utterance per call: a streaming service's latency
        with torch.inference_mode():
            if system == "plain":
                out = b.model.generate(b.features([x]), **kw)
            else:
                proc = FusionLogitsProcessor(scorers, weights, pre_beam=fz.pre_beam, max_new_tokens=MAX_NEW)
                timed = TimedProcessor(proc)  # seconds inside the LM fusion
                out = b.model.generate(b.features([x]), **kw, logits_processor=LogitsProcessorList([timed]))
                lm_seconds += timed.seconds
        seq = out.sequences if hasattr(out, "sequences") else out
        tokens += int(seq.shape[1])
        texts.append(b.tokenizer.decode(seq[0], skip_special_tokens=True).strip())
        if first is None:
            first = time.perf_counter() - T0
    return {"system": system, "decode_s": time.perf_counter() - t_dec, "lm_s": lm_seconds, "first_s": first,
            "lm_forwards": lm_forwards(system, scorers[0]) if system.startswith("nnlm") else 0,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tokens": tokens, "texts": texts}


def agreement(threads: int) -> float:
    """Largest gap between the incremental and the re-read fused scores over one utterance's search."""
    import torch
    from transformers import LogitsProcessorList

    from decoders.hf import FusionLogitsProcessor
    from recipes.asr.make_audio import read_wav
    from recipes.asr.whisper_fusion import WhisperFusion

    torch.set_num_threads(threads)
    fz = WhisperFusion(beam=BEAM)
    w = {"nnlm": 0.5, "words": 1.0}
    pa = FusionLogitsProcessor(fz.scorers({"nnlm": nnlm_word_view()}), w, pre_beam=fz.pre_beam,
                               max_new_tokens=MAX_NEW)  # fmt: skip
    slow = [reread_scorer(fz), *fz.scorers({}, word_bonus=True)]
    pr = FusionLogitsProcessor(slow, w, pre_beam=fz.pre_beam, max_new_tokens=MAX_NEW)
    gap = 0.0

    def both(ids: Any, scores: Any) -> Any:
        nonlocal gap
        x, y = pa(ids, scores.clone()), pr(ids, scores.clone())
        fin = torch.isfinite(x)
        if not bool((fin == torch.isfinite(y)).all()):
            raise SystemExit("incremental and re-read scorers scored different candidates")
        gap = max(gap, float((x[fin] - y[fin]).abs().max()))
        return x

    with torch.inference_mode():
        fz.bundle.model.generate(fz.bundle.features([read_wav(utterances(1)[0])]), **GEN,
                                 suppress_tokens=fz.suppress, logits_processor=LogitsProcessorList([both]))  # fmt: skip
    return gap


def run(system: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--utts", str(args.utts),
           "--threads", str(args.threads)]  # fmt: skip
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--utts", type=int, default=5)
    ap.add_argument("--only", nargs="+", choices=("a", "b"), default=["a", "b"], help="which comparisons to run")
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--agree", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.utts, args.threads)))
        return 0
    if args.agree:
        print(json.dumps({"gap": agreement(args.threads)}))
        return 0
    utterances(args.utts)  # made once, before any timing
    agree = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--agree", "--threads", str(args.threads)],
                           check=True, capture_output=True, text=True)  # fmt: skip
    gap = json.loads(agree.stdout.strip().splitlines()[-1])["gap"]
    if gap > 1e-3:
        raise SystemExit(f"incremental and re-read fused scores disagree by {gap}")
    systems = [s for s in SYSTEMS if ("a" if s in ("plain", "kenlm") else "b") in args.only]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every system alike
        for s in systems:
            runs[s].append(run(s, args))
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("decode_s", "lm_s", "first_s", "rss_mb", "tokens",
                                                                   "lm_forwards")}
           for s, rs in runs.items()}  # fmt: skip
    rows = []
    for s in systems:
        m = med[s]
        rows.append([s, m["decode_s"], m["lm_s"], int(m["lm_forwards"]), m["first_s"], m["rss_mb"], int(m["tokens"]),
                     1000 * m["decode_s"] / m["tokens"]])  # fmt: skip
    print(f"Whisper tiny.en, beam {BEAM}, {args.utts} utterances one per generate() call, "
          f"{args.threads} torch thread(s), median of {args.repeats} fresh processes; "
          f"incremental vs re-read max fused-score gap {gap:.1e}\n")
    print(table(rows, ["system", "decode s", "LM scoring s", "LM forwards", "first result s (incl. load)",
                       "peak RSS MB", "tokens out", "ms / token"]))  # fmt: skip
    ratios = []
    if "a" in args.only:
        ka, pa = med["kenlm"], med["plain"]
        ratios += [["(a) fused KenLM mix / plain, decode time", ka["decode_s"] / pa["decode_s"], "<= 1.3"],
                   ["(a) same, per generated token", (ka["decode_s"] / ka["tokens"]) / (pa["decode_s"] / pa["tokens"]),
                    "(info)"]]  # fmt: skip
    if "b" in args.only:
        ri, rr = med["nnlm-incremental"], med["nnlm-reread"]
        ratios += [["(b) LM scoring time, re-read / incremental", rr["lm_s"] / ri["lm_s"], ">= 5"],
                   ["(b) whole decode, re-read / incremental", rr["decode_s"] / ri["decode_s"], "(info)"]]
    print()
    print(table(ratios, ["ratio", "measured", "goal"]))
    if "b" in args.only:
        same = runs["nnlm-reread"][0]["texts"] == runs["nnlm-incremental"][0]["texts"]
        print(f"\nre-read and incremental transcripts identical: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
