"""Cross-domain fusion evaluation of a small MT model: adapted to a target domain by LM fusion.

Two tasks (``--task``): ``p2t``, the phoneme-to-text model trained on tech and tested on bible; ``es-en``,
Spanish -> English trained on modern English (WEB) and tested on King James references of held-out books.
Target-domain LMs: a word 4-gram KenLM on target-domain text and a neural LSTM LM over the model's own
target sentencepiece vocabulary (token-level fusion); a source-domain 4-gram for the density ratio.
Configurations: no fusion; shallow fusion with the n-gram (word-boundary scorer), with the neural LM
(token scorer), with both (log-linear: two weighted scorers; linear: an EM mix of the n-gram and the
neural LM seen per word); density ratio (``+β ln P_target − μ ln P_source``). Every fused configuration
also has a word bonus. The best density-ratio weights are also run through Hugging Face ``generate()``
with :class:`~decoders.hf.FusionLogitsProcessor`, timed against plain ``generate()``.

Weights are tuned on the target-domain dev split: one beam search over dev with starting weights gives
n-best lists with per-component scores; ``fusion.tuning.tune(method="mert")`` picks the weights that
minimise dev WER over those lists (one MERT round); the test split is then decoded with those
weights. Reported: BLEU and chrF (sacrebleu), WER, and a paired bootstrap 95% CI of the gain over
no fusion.

    python -m recipes.mt.evaluate runs/mt/data runs/mt/model runs/mt/eval [--dev-n 250 --test-n 500]
    python -m recipes.mt.evaluate runs/mt-es-en/data runs/mt-es-en/model runs/mt-es-en/eval --task es-en
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from decoders.hypothesis import NBestList, write_nbest_jsonl
from fusion.errors import InputError
from fusion.io import atomic_write_json, atomic_write_text, read_json, read_sentences
from fusion.scorers import Scorer, TokenLMScorer, WordBonus, WordLMScorer, units_from_pieces


@dataclass(frozen=True)
class Task:
    """Which files of the data folder a fusion evaluation reads (source, reference, LM text), by split."""

    title: str
    dev_src: str
    dev_ref: str
    test_src: str
    test_ref: str
    target_lm_text: str
    source_lm_text: str
    test_other_ref: str | None = None
    """References of the test sources in the training register (for scale: how far the register moves BLEU)."""
    source_dev: str | None = None
    """Held-out text of the source domain (the source-domain neural LM's dev text; default: ``dev_ref``)."""


TASKS: dict[str, Task] = {
    "p2t": Task("Phoneme-to-text, trained on tech (Python docs), tested on bible", "bible.dev.ph", "bible.dev.txt",
                "bible.test.ph", "bible.test.txt", "bible.lm.txt", "tech.lm.txt"),
    "es-en": Task("Spanish -> English, trained on RV1909 -> WEB (modern English), tested on KJV-register references "
                  "of held-out books", "dev.es", "dev.kjv", "test.es", "test.kjv", "kjv.lm.txt", "web.lm.txt",
                  "test.web", "dev.web"),
}
"""``p2t``: :mod:`recipes.mt.make_data`; ``es-en``: :mod:`recipes.mt.make_es_en`."""

START = {"ngram": 0.3, "nnlm": 0.3, "mix": 0.3, "source_lm": -0.1, "nnlm_source": -0.1, "words": 0.5}
GRID: dict[str, tuple[float, ...]] = {"ngram": (0.05, 0.1, 0.2, 0.3), "nnlm": (0.05, 0.1, 0.2, 0.3),
                                     "mix": (0.05, 0.1, 0.2, 0.3),
                                     "source_lm": (-0.05, -0.1, -0.2), "nnlm_source": (-0.05, -0.1, -0.2),
                                     "words": (0.0, 1.0, 2.0)}
"""Grid of the in-search sweep; combinations of two LMs use the first three values of each."""
CONFIGS: dict[str, tuple[str, ...]] = {
    "no fusion": (),
    "n-gram": ("ngram", "words"),
    "neural LM": ("nnlm", "words"),
    "n-gram + neural (log-linear)": ("ngram", "nnlm", "words"),
    "density ratio (n-gram)": ("ngram", "source_lm", "words"),
    "n-gram + neural (linear, EM)": ("mix", "words"),
    "density ratio (n-gram + neural)": ("ngram", "nnlm", "source_lm", "words"),
    "density ratio (neural)": ("nnlm", "nnlm_source", "words"),
}


def build_lms(data: Path, model_dir: Path, out: Path, threads: int, nnlm_steps: int, task: Task,
              need: set[str] | None = None) -> dict[str, Any]:
    """The LMs the configurations use (``need``: their component names; ``None``: all): target and source
    word 4-grams, target and source neural LMs over the model's target pieces (token-level fusion: a piece
    is scored when it is chosen, so register words the model ranks low can still enter the beam), and the
    EM mix of the n-gram and the neural LM."""
    from fusion.loading import load_lm
    from fusion.ngram import KenLM, build_ngram
    from fusion.nnlm_train import TrainConfig, train_nnlm

    out.mkdir(parents=True, exist_ok=True)
    from fusion.em import estimate_weights
    from fusion.interpolate import LinearInterpolation
    from fusion.units import word_view

    tgt = out / "target.o4.arpa"
    src = out / "source.o4.arpa"
    if not tgt.is_file():
        build_ngram([data / task.target_lm_text], tgt, order=4, progress=False)
    if not src.is_file():
        build_ngram([data / task.source_lm_text], src, order=4, progress=False)
    ngram, source = KenLM(tgt, name="ngram"), KenLM(src, name="source_lm")
    spm = model_dir / str(read_json(model_dir / "vocabs.json")["spm"])  # the decoder's pieces

    def neural(name: str, text: str, dev: str) -> Any:
        nn_dir = out / name
        if not (nn_dir / "lmfusion-lm.json").is_file():
            train_nnlm(TrainConfig(
                text=[str(data / text)], dev=[str(data / dev)], spm=str(spm), output=str(nn_dir),
                model={"arch": "lstm", "emb": 64, "hidden": 128, "layers": 1, "dropout": 0.0},
                epochs=1, max_steps=nnlm_steps, batch_tokens=2048, lr=5e-3, threads=threads, name=name,
            ))
        return load_lm(nn_dir, name=name)

    lms: dict[str, Any] = {"ngram": ngram, "source_lm": source}
    if need is None or "nnlm_source" in need:  # the density ratio's source LM over the same pieces
        lms["nnlm_source"] = neural("nnlm_source", task.source_lm_text, task.source_dev or task.dev_ref)
    if need is not None and not need & {"nnlm", "mix"}:
        return lms
    nnlm = neural("nnlm", task.target_lm_text, task.dev_ref)
    # linear interpolation of the word n-gram and the neural LM seen per word, EM weights on dev references
    words_nn = word_view(nnlm)
    est = estimate_weights([ngram, words_nn], data / task.dev_ref)
    print(f"EM mix of n-gram and neural LM on {task.dev_ref}: {est.weights}", flush=True)
    mix = LinearInterpolation([ngram, words_nn], est.weights, name="mix")
    return {**lms, "nnlm": nnlm, "mix": mix}


def model_units(model: Any, vocabs: Any) -> list[str | None]:
    """LM units of every decoder output id: the target pieces, then ``None`` for eos/pad and any id the model's
    output layer has beyond them (transformers may size Marian's decoder vocabulary to the source's)."""
    units: list[str | None] = list(units_from_pieces(vocabs.spm.pieces, specials=[vocabs.spm.sp.unk_id()]))
    width = int(model.get_output_embeddings().weight.shape[0])
    return units + [None] * (width - len(units))


def parse_grid(items: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["ngram=0.2,0.4", "words=0,1"]`` -> ``{"ngram": (0.2, 0.4), "words": (0.0, 1.0)}``.

    Raises:
        InputError: an item without ``=``, a name outside :data:`GRID` or a value that is not a number.
    """
    out: dict[str, tuple[float, ...]] = {}
    for item in items:
        name, sep, vals = item.partition("=")
        if not sep or name not in GRID:
            raise InputError(f"--grid {item!r}: want NAME=V1,V2,... with NAME one of {sorted(GRID)}")
        try:
            out[name] = tuple(float(v) for v in vals.split(","))
        except ValueError:
            raise InputError(f"--grid {item!r}: values must be numbers") from None
    return out


WORD_SCORERS = ("boundary", "open", "vocab")
"""How the word LMs are fused (``--word-scorer``): ``boundary``, a word scored when the next one starts
(:class:`WordLMScorer`, pre-beam candidates); ``open``, the open word charged at every token
(:class:`OpenWordLMScorer`, pre-beam candidates, as the Whisper recipe); ``vocab``, the same over the whole
vocabulary (:class:`VocabOpenWordScorer` over the n-gram's arrays, so a word the model ranks far outside any
pre-beam can still be chosen; the EM mix, not an n-gram, stays ``open``)."""

_ARRAYS: dict[Path, Any] = {}


def _arrays_of(lm: Any) -> Any:
    """The :class:`~fusion.array_lm.ArrayNgramLM` twin of a KenLM (read once per ARPA, cached beside it)."""
    from fusion.array_lm import ArrayNgramLM
    from fusion.ngram_arrays import read_arpa_cached

    if lm.path not in _ARRAYS:
        _ARRAYS[lm.path] = ArrayNgramLM(read_arpa_cached(lm.path), lm.name, lm.units)
    return _ARRAYS[lm.path]


def make_scorers(names: Sequence[str], lms: Mapping[str, Any], units: list[str | None], eos: int,
                 word_scorer: str = "boundary") -> list[Scorer]:
    """The scorers of a configuration's components; ``word_scorer``: see :data:`WORD_SCORERS`."""
    from fusion.ngram import KenLM
    from fusion.scorers import OpenWordLMScorer, VocabOpenWordScorer

    if word_scorer not in WORD_SCORERS:
        raise InputError(f"word scorer {word_scorer!r}: want one of {WORD_SCORERS}")
    out: list[Scorer] = []
    for n in names:
        if n in ("ngram", "source_lm", "mix"):
            lm = lms[n]
            if word_scorer == "vocab" and isinstance(lm, KenLM):
                out.append(VocabOpenWordScorer(_arrays_of(lm), units, eos, name=n))
            elif word_scorer != "boundary":
                out.append(OpenWordLMScorer(lm, units, eos, name=n))
            else:
                out.append(WordLMScorer(lm, units, eos, name=n, partial=True))
        elif n in ("nnlm", "nnlm_source"):
            out.append(TokenLMScorer(lms[n], units, eos, name=n))
        elif n == "words":
            out.append(WordBonus(units, eos))
    return out


def decode(model: Any, vocabs: Any, src: list[str], refs: list[str], scorers: list[Scorer],
           weights: Mapping[str, float], beam: int, batch: int, prefix: str, lp: float,
           pre_beam: float = 1.5) -> list[NBestList]:
    from decoders.hf import hf_beam_search
    from decoders.seq2seq import BeamConfig
    from fusion.progress import progress_bar

    units = model_units(model, vocabs)
    out: list[NBestList] = []
    for lo in progress_bar(range(0, len(src), batch), desc=prefix, leave=False):
        inputs = vocabs.source_batch(src[lo : lo + batch])
        n_src = len(inputs["input_ids"])
        out.extend(hf_beam_search(
            model, inputs, scorers=scorers,
            weights=weights, config=BeamConfig(beam=beam, max_len=80, length_penalty=lp, pre_beam=pre_beam),
            token_units=units, detokenize=vocabs.decode_tgt,
            utt_ids=[f"{prefix}{lo + i}" for i in range(n_src)], refs=refs[lo : lo + batch],
        ))
    return out


def generate_texts(model: Any, vocabs: Any, src: list[str], scorers: list[Scorer] | None,
                   weights: Mapping[str, float], beam: int, batch: int) -> tuple[list[str], float]:
    """Hugging Face ``generate(num_beams=beam)``, with a :class:`FusionLogitsProcessor` when ``scorers`` is given.

    Returns the 1-best texts and the seconds spent in ``generate()``.
    """
    from decoders.hf import FusionLogitsProcessor
    from recipes.mt.speed import timed_generate

    def proc() -> Any:
        return FusionLogitsProcessor(list(scorers or ()), weights, pre_beam=2 * beam)

    secs, _, ids = timed_generate(model, vocabs, src, proc if scorers else None, beam, batch)
    return [vocabs.decode_tgt(row[1:]) for row in ids], secs


def best_texts(nbests: Sequence[NBestList]) -> list[str]:
    """The search's 1-best of each list."""
    return [nb.hyps[0].text if nb.hyps else "" for nb in nbests]


def corpus_scores(refs: list[str], hyps: list[str]) -> dict[str, float]:
    import sacrebleu

    from fusion.metrics import wer

    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score, "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
            "wer": 100 * wer(refs, hyps)}


def bootstrap_gain(refs: list[str], base: list[str], new: list[str], metric: str, n: int = 300,
                   seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap of corpus ``metric(new) - metric(base)``: (gain, 2.5%, 97.5%).

    Sentence-level sufficient statistics (sacrebleu's, the ones its own paired test resamples) are computed
    once; each resample sums them, so a resample costs no re-tokenisation.
    """
    from sacrebleu.metrics import BLEU, CHRF

    m_obj = BLEU() if metric == "bleu" else CHRF()
    st_base = np.asarray(m_obj._extract_corpus_statistics(base, [refs]), dtype=float)
    st_new = np.asarray(m_obj._extract_corpus_statistics(new, [refs]), dtype=float)

    def score(stats: np.ndarray) -> float:
        return float(m_obj._compute_score_from_stats(stats.sum(axis=0).tolist()).score)

    rng = np.random.default_rng(seed)
    m = len(refs)
    gain = score(st_new) - score(st_base)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, m, m)
        diffs.append(score(st_new[idx]) - score(st_base[idx]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(gain), float(lo), float(hi)


def earlier_baseline(out: Path, n: int) -> list[str] | None:
    """The unfused 1-best of an earlier run into the same folder (``test.none.jsonl``), when it holds ``n``
    verses: the CIs of fused rows decoded later are then taken against it (the unfused search is deterministic)."""
    from decoders.hypothesis import read_nbest_jsonl

    path = out / "test.none.jsonl"
    if not path.is_file():
        return None
    texts = best_texts(read_nbest_jsonl(path))
    return texts if len(texts) == n else None


def speed_checks(results: dict[str, Any], args: argparse.Namespace, model: Any, vocabs: Any, lms: Mapping[str, Any],
                 test_src: list[str], test_ref: list[str]) -> None:
    """The density-ratio weights through ``generate()`` + ``FusionLogitsProcessor`` against plain ``generate()``
    (``--generate-n``), and the neural LM's incremental scoring against prefix re-reading (``--nnlm-speed-n``);
    medians of ``--repeats`` runs, into ``results``."""
    from recipes.mt.speed import generate_overhead, nnlm_incremental_vs_reread

    units, eos = model_units(model, vocabs), vocabs.eos_id
    dr = "density ratio (n-gram)"
    if dr in results and args.generate_n > 0:
        src_g, ref_g = test_src[: args.generate_n], test_ref[: args.generate_n]
        g = generate_overhead(model, vocabs, src_g,
                              lambda: make_scorers(CONFIGS[dr], lms, units, eos, args.word_scorer),
                              results[dr]["weights"], args.beam, args.batch, args.repeats)
        plain, fused = g.pop("texts_plain"), g.pop("texts_fused")
        results["generate()"] = {**g, "plain": corpus_scores(ref_g, plain), "fused": corpus_scores(ref_g, fused)}
        print("generate()", json.dumps(results["generate()"]), flush=True)
    if args.nnlm_speed_n > 0 and "nnlm" in lms:
        from fusion.loading import load_lm

        weight = results.get("neural LM", {}).get("weights", {}).get("nnlm", START["nnlm"])
        s = nnlm_incremental_vs_reread(model, vocabs, test_src[: args.nnlm_speed_n],
                                       lambda: load_lm(args.out / "nnlm", name="nnlm"), units, eos, weight,
                                       args.beam, args.batch, args.repeats)
        results["nnlm speed"] = s
        print("nnlm speed", json.dumps(s), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dev-n", type=int, default=250)
    ap.add_argument("--test-n", type=int, default=500)
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nnlm-steps", type=int, default=600)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--generate-n", type=int, default=100,
                    help="test sentences also run through HF generate() with and without fusion (0: skip)")
    ap.add_argument("--task", choices=sorted(TASKS), default="p2t", help="which data (see TASKS)")
    ap.add_argument("--tuning", choices=("grid", "mert"), default="grid",
                    help="grid: in-search sweep on dev (--select); mert: one MERT round on dev n-best lists (WER)")
    ap.add_argument("--select", choices=("chrf", "bleu"), default="chrf", help="dev metric the grid sweep maximises")
    ap.add_argument("--grid", nargs="*", default=[], metavar="NAME=V1,V2",
                    help="replace a weight's grid values (all of them are then swept), e.g. ngram=0.2,0.4 words=0,1")
    ap.add_argument("--pre-beam", type=float, default=1.5,
                    help="candidates per hypothesis the word-boundary LMs score, times the beam (lmfusion's search)")
    ap.add_argument("--word-scorer", choices=WORD_SCORERS, default="boundary",
                    help="how word LMs are fused: boundary (scored when the next word starts), open (the open word "
                         "charged at every token, pre-beam candidates), vocab (open, over the whole vocabulary)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each speed check (median reported)")
    ap.add_argument("--nnlm-speed-n", type=int, default=0,
                    help="test sentences of the neural-LM incremental vs prefix re-read check in generate() (0: skip)")
    args = ap.parse_args(argv)
    grid = {**GRID, **parse_grid(args.grid)}

    import torch

    from decoders.nbest import to_tuning_problem
    from fusion.tuning import tune
    from recipes.mt.model import load_model

    torch.set_num_threads(args.threads)
    t0 = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model, vocabs = load_model(args.model)
    task = TASKS[args.task]
    need = {n for c in args.configs for n in CONFIGS[c]}
    lms = build_lms(args.data, args.model, out, args.threads, args.nnlm_steps, task, need)
    units = model_units(model, vocabs)
    eos = vocabs.eos_id
    dev_src = read_sentences(args.data / task.dev_src)[: args.dev_n]
    dev_ref = read_sentences(args.data / task.dev_ref)[: args.dev_n]
    test_src = read_sentences(args.data / task.test_src)[: args.test_n]
    test_ref = read_sentences(args.data / task.test_ref)[: args.test_n]

    results: dict[str, Any] = {}
    hyps: dict[str, list[str]] = {}
    for cname in args.configs:
        names = CONFIGS[cname]
        scorers = make_scorers(names, lms, units, eos, args.word_scorer)
        weights: dict[str, float] = {"am": 1.0, **{n: START[n] for n in names}}
        tuned: dict[str, float] = dict(weights)
        dev_err = None
        lp = 1.0
        if names and args.tuning == "mert":
            # one MERT round on the n-best lists of a dev search at the starting weights (linear model:
            # no length normalisation, the word bonus is tuned instead)
            lp = 0.0
            dev_nb = decode(model, vocabs, dev_src, dev_ref, scorers, weights, args.beam, args.batch, "dev", lp,
                                args.pre_beam)
            write_nbest_jsonl(out / f"dev.{'_'.join(names)}.jsonl", dev_nb)
            problem = to_tuning_problem(dev_nb, ["am", *names], unit="word")
            res = tune(problem, "mert", fixed={"am": 1.0}, init={n: START[n] for n in names}, seed=0)
            tuned = {k: float(v) for k, v in res.weights.items()}
            dev_err = float(res.error_rate)
        elif names:
            # in-search grid sweep on dev, selected by dev --select (HF's length_penalty=1.0 kept throughout)
            free = [n for n in names if n != "words"]
            keep = {1: 4, 2: 3}.get(len(free), 2)  # fewer values per weight as the grid's dimension grows
            values = [grid[n] if grid[n] is not GRID[n] else GRID[n][:keep] for n in free]
            best_score = -1.0
            for combo in itertools.product(*values, grid["words"] if "words" in names else (0.0,)):
                w = {"am": 1.0, **dict(zip([*free, "words"], combo, strict=True))}
                if "words" not in names:
                    w.pop("words")
                dev_nb = decode(model, vocabs, dev_src, dev_ref, scorers, w, args.beam, args.batch, "dev", lp,
                                args.pre_beam)
                sc = corpus_scores(dev_ref, best_texts(dev_nb))
                print(f"  {cname} dev {w}: chrF {sc['chrf']:.2f} BLEU {sc['bleu']:.2f}", flush=True)
                if sc[args.select] > best_score:
                    best_score, tuned = sc[args.select], w
            dev_err = best_score
        if not names and args.tuning == "grid":  # the unfused model's dev score, beside the fused ones
            dev_err = corpus_scores(dev_ref, best_texts(decode(model, vocabs, dev_src, dev_ref, [], weights, args.beam,
                                                               args.batch, "dev", lp, args.pre_beam)))[args.select]
            print(f"  {cname} dev: {args.select} {dev_err:.2f}", flush=True)
        test_nb = decode(model, vocabs, test_src, test_ref, scorers, tuned, args.beam, args.batch, "test", lp,
                         args.pre_beam)
        write_nbest_jsonl(out / f"test.{'_'.join(names) or 'none'}.jsonl", test_nb)
        hyps[cname] = best_texts(test_nb)
        results[cname] = {"weights": tuned, "dev_selection_score": dev_err, "tuning": args.tuning,
                          "word_scorer": args.word_scorer, "pre_beam": args.pre_beam,
                          **corpus_scores(test_ref, hyps[cname])}
        print(cname, json.dumps(results[cname]), f"{time.time() - t0:.0f}s", flush=True)
        atomic_write_json(out / "results.json", results)
    speed_checks(results, args, model, vocabs, lms, test_src, test_ref)
    base = hyps.get("no fusion") or earlier_baseline(out, len(test_ref))
    if base is not None and task.test_other_ref:
        import sacrebleu

        other = read_sentences(args.data / task.test_other_ref)[: args.test_n]
        results["scale"] = {"no_fusion_vs_other_ref": sacrebleu.corpus_bleu(base, [other]).score,
                            "other_ref_vs_ref": sacrebleu.corpus_bleu(other, [test_ref]).score}
    if base is not None:
        for cname in args.configs:
            if cname == "no fusion" or cname not in hyps:
                continue
            for metric in ("bleu", "chrf"):
                g, lo, hi = bootstrap_gain(test_ref, base, hyps[cname], metric)
                results[cname][f"{metric}_gain"] = [g, lo, hi]
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", report(results, args, time.time() - t0))
    print(report(results, args, time.time() - t0))
    return 0


def report(results: Mapping[str, Any], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        f"{TASKS[args.task].title}: {args.test_n} test sentences, beam "
        f"{args.beam}; weights tuned on {args.dev_n} dev sentences ("
        + (f"in-search grid sweep, best dev {'BLEU' if args.select == 'bleu' else 'chrF'}" if args.tuning == "grid"
           else "one MERT round on n-best lists, dev WER")
        + ").",
        "",
        "| system | BLEU | chrF | WER % | BLEU gain [95% CI] | chrF gain [95% CI] | weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name not in CONFIGS:
            continue

        def ci(key: str, r: Mapping[str, Any] = r) -> str:
            if key not in r:
                return "-"
            g, lo, hi = r[key]
            return f"{g:+.2f} [{lo:+.2f}, {hi:+.2f}]"

        w = ", ".join(f"{k}={v:.2f}" for k, v in r["weights"].items() if k != "am")
        lines.append(f"| {name} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['wer']:.1f} | {ci('bleu_gain')} | "
                     f"{ci('chrf_gain')} | {w or '-'} |")
    g = results.get("generate()")
    if g:
        lines += ["", f"The density-ratio weights through Hugging Face `generate(num_beams={args.beam})` with "
                  f"`FusionLogitsProcessor` on the first {g['n']} test sentences: BLEU {g['plain']['bleu']:.2f} -> "
                  f"{g['fused']['bleu']:.2f}, chrF {g['plain']['chrf']:.2f} -> {g['fused']['chrf']:.2f}; time "
                  f"(median of {g['repeats']}) {g['median_plain']:.1f} s plain, {g['median_fused']:.1f} s fused "
                  f"({g['overhead']:.2f}x)."]
    s = results.get("nnlm speed")
    if s:
        lines += ["", f"Neural LM in `generate(num_beams={args.beam})` on {s['n']} test sentences (median of "
                  f"{s['repeats']}): LM time {s['lm_seconds_reread']:.2f} s re-reading the prefix, "
                  f"{s['lm_seconds_incremental']:.2f} s incremental ({s['lm_speedup']:.1f}x); whole generate() "
                  f"{s['generate_seconds_reread']:.1f} s / {s['generate_seconds_incremental']:.1f} s "
                  f"({s['generate_speedup']:.1f}x); scores agree to {s['max_score_gap']:.1e}."]
    sc = results.get("scale")
    if sc:
        lines += ["", f"For scale: the unfused output scores BLEU {sc['no_fusion_vs_other_ref']:.2f} against the "
                  f"training-register references of the same test sentences; those references score "
                  f"{sc['other_ref_vs_ref']:.2f} against the test references."]
    lines.append("")
    lines.append(f"({seconds / 60:.1f} min for LMs, tuning and decoding.)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
