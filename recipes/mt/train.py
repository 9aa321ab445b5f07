"""Train the recipe's small Marian model on parallel text, on CPU, under a time limit; resumable.

Default: the phoneme-to-text model on source-domain (tech) pairs (``tech.train.ph`` -> ``tech.train.txt``).
Other pairs by name: ``--train train --dev dev --src-ext es --tgt-ext web`` reads ``train.es``/``train.web``
(the Spanish -> English recipe, :mod:`recipes.mt.make_es_en`); ``--shared-vocab`` trains one sentencepiece
model over both sides (shared embeddings).

The best weights by dev loss are saved in OUTDIR; the last weights, the optimizer and the scheduler in
``OUTDIR/last`` (``--resume`` continues from there: same step count, learning-rate schedule and data order).

    python -m recipes.mt.train runs/mt/data runs/mt/model --minutes 18 --threads 2
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion.errors import InputError
from fusion.io import atomic_write_json, read_json, read_sentences
from fusion.tokenizers import SentencePieceTokenizer, train_sentencepiece
from recipes.mt.model import Vocabs, dump_meta, marian_config, save_vocabs

Pairs = list[tuple[list[int], list[int]]]


def batches(pairs: Pairs, max_tokens: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches of pair indices (padded source + target tokens <= ``max_tokens``), shuffled."""
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), rng.random()))
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        longest_new = max(longest, len(pairs[i][0]) + len(pairs[i][1]))
        if cur and longest_new * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, longest_new = [], len(pairs[i][0]) + len(pairs[i][1])
        cur.append(i)
        longest = longest_new
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(pairs: Pairs, idx: Sequence[int], pad_id: int, eos_id: int) -> tuple[Any, Any, Any, Any]:
    """Padded ``input_ids``, ``attention_mask``, ``decoder_input_ids`` (start = pad, then the target shifted right)
    and ``labels`` (the target with its ``</s>``; -100 on padding)."""
    import torch

    src = [pairs[i][0] for i in idx]
    tgt = [pairs[i][1] for i in idx]
    s_len, t_len = max(map(len, src)), max(map(len, tgt))
    input_ids = torch.full((len(idx), s_len), pad_id, dtype=torch.long)
    attn = torch.zeros((len(idx), s_len), dtype=torch.long)
    labels = torch.full((len(idx), t_len), -100, dtype=torch.long)
    dec_in = torch.full((len(idx), t_len), pad_id, dtype=torch.long)
    for b, (s, t) in enumerate(zip(src, tgt, strict=True)):
        input_ids[b, : len(s)] = torch.tensor(s)
        attn[b, : len(s)] = 1
        labels[b, : len(t)] = torch.tensor(t)
        dec_in[b, 1 : len(t)] = torch.tensor(t[:-1])
    return input_ids, attn, dec_in, labels


def build_vocabs(args: argparse.Namespace, out: Path, resume: bool) -> Vocabs:
    """Train (or, resuming, reload) the sentencepiece model(s) of a run."""
    d: Path = args.data
    src_text, tgt_text = d / f"{args.train}.{args.src_ext}", d / f"{args.train}.{args.tgt_ext}"
    if args.shared_vocab:
        if not resume and args.spm is not None:  # a given model, copied beside the weights
            shutil.copyfile(args.spm, out / "spm.model")
        spm = SentencePieceTokenizer(out / "spm.model") if resume or args.spm else train_sentencepiece(
            [src_text, tgt_text, *args.spm_extra], out / "spm", vocab_size=args.vocab_size)
        return Vocabs(spm, spm)
    if resume:
        return Vocabs(SentencePieceTokenizer(out / "src.model"), SentencePieceTokenizer(out / "tgt.model"))
    spm = train_sentencepiece([tgt_text, *args.spm_extra], out / "tgt", vocab_size=args.vocab_size)
    src_spm = train_sentencepiece([src_text], out / "src", vocab_size=args.src_vocab_size)
    return Vocabs(src_spm, spm)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock cap of this run")
    ap.add_argument("--cpu-minutes", type=float, default=38.0,
                    help="budget of this run in process CPU time (all threads): 38 = under 20 min wall on an idle "
                         "2-core CPU")
    ap.add_argument("--max-steps", type=int, default=0, help="stop at this total step count (0: no limit)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shared-vocab", action="store_true",
                    help="one sentencepiece model of --vocab-size over both sides; shared embeddings")
    ap.add_argument("--spm", type=Path, default=None,
                    help="with --shared-vocab: use this sentencepiece model instead of training one")
    ap.add_argument("--vocab-size", type=int, default=1000)
    ap.add_argument("--src-vocab-size", type=int, default=4000)
    ap.add_argument("--max-tokens", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (after warmup; then 1/sqrt decay)")
    ap.add_argument("--warmup", type=int, default=200, help="warmup steps")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default="tech.train", help="training pairs: TRAIN.SRC_EXT -> TRAIN.TGT_EXT")
    ap.add_argument("--dev", default="tech.dev", help="dev pairs (best checkpoint)")
    ap.add_argument("--train-n", type=int, default=0, help="use only the first N training pairs (0: all)")
    ap.add_argument("--src-ext", default="ph")
    ap.add_argument("--tgt-ext", default="txt")
    ap.add_argument("--spm-extra", type=Path, nargs="*", default=[],
                    help="more target-side text for the target sentencepiece model (e.g. the LM text)")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--eval-every", type=int, default=200, help="steps between dev evaluations and saves")
    ap.add_argument("--resume", action="store_true", help="continue from OUTDIR/last (weights, optimizer, step)")
    return ap.parse_args(argv)


