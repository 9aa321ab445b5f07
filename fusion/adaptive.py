"""Weight policies learned on dev: per-condition tables and adaptive maps from run-time features.

Two :class:`~fusion.weights.WeightPolicy` implementations, both saved as JSON (never pickle) and read
back by :func:`load_policy`:

* :class:`ConditionTable`: weights per condition key (any tags, e.g. ``domain|noise|snr``), shrunk toward
  the global weights when fitted (:func:`fusion.tuning.conditions.fit_conditions`); an unseen or unknown
  condition gets the global weights.
* :class:`AdaptiveWeights`: ``w_k(x) = base_k + Σ_f slope_kf · z_f`` with ``z_f`` the standardised
  run-time feature ``f`` (clipped to ``±zclip``; a missing feature counts as its dev mean, ``z = 0``), and
  a linear mixture's ``λ`` from the domain posterior (blind domain: no tag needed at test time).

**Run-time features** (:func:`nbest_features`), all computable by a decoder from its own n-best and the
audio: ``snr`` (``ctx.snr``, else the numeric tag ``snr_est`` or ``snr``, else none: an explicit null);
``margin`` (the top-2 gap of the acoustic score per word of the top hypothesis); ``entropy`` (normalised
entropy of the acoustic posterior ``softmax(scale · am)`` over the n-best); ``p_domain=<d>`` (the domain
posterior ``∝ exp(Σ_h p_h ln P_d(h))``, the acoustic-posterior-weighted log-probability of the n-best
under each domain LM ``d``, with equal priors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fusion.errors import InputError
from fusion.io import atomic_write_text, read_json
from fusion.weights import UtteranceContext, WeightPolicy

POLICY_FORMAT = "lmfusion-policy"
POLICY_VERSION = 1
UNKNOWN = "unknown"
"""The condition value of a missing or null tag (its own condition; it falls back to the global weights)."""
DOMAIN_PREFIX = "p_domain="


# ----------------------------------------------------------------------------------------------
# Run-time features
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """How :func:`nbest_features` reads an n-best: the acoustic component, its posterior scale, domain LMs."""

    confidence: str = "am"
    scale: float = 1.0
    domains: Mapping[str, str] = field(default_factory=dict)
    """domain name -> the score component of that domain's LM."""

    def to_json(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "scale": self.scale, "domains": dict(self.domains)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FeatureSpec:
        return cls(str(d.get("confidence", "am")), float(d.get("scale", 1.0)), dict(d.get("domains", {})))


def numeric_snr(tags: Mapping[str, Any], snr: float | None = None) -> float | None:
    """The utterance's SNR in dB: ``snr``, else a numeric ``snr_est`` or ``snr`` tag; None when unknown."""
    for v in (snr, tags.get("snr_est"), tags.get("snr")):
        if v is None or isinstance(v, bool):
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            return x
    return None


def nbest_features(
    scores: Mapping[str, np.ndarray], spec: FeatureSpec, *, words: np.ndarray | None = None
) -> dict[str, float]:
    """Features of one n-best (see the module docstring); ``scores[c]`` is ``[n_hyps]`` per component."""
    out: dict[str, float] = {}
    am = np.asarray(scores.get(spec.confidence, ()), dtype=np.float64)
    n = len(am)
    if n == 0:
        return out
    order = np.argsort(-am, kind="stable")
    nw = max(1.0, float(words[order[0]])) if words is not None and len(words) == n else 1.0
    out["margin"] = float(am[order[0]] - am[order[1]]) / nw if n > 1 else 0.0
    s = spec.scale * (am - am.max())
    p = np.exp(s)
    p /= p.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -float(np.sum(np.where(p > 0, p * np.log(p), 0.0)))
    out["entropy"] = ent / math.log(n) if n > 1 else 0.0
    if spec.domains:
        names = list(spec.domains)
        ll = np.array([float(p @ np.asarray(scores[spec.domains[d]], np.float64)) for d in names])
        post = np.exp(ll - ll.max())
        post /= post.sum()
        out.update({DOMAIN_PREFIX + d: float(x) for d, x in zip(names, post, strict=True)})
    return out


@runtime_checkable
class NBestFeatures(Protocol):
    """A policy that computes its own run-time features from an n-best (the n-best rescorer asks it)."""

    def nbest_features(self, scores: Mapping[str, np.ndarray], tags: Mapping[str, Any]) -> dict[str, float]:
        """Features of one n-best list (``scores[c]`` is ``[n_hyps]``) and its tags."""
        ...


# ----------------------------------------------------------------------------------------------
# Per-condition table
# ----------------------------------------------------------------------------------------------
def condition_key(tags: Mapping[str, Any], by: Sequence[str], snr_edges: Sequence[float] = ()) -> str:
    """``"v1|v2|..."`` of the tags named by ``by``; a missing or null value is ``"unknown"``.

    ``snr`` is special: a numeric value (or numeric string) is bucketed by ``snr_edges`` (dB) into
    ``"<e0"``, ``"e0-e1"``, ..., ``">=eK"``; a name (``"clean"``) is kept; with no edges a number is kept as is.
    """
    parts = []
    for k in by:
        v = tags.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            parts.append(UNKNOWN)
            continue
        if k == "snr" and snr_edges:
            try:
                x = float(v)
            except (TypeError, ValueError):
                parts.append(str(v))
                continue
            edges = sorted(snr_edges)
            i = int(np.searchsorted(edges, x, side="right"))
            if i == 0:
                parts.append(f"<{edges[0]:g}")
            elif i == len(edges):
                parts.append(f">={edges[-1]:g}")
            else:
                parts.append(f"{edges[i - 1]:g}-{edges[i]:g}")
            continue
        parts.append(str(v))
    return "|".join(parts)


@dataclass(frozen=True)
class ConditionTable:
    """Weights per condition key (:func:`condition_key` of the utterance's tags); else the global weights."""

    by: tuple[str, ...]
    global_weights: Mapping[str, float]
    table: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    snr_edges: tuple[float, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def key_of(self, ctx: UtteranceContext) -> str:
        tags = dict(ctx.tags)
        if ctx.snr is not None:
            tags["snr"] = ctx.snr
        return condition_key(tags, self.by, self.snr_edges)

    def weights_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        return self.table.get(self.key_of(ctx), self.global_weights)

    def interpolation_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        return {}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "kind": "conditions",
            "by": list(self.by),
            "snr_edges": list(self.snr_edges),
            "global": dict(self.global_weights),
            "table": {k: dict(v) for k, v in self.table.items()},
            "provenance": dict(self.provenance),
        }


# ----------------------------------------------------------------------------------------------
# Adaptive map
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdaptiveWeights:
    """``w(x) = base + slopes · z(x)``, and λ from the domain posterior (module docstring)."""

    base: Mapping[str, float]
    slopes: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """component -> feature -> change of the weight per standard deviation of the feature."""
    norm: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """feature -> (dev mean, dev standard deviation)."""
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    zclip: float = 2.0
    interpolation_floor: float = 0.0
    """λ_d = (1 - floor) · p(d | n-best) + floor / D: a floor keeps every domain LM in the mix."""
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def z(self, ctx: UtteranceContext) -> dict[str, float]:
        """Standardised, clipped features of ``ctx`` (0 for a missing one)."""
        feats = dict(ctx.features)
        snr = numeric_snr(ctx.tags, ctx.snr if ctx.snr is not None else feats.get("snr"))
        if snr is None and ctx.audio is not None and "snr" in self.norm:
            from fusion.snr import estimate_snr

            snr = estimate_snr(ctx.audio, ctx.sample_rate)
        if snr is not None:
            feats["snr"] = snr
        else:
            feats.pop("snr", None)
        out = {}
        for f, (mu, sd) in self.norm.items():
            x = feats.get(f)
            if x is None or not math.isfinite(float(x)):
                out[f] = 0.0
            else:
                out[f] = float(np.clip((float(x) - mu) / sd, -self.zclip, self.zclip))
        return out

    def weights_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        z = self.z(ctx)
        out = dict(self.base)
        for k, row in self.slopes.items():
            out[k] = out.get(k, 0.0) + sum(float(c) * z.get(f, 0.0) for f, c in row.items())
        return out

    def interpolation_for(self, ctx: UtteranceContext) -> Mapping[str, float]:
        names = list(self.spec.domains)
        post = [ctx.features.get(DOMAIN_PREFIX + d) for d in names]
        if not names or any(p is None for p in post):
            return {}
        fl = self.interpolation_floor
        return {d: (1.0 - fl) * float(p) + fl / len(names) for d, p in zip(names, post, strict=True) if p is not None}

    def nbest_features(self, scores: Mapping[str, np.ndarray], tags: Mapping[str, Any]) -> dict[str, float]:
        out = nbest_features(scores, self.spec, words=scores.get("words"))
        snr = numeric_snr(tags)
        if snr is not None:
            out["snr"] = snr
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "kind": "adaptive",
            "base": dict(self.base),
            "slopes": {k: dict(v) for k, v in self.slopes.items()},
            "norm": {f: [mu, sd] for f, (mu, sd) in self.norm.items()},
            "spec": self.spec.to_json(),
            "zclip": self.zclip,
            "interpolation_floor": self.interpolation_floor,
            "provenance": dict(self.provenance),
        }


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------
def save_policy(policy: ConditionTable | AdaptiveWeights, path: str | Path) -> None:
    """Write a learned policy as JSON (atomically)."""
    import json

    atomic_write_text(path, json.dumps(policy.to_json(), indent=2, sort_keys=False) + "\n")


