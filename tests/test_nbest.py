"""N-best readers/writers, rescoring with KenLM and neural LMs, 1-best selection, tuning problems, CLI."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from decoders.hypothesis import NBestList, ScoredHypothesis, read_nbest_jsonl, write_nbest_jsonl
from decoders.nbest import (
    apply_weights,
    count_ties,
    onebest_error_rates,
    parse_score_scale,
    read_kaldi_nbest,
    read_nbest,
    read_nbest_tsv,
    rescore,
    rescore_with_stats,
    summarize,
    to_tuning_problem,
    write_kaldi_nbest,
    write_nbest_tsv,
)
from fusion.errors import InputError, LMFusionError
from fusion.lm import LanguageModel, State, Units
from fusion.metrics import wer
from fusion.reference import score_unit_by_unit
from fusion.tuning import error_rate, tune

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


def H(text: str, **scores: float) -> ScoredHypothesis:
    return ScoredHypothesis(text, scores)


def edge_case_lists() -> list[NBestList]:
    """Duplicates, an empty list, a single empty hypothesis, unicode the LMs never saw, tags."""
    u1 = (H("the cat sat", am=-10.5, lm=-7.25), H("the cat sat", am=-11.0, lm=-7.25), H("a cat", am=-9.0, lm=-8.0))
    u4 = (H("naïve 日本 café", am=-3.0, lm=-4.0), H("naive cafe", am=-3.5, lm=-2.0))
    return [
        NBestList("u1", u1, "the cat sat"),
        NBestList("u2", (), "nothing came out"),
        NBestList("u3", (H("", am=-1.0, lm=-0.5),), "x"),
        NBestList("ü-4", u4, "naïve café", {"domain": "tech"}),
    ]


# ----------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------
def test_jsonl_round_trip(tmp_path: Path) -> None:
    nbs = edge_case_lists()
    write_nbest_jsonl(tmp_path / "a.jsonl", nbs)
    back = read_nbest_jsonl(tmp_path / "a.jsonl")
    assert back == nbs
    write_nbest_jsonl(tmp_path / "b.jsonl", back)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"utt_id": "x", "hyps": [{"text": "a", "scores": {"am": "high"}}]}', "hyps[0].scores.am"),
        ('{"utt_id": "x", "hyps": [{"scores": {}}]}', "hyps[0].text"),
        ('{"utt_id": "", "hyps": []}', "utt_id"),
        ('{"utt_id": "x", "hyps": {}}', "hyps"),
        ('{"utt_id": "x", "hyps": [], "ref": 3}', "ref"),
        ('{"utt_id": "x", "hyps": [{"text": "a", "scores": {"am": NaN}}]}', "hyps[0].scores.am"),
        ('{"utt_id": "x", "hyps": [', None),
        ('["not", "an", "object"]', None),
    ],
)
def test_malformed_jsonl_lines_name_the_line(tmp_path: Path, line: str, field: str | None) -> None:
    good = json.dumps(NBestList("ok", (H("a b", am=-1.0),), "a b").to_json())
    p = tmp_path / "bad.jsonl"
    p.write_text(f"{good}\n\n{line}\n{good.replace('ok', 'ok2')}\n", encoding="utf-8")
    with pytest.raises(InputError) as ei:
        read_nbest(p)
    assert ei.value.line == 3
    assert ei.value.field == field
    assert f"{p}:3" in str(ei.value)


def test_duplicate_utterance_ids_are_errors(tmp_path: Path) -> None:
    p = tmp_path / "dup.jsonl"
    write_nbest_jsonl(p, [NBestList("a", ()), NBestList("b", ())])
    p.write_text(p.read_text() + p.read_text().splitlines()[0] + "\n")
    with pytest.raises(InputError, match="duplicate utt_id") as ei:
        read_nbest(p)
    assert ei.value.line == 3


def test_kaldi_triplet_round_trip_and_cost_sign(tmp_path: Path) -> None:
    nbs = [nb for nb in edge_case_lists() if nb.hyps]  # Kaldi has no way to list an empty n-best
    files = [tmp_path / n for n in ("text", "ac_cost", "lm_cost")]
    write_kaldi_nbest(*files, nbs, refs=tmp_path / "ref")
    assert "u1-1 10.5" in files[1].read_text()  # costs are negated scores
    back = read_kaldi_nbest(*files, refs=tmp_path / "ref")
    assert [(nb.utt_id, nb.ref, nb.hyps) for nb in back] == [(nb.utt_id, nb.ref, nb.hyps) for nb in nbs]
    # the same through read_nbest, with a scale applied afterwards
    scaled = read_nbest(files, "kaldi", scale="am=0.5")
    assert scaled[0].hyps[0].scores == {"am": -5.25, "lm": -7.25}


def test_kaldi_integer_ids_and_hypothesis_order(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("<eps> 0\nthe 1\ncat 2\n")
    (tmp_path / "text").write_text("u-2 2\nu-1 1 2\nu-10\n")
    (tmp_path / "ac").write_text("u-1 5\nu-2 6\nu-10 7.5\n")
    (tmp_path / "lm").write_text("u-1 1\nu-2 2\nu-10 3\n")
    [nb] = read_kaldi_nbest(tmp_path / "text", tmp_path / "ac", tmp_path / "lm", words_txt=tmp_path / "words.txt")
    assert [h.text for h in nb.hyps] == ["the cat", "cat", ""]
    assert nb.hyps[2].scores == {"am": -7.5, "lm": -3.0}


@pytest.mark.parametrize(
    ("which", "content", "line", "match"),
    [
        ("ac", "u-1 5\nu-2 abc\n", 2, "not a number"),
        ("text", "u-1 the\nu-x cat\n", 2, "<utt>-<n>"),
        ("lm", "u-1 1\n", 2, "no entry"),
        ("ac", "u-1 5\nu-2 6\nu-3 7\n", 3, "no hypothesis"),
        ("lm", "u-1 1\nu-1 2\n", 2, "duplicate key"),
    ],
)
def test_kaldi_errors_are_located(tmp_path: Path, which: str, content: str, line: int, match: str) -> None:
    files = {"text": "u-1 the\nu-2 cat\n", "ac": "u-1 5\nu-2 6\n", "lm": "u-1 1\nu-2 2\n"}
    files[which] = content
    if "u-x" in content:  # a malformed key everywhere
        files = {k: v.replace("u-2", "u-x") for k, v in files.items()}
    for k, v in files.items():
        (tmp_path / k).write_text(v)
    with pytest.raises(InputError, match=match) as ei:
        read_kaldi_nbest(tmp_path / "text", tmp_path / "ac", tmp_path / "lm")
    assert ei.value.line == line


def test_tsv_round_trip_and_errors(tmp_path: Path) -> None:
    nbs = [nb for nb in edge_case_lists() if nb.hyps]
    write_nbest_tsv(tmp_path / "a.tsv", nbs)
    back = read_nbest_tsv(tmp_path / "a.tsv")
    assert [(nb.utt_id, nb.ref, nb.hyps) for nb in back] == [(nb.utt_id, nb.ref, nb.hyps) for nb in nbs]
    bad = tmp_path / "bad.tsv"
    bad.write_text("utt_id\ttext\tam\nu1\thello\t-1\nu1\tworld\tminus two\n")
    with pytest.raises(InputError, match="not a number") as ei:
        read_nbest_tsv(bad)
    assert (ei.value.line, ei.value.field) == (3, "am")
    bad.write_text("utt_id\ttext\tam\nu1\thello\t-1\nu2\tx\t-1\nu1\ty\t-2\n")
    with pytest.raises(InputError, match="contiguous") as ei:
        read_nbest_tsv(bad)
    assert ei.value.line == 4
    bad.write_text("utt\ttext\n")
    with pytest.raises(InputError, match="utt_id"):
        read_nbest_tsv(bad)


def test_score_scale_parsing_and_cost_conversion() -> None:
    assert parse_score_scale("cost") == -1.0
    assert parse_score_scale("log10") == pytest.approx(math.log(10))
    assert parse_score_scale("am=-1, lm=-log10") == {"am": -1.0, "lm": pytest.approx(-math.log(10))}
    with pytest.raises(InputError):
        parse_score_scale("am=fast")
    with pytest.raises(InputError):
        parse_score_scale("inf")


# ----------------------------------------------------------------------------------------------
# Rescoring
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bible_lm(bible_arpa: Path):  # type: ignore[no-untyped-def]
    from fusion.ngram import KenLM

    return KenLM(bible_arpa, name="ngram")


def test_rescore_adds_kenlm_scores_and_counts_edge_cases(bible_lm) -> None:  # type: ignore[no-untyped-def]
    nbs = edge_case_lists()
    out, st = rescore_with_stats(nbs, {"ngram": bible_lm})
    assert [nb.utt_id for nb in out] == [nb.utt_id for nb in nbs]  # nothing dropped, order kept
    assert [len(nb.hyps) for nb in out] == [len(nb.hyps) for nb in nbs]
    for nb in out:
        for h in nb.hyps:
            ref = bible_lm.score_sentence(h.text.split()).total  # the per-word path
            assert h.scores["ngram"] == pytest.approx(ref, abs=1e-4)  # model.score sums in float32
            assert h.scores["words"] == len(h.text.split())
            assert {"am", "lm"} <= set(h.scores)  # recogniser scores carried through
    # an empty hypothesis is ln P(</s> | <s>)
    assert out[2].hyps[0].scores["ngram"] == pytest.approx(bible_lm.end(bible_lm.begin()))
    assert (st.n_utts, st.n_hyps, st.n_no_hyps, st.n_single, st.n_empty_text, st.n_duplicates) == (4, 6, 1, 1, 1, 1)
    assert st.scored["ngram"] == 6  # a word KenLM scores repeats again (cheaper than looking them up)
    # records built by the fast path are ordinary, equal, frozen ScoredHypothesis values
    h = out[0].hyps[0]
    assert h == ScoredHypothesis(h.text, dict(h.scores), h.tokens, h.words)
    with pytest.raises(AttributeError):
        h.text = "changed"  # type: ignore[misc]
    assert h.with_scores(x=1.0).scores["x"] == 1.0
    # 日本, naïve, café...: never seen by the bible LM; counted over the texts scored, as the per-word path says
    want = sum(bible_lm.is_oov(w) for nb in nbs for h in nb.hyps for w in h.text.split())
    assert st.oov["ngram"] == want >= 2
    assert st.failed["ngram"] == 0


def test_score_cache_is_reused_unless_overwrite(bible_lm) -> None:  # type: ignore[no-untyped-def]
    first = rescore(edge_case_lists(), {"ngram": bible_lm})
    # tamper with a cached value: reuse must keep it, overwrite must recompute it
    h0 = first[0].hyps[0]
    tampered = [NBestList("u1", (h0.with_scores(ngram=-1.0), *first[0].hyps[1:]), first[0].ref), *first[1:]]
    again, st = rescore_with_stats(tampered, {"ngram": bible_lm})
    assert again[0].hyps[0].scores["ngram"] == -1.0
    assert st.cached["ngram"] == 6 and st.scored["ngram"] == 0
    fresh, st2 = rescore_with_stats(tampered, {"ngram": bible_lm}, overwrite=True)
    assert fresh[0].hyps[0].scores["ngram"] == pytest.approx(h0.scores["ngram"])
    assert st2.scored["ngram"] == 6


class PreferReference(LanguageModel):
    """A word LM that gives the reference sentences a high score and anything else a low one."""

    def __init__(self, refs: Sequence[str]) -> None:
        super().__init__("oracle", Units.word())
        self.refs = set(refs)

    def begin(self) -> State:
        return ()

    def score(self, state: State, unit: str) -> tuple[float, State]:
        return -1.0, (*state, unit)  # type: ignore[misc]

    def end(self, state: State) -> float:
        return 0.0 if " ".join(state) in self.refs else -50.0  # type: ignore[arg-type]


class Flaky(LanguageModel):
    """Raises on one word and returns NaN on another: rescoring must survive both."""

    def __init__(self) -> None:
        super().__init__("flaky", Units.word())

    def begin(self) -> State:
        return 0

    def score(self, state: State, unit: str) -> tuple[float, State]:
        if unit == "boom":
            raise RuntimeError("cannot score this")
        return (math.nan if unit == "nan" else -1.0), 0

    def end(self, state: State) -> float:
        return -1.0


def noisy_lists(n: int, seed: int) -> list[NBestList]:
    """Bible dev sentences with 9 corrupted variants; am scores are noise that often prefers an error."""
    rng = random.Random(seed)
    refs = [s.strip() for s in (TEXT / "bible.dev.txt").read_text().splitlines() if s.strip()][:n]
    vocab = sorted({w for r in refs for w in r.split()})
    out = []
    for i, r in enumerate(refs):
        hyps = [H(r, am=rng.gauss(0, 1))]
        for _ in range(9):
            ws = r.split()
            for _ in range(rng.randint(1, 3)):
                op = rng.random()
                j = rng.randrange(len(ws))
                if op < 0.6:
                    ws[j] = rng.choice(vocab)
                elif op < 0.8 and len(ws) > 1:
                    del ws[j]
                else:
                    ws.insert(j, rng.choice(vocab))
            hyps.append(H(" ".join(ws), am=rng.gauss(0, 1)))
        rng.shuffle(hyps)
        out.append(NBestList(f"bible-{i}", tuple(hyps), r))
    return out


def test_rescoring_with_a_reference_preferring_lm_reduces_wer(bible_lm) -> None:  # type: ignore[no-untyped-def]
    nbs = noisy_lists(60, seed=1)
    refs = [nb.ref or "" for nb in nbs]
    before = wer(refs, apply_weights(nbs, {"am": 1.0}))
    out, st = rescore_with_stats(nbs, {"oracle": PreferReference(refs), "ngram": bible_lm})
    assert st.scored["oracle"] == len({h.text for nb in nbs for h in nb.hyps})  # repeats scored once
    assert wer(refs, apply_weights(out, {"am": 1.0, "oracle": 1.0})) == 0.0 < before
    # a real n-gram trained in-domain also helps
    assert wer(refs, apply_weights(out, {"am": 1.0, "ngram": 0.5})) < before


def test_failures_are_floored_and_counted_never_dropped() -> None:
    nbs = [
        NBestList("a", (H("fine words", am=0.0), H("boom here", am=-1.0), H("nan here", am=-2.0)), "fine words"),
        NBestList("b", (H("boom", am=0.0),), "boom"),
    ]
    with pytest.warns(UserWarning):
        out, st = rescore_with_stats(nbs, {"flaky": Flaky()}, batch_size=2, floor_score=-999.0)
    assert [nb.utt_id for nb in out] == ["a", "b"]
    assert st.failed["flaky"] == 3
    assert out[0].hyps[0].scores["flaky"] == -3.0
    assert out[0].hyps[1].scores["flaky"] == -999.0 and out[0].hyps[2].scores["flaky"] == -999.0
    assert all(math.isfinite(h.scores["flaky"]) for nb in out for h in nb.hyps)


def test_rescore_with_a_linear_interpolation(bible_arpa: Path, tech_arpa: Path) -> None:
    from fusion.interpolate import LinearInterpolation
    from fusion.ngram import KenLM

    b, t = KenLM(bible_arpa, name="bible"), KenLM(tech_arpa, name="tech")
    mix = LinearInterpolation([b, t], [0.3, 0.7], name="mix")
    nbs = edge_case_lists()[:1]
    out = rescore(nbs, {"bible": b, "tech": t, "mix": mix})
    for h in out[0].hyps:
        pb = b.score_sentence(h.text.split()).logprobs
        pt = t.score_sentence(h.text.split()).logprobs
        assert h.scores["mix"] == pytest.approx(float(np.logaddexp(np.log(0.3) + pb, np.log(0.7) + pt).sum()))


def test_rescore_with_a_neural_lm_batches_like_the_incremental_path(tiny_spm) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    from fusion.neural import NeuralLM

    torch.set_num_threads(1)
    lm = NeuralLM.from_config({"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1}, tiny_spm, seed=0)
    nbs = noisy_lists(3, seed=2) + edge_case_lists()
    out, st = rescore_with_stats(nbs, {"nnlm": lm}, batch_size=7)
    assert st.failed["nnlm"] == 0
    for nb in out:
        for h in nb.hyps:
            inc = score_unit_by_unit(lm, lm.tokenize(h.text)).total
            assert h.scores["nnlm"] == pytest.approx(inc, abs=1e-4)


# ----------------------------------------------------------------------------------------------
# 1-best selection and tuning problems
# ----------------------------------------------------------------------------------------------
def test_apply_weights_matches_nbestlist_best() -> None:
    rng = np.random.default_rng(0)
    nbs = noisy_lists(30, seed=3)
    nbs = [
        NBestList(
            nb.utt_id, tuple(h.with_scores(lm=float(rng.normal()), words=len(h.text.split())) for h in nb.hyps), nb.ref
        )
        for nb in nbs
    ]
    nbs.append(NBestList("empty", (), "a b"))
    for _ in range(10):
        w = {"am": 1.0, "lm": float(rng.uniform(0, 2)), "words": float(rng.uniform(-2, 2))}
        got = apply_weights(nbs, w)
        want = [(nb.best(w).text if nb.best(w) else "") for nb in nbs]  # type: ignore[union-attr]
        assert got == want
    # exact ties: the first hypothesis wins, and ties are counted
    tied = [NBestList("t", (H("x", am=-1.0), H("y", am=-1.0)), "y")]
    assert apply_weights(tied, {"am": 1.0}) == ["x"]
    assert count_ties(tied, {"am": 1.0}) == 1
    with pytest.raises(LMFusionError, match="weight 'lm' names no score component"):
        apply_weights(tied, {"am": 1.0, "lm": 0.5})
    partial = [NBestList("p", (H("x", am=-1.0, lm=-2.0), H("y", am=-1.0)), "y")]
    with pytest.raises(LMFusionError, match="no 'lm' score"):
        apply_weights(partial, {"am": 1.0, "lm": 0.5})


def test_tuning_problem_agrees_with_wer_of_apply_weights(bible_lm) -> None:  # type: ignore[no-untyped-def]
    nbs = rescore(noisy_lists(40, seed=4), {"ngram": bible_lm})
    nbs.append(NBestList("empty", (), "three words here"))
    refs = [nb.ref or "" for nb in nbs]
    prob = to_tuning_problem(nbs, ["am", "ngram", "words"])
    for w in ({"am": 1.0}, {"am": 1.0, "ngram": 0.7, "words": 0.5}, {"am": 0.2, "ngram": 1.0, "words": -1.0}):
        assert error_rate(prob, w) == pytest.approx(wer(refs, apply_weights(nbs, w)))
    cprob = to_tuning_problem(nbs, ["am", "ngram", "words"], unit="char")
    from fusion.metrics import cer

    assert error_rate(cprob, {"am": 1.0, "ngram": 0.7}) == pytest.approx(
        cer(refs, apply_weights(nbs, {"am": 1.0, "ngram": 0.7}))
    )
    rates = onebest_error_rates(nbs, {"am": 1.0, "ngram": 0.7})
    assert rates["oracle"] == pytest.approx(prob.oracle_error_rate())
    assert rates["oracle"] <= rates["rescored"]
    res = tune(prob, "mert", seed=0)
    assert res.error_rate <= error_rate(prob, {"am": 1.0})
    assert res.error_rate < prob.first_error_rate()
    with pytest.raises(LMFusionError, match="no reference"):
        to_tuning_problem([NBestList("x", (H("a", am=0.0),))], ["am"])


def test_summarize_counts() -> None:
    s = summarize(edge_case_lists())
    assert s == {"utts": 4, "hyps": 6, "no_hyps": 1, "single": 1, "empty_text": 1, "duplicates": 1}


# ----------------------------------------------------------------------------------------------
# The CLI end to end
# ----------------------------------------------------------------------------------------------
def test_cli_rescore_then_tune(tmp_path: Path, bible_arpa: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recipes.cli import main

    nbs = noisy_lists(50, seed=5)
    write_nbest_jsonl(tmp_path / "dev.jsonl", nbs[:30])
    write_nbest_jsonl(tmp_path / "test.jsonl", nbs[30:])
    for part in ("dev", "test"):
        rc = main(
            [
                "-q",
                "rescore",
                str(tmp_path / f"{part}.jsonl"),
                "--lm",
                f"ngram={bible_arpa}",
                "-o",
                str(tmp_path / f"{part}.r.jsonl"),
            ]
        )
        assert rc == 0
    rescored = read_nbest_jsonl(tmp_path / "dev.r.jsonl")
    assert all({"am", "ngram", "words"} <= set(h.scores) for nb in rescored for h in nb.hyps)
    out = tmp_path / "weights.json"
    rc = main(["-q", "tune", "--dev", str(tmp_path / "dev.r.jsonl"), "--test", str(tmp_path / "test.r.jsonl"),
               "--method", "mert", "grid", "--points", "6", "-o", str(out), "--plot", str(tmp_path / "wer.png"),
               "--bootstrap", "200"])  # fmt: skip
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["weights"]["am"] == 1.0
    assert doc["dev"]["error_rate"] <= doc["dev"]["start_error_rate"]
    assert doc["test"]["bootstrap"]["lo"] <= doc["test"]["bootstrap"]["delta"] <= doc["test"]["bootstrap"]["hi"]
    assert (tmp_path / "wer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "mert" in printed and "oracle" in printed
    # 1-best with the tuned weights
    rc = main(
        [
            "-q",
            "rescore",
            str(tmp_path / "test.r.jsonl"),
            "--weights",
            str(out),
            "--onebest",
            str(tmp_path / "1best.txt"),
        ]
    )
    assert rc == 0
    lines = (tmp_path / "1best.txt").read_text().splitlines()
    assert len(lines) == 20 and lines[0].startswith("bible-30 ")
    # a malformed input: exit status 2 and the line number on stderr
    (tmp_path / "bad.jsonl").write_text('{"utt_id": "a", "hyps": []}\n{"utt_id": 5}\n')
    assert main(["-q", "rescore", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_cli_reads_kaldi_and_tsv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recipes.cli import main

    nbs = [nb for nb in edge_case_lists() if nb.hyps]
    files = [tmp_path / n for n in ("text", "ac", "lm")]
    write_kaldi_nbest(*files, nbs, refs=tmp_path / "ref")
    out = tmp_path / "k.jsonl"
    args = ["-q", "rescore", *map(str, files), "--format", "kaldi", "--refs", str(tmp_path / "ref"), "-o", str(out)]
    assert main([*args, "--weights", "am=1,lm=1", "--onebest", str(tmp_path / "1b")]) == 0
    back = read_nbest_jsonl(out)
    assert back[0].hyps[0].scores == {"am": -10.5, "lm": -7.25, "words": 3.0}
    assert (tmp_path / "1b").read_text().splitlines()[0] == "u1 a cat"  # -9 - 8 beats -10.5 - 7.25
    assert main([*args, "--cost"]) == 2  # would negate the costs back
    write_nbest_tsv(tmp_path / "n.tsv", nbs)
    assert main(["-q", "rescore", str(tmp_path / "n.tsv"), "--format", "tsv", "--cost", "-o", str(out)]) == 0
    assert read_nbest_jsonl(out)[0].hyps[0].scores["am"] == 10.5  # --cost negated the TSV scores
    capsys.readouterr()


def test_merge_stats_sums_counts_and_keeps_not_counted() -> None:
    from decoders.nbest import RescoreStats, merge_stats

    a = RescoreStats(2, 5, 0, 1, 0, 0, scored={"lm": 5}, oov={"lm": -1}, seconds=1.0)
    b = RescoreStats(1, 3, 1, 0, 1, 2, scored={"lm": 3}, oov={"lm": -1}, seconds=2.0)
    m = merge_stats([a, b])
    assert (m.n_utts, m.n_hyps, m.n_no_hyps, m.n_duplicates) == (3, 8, 1, 2)
    assert m.scored == {"lm": 8} and m.oov == {"lm": -1} and m.seconds == 3.0
    assert merge_stats([a, b], seconds=2.5).seconds == 2.5
    assert merge_stats([], names=["lm"]).scored == {"lm": 0}
