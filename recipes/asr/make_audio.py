"""Make real test audio: sentences spoken by flite voices at several speeds, mixed with noise by sox.

For each selected sentence (from the dev/test splits of each domain's text, which the LMs never see):

* one clean rendering by a flite voice (rotating over ``voices``) at a speed (rotating over
  ``speeds``; flite's ``duration_stretch``), resampled by sox to 16 kHz mono 16-bit;
* one noisy copy per SNR, with pink noise (``sox synth pinknoise``) or babble (the sum of several
  other flite voices reading other sentences), alternating by sentence. The noise gain for an SNR is
  computed from the powers of the two signals over the whole utterance; sox does the mixing.

Everything is written under ``out_dir`` (``wav/``, ``noise/``) with a manifest JSONL listing each
utterance with its reference and tags. Existing wav files are kept, so an interrupted run resumes.
Requires the Debian packages ``flite`` and ``sox``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fusion.errors import LMFusionError
from fusion.io import atomic_write_lines, read_sentences
from fusion.progress import progress_bar

SAMPLE_RATE = 16000
DEFAULT_VOICES = ("slt", "rms", "awb", "kal16")
DEFAULT_SPEEDS = (1.0, 0.9, 1.15)
DEFAULT_SNRS: tuple[str, ...] = ("clean", "30", "20", "15")


@dataclass(frozen=True)
class Utterance:
    """One utterance of the manifest: the reference text, its audio file and its condition tags."""

    utt_id: str
    domain: str
    split: str
    text: str
    wav: str
    voice: str
    speed: float
    noise: str
    snr: str
    """``"clean"`` or the mixing SNR in dB as a string."""


def need_tool(name: str) -> str:
    """Path of an external program, or a clear error naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        raise LMFusionError(f"'{name}' not found on PATH: install the Debian package ({name}): apt-get install {name}")
    return path


def _run(cmd: Sequence[str]) -> None:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if r.returncode != 0:
        raise LMFusionError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")


