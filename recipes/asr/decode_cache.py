"""Cached Whisper decodes with the LMs inside ``generate()``: each (weights, utterance) pair is decoded once.

The in-search tuning stage (:mod:`recipes.asr.in_search_tune`) decodes the dev audio at every point of a
weight grid, and the ``in_search`` stage decodes the test audio for several systems; both ask
:func:`decode_pairs` for ``(utterance, weights)`` pairs and get the transcripts from a cache:

- ``<cache>/<split>-<tag>.jsonl``: append-only, one JSON line per finished decode (``utt_id``, ``key`` =
  :func:`weights_key`, ``weights``, ``text``, ``seconds``), flushed after every batch. ``tag`` hashes the
  LM files and the decoding settings, so a changed LM or beam starts a new file. An interrupted run
  resumes without redoing a finished decode; a torn last line is dropped (the file is rewritten
  atomically without it; :func:`fusion.io.read_appended_jsonl`).
- ``<cache>/enc/<utt_id>.npy``: Whisper's encoder output of the utterance (float32, written atomically),
  computed once and reused by every weight setting.

Decoding runs in ``workers`` processes (spawned, one torch thread each, Whisper and the LMs loaded once per
process), batches of up to ``batch`` utterances of one domain and one weight setting per ``generate()``.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion.errors import InputError, LMFusionError
from fusion.io import atomic_write_bytes, read_appended_jsonl
from fusion.progress import progress_bar
from recipes.asr.make_audio import Utterance


def weights_key(weights: Mapping[str, float] | None) -> str:
    """Canonical text of a weight setting: the non-zero LM / bonus weights (``am`` is fixed at 1), sorted.

    ``"{}"`` is plain Whisper (no fusion)."""
    w = {k: round(float(v), 6) for k, v in sorted((weights or {}).items()) if k != "am" and float(v) != 0.0}
    if (weights or {}).get("am", 1.0) != 1.0:
        raise LMFusionError(f"in-search decoding keeps am at 1, got weights {dict(weights or {})}")
    return json.dumps(w, sort_keys=True)


class DecodeCache:
    """The append-only JSONL of finished decodes of one split (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        for lineno, row in enumerate(read_appended_jsonl(self.path), start=1):
            if not isinstance(row.get("utt_id"), str) or not isinstance(row.get("key"), str):
                raise InputError("a cached decode needs string fields utt_id and key", path=self.path, line=lineno)
            self.entries[(row["utt_id"], row["key"])] = row

    def text(self, utt_id: str, key: str) -> str | None:
        row = self.entries.get((utt_id, key))
        return None if row is None else str(row["text"])

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append finished decodes (flushed at once)."""
        rows = list(rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(dict(r), sort_keys=True) + "\n")
                self.entries[(str(r["utt_id"]), str(r["key"]))] = dict(r)
            fh.flush()


@dataclass(frozen=True)
class DecodeTask:
    """One ``generate()`` call: utterances of one domain at one weight setting."""

    domain: str | None
    weights: Mapping[str, float]
    utts: tuple[tuple[str, str], ...]  # (utt_id, wav)


DecodeFn = Callable[[DecodeTask], list[dict[str, Any]]]


def cache_tag(cfg: Mapping[str, Any], lm_paths: Sequence[Path], beam: int) -> str:
    """A short hash of the LM files and the decoding settings (a new cache file when either changes)."""
    from recipes.pipeline import hash_path

    h = hashlib.sha1(json.dumps({"beam": beam, "neural": cfg["lms"]["neural"]["enabled"]}, sort_keys=True).encode())
    for p in lm_paths:
        if p.exists():
            hash_path(p, h)
    return f"beam{beam}-{h.hexdigest()[:10]}"


def plan_tasks(requests: Sequence[tuple[Utterance, Mapping[str, float]]], cache: DecodeCache,
               batch: int) -> list[DecodeTask]:  # fmt: skip
    """The decodes ``requests`` needs that the cache lacks, batched by (weights, domain) in request order."""
    groups: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
    weights_of: dict[str, Mapping[str, float]] = {}
    seen: set[tuple[str, str]] = set()
    for u, w in requests:
        key = weights_key(w)
        if (u.utt_id, key) in seen or cache.text(u.utt_id, key) is not None:
            continue
        seen.add((u.utt_id, key))
        weights_of[key] = {k: float(v) for k, v in w.items() if k != "am"}
        groups.setdefault((key, u.domain), []).append((u.utt_id, u.wav))
    return [DecodeTask(dom, weights_of[key], tuple(us[lo : lo + batch]))
            for (key, dom), us in groups.items() for lo in range(0, len(us), batch)]  # fmt: skip


def decode_pairs(requests: Sequence[tuple[Utterance, Mapping[str, float]]], cache: DecodeCache,
                 make_decoder: Callable[[], DecodeFn] | None, *, batch: int = 4, workers: int = 1,
                 init: Any = None, progress: bool = False,
                 desc: str = "in-search decode") -> dict[tuple[str, str], str]:  # fmt: skip
    """Transcripts of every ``(utterance, weights)`` pair, decoding (and caching) only the missing ones.

    Args:
        make_decoder: makes the function that runs one :class:`DecodeTask` in this process (called once,
            only when something is missing and ``workers == 1``).
        workers: > 1: a pool of spawned processes, each started by ``init`` (a picklable
            ``(initializer, initargs)`` pair) and running :func:`run_task`.

    Returns:
        ``(utt_id, weights_key) -> transcript``.
    """
    tasks = plan_tasks(requests, cache, batch)
    total = sum(len(t.utts) for t in tasks)
    with progress_bar(total=total, desc=desc, unit="decode", progress=progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            if tasks and make_decoder is None:
                raise LMFusionError("decode_pairs: no decoder for the missing decodes")
            decode = make_decoder() if tasks and make_decoder is not None else None
            for t in tasks:
                cache.add(decode(t))  # type: ignore[misc]
                bar.update(len(t.utts))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            initializer, initargs = init
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer,
                                     initargs=initargs) as pool:  # fmt: skip
                futs = {pool.submit(run_task, t): t for t in tasks}
                for f in as_completed(futs):
                    cache.add(f.result())
                    bar.update(len(futs[f].utts))
    out: dict[tuple[str, str], str] = {}
    for u, w in requests:
        key = weights_key(w)
        text = cache.text(u.utt_id, key)
        if text is None:
            raise LMFusionError(f"no decode of {u.utt_id} at {key} after decoding")
        out[(u.utt_id, key)] = text
    return out


# -- the decoder (in this process or in each worker) -------------------------------------------------

class WhisperDecoder:
    """Runs :class:`DecodeTask` s: Whisper + the utterance's LMs, encoder outputs cached on disk."""

    def __init__(self, cfg: Mapping[str, Any], enc_dir: str | Path, beam: int) -> None:
        import torch

        from recipes.asr.lm_stages import domain_mixes
        from recipes.asr.settings import recipe_paths
        from recipes.asr.whisper_fusion import WhisperFusion

        torch.set_num_threads(int(cfg["audio"]["threads"]))
        self.enc_dir = Path(enc_dir)
        self.fz = WhisperFusion(beam=beam)
        self.mixes = domain_mixes(cfg)
        self.nnlm = None
        if cfg["lms"]["neural"]["enabled"]:
            from fusion.loading import load_lm

            self.nnlm = load_lm(recipe_paths(cfg)["lms"] / "nnlm", name="nnlm")
        self._scorers: dict[tuple[str | None, tuple[str, ...]], list[Any]] = {}

    def encoded(self, utts: Sequence[tuple[str, str]]) -> tuple[Any, float, int]:
        """Encoder outputs of the utterances (from disk, or computed and saved) and the seconds spent
        computing them, and how many were computed (not on disk)."""
        import torch

        from recipes.asr.make_audio import read_wav

        rows: list[Any] = [None] * len(utts)
        todo = []
        for i, (uid, _) in enumerate(utts):
            f = self.enc_dir / f"{uid}.npy"
            if f.exists():
                rows[i] = torch.from_numpy(np.load(f, allow_pickle=False))
            else:
                todo.append(i)
        t0 = time.perf_counter()
        if todo:
            enc = self.fz.encode([read_wav(utts[i][1]) for i in todo])
            for j, i in enumerate(todo):
                rows[i] = enc[j]
                buf = io.BytesIO()
                np.save(buf, enc[j].numpy(), allow_pickle=False)
                atomic_write_bytes(self.enc_dir / f"{utts[i][0]}.npy", buf.getvalue())
        return torch.stack(rows), time.perf_counter() - t0, len(todo)

    def scorers(self, domain: str | None, weights: Mapping[str, float]) -> list[Any]:
        lms = {"dlm": self.mixes.get(domain, self.mixes[None]), **({"nnlm": self.nnlm} if self.nnlm else {})}
        names = tuple(k for k in lms if weights.get(k, 0.0) != 0.0)
        if (domain, names) not in self._scorers:
            self._scorers[(domain, names)] = self.fz.scorers({k: lms[k] for k in names})
        return self._scorers[(domain, names)]

    def __call__(self, task: DecodeTask) -> list[dict[str, Any]]:
        enc, enc_s, n_enc = self.encoded(task.utts)
        t0 = time.perf_counter()
        texts = self.fz.transcribe(None, self.scorers(task.domain, task.weights), task.weights, encoded=enc)
        secs = (time.perf_counter() - t0) / len(task.utts)
        key = weights_key(task.weights)
        return [{"utt_id": uid, "key": key, "weights": dict(task.weights), "text": text, "seconds": round(secs, 3),
                 "encode_seconds": round(enc_s / n_enc, 3) if n_enc else 0.0, "batch": len(task.utts)}
                for (uid, _), text in zip(task.utts, texts, strict=True)]  # fmt: skip


_WORKER: dict[str, WhisperDecoder] = {}


def init_worker(cfg: Mapping[str, Any], enc_dir: str, beam: int) -> None:
    """Pool initializer: one :class:`WhisperDecoder` per worker process."""
    _WORKER["decoder"] = WhisperDecoder(cfg, enc_dir, beam)


def run_task(task: DecodeTask) -> list[dict[str, Any]]:
    """Pool task: decode one batch in this worker."""
    return _WORKER["decoder"](task)


def timing(cache: DecodeCache, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Mean seconds per decode (plain and fused) and per encoder pass, over the cached decodes."""
    want = None if keys is None else set(keys)
    rows = [r for (_, k), r in cache.entries.items() if want is None or k in want]
    plain = [r["seconds"] for r in rows if r["key"] == "{}"]
    fused = [r["seconds"] for r in rows if r["key"] != "{}"]
    enc = [r["encode_seconds"] for r in rows if r.get("encode_seconds", 0) > 0]
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    return {"decodes": len(rows), "plain_s_per_decode": mean(plain), "fused_s_per_decode": mean(fused),
            "encode_s_per_utt": mean(enc), "total_decode_s": float(sum(r["seconds"] for r in rows))}  # fmt: skip


def recipe_decoder(cfg: Mapping[str, Any], split: str) -> tuple[Callable[..., dict[tuple[str, str], str]], DecodeCache]:
    """The recipe's cached decoder of one split: ``run(requests, progress=, desc=)`` (see
    :func:`decode_pairs`) and its cache, under ``<work>/in_search_cache``."""
    from recipes.asr.settings import recipe_paths

    p = recipe_paths(cfg)
    opts = cfg["in_search"]
    lm_paths = [p["lms"] / f"{d}.bin" for d in [*cfg["text"]["domains"], "general"]] + [p["em"]]
    if cfg["lms"]["neural"]["enabled"]:
        lm_paths.append(p["lms"] / "nnlm")
    cache = DecodeCache(p["decode_cache"] / f"{split}-{cache_tag(cfg, lm_paths, opts['beam'])}.jsonl")
    enc_dir = p["decode_cache"] / "enc"
    init = (init_worker, (dict(cfg), str(enc_dir), opts["beam"]))

    def run(requests: Sequence[tuple[Utterance, Mapping[str, float]]], *, progress: bool = False,
            desc: str = "in-search decode") -> dict[tuple[str, str], str]:  # fmt: skip
        return decode_pairs(requests, cache, lambda: WhisperDecoder(cfg, enc_dir, opts["beam"]), batch=opts["batch"],
                            workers=opts["workers"], init=init, progress=progress, desc=desc)  # fmt: skip

    return run, cache
