"""``lmfusion rescore``: add LM scores to n-best lists (the score cache), optionally pick 1-bests."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from recipes.cli_args import (
    SubParsers,
    add_interpolation_argument,
    add_lm_arguments,
    add_output_argument,
    add_overwrite_argument,
    add_scheduler_argument,
    add_weights_argument,
)

if TYPE_CHECKING:
    from decoders.hypothesis import NBestList
    from fusion.profile import FusionProfile
    from fusion.weights import WeightPolicy

FORMATS = ("jsonl", "kaldi", "tsv")


def add_nbest_input_arguments(p: argparse.ArgumentParser, *, name: str = "input", nargs: str = "+") -> None:
    """Options shared by ``rescore`` and ``tune`` for reading n-best lists."""
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="n-best format: jsonl (canonical), kaldi (three files: text ac_cost lm_cost), tsv",
    )
    p.add_argument(
        "--score-scale",
        metavar="SPEC",
        help="multiply input scores to get natural log: a number for every component (-1 for costs, "
        "'log10' for log10 scores), or NAME=FACTOR,... per component",
    )
    p.add_argument(
        "--cost",
        action="store_true",
        help="JSONL/TSV scores are costs (negated): same as --score-scale -1 (Kaldi costs are converted anyway)",
    )
    p.add_argument("--refs", help="references, Kaldi-style '<utt> words' lines (overrides refs in the file)")
    p.add_argument("--words-txt", help="Kaldi symbol table, when the Kaldi text holds integer word ids")


def read_input(args: argparse.Namespace, paths: list[str]) -> list[NBestList]:
    from decoders.nbest import read_nbest
    from fusion.errors import LMFusionError

    if args.cost and args.score_scale:
        raise LMFusionError("give --cost or --score-scale, not both")
    scale = "-1" if args.cost else args.score_scale
    if args.format == "kaldi":
        if args.cost:
            raise LMFusionError("Kaldi costs are negated into scores on reading; --cost would negate them back")
        if len(paths) != 3:
            raise LMFusionError(f"--format kaldi needs three files (text ac_cost lm_cost), got {len(paths)}")
        return read_nbest(paths, "kaldi", scale=scale, refs=args.refs, words_txt=args.words_txt)
    if len(paths) != 1:
        raise LMFusionError(f"--format {args.format} reads one file, got {len(paths)}")
    return read_nbest(paths[0], args.format, scale=scale, refs=args.refs)


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "rescore",
        help="add LM scores to n-best lists (JSONL/Kaldi/TSV) and optionally write 1-bests",
        description="Score every hypothesis with each LM (one component per LM name, plus 'words'), "
        "write the JSONL back with the new scores (a cache for `lmfusion tune`), and with --weights "
        "write the 1-best text of each utterance.",
    )
    p.add_argument("input", nargs="+", help="n-best file (kaldi: text ac_cost lm_cost)")
    add_nbest_input_arguments(p)
    add_lm_arguments(p, required=False, help="each adds one score component")
    p.add_argument(
        "--mix", metavar="NAME",
        help="also add a linear interpolation of all --lm models as component NAME, with λ from --interpolation; "
        "word and subword LMs are mixed per word, as `lmfusion mix` does",
    )  # fmt: skip
    add_interpolation_argument(
        p, help="with --mix; or a fusion profile / adaptive policy that gives each utterance its own λ (from its "
        "tags, or the domain posterior of its n-best)",
    )  # fmt: skip
    p.add_argument(
        "--mbr",
        action="store_true",
        help="with --onebest: pick each utterance's minimum-Bayes-risk hypothesis under the fused posterior",
    )
    p.add_argument("--mbr-scale", type=float, help="posterior scale for --mbr (default 1 / median score spread)")
    p.add_argument("--no-word-count", action="store_true", help="do not add the 'words' component")
    add_overwrite_argument(p, help="re-score components already in the input")
    p.add_argument(
        "--no-oov-count", action="store_true", help="skip counting out-of-vocabulary words (faster with KenLM)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="sentences per LM call, across utterances (256)")
    add_output_argument(p, help="JSONL to write, with every new component score per hypothesis")
    add_weights_argument(p, help="with them, the 1-best of each utterance (and WER when refs are known)")
    p.add_argument("--onebest", help="write '<utt_id> <1-best text>' lines (needs --weights)")
    add_scheduler_argument(p)
    p.add_argument("--shard-size", type=int, default=2000, help="utterances per task with --scheduler (2000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from decoders.hypothesis import write_nbest_jsonl
    from decoders.nbest import apply_weights, count_ties, onebest_error_rates, rescore_with_stats, write_onebest
    from fusion.errors import LMFusionError
    from recipes.cli_args import open_lms, read_weights

    if args.onebest and not args.weights:
        raise LMFusionError("--onebest needs --weights")
    if bool(args.mix) != bool(args.interpolation):
        raise LMFusionError("--mix NAME and --interpolation go together")
    nbests = read_input(args, args.input)
    lms = {lm.name: lm for lm in open_lms(args)}
    mix_policy = None
    if args.mix:
        mix_policy = _mix_component(args.mix, args.interpolation, lms)
    from recipes.scale import executor_from_args, rescore_on

    with executor_from_args(args) as ex:
        if ex.kind == "inprocess":
            out, st = rescore_with_stats(
                nbests,
                lms,
                not args.no_word_count,
                batch_size=args.batch_size,
                progress=not args.quiet,
                overwrite=args.overwrite,
                count_oov=not args.no_oov_count,
            )
        else:  # shards of utterances on the executor's workers, which open the LMs from their files
            out, st = rescore_on(ex, nbests, lms, args)
    print(
        f"{st.n_utts} utterances, {st.n_hyps} hypotheses ({st.n_no_hyps} empty lists, {st.n_single} single, "
        f"{st.n_empty_text} empty texts, {st.n_duplicates} duplicates) in {st.seconds:.2f}s"
    )
    if lms:
        print(f"{'component':<24} {'scored':>8} {'cached':>8} {'oov':>8} {'failed':>7}")
        for name in lms:
            print(f"{name:<24} {st.scored[name]:>8} {st.cached[name]:>8} {st.oov[name]:>8} {st.failed[name]:>7}")
    if mix_policy is not None:
        from decoders.nbest_policy import add_utterance_mix

        name, policy, models = mix_policy
        out = add_utterance_mix(out, models, policy, name)
        print(f"added {name!r}: a per-utterance mix of {', '.join(models)}")
    if args.output:
        write_nbest_jsonl(args.output, out)
        print(f"wrote {args.output}")
    fusion_weights: dict[str, float] | FusionProfile | WeightPolicy | None = None
    if args.weights:
        fusion_weights = read_weights(args.weights)
        assert fusion_weights is not None
        texts = apply_weights(out, fusion_weights)
        if args.mbr:
            from decoders.nbest_policy import mbr_choices

            picks = mbr_choices(out, fusion_weights, scale=args.mbr_scale)
            texts = ["" if i < 0 else nb.hyps[i].text for nb, i in zip(out, picks, strict=True)]
        ties = count_ties(out, fusion_weights)
        from fusion.profile import FusionProfile

        shown = (
            f"profile {fusion_weights.name!r}"
            if isinstance(fusion_weights, FusionProfile)
            else str(fusion_weights)
            if isinstance(fusion_weights, dict)
            else type(fusion_weights).__name__
        )
        print(f"1-best under {shown}: {ties} utterances with tied top scores (first hypothesis kept)")
        if args.onebest:
            write_onebest(args.onebest, out, texts)
            print(f"wrote {args.onebest}")
    if out and all(nb.ref is not None for nb in out):
        try:
            rates = onebest_error_rates(out, fusion_weights)
            if args.mbr and fusion_weights is not None:
                from fusion.metrics import error_rate_of

                rates["mbr"] = error_rate_of([nb.ref or "" for nb in out], texts)
        except LMFusionError as e:
            print(f"no WER: {e}")
        else:
            print("WER: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in rates.items()))
    return 0


def _mix_component(name: str, interpolation: list[str], lms: dict[str, Any]) -> tuple[str, Any, dict[str, Any]] | None:
    """``--mix NAME --interpolation SPEC``: a constant mix is added to ``lms`` as a model (returns None); a
    profile or policy file returns ``(name, policy, models)`` for a per-utterance mix after the LMs are scored."""
    from pathlib import Path

    from fusion.errors import LMFusionError
    from fusion.interpolate import LinearInterpolation
    from fusion.io import read_json
    from fusion.units import bridge_units
    from recipes.cli_args import read_interpolation

    if len(lms) < 2:
        raise LMFusionError("--mix needs at least two --lm models")
    if len(interpolation) == 1 and Path(interpolation[0]).is_file():
        obj = read_json(interpolation[0])
        if isinstance(obj, dict) and obj.get("format") in ("lmfusion-profile", "lmfusion-policy"):
            from fusion.adaptive import load_policy

            return name, load_policy(interpolation[0]), dict(lms)
    lambdas = read_interpolation(interpolation)
    assert lambdas is not None
    models = bridge_units(list(lms.values()), "auto")  # word and subword LMs: per word, as `mix` does
    lms[name] = LinearInterpolation(models, lambdas, name=name)
    return None
