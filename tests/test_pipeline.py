"""The recipe stage runner and config validation: skip when up to date, resume, name bad keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion.errors import LMFusionError
from recipes.config import ConfigError, Field, load_config, non_empty, positive, validate
from recipes.pipeline import Pipeline, Stage, StageContext


def _copy_stage(src: Path, dst: Path, calls: list[str], params: dict | None = None) -> Stage:  # type: ignore[type-arg]
    def run(ctx: StageContext) -> None:
        calls.append("copy")
        dst.write_text(src.read_text().upper())

    return Stage("copy", run, [src], [dst], params or {"upper": True})


def test_rerun_with_unchanged_inputs_does_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("hello")
    calls: list[str] = []
    pipe = Pipeline(tmp_path / "work", log=None)
    r1 = pipe.run([_copy_stage(src, dst, calls)])
    r2 = pipe.run([_copy_stage(src, dst, calls)])
    assert [r.status for r in r1] == ["ran"] and [r.status for r in r2] == ["skipped"]
    assert calls == ["copy"] and dst.read_text() == "HELLO"


def test_changed_input_params_or_missing_output_rerun(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("a")
    calls: list[str] = []
    pipe = Pipeline(tmp_path / "work", log=None)
    pipe.run([_copy_stage(src, dst, calls)])
    src.write_text("b")  # content changed
    pipe.run([_copy_stage(src, dst, calls)])
    assert dst.read_text() == "B"
    pipe.run([_copy_stage(src, dst, calls, {"upper": False})])  # params changed
    dst.unlink()  # output gone
    pipe.run([_copy_stage(src, dst, calls, {"upper": False})])
    assert calls == ["copy"] * 4
    pipe.run([_copy_stage(src, dst, calls, {"upper": False})], force=["copy"])
    assert len(calls) == 5


def test_directory_inputs_are_hashed_by_content(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("1")
    calls: list[str] = []
    out = tmp_path / "o"

    def stage() -> Stage:
        return Stage("s", lambda ctx: (calls.append("s"), out.write_text("ok")), [d], [out])

    pipe = Pipeline(tmp_path / "w", log=None)
    pipe.run([stage()])
    pipe.run([stage()])
    (d / "y").write_text("2")
    pipe.run([stage()])
    assert calls == ["s", "s"]


def test_interrupted_stage_resumes_where_it_stopped(tmp_path: Path) -> None:
    items = [f"item{i}" for i in range(6)]
    processed: list[str] = []
    out = tmp_path / "out.txt"
    crash_after = {"n": 3}

    def run(ctx: StageContext) -> None:
        for it in items:
            if ctx.is_done(it):
                continue
            if crash_after["n"] == 0:
                raise KeyboardInterrupt("simulated interruption")
            crash_after["n"] -= 1
            processed.append(it)
            (tmp_path / f"{it}.part").write_text(it)
            ctx.mark_done(it)
        out.write_text("\n".join(sorted(p.read_text() for p in tmp_path.glob("*.part"))))

    pipe = Pipeline(tmp_path / "w", log=None)
    stage = Stage("work", run, [], [out], {"n": 6})
    with pytest.raises(KeyboardInterrupt):
        pipe.run([stage])
    assert processed == items[:3] and not out.exists()
    assert not pipe.is_up_to_date(stage)  # an interrupted stage never looks finished
    crash_after["n"] = 100
    assert [r.status for r in pipe.run([stage])] == ["ran"]
    assert processed == items  # the first three were not redone
    assert out.read_text().split("\n") == items
    # a new stamp (changed params) starts from scratch, not from the old journal
    processed.clear()
    pipe.run([Stage("work", run, [], [out], {"n": 7})])
    assert processed == items


def test_stage_that_forgets_an_output_is_an_error(tmp_path: Path) -> None:
    pipe = Pipeline(tmp_path / "w", log=None)
    with pytest.raises(LMFusionError, match="without writing"):
        pipe.run([Stage("lazy", lambda ctx: None, [], [tmp_path / "never"])])
    with pytest.raises(LMFusionError, match="unknown stage"):
        pipe.run([Stage("a", lambda ctx: None)], force=["b"])
    with pytest.raises(LMFusionError, match="does not exist"):
        pipe.run([Stage("a", lambda ctx: None, [tmp_path / "missing"])])


SCHEMA = {
    "name": Field(str, "x"),
    "work_dir": Field(str),
    "tune": Field(schema={
        "method": Field(str, "mert", choices=("mert", "grid")),
        "points": Field(int, 10, check=positive),
        "free": Field(list, ["lm"], items=Field(str), check=non_empty),
    }),
    "buckets": Field(dict, {"a": 1.0}, values=Field(float)),
}  # fmt: skip


def test_config_defaults_and_type_coercion(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("work_dir: runs/x\ntune:\n  points: 3\nbuckets: {q: 15}\n")
    cfg = load_config(f, SCHEMA)
    assert cfg == {"name": "x", "work_dir": "runs/x", "tune": {"method": "mert", "points": 3, "free": ["lm"]},
                   "buckets": {"q": 15.0}}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field", "line", "words"),
    [
        ("work_dir: w\ntune:\n  methd: grid\n", "tune.methd", 3, "did you mean 'method'"),
        ("work_dir: w\ntune:\n  method: magic\n", "tune.method", 3, "must be one of"),
        ("work_dir: w\ntune:\n  points: -1\n", "tune.points", 3, "> 0"),
        ("work_dir: w\ntune:\n  points: many\n", "tune.points", 3, "must be int"),
        ("work_dir: w\ntune:\n  free: [lm, 3]\n", "tune.free[1]", 3, "must be str"),
        ("work_dir: w\ntune:\n  free: []\n", "tune.free", 3, "must not be empty"),
        ("name: x\n", "work_dir", None, "missing required key"),
        ("work_dir: w\ntune: 5\n", "tune", 2, "must be a mapping"),
        ("work_dir: w\nbuckets: {a: loud}\n", "buckets.a", 2, "must be float"),
    ],
)
def test_broken_config_names_the_bad_key(tmp_path: Path, text: str, field: str, line: int | None, words: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f, SCHEMA)
    assert e.value.field == field
    assert e.value.line == line
    assert words in str(e.value) and str(f) in str(e.value)


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("work_dir: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(f, SCHEMA)
    with pytest.raises(ConfigError, match="mapping"):
        validate([1, 2], SCHEMA)
