"""Shallow fusion inside Whisper's beam search: Hugging Face ``generate()`` with lmfusion's logits processor.

The ASR recipe with ``audio.recogniser: whisper`` first tunes fusion weights on Whisper's dev n-best
lists (the ``tune`` stage: globally, per domain, per SNR bucket, by blind SNR estimate). This stage
then decodes the test audio *with* the LMs inside the search: ``generate(num_beams=...)`` with a
:class:`~decoders.hf.FusionLogitsProcessor` whose scorers are the utterance's domain mix (``dlm``, a
word LM closed at Whisper's word boundaries), the neural LM seen per word (``nnlm``) when the recipe
has one, and a word bonus; weights from the global tuning and, per utterance, from the fusion profile.

Whisper's byte-level BPE tokens are mapped to LM units by :func:`whisper_token_units`: a token that
starts with a space starts a word; case is folded and punctuation dropped (the references' form);
tokens with no letters or digits (punctuation) do not touch the LM; special and timestamp tokens are
suppressed in the search (``suppress_tokens``), so they can never be chosen for free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusion.token_units import WORD_START, token_units_from_tokenizer
from recipes.asr.decode_whisper import normalise_transcript

_KEEP = re.compile(r"[a-z0-9']+")


def fold_unit(unit: str | None) -> str | None:
    """A token unit in the references' form: lower case, letters, digits and apostrophes, the word-start
    marker kept; ``None`` when nothing is left (punctuation: the LM does not see it)."""
    if unit is None:
        return None
    starts = unit.startswith(WORD_START)
    body = "".join(_KEEP.findall(unit.replace(WORD_START, " ").lower().replace("\u2019", "'")))
    if not body:
        return None
    return WORD_START + body if starts else body


def whisper_token_units(tokenizer: Any) -> tuple[list[str | None], list[int]]:
    """LM units of every Whisper token id, and the ids to suppress in the search (specials, timestamps).

    The units are :func:`fusion.token_units.token_units_from_tokenizer`'s, folded by :func:`fold_unit`
    (``"▁word"`` starts a word, ``"piece"`` continues one). Every token that view gives no unit (special,
    timestamp, language and task tokens) is suppressed, except ``<|endoftext|>``.
    """
    raw = token_units_from_tokenizer(tokenizer, vocab_size=len(tokenizer))
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    suppress = [i for i, u in enumerate(raw) if u is None and i != eos]
    return [fold_unit(u) for u in raw], suppress


class WhisperFusion:
    """Fused Whisper decoding of batches of utterances (see the module docstring)."""

    def __init__(self, bundle: Any | None = None, *, beam: int = 5, max_new_tokens: int = 96,
                 pre_beam: int | None = None, fused_length_penalty: float = 0.0) -> None:  # fmt: skip
        from decoders.whisper_ct2 import load_whisper_ct2

        self.bundle = bundle or load_whisper_ct2()
        self.units, self.suppress = whisper_token_units(self.bundle.tokenizer)
        self.eos = int(self.bundle.model.generation_config.eos_token_id)
        self.beam, self.max_new_tokens = beam, max_new_tokens
        self.pre_beam = pre_beam or 2 * beam
        self.fused_length_penalty = fused_length_penalty

    def scorers(self, lms: Mapping[str, Any], *, word_bonus: bool = True, open_word: bool = True) -> list[Any]:
        """Word-level scorers (partial: pre-beam candidates only) for each LM, plus the word bonus.

        ``open_word``: charge the word in progress at every token
        (:class:`~fusion.scorers.open_word.OpenWordLMScorer`); ``False``: only when it closes
        (:class:`~fusion.scorers.lm.WordLMScorer`), which lets a strong LM weight add words after the speech.
        """
        from fusion.scorers import OpenWordLMScorer, WordBonus, WordLMScorer
        from fusion.units import word_view

        out: list[Any] = [OpenWordLMScorer(word_view(lm), self.units, self.eos, name=name) if open_word
                          else WordLMScorer(word_view(lm), self.units, self.eos, name=name, partial=True)
                          for name, lm in lms.items()]  # fmt: skip
        if word_bonus:
            out.append(WordBonus(self.units, self.eos))
        return out

    def encode(self, audio: Sequence[np.ndarray]) -> Any:
        """Whisper's encoder output ``[B, frames, d_model]`` of 16 kHz waveforms, computed once per utterance
        and handed to :meth:`transcribe` (``encoded=``) for every weight setting."""
        import torch

        with torch.inference_mode():
            return self.bundle.model.get_encoder()(self.bundle.features(audio)).last_hidden_state

    def transcribe(self, audio: Sequence[np.ndarray] | None, scorers: Sequence[Any] | None = None,
                   weights: Mapping[str, float] | None = None, *, encoded: Any = None) -> list[str]:  # fmt: skip
        """1-best transcripts (normalised), fused when ``scorers`` are given with a weight that is not 0.

        A fused search ranks finished hypotheses by their fused log-probability sum divided by
        ``length ** fused_length_penalty`` (default 0: the plain sum, the score the weights were tuned on
        over n-best lists; Whisper's own length normalisation would turn a per-word LM cost into a
        per-token average). The processor is told ``max_new_tokens``, so a hypothesis cut at the length
        limit pays for its open word and ``</s>``. Plain decoding keeps Whisper's settings.

        ``encoded``: the :meth:`encode` output of the batch (then ``audio`` may be ``None``): the encoder
        is not run again, and the transcripts are those of decoding from the audio.
        """
        import torch

        from decoders.hf import FusionLogitsProcessor, fusion_generate

        b = self.bundle
        kw: dict[str, Any] = {"num_beams": self.beam, "return_timestamps": False,
                              "max_new_tokens": self.max_new_tokens, "suppress_tokens": self.suppress}  # fmt: skip
        w = dict(weights or {})
        if encoded is not None:
            from transformers.modeling_outputs import BaseModelOutput

            kw["encoder_outputs"] = BaseModelOutput(last_hidden_state=encoded)
        elif audio is not None:
            kw["input_features"] = b.features(audio)
        else:
            raise ValueError("transcribe needs audio or encoded")
        with torch.inference_mode():
            if any(w.get(s.name, 0.0) != 0.0 for s in scorers or ()):
                proc = FusionLogitsProcessor(list(scorers or ()), w, pre_beam=self.pre_beam)
                out = fusion_generate(b.model, proc, length_penalty=self.fused_length_penalty, **kw)
            else:
                out = b.model.generate(**kw)
        seqs = out.sequences if hasattr(out, "sequences") else out
        return [normalise_transcript(t) for t in b.tokenizer.batch_decode(seqs, skip_special_tokens=True)]


def condition_rows(refs: Sequence[str], conds: Sequence[tuple[str, str]], systems: Mapping[str, Sequence[str]],
                   pairs: Sequence[tuple[str, str]], *, n_boot: int, seed: int,
                   order: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """WER of each system per condition and overall, with paired-bootstrap CIs of ``b - a`` for each pair."""
    from fusion.metrics import error_counts, paired_bootstrap

    errs = {name: error_counts(refs, hyps)[0] for name, hyps in systems.items()}
    lens = error_counts(refs, refs)[1]
    table: dict[str, dict[str, Any]] = {}
    for key in [*order, ("all", "all")]:
        idx = [i for i, c in enumerate(conds) if key == ("all", "all") or c == key]
        if not idx:
            continue
        row: dict[str, Any] = {"n_utts": len(idx), "ref_words": int(lens[idx].sum())}
        for name in systems:
            row[name] = float(errs[name][idx].sum() / max(1, lens[idx].sum()))
        sub = [refs[i] for i in idx]
        for a, b in pairs:
            bs = paired_bootstrap(sub, [systems[a][i] for i in idx], [systems[b][i] for i in idx], n=n_boot, seed=seed)
            rel = (row[a] - row[b]) / row[a] if row[a] > 0 else 0.0
            row[f"{b} minus {a}"] = {"delta": bs.delta, "lo": bs.lo, "hi": bs.hi, "relative_reduction": rel}
        table["/".join(key)] = row
    return table


def in_search_markdown(result: Mapping[str, Any]) -> str:
    """The in-search table: WER per condition for each system, then each compared pair's change in WER
    points with its 95% paired-bootstrap CI and the relative reduction (positive = fewer errors)."""
    systems = list(result["systems"])
    pairs = [tuple(pr) for pr in result.get("pairs") or [(systems[0], s) for s in systems[1:]]]
    short = {s: f"S{i}" for i, s in enumerate(systems)}
    lines = [f"Whisper tiny.en, beam {result['beam']}, {result['n_utts']} test utterances; WER %. Systems: "
             + "; ".join(f"{short[s]} = {s}" for s in systems) + ".", "",
             "| condition | utts | " + " | ".join(short[s] for s in systems) + " |",
             "|" + "---|" * (2 + len(systems))]  # fmt: skip
    for cond, row in result["table"].items():
        lines.append("| " + " | ".join([cond, str(row["n_utts"]), *[f"{100 * row[s]:.1f}" for s in systems]]) + " |")
    lines += ["", "Change in WER points, b - a [95% CI], relative reduction:", "",
              "| condition | " + " | ".join(f"{short[b]} - {short[a]}" for a, b in pairs) + " |",
              "|" + "---|" * (1 + len(pairs))]  # fmt: skip
    for cond, row in result["table"].items():
        cells = [cond]
        for a, b in pairs:
            d = row[f"{b} minus {a}"]
            cells.append(f"{100 * d['delta']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}], "
                         f"{100 * d['relative_reduction']:.0f}%")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    agree = (result.get("blind_snr_test_buckets") or {}).get("agree")
    if agree is not None:
        lines += ["", f"The blind SNR estimate puts {100 * agree:.0f}% of the test utterances in their true SNR "
                  "bucket."]  # fmt: skip
    for v in result.get("verdicts") or ():
        lines += ["", f"**{v}**"]
    t = result.get("timing") or {}
    if t.get("decodes"):
        fmt = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
        lines += ["", f"Seconds per decode (cached decodes of this split, {t['decodes']}): plain "
                  f"{fmt(t['plain_s_per_decode'])}, fused {fmt(t['fused_s_per_decode'])}; encoder "
                  f"{fmt(t['encode_s_per_utt'])} s per utterance, run once and reused."]  # fmt: skip
    lines += [f"\n![{Path(x).stem}]({x})" for x in result.get("plots") or ()]
    return "\n".join(lines) + "\n"
