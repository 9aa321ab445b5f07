"""``lmfusion profile``: show a fusion profile, or the weights it picks for an utterance (tags, SNR or a wav)."""

from __future__ import annotations

import argparse
import json

from recipes.cli_args import SubParsers, add_tag_argument


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "profile",
        help="show a fusion profile or select weights from it (by tags, SNR, or a wav's estimated SNR)",
        description="show: the conditions and weights of a profile. select: the weights for one utterance; "
        "a numeric SNR between two noise buckets gets the interpolation of their weights.",
    )
    p.add_argument("action", choices=["show", "select"])
    p.add_argument("profile", help="profile JSON written by a recipe")
    add_tag_argument(p)
    p.add_argument("--snr", type=float, help="SNR in dB (overrides an snr tag)")
    p.add_argument("--wav", help="16-bit mono wav: select by its blind SNR estimate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusion.profile import FusionProfile
    from recipes.cli_args import parse_pairs

    prof = FusionProfile.load(args.profile)
    if args.action == "show":
        print(f"{prof.name}: {len(prof.conditions)} conditions, buckets "
              + ", ".join(f"{b.name}@{b.center:g}dB" for b in prof.buckets))  # fmt: skip
        print(f"  default        {json.dumps(dict(prof.default.fusion))}")
        for c in prof.conditions:
            print(f"  {c.key:14s} {json.dumps(dict(c.fusion))}  interpolation {json.dumps(dict(c.interpolation))}")
        print("provenance: " + json.dumps(dict(prof.provenance)))
        return 0
    tags = parse_pairs(args.tag, "--tag")
    audio = None
    if args.wav:
        from recipes.asr.make_audio import read_wav

        audio = read_wav(args.wav)
    sel = prof.select(tags, snr=args.snr, audio=audio)
    print(json.dumps({"source": sel.source, "fusion": sel.fusion, "interpolation": sel.interpolation}, indent=2))
    return 0
