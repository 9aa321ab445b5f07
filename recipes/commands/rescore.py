"""``lmfusion rescore``: add LM scores to n-best lists (the score cache), optionally pick 1-bests."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
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

def _formats() -> dict[str, str]:
    from decoders.nbest import reader_formats

    return {**reader_formats(), "srilm": "SRILM NBestList1.0/2.0 or ascore/lscore files, or a directory",
            "kaldi-ark": "Kaldi binary ark/scp: words ac_cost lm_cost, with --words-txt"}


def add_nbest_input_arguments(p: argparse.ArgumentParser, *, name: str = "input", nargs: str = "+") -> None:
    """Options shared by ``rescore`` and ``tune`` for reading n-best lists."""
    fmts = _formats()
    p.add_argument(
        "--format",
        choices=list(fmts),
        default="jsonl",
        help="n-best format: " + "; ".join(f"{k} ({v})" for k, v in fmts.items()),
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


def iter_input(args: argparse.Namespace, paths: list[str]) -> Iterator[NBestList]:
    """Stream the n-best lists the input flags describe (flags are checked before the first list is read)."""
    from decoders.nbest import iter_nbest
    from fusion.errors import LMFusionError

    if args.cost and args.score_scale:
        raise LMFusionError("give --cost or --score-scale, not both")
    scale = "-1" if args.cost else args.score_scale
    if args.format == "kaldi" and args.cost:
        raise LMFusionError("Kaldi costs are negated into scores on reading; --cost would negate them back")
    if args.format in ("srilm", "kaldi-ark"):
        return iter(_read_framework_format(args, paths, scale))
    return iter_nbest(paths, args.format, scale=scale, refs=args.refs, words_txt=args.words_txt)


def read_input(args: argparse.Namespace, paths: list[str]) -> list[NBestList]:
    """All the n-best lists the input flags describe."""
    return list(iter_input(args, paths))


def input_files(args: argparse.Namespace, paths: list[str]) -> list[str]:
    """Every file the input flags read (outputs may not be any of them)."""
    return [*paths, *(p for p in (args.refs, args.words_txt) if p)]


def _read_framework_format(args: argparse.Namespace, paths: list[str], scale: str | None) -> list[NBestList]:
    """``--format srilm`` (SRILM n-best files or a directory) and ``kaldi-ark`` (Kaldi binary tables)."""
    from decoders.kaldi_ark import read_kaldi_ark_nbest
    from decoders.nbest import parse_score_scale, scale_scores
    from decoders.srilm_nbest import read_srilm_nbest
    from fusion.errors import LMFusionError

    if args.format == "srilm":
        nbests = read_srilm_nbest(paths[0] if len(paths) == 1 else paths, refs=args.refs)
    else:
        if args.cost:
            raise LMFusionError("Kaldi costs are negated into scores on reading; --cost would negate them back")
        if len(paths) != 3 or not args.words_txt:
            raise LMFusionError("--format kaldi-ark needs three tables (words ac_cost lm_cost) and --words-txt")
        nbests = read_kaldi_ark_nbest(*paths, words_txt=args.words_txt, refs=args.refs)
    return scale_scores(nbests, parse_score_scale(scale) if scale else None)


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
    add_overwrite_argument(
        p, help="recompute components the input already has under an LM's name (replacing them in the output)"
    )
    p.add_argument(
        "--cached",
        action="store_true",
        help="reuse components the input already has under an LM's name (the score cache of an earlier "
        "`lmfusion rescore` with the same LM); without --cached or --overwrite such a name is an error",
    )
    p.add_argument(
        "--chunk-hyps",
        type=int,
        default=20_000,
        help="hypotheses read, scored and written per step (whole lists; bounds memory; 20000). "
        "--mbr without --mbr-scale needs every list at once",
    )
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


def _check_flags(args: argparse.Namespace) -> None:
    from fusion.errors import LMFusionError
    from fusion.io import check_output_path

    if args.onebest and not args.weights:
        raise LMFusionError("--onebest needs --weights")
    if bool(args.mix) != bool(args.interpolation):
        raise LMFusionError("--mix NAME and --interpolation go together")
    if args.cached and args.overwrite:
        raise LMFusionError("give --cached or --overwrite, not both")
    if args.batch_size < 1 or args.chunk_hyps < 1:
        raise LMFusionError("--batch-size and --chunk-hyps must be >= 1")
    inputs = input_files(args, args.input)
    for flag in ("output", "onebest"):
        if getattr(args, flag):
            check_output_path(getattr(args, flag), inputs=inputs, what=f"--{flag}")
    if args.output and args.onebest:
        check_output_path(args.onebest, inputs=[args.output], what="--onebest")


def _open(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    from decoders.nbest import WORDS
    from fusion.errors import LMFusionError
    from recipes.cli_args import open_lms

    lms = {lm.name: lm for lm in open_lms(args)}
    taken = [n for n in (*lms, args.mix) if n == WORDS and not args.no_word_count]
    if taken or (args.mix and args.mix in lms):
        raise LMFusionError(f"the name {(taken or [args.mix])[0]!r} is already taken: name the LM differently")
    mix_policy = _mix_component(args.mix, args.interpolation, lms) if args.mix else None
    return lms, mix_policy


def run(args: argparse.Namespace) -> int:
    """Read, score and write in bounded batches of whole lists (``--chunk-hyps``, or ``--shard-size``
    utterances per task on ``--scheduler``'s workers); outputs are atomic."""
    from decoders.nbest import count_ties, merge_stats, onebest_line
    from decoders.nbest.rank import best_indices, onebest_error_counts
    from fusion.io import AtomicWriter
    from recipes.cli_args import read_weights

    _check_flags(args)
    policy = read_weights(args.weights) if args.weights else None
    lms, mix_policy = _open(args)
    chunk = args.chunk_hyps if not (args.mbr and args.mbr_scale is None) else 2**62
    stats: list[Any] = []
    ties = 0
    counts: dict[str, int] = {}
    refs_known = True
    with contextlib.ExitStack() as stack:
        batches = _batches(args, lms, chunk, stack)
        out = stack.enter_context(AtomicWriter(args.output)) if args.output else None
        best = stack.enter_context(AtomicWriter(args.onebest)) if args.onebest else None
        for batch, st in batches:
            stats.append(st)
            if mix_policy is not None:
                from decoders.nbest_policy import add_utterance_mix

                batch = add_utterance_mix(batch, mix_policy[2], mix_policy[1], mix_policy[0])
            if out is not None:
                out.write(format_nbest_jsonl(batch))
            picks = None
            if policy is not None:
                ties += count_ties(batch, policy)
                picks = best_indices(batch, policy)
                if args.mbr:
                    from decoders.nbest_policy import mbr_choices

                    mbr = mbr_choices(batch, policy, scale=args.mbr_scale)
                    counts["mbr"] = counts.get("mbr", 0) + _errors(batch, mbr)
                    picks = mbr
                if best is not None:
                    best.writelines(
                        onebest_line(nb.utt_id, nb.hyps[i].text if i >= 0 else "")
                        for nb, i in zip(batch, picks, strict=True)
                    )
            refs_known = refs_known and all(nb.ref is not None for nb in batch)
            if refs_known:
                for k, v in onebest_error_counts(batch, policy).items():
                    counts[k] = counts.get(k, 0) + v
    _report(args, merge_stats(stats), lms, mix_policy, policy, ties, counts if refs_known else None)
    return 0


def _batches(args: argparse.Namespace, lms: dict[str, Any], chunk: int, stack: contextlib.ExitStack
             ) -> Iterator[tuple[list[NBestList], Any]]:  # fmt: skip
    """The input rescored as a stream of ``(batch, stats)``: here in batches of ``chunk`` hypotheses, or
    with ``--scheduler`` (or ``$LMFUSION_SCHEDULER``) in shards of ``--shard-size`` utterances on the
    executor's workers (the input is still read once, lazily, here; at most a window of shards in
    flight). ``chunk`` beyond any input (``--mbr`` without a scale) gathers every list into one batch."""
    from decoders.nbest import merge_stats, rescore_stream
    from recipes.scale import executor_from_args, rescore_on

    lists = iter_input(args, args.input)
    ex = stack.enter_context(executor_from_args(args))
    if ex.kind == "inprocess":
        return rescore_stream(
            lists, lms, not args.no_word_count, batch_hyps=chunk, batch_size=args.batch_size,
            progress=not args.quiet, overwrite=args.overwrite, reuse=args.cached, count_oov=not args.no_oov_count,
        )  # fmt: skip
    shards = rescore_on(ex, lists, lms, args)
    if chunk < 2**62:
        return shards
    parts = list(shards)
    return iter([([nb for p, _ in parts for nb in p], merge_stats(st for _, st in parts))])


def _errors(batch: list[NBestList], picks: list[int]) -> int:
    from fusion.metrics import edit_distance, units_of

    total = 0
    for nb, i in zip(batch, picks, strict=True):
        ref = units_of(nb.ref or "")
        total += len(ref) if i < 0 else edit_distance(ref, units_of(nb.hyps[i].text))
    return total


def format_nbest_jsonl(batch: list[NBestList]) -> str:
    from decoders.hypothesis import format_nbest_jsonl as fmt

    return fmt(batch)


def _report(args: argparse.Namespace, st: Any, lms: dict[str, Any], mix_policy: Any, policy: Any, ties: int,
            counts: dict[str, int] | None) -> None:  # fmt: skip
    from decoders.nbest.rank import rates_of_counts
    from fusion.errors import LMFusionError
    from fusion.profile import FusionProfile

    print(
        f"{st.n_utts} utterances, {st.n_hyps} hypotheses ({st.n_no_hyps} empty lists, {st.n_single} single, "
        f"{st.n_empty_text} empty texts, {st.n_duplicates} duplicates) in {st.seconds:.2f}s"
    )
    if lms:
        print(f"{'component':<24} {'scored':>8} {'cached':>8} {'oov':>8} {'failed':>7}")
        for name in lms:
            sc, ca = st.scored.get(name, 0), st.cached.get(name, 0)
            print(f"{name:<24} {sc:>8} {ca:>8} {st.oov.get(name, 0):>8} {st.failed.get(name, 0):>7}")
    if mix_policy is not None:
        print(f"added {mix_policy[0]!r}: a per-utterance mix of {', '.join(mix_policy[2])}")
    if args.output:
        print(f"wrote {args.output}")
    if policy is not None:
        shown = (
            f"profile {policy.name!r}" if isinstance(policy, FusionProfile)
            else str(policy) if isinstance(policy, dict) else type(policy).__name__
        )  # fmt: skip
        print(f"1-best under {shown}: {ties} utterances with tied top scores (first hypothesis kept)")
        if args.onebest:
            print(f"wrote {args.onebest}")
    if counts and st.n_utts:
        try:
            rates = rates_of_counts(counts)
        except LMFusionError as e:
            print(f"no WER: {e}")
        else:
            print("WER: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in rates.items()))


def _mix_component(name: str, interpolation: list[str], lms: dict[str, Any]) -> tuple[str, Any, dict[str, Any]] | None:
    """``--mix NAME --interpolation SPEC``: a constant mix is added to ``lms`` as a model (returns None); a
    profile or policy file returns ``(name, policy, models)`` for a per-utterance mix after the LMs are scored."""

    from fusion.errors import LMFusionError
    from fusion.interpolate import LinearInterpolation
    from fusion.io import is_file, read_json
    from fusion.units import bridge_units
    from recipes.cli_args import read_interpolation

    if len(lms) < 2:
        raise LMFusionError("--mix needs at least two --lm models")
    if len(interpolation) == 1 and is_file(interpolation[0]):
        obj = read_json(interpolation[0])
        if isinstance(obj, dict) and obj.get("format") in ("lmfusion-profile", "lmfusion-policy"):
            from fusion.adaptive import load_policy

            return name, load_policy(interpolation[0]), dict(lms)
    lambdas = read_interpolation(interpolation)
    assert lambdas is not None
    models = bridge_units(list(lms.values()), "auto")  # word and subword LMs: per word, as `mix` does
    lms[name] = LinearInterpolation(models, lambdas, name=name)
    return None
