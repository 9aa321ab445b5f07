"""Fusion profiles: round trip, validation, selection by tag and by SNR with interpolation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusion.errors import InputError
from fusion.profile import (
    ConditionWeights,
    FusionProfile,
    SnrBucket,
    default_buckets,
    resolve_weights,
)


def _profile() -> FusionProfile:
    return FusionProfile(
        default=ConditionWeights({"am": 1.0, "lm": 1.0, "words": 0.0}),
        buckets=default_buckets({"15": 15.0, "20": 20.0, "30": 30.0, "clean": 45.0}),
        conditions=(
            ConditionWeights({"am": 1.0, "lm": 4.0, "words": 1.0}, {"med": 0.8, "general": 0.2}, "med", "15"),
            ConditionWeights({"am": 1.0, "lm": 2.0, "words": 0.0}, {"med": 0.8, "general": 0.2}, "med", "30"),
            ConditionWeights({"am": 1.0, "lm": 1.5, "words": 0.5}, {"med": 0.8, "general": 0.2}, "med", None,
                             measured={"dev_wer": 0.2, "n_utts": 40}),
            ConditionWeights({"am": 1.0, "lm": 3.0, "words": 0.0}, {}, None, "15"),
            ConditionWeights({"am": 1.0, "lm": 0.5, "words": 0.0}, {}, None, "clean"),
        ),
        name="t",
        provenance={"created": "2026-01-01T00:00:00+00:00", "metric": "WER"},
    )


def test_round_trip(tmp_path: Path) -> None:
    p = _profile()
    f = p.save(tmp_path / "p.json")
    q = FusionProfile.load(f)
    assert q == p
    assert q.to_json() == p.to_json()
    obj = json.loads(f.read_text())
    assert obj["format"] == "lmfusion-profile" and obj["version"] == 1
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temp file


def test_select_by_tags() -> None:
    p = _profile()
    assert p.select({"domain": "med", "snr": "15"}).fusion["lm"] == 4.0
    assert p.select({"domain": "med", "snr": "15"}).source == "med/15"
    assert p.select({"domain": "med"}).fusion["lm"] == 1.5  # domain-wide
    assert p.select({"domain": "law", "snr": "clean"}).fusion["lm"] == 0.5  # unknown domain -> any-domain bucket
    assert p.select({"domain": "law"}).source == "default"
    assert p.select({}).fusion == {"am": 1.0, "lm": 1.0, "words": 0.0}
    assert p.select({"domain": "med", "snr": "15"}).interpolation == {"med": 0.8, "general": 0.2}


def test_select_by_snr_interpolates_between_neighbouring_buckets() -> None:
    p = _profile()
    # med has buckets 15 (lm 4) and 30 (lm 2): 20 dB is 1/3 of the way
    s = p.select({"domain": "med"}, snr=20.0)
    assert s.fusion["lm"] == pytest.approx(4.0 + (2.0 - 4.0) / 3)
    assert s.fusion["words"] == pytest.approx(1.0 - 1.0 / 3)
    assert p.select({"domain": "med"}, snr=15.0).fusion["lm"] == 4.0
    assert p.select({"domain": "med"}, snr=3.0).fusion["lm"] == 4.0  # below the lowest centre: clamp
    assert p.select({"domain": "med"}, snr=60.0).fusion["lm"] == 2.0  # above the highest: clamp
    # continuity: no jump across a bucket boundary (22.5 dB between the 20 and 30 buckets)
    a = p.select({"domain": "med"}, snr=22.499).fusion["lm"]
    b = p.select({"domain": "med"}, snr=22.501).fusion["lm"]
    assert abs(a - b) < 1e-3
    # a numeric snr tag works like the snr argument
    assert p.select({"domain": "med", "snr": 20.0}).fusion == s.fusion
    assert p.select({"domain": "med", "snr": "20.0"}).fusion == s.fusion


def test_bucket_ranges_and_select_from_audio() -> None:
    p = _profile()
    assert p.bucket_of(16.0).name == "15" and p.bucket_of(26.0).name == "30" and p.bucket_of(99.0).name == "clean"
    rng = np.random.default_rng(0)
    noise_only = rng.standard_normal(16000)  # estimates at the floor -> the lowest bucket
    assert p.select({"domain": "med"}, audio=noise_only).fusion["lm"] == 4.0


def test_resolve_weights_accepts_mapping_profile_or_path(tmp_path: Path) -> None:
    p = _profile()
    f = p.save(tmp_path / "p.json")
    assert resolve_weights({"am": 1, "lm": 2}) == {"am": 1.0, "lm": 2.0}
    assert resolve_weights(p, {"domain": "med", "snr": "30"})["lm"] == 2.0
    assert resolve_weights(f, {"domain": "med", "snr": "30"})["lm"] == 2.0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: o.update(version=99), "version"),
        (lambda o: o.update(format="other"), "format"),
        (lambda o: o["conditions"][0]["fusion"].update(lm="x"), "conditions[0].fusion.lm"),
        (lambda o: o["conditions"][1].update(interpolation={"a": 0.7, "b": 0.7}), "conditions[1].interpolation"),
        (lambda o: o["conditions"][0].update(colour="red"), "conditions[0].colour"),
        (lambda o: o["buckets"][0].update(center="loud"), "buckets[0].center"),
        (lambda o: o.pop("default"), "default"),
    ],
)
def test_load_rejects_bad_profiles_naming_the_field(tmp_path: Path, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    obj = _profile().to_json()
    mutate(obj)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(obj))
    with pytest.raises(InputError) as e:
        FusionProfile.load(f)
    assert e.value.field == field
    assert str(f) in str(e.value)


def test_condition_naming_unknown_bucket_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown bucket"):
        FusionProfile(default=ConditionWeights({"am": 1.0}), buckets=(SnrBucket("a", 1.0),),
                      conditions=(ConditionWeights({"am": 1.0}, bucket="b"),))


def test_cli_profile_select_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recipes.cli import main

    f = _profile().save(tmp_path / "p.json")
    assert main(["profile", "select", str(f), "--tag", "domain=med", "--snr", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fusion"]["lm"] == pytest.approx(4.0 - 2.0 / 3) and out["source"].startswith("med/15..30")
    assert main(["profile", "show", str(f)]) == 0
    assert "med/15" in capsys.readouterr().out
    assert main(["profile", "select", str(f), "--tag", "nonsense"]) == 2
