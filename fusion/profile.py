"""Fusion profiles: LM weights per condition (domain tag, noise bucket), chosen per utterance at decode time.

A profile is a versioned JSON file::

    {"format": "lmfusion-profile", "version": 1, "name": "asr-demo",
     "default": {"fusion": {"am": 1.0, "lm": 0.5, "words": 0.3}, "interpolation": {...}},
     "buckets": [{"name": "15", "center": 15.0, "lo": -100, "hi": 17.5}, ...],
     "conditions": [{"domain": "bible", "bucket": "15", "fusion": {...}, "interpolation": {...},
                     "measured": {"dev_wer": 0.31, "n_utts": 30}}, ...],
     "provenance": {"created": "...", "metric": "WER", "data": {...}}}

``fusion`` weights use the component names of every decoder (``am``, one per LM, ``words``, ...);
``interpolation`` weights are the linear-mixture weights of the component LMs (EM-estimated, sum 1).

:meth:`FusionProfile.select` picks the weights for one utterance from its tags (``domain``, ``snr``)
or an SNR estimate from its waveform (:mod:`fusion.snr`). A numeric SNR between the centres of two
noise buckets that both have weights for the domain gets the linear interpolation of the two (no hard
jumps); outside the outermost centres it gets the nearest bucket's. A bucket *name* in the tags (e.g.
``"clean"``) selects that bucket exactly. Unknown domains fall back to domain-free conditions, then to
``default``. :func:`resolve_weights` lets any decoder accept "weights or a profile" in one call.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusion.errors import InputError
from fusion.io import atomic_write_text, read_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ConditionWeights",
    "FusionProfile",
    "Selection",
    "SnrBucket",
    "resolve_weights",
]

FORMAT = "lmfusion-profile"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SnrBucket:
    """A noise condition: SNRs in ``[lo, hi)`` dB, represented by ``center`` for interpolation."""

    name: str
    center: float
    lo: float = -math.inf
    hi: float = math.inf

    def contains(self, snr: float) -> bool:
        return self.lo <= snr < self.hi


@dataclass(frozen=True)
class ConditionWeights:
    """The weights measured for one condition; ``None`` domain/bucket means "any"."""

    fusion: Mapping[str, float]
    interpolation: Mapping[str, float] = field(default_factory=dict)
    domain: str | None = None
    bucket: str | None = None
    measured: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.domain or '*'}/{self.bucket or '*'}"


@dataclass(frozen=True)
class Selection:
    """What :meth:`FusionProfile.select` chose: the weights and a human-readable reason."""

    fusion: dict[str, float]
    interpolation: dict[str, float]
    source: str
    """e.g. ``"bible/20"``, ``"bible/20..30 (t=0.40)"``, ``"default"``."""


def _mix(a: Mapping[str, float], b: Mapping[str, float], t: float) -> dict[str, float]:
    keys = list(dict.fromkeys([*a, *b]))
    return {k: (1.0 - t) * float(a.get(k, 0.0)) + t * float(b.get(k, 0.0)) for k in keys}


def default_buckets(centers: Mapping[str, float]) -> tuple[SnrBucket, ...]:
    """Buckets from ``{name: center}``: each bucket's range reaches halfway to its neighbours' centres."""
    items = sorted(centers.items(), key=lambda kv: kv[1])
    out = []
    for i, (name, c) in enumerate(items):
        lo = -math.inf if i == 0 else (items[i - 1][1] + c) / 2.0
        hi = math.inf if i == len(items) - 1 else (c + items[i + 1][1]) / 2.0
        out.append(SnrBucket(name, float(c), lo, hi))
    return tuple(out)


def _err(source: str | Path, msg: str, fld: str | None = None) -> InputError:
    return InputError(msg, path=source, field=fld)


def _weights_from_json(d: Any, fld: str, source: str | Path, *, simplex: bool = False) -> dict[str, float]:
    if not isinstance(d, dict):
        raise _err(source, "must be an object name -> number", fld)
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _err(source, f"weight {k!r} must be a finite number, got {v!r}", f"{fld}.{k}")
        out[str(k)] = float(v)
    if simplex and out:
        if any(v < 0 for v in out.values()) or abs(sum(out.values()) - 1.0) > 1e-4:
            raise _err(source, f"interpolation weights must be >= 0 and sum to 1, got {out}", fld)
    return out


def _condition_from_json(d: Any, fld: str, source: str | Path) -> ConditionWeights:
    if not isinstance(d, dict):
        raise _err(source, "must be an object", fld)
    unknown = set(d) - {"fusion", "interpolation", "domain", "bucket", "measured"}
    if unknown:
        raise _err(source, f"unknown key(s) {sorted(unknown)}", f"{fld}.{sorted(unknown)[0]}")
    if "fusion" not in d:
        raise _err(source, "missing 'fusion' weights", f"{fld}.fusion")
    for k in ("domain", "bucket"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise _err(source, f"{k!r} must be a string", f"{fld}.{k}")
    measured = d.get("measured", {})
    if not isinstance(measured, dict):
        raise _err(source, "must be an object", f"{fld}.measured")
    return ConditionWeights(
        fusion=_weights_from_json(d["fusion"], f"{fld}.fusion", source),
        interpolation=_weights_from_json(d.get("interpolation", {}), f"{fld}.interpolation", source, simplex=True),
        domain=d.get("domain"),
        bucket=d.get("bucket"),
        measured=measured,
    )


def _buckets_from_json(raw_buckets: Any, source: str | Path) -> tuple[SnrBucket, ...]:
    buckets = []
    if not isinstance(raw_buckets, list):
        raise _err(source, "must be a list", "buckets")
    for i, b in enumerate(raw_buckets):
        fld = f"buckets[{i}]"
        if not isinstance(b, dict) or not isinstance(b.get("name"), str):
            raise _err(source, "each bucket needs a string 'name'", f"{fld}.name")
        c = b.get("center")
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise _err(source, "'center' must be a finite number", f"{fld}.center")
        lo = -math.inf if b.get("lo") is None else float(b["lo"])
        hi = math.inf if b.get("hi") is None else float(b["hi"])
        if not lo <= c <= hi:
            raise _err(source, f"centre {c} outside its range [{lo}, {hi})", f"{fld}.center")
        buckets.append(SnrBucket(b["name"], float(c), lo, hi))
    return tuple(buckets)


@dataclass(frozen=True)
class FusionProfile:
    """Weights per condition, with default weights, noise buckets and provenance. See the module doc."""

    default: ConditionWeights
    buckets: tuple[SnrBucket, ...] = ()
    conditions: tuple[ConditionWeights, ...] = ()
    name: str = "profile"
    provenance: Mapping[str, Any] = field(default_factory=dict)
    domain_tag: str = "domain"
    snr_tag: str = "snr"

    def __post_init__(self) -> None:
        names = [b.name for b in self.buckets]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate bucket names: {names}")
        centers = [b.center for b in self.buckets]
        if len(set(centers)) != len(centers):
            raise ValueError(f"duplicate bucket centres: {centers}")
        seen = set()
        for c in self.conditions:
            if c.bucket is not None and c.bucket not in names:
                raise ValueError(f"condition {c.key} names unknown bucket {c.bucket!r} (buckets: {names})")
            if c.key in seen:
                raise ValueError(f"two conditions for {c.key}")
            seen.add(c.key)
        object.__setattr__(self, "buckets", tuple(sorted(self.buckets, key=lambda b: b.center)))

    # ---- selection ----------------------------------------------------------------------------
    def bucket_of(self, snr: float) -> SnrBucket | None:
        """The bucket whose ``[lo, hi)`` range holds ``snr`` (None if none does)."""
        for b in self.buckets:
            if b.contains(snr):
                return b
        return None

    def _domain_conditions(self, domain: str | None) -> tuple[list[ConditionWeights], str | None]:
        if domain is not None:
            own = [c for c in self.conditions if c.domain == domain]
            if own:
                return own, domain
        return [c for c in self.conditions if c.domain is None], None

    def select(
        self,
        tags: Mapping[str, Any] | None = None,
        *,
        snr: float | str | None = None,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
    ) -> Selection:
        """Weights for one utterance.

        ``tags[domain_tag]`` picks the domain; the SNR comes from ``snr`` if given, else
        ``tags[snr_tag]`` (a number, or a bucket name such as ``"clean"``), else a blind estimate from
        ``audio`` (:func:`fusion.snr.estimate_snr`), else none (the domain-wide weights).
        """
        tags = tags or {}
        domain = tags.get(self.domain_tag)
        domain = None if domain is None else str(domain)
        if snr is None:
            snr = tags.get(self.snr_tag)
        if snr is None and audio is not None:
            from fusion.snr import estimate_snr

            snr = estimate_snr(audio, sample_rate)
        conds, dom = self._domain_conditions(domain)
        by_bucket = {c.bucket: c for c in conds}
        if snr is not None and not isinstance(snr, (int, float)):
            s = str(snr)
            if s in by_bucket:
                return self._sel(by_bucket[s])
            try:
                snr = float(s)
            except ValueError:
                snr = None  # an unknown bucket name: fall through to the domain-wide weights
        if isinstance(snr, (int, float)) and not isinstance(snr, bool) and math.isfinite(float(snr)):
            ranked = [b for b in self.buckets if b.name in by_bucket]
            if ranked:
                x = float(snr)
                if x <= ranked[0].center:
                    return self._sel(by_bucket[ranked[0].name])
                if x >= ranked[-1].center:
                    return self._sel(by_bucket[ranked[-1].name])
                for lo, hi in itertools.pairwise(ranked):
                    if lo.center <= x <= hi.center:
                        t = (x - lo.center) / (hi.center - lo.center)
                        a, b = by_bucket[lo.name], by_bucket[hi.name]
                        return Selection(
                            _mix(a.fusion, b.fusion, t),
                            _mix(a.interpolation, b.interpolation, t),
                            f"{dom or '*'}/{lo.name}..{hi.name} (t={t:.2f})",
                        )
        if None in by_bucket:
            return self._sel(by_bucket[None])
        return self._sel(self.default, "default")

    @staticmethod
    def _sel(c: ConditionWeights, source: str | None = None) -> Selection:
        return Selection(dict(c.fusion), dict(c.interpolation), source or c.key)

    # ---- JSON -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def cond(c: ConditionWeights) -> dict[str, Any]:
            d: dict[str, Any] = {"fusion": dict(c.fusion)}
            if c.interpolation:
                d["interpolation"] = dict(c.interpolation)
            if c.domain is not None:
                d["domain"] = c.domain
            if c.bucket is not None:
                d["bucket"] = c.bucket
            if c.measured:
                d["measured"] = dict(c.measured)
            return d

        def num(x: float) -> float | None:
            return None if math.isinf(x) else x

        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "domain_tag": self.domain_tag,
            "snr_tag": self.snr_tag,
            "default": cond(self.default),
            "buckets": [{"name": b.name, "center": b.center, "lo": num(b.lo), "hi": num(b.hi)} for b in self.buckets],
            "conditions": [cond(c) for c in self.conditions],
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_json(cls, obj: Any, *, source: str | Path = "<profile>") -> FusionProfile:
        """Validate and build; every error names the offending field."""

        def err(msg: str, fld: str | None = None) -> InputError:
            return InputError(msg, path=source, field=fld)

        if not isinstance(obj, dict):
            raise err("a profile must be a JSON object")
        if obj.get("format") != FORMAT:
            raise err(f"not an lmfusion profile (format {obj.get('format')!r}, expected {FORMAT!r})", "format")
        version = obj.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 1:
            raise err(f"unsupported profile version {version!r} (this lmfusion reads 1..{FORMAT_VERSION})", "version")

        if "default" not in obj:
            raise err("missing 'default' weights", "default")
        buckets = _buckets_from_json(obj.get("buckets", []), source)
        conds_raw = obj.get("conditions", [])
        if not isinstance(conds_raw, list):
            raise err("must be a list", "conditions")
        conds = tuple(_condition_from_json(c, f"conditions[{i}]", source) for i, c in enumerate(conds_raw))
        prov = obj.get("provenance", {})
        if not isinstance(prov, dict):
            raise err("must be an object", "provenance")
        try:
            return cls(
                default=_condition_from_json(obj["default"], "default", source),
                buckets=buckets,
                conditions=conds,
                name=str(obj.get("name", "profile")),
                provenance=prov,
                domain_tag=str(obj.get("domain_tag", "domain")),
                snr_tag=str(obj.get("snr_tag", "snr")),
            )
        except ValueError as e:
            raise err(str(e), "conditions") from None

    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON atomically (temp file + rename)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FusionProfile:
        """Read and validate a profile file (errors name the file and field)."""
        return cls.from_json(read_json(path), source=path)


def now_iso() -> str:
    """UTC timestamp for provenance."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def resolve_weights(
    weights: Mapping[str, float] | FusionProfile | str | Path,
    tags: Mapping[str, Any] | None = None,
    *,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> dict[str, float]:
    """Fusion weights from either a plain mapping or a profile (object or path), for one utterance.

    Decoders call this wherever they accept weights, so a profile works everywhere weights do.
    """
    if isinstance(weights, (str, Path)):
        weights = FusionProfile.load(weights)
    if isinstance(weights, FusionProfile):
        return weights.select(tags, audio=audio, sample_rate=sample_rate).fusion
    return {str(k): float(v) for k, v in weights.items()}

