"""Seq2seq fusion benchmarks, anchor and lmfusion in the same process, ratios printed.

1. Fusion overhead: HF ``generate(num_beams=8)`` on a small random Marian model, plain vs with
   KenLM shallow fusion through :class:`decoders.hf.FusionLogitsProcessor` (word-boundary scorer,
   partial over the pre-beam candidates). Goal: <= 1.3x the time.
2. Neural LM fusion at output length 64: lmfusion's incremental scorer (cached LM states, one
   batched one-token step per decoder step) vs a fairseq-style LM that re-reads the whole prefix
   every step (one full forward over ``<s> + prefix``). Goal: >= 5x faster. The fused scores of the
   two are checked to agree (to 1e-4) on every call, so neither can win by computing something else.

    .venv/bin/python benchmarks/bench_seq2seq.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import bench_spm, best_of, kenlm_models, table
from decoders.hf import FusionLogitsProcessor
from decoders.hf_logits import TimedProcessor
from fusion.ngram import KenLM
from fusion.reference import FullPrefixLMScorer
from fusion.scorers import TokenLMScorer, WordLMScorer, units_from_pieces


def marian(n_pieces: int, d_model: int, layers: int):  # type: ignore[no-untyped-def]
    """A random Marian model whose decoder vocabulary is the spm pieces + </s> + <pad>."""
    from transformers import MarianConfig, MarianMTModel

    V = n_pieces + 2
    cfg = MarianConfig(
        vocab_size=V, decoder_vocab_size=V, share_encoder_decoder_embeddings=False, d_model=d_model,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model, max_position_embeddings=256,
        pad_token_id=V - 1, eos_token_id=V - 2, decoder_start_token_id=V - 1, forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    return MarianMTModel(cfg).eval()


class Agree:
    """Runs two processors on the same inputs, returns the first's scores, tracks the largest gap."""

    def __init__(self, a: FusionLogitsProcessor, b: FusionLogitsProcessor) -> None:
        self.a, self.b, self.gap = a, b, 0.0

    def __call__(self, ids, scores):  # type: ignore[no-untyped-def]
        x = self.a(ids, scores.clone())
        y = self.b(ids, scores.clone())
        fin = torch.isfinite(y)
        self.gap = max(self.gap, float((x[fin] - y[fin]).abs().max()))
        return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="sentences per generate() call")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import LogitsProcessorList

    tok = bench_spm()
    n = len(tok)
    units = [*units_from_pieces(tok.pieces, specials=[tok.sp.unk_id()]), None, None]
    eos = n
    src = torch.randint(0, n, (args.batch, 24), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": src, "attention_mask": torch.ones_like(src)}
    rows = []

    # 1. KenLM fusion overhead, beam 8
    model = marian(n, d_model=256, layers=3)
    kenlm = KenLM(kenlm_models()["bible"], name="ngram")
    gen = {"num_beams": 8, "max_new_tokens": 32, "min_new_tokens": 32, "do_sample": False}

    def plain() -> None:
        model.generate(**inputs, **gen)

    def fused() -> None:
        proc = FusionLogitsProcessor([WordLMScorer(kenlm, units, eos, name="ngram", partial=True)],
                                     {"am": 1.0, "ngram": 0.5}, pre_beam=16)
        model.generate(**inputs, **gen, logits_processor=LogitsProcessorList([proc]))

    plain()
    fused()
    t_plain = best_of(plain, args.repeats)
    t_fused = best_of(fused, args.repeats)
    rows.append(["generate beam 8, 32 tokens: + KenLM fusion / plain", t_fused, t_plain, t_fused / t_plain,
                 "<= 1.3"])

    # 2. incremental neural LM vs fairseq-style prefix re-read, output length 64
    from fusion.neural import NeuralLM

    cfg = {"arch": "transformer", "d_model": 256, "layers": 4, "heads": 4, "d_ff": 1024, "dropout": 0.0,
           "max_len": 256}
    small = marian(n, d_model=128, layers=2)
    gen64 = {"num_beams": 8, "max_new_tokens": 64, "min_new_tokens": 64, "do_sample": False}

    def run_nn(kind: str) -> tuple[float, float]:
        lm = NeuralLM.from_config(cfg, tok, seed=0, name="nnlm")  # fresh: no cache carried over
        if kind == "incremental":
            sc = TokenLMScorer(lm, units, eos, name="nnlm")
        else:
            sc = FullPrefixLMScorer(lm, units, eos, name="nnlm", reread_forward=True)
        proc = TimedProcessor(FusionLogitsProcessor([sc], {"am": 1.0, "nnlm": 0.5}))
        t = time.perf_counter()
        small.generate(**inputs, **gen64, logits_processor=LogitsProcessorList([proc]))
        return time.perf_counter() - t, proc.seconds

    # agreement check (one run, both scorers on the same inputs)
    lm_a = NeuralLM.from_config(cfg, tok, seed=0, name="nnlm")
    lm_b = NeuralLM.from_config(cfg, tok, seed=0, name="nnlm")
    agree = Agree(FusionLogitsProcessor([TokenLMScorer(lm_a, units, eos, name="nnlm")], {"nnlm": 0.5}),
                  FusionLogitsProcessor([FullPrefixLMScorer(lm_b, units, eos, name="nnlm", reread_forward=True)],
                                        {"nnlm": 0.5}))
    small.generate(**{k: v[:2] for k, v in inputs.items()}, **{**gen64, "max_new_tokens": 16, "min_new_tokens": 16},
                   logits_processor=LogitsProcessorList([agree]))
    if agree.gap > 1e-4:
        raise SystemExit(f"incremental and re-read scores disagree by {agree.gap}")
    inc = [run_nn("incremental") for _ in range(args.repeats)]
    rr = [run_nn("reread") for _ in range(args.repeats)]
    lm_inc, lm_rr = min(x[1] for x in inc), min(x[1] for x in rr)
    tot_inc, tot_rr = min(x[0] for x in inc), min(x[0] for x in rr)
    rows.append(["neural LM scoring time, 64 tokens beam 8: re-read prefix / incremental", lm_rr, lm_inc,
                 lm_rr / lm_inc, ">= 5"])
    rows.append(["whole generate() incl. the decoder, same runs: re-read / incremental", tot_rr, tot_inc,
                 tot_rr / tot_inc, "(info)"])

    print(f"batch {args.batch} sentences, {args.threads} thread(s), best of {args.repeats}; "
          f"incremental vs re-read max score gap {agree.gap:.2e}")
    print(table(rows, ["comparison", "A (s)", "B (s)", "A/B", "goal"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