def _floats(d: Any, path: str | Path, where: str) -> dict[str, float]:
    if not isinstance(d, Mapping):
        raise InputError("expected an object of numbers", path=path, field=where)
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise InputError(f"{k!r} is not a finite number", path=path, field=f"{where}.{k}")
        out[str(k)] = float(v)
    return out


def policy_from_json(d: Mapping[str, Any], path: str | Path = "<json>") -> ConditionTable | AdaptiveWeights:
    """Rebuild a policy from :meth:`to_json` output; a bad field is an :class:`InputError` naming it."""
    if d.get("format") != POLICY_FORMAT:
        raise InputError(f"not an lmfusion policy (format {d.get('format')!r})", path=path, field="format")
    kind = d.get("kind")
    if kind == "conditions":
        table = d.get("table", {})
        if not isinstance(table, Mapping):
            raise InputError("'table' must be an object", path=path, field="table")
        return ConditionTable(
            tuple(str(b) for b in d.get("by", [])),
            _floats(d.get("global", {}), path, "global"),
            {str(k): _floats(v, path, f"table.{k}") for k, v in table.items()},
            tuple(float(x) for x in d.get("snr_edges", [])),
            dict(d.get("provenance", {})),
        )
    if kind == "adaptive":
        norm = {}
        for f, v in dict(d.get("norm", {})).items():
            if not (isinstance(v, list) and len(v) == 2) or not float(v[1]) > 0:
                raise InputError("expected [mean, std > 0]", path=path, field=f"norm.{f}")
            norm[str(f)] = (float(v[0]), float(v[1]))
        return AdaptiveWeights(
            _floats(d.get("base", {}), path, "base"),
            {str(k): _floats(v, path, f"slopes.{k}") for k, v in dict(d.get("slopes", {})).items()},
            norm,
            FeatureSpec.from_json(d.get("spec", {})),
            float(d.get("zclip", 2.0)),
            float(d.get("interpolation_floor", 0.0)),
            dict(d.get("provenance", {})),
        )
    raise InputError(f"unknown policy kind {kind!r} (conditions, adaptive)", path=path, field="kind")


def load_policy(path: str | Path) -> WeightPolicy:
    """A policy file: an lmfusion policy (conditions or adaptive) or a fusion profile."""
    from fusion.profile import FORMAT as PROFILE_FORMAT
    from fusion.profile import FusionProfile
    from fusion.weights import ProfileWeights

    d = read_json(path)
    if isinstance(d, Mapping) and d.get("format") == PROFILE_FORMAT:
        return ProfileWeights(FusionProfile.load(path))
    if not isinstance(d, Mapping):
        raise InputError("a policy file must hold a JSON object", path=path)
    return policy_from_json(d, path)
