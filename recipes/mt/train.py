"""Train the recipe's small Marian model on parallel text, on CPU, under a time limit.

Default: the phoneme-to-text model on source-domain (tech) pairs (``tech.train.ph`` -> ``tech.train.txt``).
Other pairs by name: ``--train train --dev dev --src-ext es --tgt-ext web`` reads ``train.es``/``train.web``
(the Spanish -> English recipe, :mod:`recipes.mt.make_es_en`).

    python -m recipes.mt.train runs/mt/data runs/mt/model --minutes 18 --threads 2
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import time
from pathlib import Path

from fusion.io import read_json, read_sentences
from fusion.tokenizers import SentencePieceTokenizer, train_sentencepiece
from recipes.mt.model import Vocabs, dump_meta, marian_config, save_vocabs


def batches(pairs: list[tuple[list[int], list[int]]], max_tokens: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches of pair indices, shuffled."""
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


def collate(pairs, idx, pad_id, eos_id):
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock cap")
    ap.add_argument("--cpu-minutes", type=float, default=38.0,
                    help="budget in process CPU time (all threads): 38 = under 20 min wall on an idle 2-core CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab-size", type=int, default=1000)
    ap.add_argument("--src-vocab-size", type=int, default=4000)
    ap.add_argument("--max-tokens", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default="tech.train", help="training pairs: TRAIN.SRC_EXT -> TRAIN.TGT_EXT")
    ap.add_argument("--dev", default="tech.dev", help="dev pairs (early stopping)")
    ap.add_argument("--src-ext", default="ph")
    ap.add_argument("--tgt-ext", default="txt")
    ap.add_argument("--spm-extra", type=Path, nargs="*", default=[],
                    help="more target-side text for the target sentencepiece model (e.g. the LM text)")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--resume", action="store_true", help="continue from the weights saved in OUTDIR")
    args = ap.parse_args(argv)

    import torch
    from transformers import MarianMTModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out: Path = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    d: Path = args.data
    resume = args.resume and (out / "model.safetensors").is_file()
    if resume:  # keep the vocabularies the saved weights were trained with
        spm, src_spm = SentencePieceTokenizer(out / "tgt.model"), SentencePieceTokenizer(out / "src.model")
    else:
        tgt_text = [d / f"{args.train}.{args.tgt_ext}", *args.spm_extra]
        spm = train_sentencepiece(tgt_text, out / "tgt", vocab_size=args.vocab_size)
        src_spm = train_sentencepiece([d / f"{args.train}.{args.src_ext}"], out / "src", vocab_size=args.src_vocab_size)
    src_lines = read_sentences(d / f"{args.train}.{args.src_ext}")
    tgt_lines = read_sentences(d / f"{args.train}.{args.tgt_ext}")
    vocabs = Vocabs(src_spm, spm)
    save_vocabs(vocabs, out)
    pairs = [(vocabs.encode_src(s), vocabs.encode_tgt(t)) for s, t in zip(src_lines, tgt_lines, strict=True)]
    dev_src, dev_tgt = (read_sentences(d / f"{args.dev}.{ext}") for ext in (args.src_ext, args.tgt_ext))
    dev = [(vocabs.encode_src(s), vocabs.encode_tgt(t)) for s, t in zip(dev_src, dev_tgt, strict=True)]
    config = marian_config(vocabs, d_model=args.d_model, layers=args.layers, ffn=args.ffn)
    model = MarianMTModel.from_pretrained(str(out), use_safetensors=True) if resume else MarianMTModel(config)
    prior = read_json(out / "train-info.json") if resume and (out / "train-info.json").is_file() else {}
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{len(pairs)} training pairs, {n_params / 1e6:.2f}M parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = 50 if resume else 200
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, math.sqrt(warmup / (s + 1))))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)

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

    t0 = time.time()
    deadline = t0 + args.minutes * 60
    c0 = time.process_time()
    cpu_budget = args.cpu_minutes * 60

    def out_of_time() -> bool:
        return time.time() > deadline or time.process_time() - c0 > cpu_budget

    step, epoch, best = 0, 0, float("inf")
    model.train()
    done = False
    while not done:
        epoch += 1
        for idx in batches(pairs, args.max_tokens, rng):
            x, a, di, y = collate(pairs, idx, vocabs.pad_id, vocabs.eos_id)
            logits = model(input_ids=x, attention_mask=a, decoder_input_ids=di).logits
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s wall "
                      f"{(time.process_time() - c0) / 60:.1f} cpu-min", flush=True)
            stop = out_of_time()
            if step % 200 == 0 or stop:
                dl = dev_loss()
                print(f"  dev loss {dl:.3f} (ppl {math.exp(dl):.2f})", flush=True)
                if dl < best:
                    best = dl
                    tmp = out / "tmp-save"
                    model.save_pretrained(str(tmp), safe_serialization=True)
                    for f in tmp.iterdir():
                        shutil.move(str(f), out / f.name)
                    tmp.rmdir()
            if stop:
                done = True
                break
    this_run = {"steps": step, "epochs": epoch, "best_dev_loss": best, "minutes": (time.time() - t0) / 60,
                "cpu_minutes": (time.process_time() - c0) / 60}
    runs = [*prior.get("runs", []), this_run]
    dump_meta(out, runs=runs, total_steps=sum(r["steps"] for r in runs),
              total_minutes=sum(r["minutes"] for r in runs), total_cpu_minutes=sum(r["cpu_minutes"] for r in runs),
              params=n_params, pairs=len(pairs), threads=args.threads)
    print(f"done: {step} steps, {epoch} epochs, best dev loss {best:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
