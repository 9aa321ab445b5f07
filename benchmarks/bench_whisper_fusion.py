"""Whisper tiny.en fusion speed: plain ``generate()`` vs fused, and incremental vs whisper-lm-style LM scoring.

(a) Whisper beam search (``generate``, beam 5) on the same utterances, plain vs with the KenLM mix
    (bible + tech word 3-grams, λ 0.5/0.5, the recipe's kind of ``dlm``) and the word bonus fused through
    :class:`decoders.hf.FusionLogitsProcessor` (:class:`~fusion.scorers.OpenWordLMScorer`, pre-beam
    candidates). Both runs use the same ``generate()`` settings (length penalty 0, Whisper's suppressed
    tokens); the table also gives the tokens each generated. Goal: fused <= 1.3x plain.
(b) A neural LM (an LSTM over a 1000-piece sentencepiece model, seen per word) fused the same way:
    lmfusion's incremental scoring (the LM state of each prefix is kept, each step runs only the new
    pieces) vs a whisper-lm-style scorer that re-reads the whole prefix at every step: the same scorer
    with the LM's state cache and word tokenisation emptied before every step, so each hypothesis's text
    is re-tokenised and run through the LM from ``<s>`` (one forward over the whole prefix, then the
    candidates' pieces; batching the candidates of one prefix is a favour to the baseline). The fused
    scores of the two are checked to agree on every step of one utterance. Goal: >= 5x less LM time.

Every timed run is a fresh process (caches empty; peak RSS is that process's), repeated ``--repeats``
times; the table gives medians. Time to first result counts from the process start (loading Whisper
and the LMs included) to the first utterance's transcript. torch uses ``--threads`` threads.

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


class Timed:
    """A processor wrapper that adds up the time spent in it; ``reread`` empties the LM's caches first."""

    def __init__(self, proc: Any, reread: Any = None) -> None:
        self.proc, self.reread, self.seconds = proc, reread, 0.0

    def __call__(self, ids: Any, scores: Any) -> Any:
        t = time.perf_counter()
        if self.reread is not None:
            self.reread.lm.clear_cache()  # every prefix is run through the LM again from <s>
            self.reread._ids.clear()  # and its words re-tokenised
            self.reread._oov.clear()
        out = self.proc(ids, scores)
        self.seconds += time.perf_counter() - t
        return out


def nnlm_word_view() -> Any:
    from fusion.neural import NeuralLM
    from fusion.units import WordLevelLM

    return WordLevelLM(NeuralLM.from_config(NN_CONFIG, bench_spm(), seed=0, name="nnlm"))


def worker(system: str, n_utts: int, threads: int) -> dict[str, Any]:
    """One timed run in this (fresh) process."""
    import torch
    from transformers import LogitsProcessorList

    from decoders.hf import FusionLogitsProcessor
    from recipes.asr.make_audio import read_wav
    from recipes.asr.whisper_fusion import WhisperFusion

    torch.set_num_threads(threads)
    fz = WhisperFusion(beam=BEAM)
    b = fz.bundle
    wview = None
    if system == "kenlm":
        from fusion.interpolate import LinearInterpolation
        from fusion.ngram import KenLM

        m = kenlm_models()
        lm = LinearInterpolation([KenLM(m["bible"], name="bible"), KenLM(m["tech"], name="tech")], [0.5, 0.5],
                                 name="dlm")  # fmt: skip
        scorers, weights = fz.scorers({"dlm": lm}), {"dlm": 0.5, "words": 1.0}
    elif system.startswith("nnlm"):
        wview = nnlm_word_view()
        scorers, weights = fz.scorers({"nnlm": wview}), {"nnlm": 0.5, "words": 1.0}
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
                timed = Timed(proc, reread=wview if system == "nnlm-reread" else None)
                out = b.model.generate(b.features([x]), **kw, logits_processor=LogitsProcessorList([timed]))
                lm_seconds += timed.seconds
        seq = out.sequences if hasattr(out, "sequences") else out
        tokens += int(seq.shape[1])
        texts.append(b.tokenizer.decode(seq[0], skip_special_tokens=True).strip())
        if first is None:
            first = time.perf_counter() - T0
    return {"system": system, "decode_s": time.perf_counter() - t_dec, "lm_s": lm_seconds, "first_s": first,
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
    a, r = nnlm_word_view(), nnlm_word_view()
    w = {"nnlm": 0.5, "words": 1.0}
    pa = FusionLogitsProcessor(fz.scorers({"nnlm": a}), w, pre_beam=fz.pre_beam)
    pr = Timed(FusionLogitsProcessor(fz.scorers({"nnlm": r}), w, pre_beam=fz.pre_beam), reread=r)
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
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every system alike
        for s in SYSTEMS:
            runs[s].append(run(s, args))
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("decode_s", "lm_s", "first_s", "rss_mb", "tokens")}
           for s, rs in runs.items()}  # fmt: skip
    rows = []
    for s in SYSTEMS:
        m = med[s]
        rows.append([s, m["decode_s"], m["lm_s"], m["first_s"], m["rss_mb"], int(m["tokens"]),
                     1000 * m["decode_s"] / m["tokens"]])  # fmt: skip
    print(f"Whisper tiny.en, beam {BEAM}, {args.utts} utterances one per generate() call, "
          f"{args.threads} torch thread(s), median of {args.repeats} fresh processes; "
          f"incremental vs re-read max fused-score gap {gap:.1e}\n")
    print(table(rows, ["system", "decode s", "LM scoring s", "first result s (incl. load)", "peak RSS MB",
                       "tokens out", "ms / token"]))  # fmt: skip
    ratios = [
        ["(a) fused KenLM mix / plain, decode time", med["kenlm"]["decode_s"] / med["plain"]["decode_s"], "<= 1.3"],
        ["(a) same, per generated token", (med["kenlm"]["decode_s"] / med["kenlm"]["tokens"])
         / (med["plain"]["decode_s"] / med["plain"]["tokens"]), "(info)"],
        ["(b) LM scoring time, re-read prefix / incremental",
         med["nnlm-reread"]["lm_s"] / med["nnlm-incremental"]["lm_s"], ">= 5"],
        ["(b) whole decode, re-read / incremental", med["nnlm-reread"]["decode_s"]
         / med["nnlm-incremental"]["decode_s"], "(info)"],
    ]  # fmt: skip
    print()
    print(table(ratios, ["ratio", "measured", "goal"]))
    same = runs["nnlm-reread"][0]["texts"] == runs["nnlm-incremental"][0]["texts"]
    print(f"\nre-read and incremental transcripts identical: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
