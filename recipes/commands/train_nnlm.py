"""``lmfusion train-nnlm``: train (or resume) a small LSTM / Transformer LM over a sentencepiece vocabulary."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import threading
from collections.abc import Iterator

from recipes.cli_args import SubParsers, add_output_argument


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "train-nnlm",
        help="train a neural LM (LSTM or Transformer) on text; checkpoints atomically and resumes",
    )
    p.add_argument("--text", nargs="+", required=True, help="training text files, one sentence per line")
    p.add_argument("--dev", nargs="*", default=[], help="held-out text for dev perplexity")
    p.add_argument("--spm", required=True, help="sentencepiece model (trained on --text when it does not exist "
                   "and --spm-vocab-size is given)")
    p.add_argument("--spm-vocab-size", type=int, help="train the sentencepiece model first, with this many pieces")
    add_output_argument(p, required=True, help="checkpoint directory")
    p.add_argument("--arch", choices=["lstm", "transformer"], default="lstm")
    p.add_argument("--emb", type=int, help="LSTM embedding size")
    p.add_argument("--hidden", type=int, help="LSTM hidden size")
    p.add_argument("--d-model", type=int, help="Transformer width")
    p.add_argument("--heads", type=int, help="Transformer attention heads")
    p.add_argument("--d-ff", type=int, help="Transformer feed-forward size")
    p.add_argument("--max-len", type=int, help="Transformer positions")
    p.add_argument("--layers", type=int, help="layers")
    p.add_argument("--dropout", type=float, help="dropout")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    p.add_argument("--batch-tokens", type=int, default=4096, help="most padded tokens per batch (4096)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate + checkpoint every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--name", default="nnlm", help="model name in reports and weights")
    p.add_argument("--no-resume", action="store_true", help="start over even when the output has a checkpoint")
    p.set_defaults(func=run)


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold Ctrl-C while heavy modules import (an interrupted ``import torch`` leaves torch half
    initialised and fails with a RecursionError); the interrupt is raised once the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if hits:
        raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fusion.errors import LMFusionError

    with deferred_sigint():
        from fusion.nnlm_train import TrainConfig, check_output_dir, check_settings, train_nnlm
        from fusion.tokenizers import train_sentencepiece

    if args.spm_vocab_size is not None and args.spm_vocab_size < 2:
        raise LMFusionError(f"--spm-vocab-size must be >= 2, got {args.spm_vocab_size}")
    spm = Path(args.spm)
    keys = {"lstm": ("emb", "hidden", "layers", "dropout"),
            "transformer": ("d_model", "heads", "d_ff", "max_len", "layers", "dropout")}[args.arch]
    model = {"arch": args.arch, **{k: getattr(args, k) for k in keys if getattr(args, k) is not None}}
    cfg = TrainConfig(
        text=list(args.text), dev=list(args.dev), spm=str(spm), output=args.output, model=model,
        epochs=args.epochs, max_steps=args.max_steps, batch_tokens=args.batch_tokens, lr=args.lr,
        eval_every=args.eval_every, seed=args.seed, threads=args.threads, device=args.device, name=args.name,
        resume=not args.no_resume, progress=not args.quiet,
    )
    check_settings(cfg)  # before any work: bad settings and a non-checkpoint output fail at once
    check_output_dir(cfg)
    if not spm.is_file() and args.spm_vocab_size:
        prefix = spm.with_suffix("") if spm.suffix == ".model" else spm
        spm = train_sentencepiece(args.text, prefix, vocab_size=args.spm_vocab_size).path
        print(f"trained sentencepiece model {spm}")
        cfg = dataclasses.replace(cfg, spm=str(spm))
    res = train_nnlm(cfg)
    if res.resumed_from_step:
        print(f"resumed from step {res.resumed_from_step}")
    ppl = "n/a" if res.dev_ppl is None else f"{res.dev_ppl:.2f}"
    print(f"{res.steps} steps ({res.epochs_done:.2f} epochs); dev ppl (per piece, with </s>) {ppl}; "
          f"checkpoint {res.output}")
    return 0
