"""Whisper n-best lists of an audio manifest, for rescoring and tuning like any recogniser's.

Two back-ends give the same JSONL (one :class:`~decoders.hypothesis.NBestList` per utterance):

* ``hf``: the Hugging Face Whisper converted from the packaged CTranslate2 files
  (:func:`decoders.whisper_ct2.load_whisper_ct2`), beam search with ``num_return_sequences``; each
  hypothesis's ``am`` score is its exact natural-log probability under the model (a teacher-forced
  forward pass over the hypothesis tokens and ``<|endoftext|>``, no length normalisation);
* ``ct2``: CTranslate2's own Whisper (what faster-whisper runs), ``num_hypotheses`` with
  ``return_scores``: its scores are length-normalised log-probabilities, turned back into sums; CTranslate2
  renormalises each step over the tokens it does not suppress, so these ``am`` scores are slightly higher
  than the ``hf`` ones (:func:`sequence_logprobs` with ``suppressed`` gives the same numbers).

Whisper's own ``generate()`` serves ``num_return_sequences`` by repeating each input (for sampling): in beam
search that gives n copies of one result. The ``hf`` back-end therefore runs the generic beam search
(``GenerationMixin.generate``) with Whisper's prompt and suppressed tokens, which returns the n best beams.

Hypotheses are normalised like the references (lower case; letters, digits and apostrophes), and
duplicates after normalisation keep their best score.

    python -m recipes.asr.decode_whisper runs/whisper/audio/manifest.jsonl dev.jsonl --splits dev --nbest 8
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decoders.hypothesis import NBestList, ScoredHypothesis
from recipes.asr.make_audio import Utterance, read_wav
from recipes.asr.manifest_decode import decode_resumable, utterance_tags

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


def normalise_transcript(text: str) -> str:
    """Lower case, letters/digits/apostrophes only (curly apostrophes folded): the references' form."""
    return " ".join(_WORD.findall(text.lower().replace("\u2019", "'")))


def nbest_from(texts: Sequence[str], scores: Sequence[float] | np.ndarray) -> tuple[ScoredHypothesis, ...]:
    """Normalised, de-duplicated hypotheses (best score kept), best first."""
    best: dict[str, float] = {}
    for t, s in zip(texts, scores, strict=True):
        n = normalise_transcript(t)
        if n not in best or s > best[n]:
            best[n] = float(s)
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    return tuple(ScoredHypothesis(t, {"am": s, "words": float(len(t.split()))}) for t, s in ranked)


def sequence_logprobs(model: Any, features: Any, sequences: Any, prompt_len: int, eos_id: int,
                      suppressed: Sequence[int] = ()) -> np.ndarray:  # fmt: skip
    """Natural-log probability of each generated sequence after the prompt, up to and including its first eos.

    Args:
        features: encoder input ``[B, n_mels, T]`` (one row per sequence).
        sequences: decoder ids ``[B, L]`` including the prompt.
        suppressed: ids removed before the softmax (CTranslate2's scores renormalise over the others).
    """
    import torch

    with torch.inference_mode():
        logits = model(input_features=features, decoder_input_ids=sequences[:, :-1]).logits.float()
        if len(suppressed):
            logits[..., list(suppressed)] = -torch.inf
        lp = torch.log_softmax(logits, dim=-1)
        tgt = sequences[:, 1:]
        tok_lp = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # [B, L-1]: log P(seq[t+1] | seq[:t+1])
        pos = torch.arange(tgt.shape[1]).unsqueeze(0)
        is_eos = (tgt == eos_id) & (pos >= prompt_len - 1)
        first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(is_eos[:, 0], tgt.shape[1],
                                                                                        dtype=torch.long))
        mask = (pos >= prompt_len - 1) & (pos <= first_eos.unsqueeze(1))
        return (tok_lp * mask).sum(1).double().numpy()