def read_wav(path: str | Path) -> np.ndarray:
    """16-bit mono wav -> float64 samples in [-1, 1)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise LMFusionError(f"{path}: expected 16-bit mono wav")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """float samples -> 16-bit mono wav (clipped), written atomically."""
    path = Path(path)
    pcm = (np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype("<i2")
    tmp = path.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    tmp.replace(path)


def synth(text: str, voice: str, speed: float, out: Path) -> None:
    """flite speaks ``text``; sox converts to 16 kHz mono 16-bit. Atomic."""
    flite, sox = need_tool("flite"), need_tool("sox")
    with tempfile.TemporaryDirectory() as td:
        raw = Path(td) / "raw.wav"
        _run([flite, "-voice", voice, "--setf", f"duration_stretch={speed}", "-t", text, "-o", str(raw)])
        tmp = out.with_suffix(".tmp.wav")
        _run([sox, str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(tmp)])
        tmp.replace(out)


def pink_noise(seconds: float, out: Path, seed: int) -> None:
    """sox pink noise of the given length (``-R`` repeatable; the seed picks an offset into a longer run)."""
    sox = need_tool("sox")
    pad = (seed % 97) * 0.05
    tmp = out.with_suffix(".tmp.wav")
    _run([sox, "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(tmp),
          "synth", f"{seconds + pad:.3f}", "pinknoise", "trim", f"{pad:.3f}"])  # fmt: skip
    tmp.replace(out)


def make_babble(sentences: Sequence[str], voices: Sequence[str], out: Path, *, streams: int = 6,
                seconds: float = 60.0, work: Path) -> None:  # fmt: skip
    """Babble: ``streams`` flite talkers, each reading sentences back to back, summed and normalised."""
    work.mkdir(parents=True, exist_ok=True)
    n = int(seconds * SAMPLE_RATE)
    mix = np.zeros(n)
    k = 0
    for s in range(streams):
        voice = voices[s % len(voices)]
        parts: list[np.ndarray] = []
        total = 0
        while total < n:
            f = work / f"babble-{s}-{k}.wav"
            if not f.exists():
                synth(sentences[k % len(sentences)], voice, 1.0, f)
            x = read_wav(f)
            parts.append(x)
            total += len(x)
            k += 1
        stream = np.concatenate(parts)[:n]
        mix += stream / math.sqrt(float(np.mean(stream**2)) + 1e-12)
    mix *= 0.1 / math.sqrt(float(np.mean(mix**2)))
    write_wav(out, mix)


def mix_at_snr(speech_wav: Path, noise_wav: Path, snr_db: float, out: Path, *, offset: int = 0) -> float:
    """Mix speech and a noise segment at ``snr_db`` (powers over the whole utterance) with ``sox -m``.

    Returns the noise gain used. The noise segment starts at ``offset`` samples (wrapping around).
    """
    sox = need_tool("sox")
    s = read_wav(speech_wav)
    nz = read_wav(noise_wav)
    idx = (offset + np.arange(len(s))) % len(nz)
    seg = nz[idx]
    ps, pn = float(np.mean(s**2)), float(np.mean(seg**2))
    if ps <= 0 or pn <= 0:
        raise LMFusionError(f"silent speech or noise: {speech_wav}, {noise_wav}")
    gain = math.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    with tempfile.TemporaryDirectory() as td:
        segf = Path(td) / "noise.wav"
        write_wav(segf, seg)
        tmp = out.with_suffix(".tmp.wav")
        _run([sox, "-m", "-v", "1", str(speech_wav), "-v", f"{gain:.6f}", str(segf), "-b", "16", str(tmp)])
        tmp.replace(out)
    return gain


def _seed(*parts: str) -> int:
    return int(hashlib.sha1("|".join(parts).encode()).hexdigest()[:8], 16)


def plan_utterances(text_dir: Path, domains: Sequence[str], splits: Sequence[str], per_split: int,
                    out_dir: Path, *, voices: Sequence[str] = DEFAULT_VOICES,
                    speeds: Sequence[float] = DEFAULT_SPEEDS, snrs: Sequence[str] = DEFAULT_SNRS,
                    min_words: int = 4, max_words: int = 14) -> list[Utterance]:  # fmt: skip
    """The manifest: the first ``per_split`` sentences of ``min..max_words`` words of each split file."""
    utts: list[Utterance] = []
    for domain in domains:
        for split in splits:
            sents = [s for s in read_sentences(text_dir / f"{domain}.{split}.txt")
                     if min_words <= len(s.split()) <= max_words][:per_split]  # fmt: skip
            for i, text in enumerate(sents):
                voice = voices[i % len(voices)]
                speed = speeds[(i // len(voices)) % len(speeds)]
                noise = "pink" if i % 2 == 0 else "babble"
                for snr in snrs:
                    uid = f"{domain}-{split}-{i:03d}-{snr}"
                    utts.append(Utterance(uid, domain, split, text, str(out_dir / "wav" / f"{uid}.wav"), voice,
                                          float(speed), "none" if snr == "clean" else noise, snr))  # fmt: skip
    return utts


def render(utts: Sequence[Utterance], out_dir: Path, babble_text: Sequence[str], *, progress: bool = True) -> None:
    """Make every wav of the manifest that does not exist yet (resumable)."""
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    noise_dir = out_dir / "noise"
    noise_dir.mkdir(parents=True, exist_ok=True)
    babble = noise_dir / "babble.wav"
    if not babble.exists():
        make_babble(babble_text, DEFAULT_VOICES, babble, work=noise_dir / "parts")
    clean_dir = out_dir / "clean"
    clean_dir.mkdir(exist_ok=True)
    for u in progress_bar(utts, desc="audio", unit="utt", progress=progress):
        out = Path(u.wav)
        if out.exists():
            continue
        base = clean_dir / f"{u.domain}-{u.split}-{u.utt_id.split('-')[2]}.wav"
        if not base.exists():
            synth(u.text, u.voice, u.speed, base)
        if u.snr == "clean":
            shutil.copyfile(base, out)
            continue
        seed = _seed(u.utt_id)
        if u.noise == "pink":
            nf = noise_dir / f"pink-{u.utt_id}.wav"
            pink_noise(len(read_wav(base)) / SAMPLE_RATE + 0.1, nf, seed)
            mix_at_snr(base, nf, float(u.snr), out)
            nf.unlink()
        else:
            mix_at_snr(base, babble, float(u.snr), out, offset=seed % (50 * SAMPLE_RATE))


def write_manifest(utts: Sequence[Utterance], path: Path) -> None:
    atomic_write_lines(path, (json.dumps(asdict(u), sort_keys=True) for u in utts))


def read_manifest(path: str | Path) -> list[Utterance]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(Utterance(**json.loads(line)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text-dir", default="data/text")
    p.add_argument("--domains", nargs="+", default=["bible", "tech"])
    p.add_argument("--splits", nargs="+", default=["dev", "test"])
    p.add_argument("--per-split", type=int, default=60)
    p.add_argument("--snrs", nargs="+", default=list(DEFAULT_SNRS))
    p.add_argument("--out", default="runs/asr/audio")
    a = p.parse_args(argv)
    out = Path(a.out)
    text_dir = Path(a.text_dir)
    utts = plan_utterances(text_dir, a.domains, a.splits, a.per_split, out, snrs=a.snrs)
    babble_text = [s for d in a.domains for s in read_sentences(text_dir / f"{d}.train.txt")[:40]]
    render(utts, out, babble_text)
    write_manifest(utts, out / "manifest.jsonl")
    print(out / "manifest.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
