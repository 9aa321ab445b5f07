"""Decode an audio manifest into n-best JSONL, resumably: utterances already in the output are kept.

Every recogniser of the ASR recipe (pocketsphinx, Whisper through Hugging Face, Whisper through
CTranslate2) is one ``decode_batch(utterances) -> n-best lists`` function run by :func:`decode_resumable`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from decoders.hypothesis import NBestList
from fusion.errors import InputError
from fusion.io import read_appended_jsonl
from fusion.progress import progress_bar
from fusion.snr import noise_floor_snr, wada_snr
from recipes.asr.make_audio import Utterance, read_manifest

DecodeBatch = Callable[[Sequence[Utterance]], list[NBestList]]


def blind_snr(audio: object) -> float:
    """The blind SNR estimate of a waveform that selects weights without condition tags: the frame-energy
    noise floor (:func:`fusion.snr.noise_floor_snr`), in dB, rounded to 0.01 dB."""
    import numpy as np

    return round(noise_floor_snr(np.asarray(audio)), 2)


def utterance_tags(u: Utterance, audio: object, **extra: object) -> dict[str, object]:
    """The tags every recogniser writes: condition (domain, snr, noise, voice, speed) and blind SNR estimates."""
    import numpy as np

    x = np.asarray(audio)
    return {"domain": u.domain, "snr": u.snr, "noise": u.noise, "voice": u.voice, "speed": u.speed,
            "snr_est": blind_snr(x), "snr_wada": round(wada_snr(x), 2), **extra}  # fmt: skip


def done_ids(out: Path) -> set[str]:
    """Utterance ids already decoded into ``out``; a torn last line (an interrupted run) is dropped
    (:func:`fusion.io.read_appended_jsonl`)."""
    done: set[str] = set()
    for lineno, row in enumerate(read_appended_jsonl(out), start=1):
        if not isinstance(row.get("utt_id"), str):
            raise InputError("a decoded n-best list needs a string utt_id", path=out, line=lineno)
        done.add(row["utt_id"])
    return done


def decode_resumable(manifest: str | Path, out: str | Path, decode_batch: DecodeBatch, *, splits: Sequence[str] = (),
                     batch_size: int = 1, desc: str = "decode", progress: bool = True) -> Path:  # fmt: skip
    """Decode every utterance of ``manifest`` (of ``splits``; all if empty) not yet in ``out``, appending."""
    out = Path(out)
    utts = [u for u in read_manifest(manifest) if not splits or u.split in splits]
    done = done_ids(out)
    todo = [u for u in utts if u.utt_id not in done]
    if todo:
        with out.open("a", encoding="utf-8") as fh, progress_bar(total=len(todo), desc=desc, unit="utt",
                                                        progress=progress) as bar:  # fmt: skip
            for lo in range(0, len(todo), batch_size):
                for nb in decode_batch(todo[lo : lo + batch_size]):
                    fh.write(json.dumps(nb.to_json(), sort_keys=True) + "\n")
                fh.flush()
                bar.update(len(todo[lo : lo + batch_size]))
    return out
