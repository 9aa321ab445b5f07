"""Issue 13, recipe configs and profiles: aliases, escapes, str.format, cross-key checks, clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fusion.errors import InputError
from recipes.cli import main
from recipes.config import ConfigError

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "demo.yaml"


def _cfg(tmp_path: Path, extra: str) -> Path:
    """The demo config with ``extra`` YAML lines merged in at the top level (later keys win)."""
    import yaml

    base = yaml.safe_load(DEMO.read_text())
    base["work_dir"] = str(tmp_path / "work")
    for k, v in (yaml.safe_load(extra) or {}).items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k].update(v)
        else:
            base[k] = v
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(base))
    return p


def test_billion_laughs_is_refused_fast(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    from recipes.asr.settings import load_recipe

    with pytest.raises(ConfigError, match="anchor &a is not allowed") as ei:
        load_recipe(p)
    assert time.perf_counter() - t0 < 5 and ei.value.line == 1


def test_non_utf8_and_directory_configs_are_clear_errors(tmp_path: Path) -> None:
    from recipes.asr.settings import load_recipe

    p = tmp_path / "bad.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_recipe(p)
    with pytest.raises(ConfigError, match="directory"):
        load_recipe(tmp_path)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("text: {domains: ['../../../x/ESCAPE']}", "text.domains"),
        ("text: {train: '{domain.__class__}.txt'}", "text.train"),
        ("seed: -1", "seed"),
        ("tune: {scale_bounds: [5]}", "tune.scale_bounds"),
        ("conditions: {buckets: {a: 10.0, b: 10.0}}", "conditions.buckets"),
        ("conditions: {min_utts: 1}\ntune: {cv_folds: 5}", "conditions.min_utts"),
    ],
)
def test_recipe_check_refuses_what_the_stages_would(tmp_path: Path, extra: str, field: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    p = _cfg(tmp_path, extra)
    assert main(["recipe", "check", str(p)]) == 2
    assert repr(field) in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_demo_config_still_passes(tmp_path: Path) -> None:
    assert main(["recipe", "check", str(_cfg(tmp_path, ""))]) == 0


@pytest.mark.parametrize("kind", ["missing", "dir", "latin1", "deep", "bigint"])
def test_profile_show_errors(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "p.json"
    if kind == "dir":
        p.mkdir()
    elif kind == "latin1":
        p.write_bytes(b'{"format": "caf\xe9"}')
    elif kind == "deep":
        p.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "bigint":
        p.write_text('{"version": ' + "9" * 5000 + "}")
    assert main(["profile", "show", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "Traceback" not in err


def test_read_json_is_a_located_error(tmp_path: Path) -> None:
    from fusion.io import read_json

    p = tmp_path / "x.json"
    p.write_text("[" * 50_000)
    with pytest.raises(InputError, match=r"nested too deeply|invalid JSON"):
        read_json(p)


def test_huge_yaml_integer_is_a_clear_error(tmp_path: Path) -> None:  # found by the fuzz suite
    from recipes.asr.run import load_recipe

    p = tmp_path / "big.yaml"
    p.write_text("seed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match="invalid YAML number"):
        load_recipe(p)


def test_deeply_nested_yaml_is_refused_before_parsing(tmp_path: Path) -> None:  # found by the fuzz suite
    from recipes.asr.settings import load_recipe

    p = tmp_path / "deep.yaml"
    p.write_text("[" * 3000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_recipe(p)