def _save(model: Any, dest: Path) -> None:
    tmp = dest / "tmp-save"
    model.save_pretrained(str(tmp), safe_serialization=True)
    dest.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        shutil.move(str(f), dest / f.name)
    tmp.rmdir()


def _save_state(model: Any, opt: Any, sched: Any, last: Path, state: dict[str, Any]) -> None:
    import torch

    _save(model, last)
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, last / "optim.tmp")
    (last / "optim.tmp").replace(last / "optim.pt")
    atomic_write_json(last / "state.json", state)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch
    from transformers import MarianMTModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out: Path = args.outdir
    last = out / "last"
    out.mkdir(parents=True, exist_ok=True)
    d: Path = args.data
    resume = args.resume and (last / "state.json").is_file()
    if not resume and ((out / "model.safetensors").is_file() or last.exists()):
        # a fresh run would train new sentencepiece models beside weights trained with the old ones
        raise InputError("holds a trained model: pass --resume to continue it, or train into a new directory",
                         path=out)
    vocabs = build_vocabs(args, out, resume)
    save_vocabs(vocabs, out)
    src_lines = read_sentences(d / f"{args.train}.{args.src_ext}")
    tgt_lines = read_sentences(d / f"{args.train}.{args.tgt_ext}")
    pairs = [(vocabs.encode_src(s), vocabs.encode_tgt(t)) for s, t in zip(src_lines, tgt_lines, strict=True)]
    if args.train_n:
        pairs = pairs[: args.train_n]
    dev_src, dev_tgt = (read_sentences(d / f"{args.dev}.{ext}") for ext in (args.src_ext, args.tgt_ext))
    dev = [(vocabs.encode_src(s), vocabs.encode_tgt(t)) for s, t in zip(dev_src, dev_tgt, strict=True)]
    config = marian_config(vocabs, d_model=args.d_model, layers=args.layers, heads=args.heads, ffn=args.ffn,
                           dropout=args.dropout)
    model = MarianMTModel.from_pretrained(str(last), use_safetensors=True) if resume else MarianMTModel(config)
    state: dict[str, Any] = read_json(last / "state.json") if resume else {"step": 0, "epoch": 0, "best": math.inf}
    prior = read_json(out / "train-info.json") if resume and (out / "train-info.json").is_file() else {}
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{len(pairs)} training pairs, {n_params / 1e6:.2f}M parameters, vocab {vocabs.tgt_size} "
          f"({'shared' if vocabs.shared else 'separate'}), resume={resume} at step {state['step']}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = args.warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, math.sqrt(warmup / (s + 1))))
    if resume:
        st = torch.load(last / "optim.pt", weights_only=True)
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=args.label_smoothing)

    def dev_loss() -> float:
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for idx in batches(dev, args.max_tokens, random.Random(0)):
                x, a, di, y = collate(dev, idx, vocabs.pad_id, vocabs.eos_id)
                logits = model(input_ids=x, attention_mask=a, decoder_input_ids=di).logits
                tot += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="sum"))
                n += int((y != -100).sum())
        model.train()
        return tot / n

    t0, c0 = time.time(), time.process_time()
    deadline, cpu_budget = t0 + args.minutes * 60, args.cpu_minutes * 60

    def out_of_time() -> bool:
        return (time.time() > deadline or time.process_time() - c0 > cpu_budget
                or 0 < args.max_steps <= state["step"])

    steps_here = 0
    model.train()
    done = out_of_time()
    while not done:
        epoch_batches = batches(pairs, args.max_tokens, random.Random(args.seed * 1000 + state["epoch"]))
        for bi, idx in enumerate(epoch_batches):
            if bi < state.get("batch", 0):  # resuming inside an epoch: skip the batches already seen
                continue
            x, a, di, y = collate(pairs, idx, vocabs.pad_id, vocabs.eos_id)
            logits = model(input_ids=x, attention_mask=a, decoder_input_ids=di).logits
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            state["step"] += 1
            state["batch"] = bi + 1
            steps_here += 1
            if state["step"] % 50 == 0:
                print(f"epoch {state['epoch'] + 1} step {state['step']} loss {loss.item():.3f} "
                      f"lr {sched.get_last_lr()[0]:.2e} {time.time() - t0:.0f}s wall "
                      f"{(time.process_time() - c0) / 60:.1f} cpu-min", flush=True)
            stop = out_of_time()
            if state["step"] % args.eval_every == 0 or stop:
                dl = dev_loss()
                print(f"  dev loss {dl:.3f} (ppl {math.exp(dl):.2f})", flush=True)
                if dl < state["best"]:
                    state["best"] = dl
                    _save(model, out)
                _save_state(model, opt, sched, last, state)
            if stop:
                done = True
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    this_run = {"steps": steps_here, "minutes": (time.time() - t0) / 60, "cpu_minutes": (time.process_time() - c0) / 60}
    runs = [*prior.get("runs", []), this_run]
    dump_meta(out, runs=runs, total_steps=state["step"], epochs=state["epoch"] + state.get("batch", 0) / max(
        1, len(batches(pairs, args.max_tokens, random.Random(0)))), best_dev_loss=state["best"],
              total_minutes=sum(r["minutes"] for r in runs), total_cpu_minutes=sum(r["cpu_minutes"] for r in runs),
              params=n_params, pairs=len(pairs), threads=args.threads,
              settings={k: str(v) for k, v in vars(args).items()})
    print(f"done: {state['step']} steps, best dev loss {state['best']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
