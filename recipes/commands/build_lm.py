"""``lmfusion build-lm``: train a KenLM n-gram with lmplz (and build_binary)."""

from __future__ import annotations

import argparse

from recipes.cli_args import SubParsers, add_output_argument


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "build-lm",
        help="train a KenLM n-gram from text (lmplz, then build_binary)",
        description="Train a KenLM n-gram. Output ending in .arpa is ARPA; anything else is a KenLM "
        "binary. With --spm the text is first split into sentencepiece pieces (a token-level LM).",
    )
    p.add_argument("--text", nargs="+", required=True, help="training text files, one sentence per line")
    add_output_argument(p, required=True, help="model to write (.arpa or .bin)")
    p.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    p.add_argument("-S", "--memory", default="20%", help="lmplz sorting memory cap (default 20%%)")
    p.add_argument("--prune", type=int, nargs="+", help="lmplz --prune counts per order, e.g. 0 1 1")
    p.add_argument("--no-discount-fallback", action="store_true", help="do not pass --discount_fallback")
    p.add_argument("--spm", metavar="MODEL", help="sentencepiece model: build a token-level n-gram over its pieces")
    p.add_argument("--binary-type", choices=["probing", "trie"], default="probing")
    p.add_argument("--no-keep-arpa", action="store_true",
                   help="with a binary output, do not keep the ARPA beside it (OUTPUT.arpa); the CTC decoder's "
                   "compiled n-gram path reads that ARPA, without it the model is scored on the slower path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusion.ngram import build_ngram
    from fusion.tokenizers import SentencePieceTokenizer

    tok = SentencePieceTokenizer(args.spm) if args.spm else None
    out = build_ngram(
        args.text,
        args.output,
        order=args.order,
        memory=args.memory,
        prune=args.prune,
        discount_fallback=not args.no_discount_fallback,
        tokenizer=tok,
        binary_type=args.binary_type,
        keep_arpa=not args.no_keep_arpa,
        progress=not args.quiet,
    )
    print(out)
    return 0
