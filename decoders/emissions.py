"""Synthetic CTC emissions: peaky log-probabilities towards a known text, with realistic confusions.

Used by the CTC tests and by ``benchmarks/ctc_vs_anchors.py`` when no real CTC model is around.
Each character of the reference gets a few frames whose peak is the character itself or, with
probability ``confusion_rate``, an acoustically close one (``b``/``p``, ``m``/``n``, ``e``/``i`` ...)
with the true character as the runner-up; word spaces are sometimes weak (a blank wins), blanks sit
between and around characters (always between two equal characters, as CTC needs). Logits get
Gaussian noise and go through a log-softmax, so rows are proper log-probabilities.

Everything is seeded: the same ``(text, config, seed)`` gives the same array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BLANK = "<blank>"
CHAR_LABELS: tuple[str, ...] = (BLANK, " ", *"abcdefghijklmnopqrstuvwxyz", "'")
"""The 29-symbol character vocabulary: blank (index 0), space (the word delimiter), a-z, apostrophe."""

CONFUSIONS: dict[str, str] = {
    "a": "eo",
    "b": "pd",
    "c": "ksz",
    "d": "tb",
    "e": "ia",
    "f": "vs",
    "g": "kj",
    "h": "'f",
    "i": "ey",
    "j": "gy",
    "k": "gc",
    "l": "rn",
    "m": "n",
    "n": "m",
    "o": "ua",
    "p": "bt",
    "q": "k",
    "r": "lw",
    "s": "zf",
    "t": "dp",
    "u": "o",
    "v": "fb",
    "w": "vr",
    "x": "s",
    "y": "i",
    "z": "s",
    "'": "s",
}
"""For each character, the characters it is most often mistaken for (acoustically close)."""


@dataclass(frozen=True)
class EmissionConfig:
    """How the synthetic emissions look.

    Attributes:
        frames_per_char: inclusive range of frames a character's peak lasts.
        blank_frames: inclusive range of blank frames after each character.
        peak: logit margin of the winning symbol over the rest.
        noise: standard deviation of the Gaussian logit noise on every cell.
        confusion_rate: probability that a character's frames peak on a confusable character.
        runner_up: logit margin of the true character when it is confused (below the peak).
        weak_space_rate: probability that a word space is weak (blank wins, space second).
        deletion_rate: probability that a character gets only a weak frame (blank wins).
    """

    frames_per_char: tuple[int, int] = (1, 3)
    blank_frames: tuple[int, int] = (0, 2)
    peak: float = 8.0
    noise: float = 1.0
    confusion_rate: float = 0.12
    runner_up: float = 6.5
    weak_space_rate: float = 0.05
    deletion_rate: float = 0.02

    def __post_init__(self) -> None:
        for name in ("frames_per_char", "blank_frames"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo or (name == "frames_per_char" and lo < 1):
                raise ValueError(f"EmissionConfig.{name}: bad range ({lo}, {hi})")
        for name in ("confusion_rate", "weak_space_rate", "deletion_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"EmissionConfig.{name} must be in [0, 1], got {v}")
        if self.noise < 0 or self.peak <= 0:
            raise ValueError("EmissionConfig: noise must be >= 0 and peak > 0")


NOISE_LEVELS: dict[str, EmissionConfig] = {
    "clean": EmissionConfig(confusion_rate=0.04, weak_space_rate=0.02, deletion_rate=0.01),
    "noisy": EmissionConfig(),
    "very_noisy": EmissionConfig(noise=1.3, confusion_rate=0.22, weak_space_rate=0.1, deletion_rate=0.04),
}


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax."""
    m = np.max(x, axis=axis, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def synth_emissions(
    text: str,
    *,
    labels: Sequence[str] = CHAR_LABELS,
    blank: int = 0,
    config: EmissionConfig | None = None,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Peaky CTC log-probabilities ``[T, V]`` (float32) whose best path is close to ``text``.

    Args:
        text: the reference (characters must be in ``labels``; runs of spaces collapse).
        labels: the vocabulary (one symbol per label; the blank's label is never emitted).
        blank: the blank index.
        config: shape of the emissions (default: :data:`NOISE_LEVELS` ``"noisy"``).
        seed: an int seed or a numpy ``Generator``.
    """
    cfg = config or NOISE_LEVELS["noisy"]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    index = {lab: i for i, lab in enumerate(labels) if i != blank}
    chars = " ".join(text.split())
    for ch in chars:
        if ch not in index:
            raise ValueError(f"synth_emissions: character {ch!r} of {text!r} is not in the vocabulary")
    V = len(labels)
    # plan: list of (winner, runner_up or -1, n_frames) segments
    segs: list[tuple[int, int, int]] = []

    def blanks(lo: int) -> None:
        n = int(rng.integers(max(lo, cfg.blank_frames[0]), max(lo, cfg.blank_frames[1]) + 1))
        if n:
            segs.append((blank, -1, n))

    blanks(1)
    prev = ""
    for ch in chars:
        if ch == prev:
            blanks(1)  # CTC needs a blank between equal symbols
        tok = index[ch]
        n = int(rng.integers(cfg.frames_per_char[0], cfg.frames_per_char[1] + 1))
        u = rng.random()
        if ch == " " and u < cfg.weak_space_rate:
            segs.append((blank, tok, 1))
        elif ch != " " and u < cfg.deletion_rate:
            segs.append((blank, tok, 1))
        elif ch != " " and u < cfg.deletion_rate + cfg.confusion_rate and CONFUSIONS.get(ch):
            alts = [index[a] for a in CONFUSIONS[ch] if a in index]
            if alts:
                segs.append((int(rng.choice(alts)), tok, n))
            else:
                segs.append((tok, -1, n))
        else:
            segs.append((tok, -1, n))
        blanks(0)
        prev = ch
    blanks(1)
    return _render(segs, V, blank, cfg, rng)


def _render(segs: list[tuple[int, int, int]], V: int, blank: int, cfg: EmissionConfig,
            rng: np.random.Generator) -> np.ndarray:
    """Logits for planned ``(winner, runner_up or -1, n_frames)`` segments, as log-probabilities."""
    T = sum(s[2] for s in segs)
    logits = rng.normal(0.0, cfg.noise, size=(T, V))
    t = 0
    for win, second, n in segs:
        logits[t : t + n, win] += cfg.peak
        if second >= 0:
            logits[t : t + n, second] += cfg.runner_up
        if win != blank:
            logits[t : t + n, blank] += 0.5 * cfg.peak  # real CTC spreads mass onto blank
        t += n
    return log_softmax(logits).astype(np.float32)


def piece_confusions(labels: Sequence[str], blank: int = 0) -> dict[int, list[int]]:
    """For each piece of a subword vocabulary, the pieces one close character away (:data:`CONFUSIONS`).

    A piece with no such neighbour gets the pieces of the same length that share its first
    character (a stand-in for "acoustically close"); a piece with neither has no entry.
    """
    index = {lab: i for i, lab in enumerate(labels) if i != blank}
    by_head: dict[tuple[str, int], list[int]] = {}
    for lab, i in index.items():
        by_head.setdefault((lab[:2], len(lab)), []).append(i)
    out: dict[int, list[int]] = {}
    for lab, i in index.items():
        alts = []
        for k, ch in enumerate(lab):
            for a in CONFUSIONS.get(ch, ""):
                j = index.get(lab[:k] + a + lab[k + 1 :])
                if j is not None:
                    alts.append(j)
        if not alts:
            alts = [j for j in by_head.get((lab[:2], len(lab)), []) if j != i][:6]
        if alts:
            out[i] = alts
    return out


def synth_piece_emissions(
    tokens: Sequence[int],
    vocab_size: int,
    *,
    blank: int = 0,
    confusions: dict[int, list[int]] | None = None,
    config: EmissionConfig | None = None,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Peaky CTC log-probabilities ``[T, V]`` (float32) whose best path is close to a token sequence.

    The subword counterpart of :func:`synth_emissions` (same :class:`EmissionConfig`): each token
    gets a few frames peaking on itself or, with ``confusion_rate``, on one of ``confusions[token]``
    (see :func:`piece_confusions`) with the true token as runner-up. ``weak_space_rate`` does not
    apply (word boundaries live inside the pieces).
    """
    cfg = config or NOISE_LEVELS["noisy"]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    conf = confusions or {}
    segs: list[tuple[int, int, int]] = []

    def blanks(lo: int) -> None:
        n = int(rng.integers(max(lo, cfg.blank_frames[0]), max(lo, cfg.blank_frames[1]) + 1))
        if n:
            segs.append((blank, -1, n))

    blanks(1)
    prev = -1
    for tok in tokens:
        if not 0 <= tok < vocab_size or tok == blank:
            raise ValueError(f"synth_piece_emissions: token {tok} is the blank or out of range")
        if tok == prev:
            blanks(1)
        n = int(rng.integers(cfg.frames_per_char[0], cfg.frames_per_char[1] + 1))
        u = rng.random()
        if u < cfg.deletion_rate:
            segs.append((blank, tok, 1))
        elif u < cfg.deletion_rate + cfg.confusion_rate and conf.get(tok):
            segs.append((int(rng.choice(conf[tok])), tok, n))
        else:
            segs.append((tok, -1, n))
        blanks(0)
        prev = tok
    blanks(1)
    return _render(segs, vocab_size, blank, cfg, rng)


def make_emission_set(
    sentences: Sequence[str],
    *,
    labels: Sequence[str] = CHAR_LABELS,
    blank: int = 0,
    config: EmissionConfig | str = "noisy",
    seed: int = 0,
) -> list[np.ndarray]:
    """One emission matrix per sentence, seeded per position (``seed + i``)."""
    cfg = NOISE_LEVELS[config] if isinstance(config, str) else config
    return [
        synth_emissions(s, labels=labels, blank=blank, config=cfg, seed=np.random.default_rng([seed, i]))
        for i, s in enumerate(sentences)
    ]


def greedy_decode(logprobs: np.ndarray, labels: Sequence[str], blank: int = 0) -> str:
    """Best-path decoding: argmax per frame, collapse repeats, drop blanks (characters joined)."""
    ids = np.asarray(logprobs).argmax(axis=1)
    out = []
    prev = -1
    for i in ids.tolist():
        if i != prev and i != blank:
            out.append(labels[i])
        prev = i
    return " ".join("".join(out).replace("\u2581", " ").split())