class WhisperHFNBest:
    """n-best lists from the Hugging Face Whisper (see the module docstring)."""

    def __init__(self, bundle: Any | None = None, *, n: int = 8, beam: int = 8, max_new_tokens: int = 96) -> None:
        from decoders.whisper_ct2 import load_whisper_ct2

        self.bundle = bundle or load_whisper_ct2()
        self.n, self.beam, self.max_new_tokens = n, max(beam, n), max_new_tokens

    def beam_sequences(self, audio: Sequence[np.ndarray]) -> tuple[Any, np.ndarray, np.ndarray]:
        """The ``n`` best beams of each utterance (rows ``u * n ... (u + 1) * n - 1``).

        Returns:
            ``(sequences [U * n, L]`` with the prompt, ``beam_scores [U * n]`` (the beam search's sums
            divided by ``length ** length_penalty``), ``am [U * n]`` (exact natural-log probabilities)).
        """
        import torch
        from transformers import GenerationMixin

        b = self.bundle
        feats = b.features(audio)
        prompt = b.prompt_ids()
        gc = b.model.generation_config
        # Whisper's own generate() serves num_return_sequences by repeating each input n times with one
        # sequence each (meant for sampling): with beam search, n copies of one result. The generic beam
        # search returns the n best finished beams.
        with torch.inference_mode():
            out = GenerationMixin.generate(
                b.model, input_features=feats, decoder_input_ids=torch.tensor([prompt] * len(audio)),
                num_beams=self.beam, num_return_sequences=self.n, max_new_tokens=self.max_new_tokens,
                suppress_tokens=gc.suppress_tokens, begin_suppress_tokens=gc.begin_suppress_tokens,
                return_dict_in_generate=True, output_scores=True,
            )
        seqs = out.sequences
        if not bool((seqs[:, : len(prompt)] == torch.tensor(prompt)).all()):
            raise RuntimeError("Whisper's beam search returned sequences without the decoder prompt")
        am = sequence_logprobs(b.model, feats.repeat_interleave(self.n, dim=0), seqs, len(prompt), int(gc.eos_token_id))
        return seqs, out.sequences_scores.double().numpy(), am

    def decode_audio(self, audio: Sequence[np.ndarray]) -> list[tuple[ScoredHypothesis, ...]]:
        """Each utterance's n-best: normalised, de-duplicated, ranked by exact log-probability."""
        seqs, _, am = self.beam_sequences(audio)
        texts = self.bundle.tokenizer.batch_decode(seqs, skip_special_tokens=True)
        return [nbest_from(texts[i * self.n : (i + 1) * self.n], am[i * self.n : (i + 1) * self.n])
                for i in range(len(audio))]  # fmt: skip

    def __call__(self, utts: Sequence[Utterance]) -> list[NBestList]:
        audio = [read_wav(u.wav) for u in utts]
        lists = self.decode_audio(audio)
        return [NBestList(u.utt_id, hyps, u.text, utterance_tags(u, x, decoder_1best=hyps[0].text if hyps else ""))
                for u, x, hyps in zip(utts, audio, lists, strict=True)]  # fmt: skip


class WhisperCT2NBest:
    """n-best lists from CTranslate2's own Whisper (``num_hypotheses``, ``return_scores``)."""

    def __init__(self, directory: str | Path | None = None, *, n: int = 8, beam: int = 8, threads: int = 2) -> None:
        import ctranslate2

        from decoders.whisper_ct2 import load_whisper_ct2

        self.bundle = load_whisper_ct2(directory)  # tokenizer and features, checked files
        self.model = ctranslate2.models.Whisper(str(self.bundle.directory), device="cpu", compute_type="float32",
                                                intra_threads=threads)  # fmt: skip
        self.n, self.beam = n, max(beam, n)

    def __call__(self, utts: Sequence[Utterance]) -> list[NBestList]:
        import ctranslate2

        audio = [read_wav(u.wav) for u in utts]
        feats = ctranslate2.StorageView.from_array(self.bundle.features(audio).numpy())
        prompt = [self.bundle.tokenizer.convert_ids_to_tokens(i) for i in self.bundle.prompt_ids()]
        res = self.model.generate(feats, [prompt] * len(utts), beam_size=self.beam, num_hypotheses=self.n,
                                  return_scores=True, length_penalty=1.0)  # fmt: skip
        out = []
        for u, x, r in zip(utts, audio, res, strict=True):
            texts = [self.bundle.tokenizer.decode(ids, skip_special_tokens=True) for ids in r.sequences_ids]
            # CTranslate2's score: the sum of the log-probs of the tokens and <|endoftext|>, renormalised over
            # the tokens not suppressed, divided by len(tokens) ** length_penalty (tests/test_whisper_nbest.py)
            sums = [s * len(ids) for s, ids in zip(r.scores, r.sequences_ids, strict=True)]
            hyps = nbest_from(texts, sums)
            out.append(NBestList(u.utt_id, hyps, u.text,
                                 utterance_tags(u, x, decoder_1best=hyps[0].text if hyps else "")))
        return out


def decode_manifest(manifest: str | Path, out: str | Path, *, backend: str = "hf", n: int = 8, beam: int = 8,
                    splits: Sequence[str] = (), batch_size: int = 4, threads: int = 1,
                    progress: bool = True) -> Path:  # fmt: skip
    """Decode every utterance of the manifest into ``out`` (JSONL), skipping those already there.

    ``threads`` sets torch's (or CTranslate2's) intra-op threads: 1 avoids spin-waiting on a busy machine.
    """
    import torch

    torch.set_num_threads(threads)
    engine: Any = None

    def batch(us: Sequence[Utterance]) -> list[NBestList]:
        nonlocal engine
        if engine is None:
            engine = (WhisperHFNBest(n=n, beam=beam) if backend == "hf"
                      else WhisperCT2NBest(n=n, beam=beam, threads=threads))  # fmt: skip
        return list(engine(us))

    return decode_resumable(manifest, out, batch, splits=splits, batch_size=batch_size, desc=f"whisper-{backend}",
                            progress=progress)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("out")
    p.add_argument("--backend", choices=("hf", "ct2"), default="hf")
    p.add_argument("--nbest", type=int, default=8)
    p.add_argument("--beam", type=int, default=8)
    p.add_argument("--splits", nargs="*", default=[])
    a = p.parse_args(argv)
    print(decode_manifest(a.manifest, a.out, backend=a.backend, n=a.nbest, beam=a.beam, splits=a.splits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
