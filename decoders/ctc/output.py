"""The end of a CTC search: the beam scored as final hypotheses, then frozen hypothesis records.

:func:`final_hypotheses` completes each beam entry's open word, adds the end-of-sentence scores, and merges
prefixes with one text (their alignments summed into ``am``); :func:`to_hypothesis` and :func:`to_nbest`
build the frozen :class:`~decoders.hypothesis.ScoredHypothesis` / :class:`~decoders.hypothesis.NBestList`
every decoder emits (unweighted natural-log components, words with their frames).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from decoders.ctc.align import align_tokens
from decoders.ctc.tree import PrefixTree
from decoders.hypothesis import NBestList, ScoredHypothesis

Final = tuple[float, int, dict[str, float]]
"""``(fused total, node, unweighted components)``."""


def _closable(s: PrefixTree) -> tuple[np.ndarray, np.ndarray]:
    """Beam node ids and their CTC scores; in lexicon-constrained mode only those whose open word is known
    (unless none is)."""
    d = s.d
    ids = np.asarray(s.ids, dtype=np.int64)
    am = np.logaddexp(s.pb, s.pnb)
    if d.options.lexicon_constrained:
        lex = d.lexicon
        open_word = s._open_word
        ok = np.array([n == 0 or open_word(i) in lex for i, n in zip(ids.tolist(), s.wlen[ids].tolist(), strict=True)],
                      bool)
        if ok.any():
            ids, am = ids[ok], am[ok]
    return ids, np.asarray(am, dtype=np.float64)


def _text_keys(s: PrefixTree, ids_arr: np.ndarray) -> list[Any]:
    """One key per distinct text among the nodes ``ids_arr`` (int64)."""
    d = s.d
    if d.vocab.kind != "char":
        return _piece_text_keys(s, ids_arr)
    # distinct prefixes share a text only as X and X + delimiter (delimiters never repeat)
    toks = s.tok[ids_arr]
    pure = d._pure_delim[np.minimum(toks, s.V - 1)] & (toks < s.V)
    return list(np.where(pure, s.parent[ids_arr], ids_arr).tolist())


def _piece_text_keys(s: PrefixTree, ids_arr: np.ndarray) -> list[Any]:
    """Text keys of a piece vocabulary (where different label sequences can spell one text): a compiled hash of each
    text; nodes sharing a hash are told apart by their strings (so a hash collision merges nothing)."""
    from decoders.ctc import kernels

    ids = ids_arr.tolist()
    if not (kernels.aot_available() or kernels.jit_available()):
        return [s._text(i) for i in ids]
    text_hashes = kernels.load().text_hashes
    tok_h, tok_pow = s.d.tables.text_hash_tables(s.d.vocab.text)
    hs = text_hashes(ids_arr, s.parent, s.tok, tok_h, tok_pow, s.d._toklen, s.d._completes).tolist()
    if len(set(hs)) == len(hs):
        return list(hs)
    count: dict[int, int] = {}
    for h in hs:
        count[h] = count.get(h, 0) + 1
    return [s._text(i) if count[h] > 1 else h for i, h in zip(ids, hs, strict=True)]


def _merge_same_text(keys: list[Any], total: np.ndarray, am: np.ndarray,
                     limit: int | None = None) -> list[tuple[float, int, float]]:
    """``(total, index, am)`` per distinct text, best first (the first ``limit``): the best member, with every
    member's alignments summed into ``am`` (and the total moved by the same amount)."""
    order = np.argsort(-total, kind="stable").tolist()
    tot_l, am_l = total.tolist(), am.tolist()
    if len(set(keys)) == len(keys):  # every text once: the order of the totals
        return [(tot_l[j], j, am_l[j]) for j in order[:limit]]
    groups: dict[Any, list[int]] = {}
    for j in order:
        g = groups.get(keys[j])
        if g is None:
            groups[keys[j]] = [j]
        else:
            g.append(j)
    out = []
    for members in groups.values():
        j = members[0]
        tot_j, a_j = tot_l[j], am_l[j]
        if len(members) > 1:
            merged = float(np.logaddexp.reduce(am[members]))
            tot_j += merged - a_j
            a_j = merged
        out.append((tot_j, j, a_j))
    out.sort(key=lambda x: -x[0])
    return out[:limit]


def final_hypotheses(s: PrefixTree, limit: int | None = None) -> list[Final]:
    """Score the beam as final hypotheses, best first, one per distinct text (the first ``limit`` of them)."""
    d = s.d
    ids_arr, am = _closable(s)
    n, M = len(ids_arr), s.M
    if n == 0:
        return []
    # every beam entry's open word closed in one batch, its end-of-sentence scores in one more
    deltas, dcomp, ends, oov = s.sh.close_and_end(d, s, ids_arr)
    end_w = (ends[:, d.w_lm != 0] @ d.w_lm[d.w_lm != 0]) if M else 0.0
    fixed = s.fixed[ids_arr] + deltas + end_w
    if d.hot is not None:  # unfinished phrases give their bonus back
        fixed = fixed - d.w_hot * d.hot.at_risk[s.hstate[ids_arr]]
    merged = _merge_same_text(_text_keys(s, ids_arr), am + fixed, am, limit)
    result = []
    names = d.lm_names
    # the components of the hypotheses returned only, each as the whole beam's arrays would hold it
    for tot_j, j, a_j in merged:
        node = int(ids_arr[j])
        row = (s.comp[node] + dcomp[j] + ends[j]).tolist()
        hot = float(s.hsc[node] - d.hot.at_risk[s.hstate[node]]) if d.hot is not None else 0.0
        scores = {"am": a_j / s.w_am, **{nm: row[k] for k, nm in enumerate(names)},
                  "words": float(s.nwords[node] + (s.wlen[node] > 0)), "oov": float(s.noov[node] + int(oov[j])),
                  "hotwords": hot}
        result.append((tot_j, node, scores))
    return result


def to_hypothesis(s: PrefixTree, node: int, scores: Mapping[str, float],
                  logprobs: np.ndarray | None = None) -> ScoredHypothesis:
    """The hypothesis of a node: text, labels, and words with ``(start frame, end frame)``. With the
    utterance's ``logprobs`` (float64, C-contiguous) the frames come from the best alignment
    (:func:`~decoders.ctc.align.align_tokens`: words, timesteps and confidences) instead of the search."""
    toks, frames = s._tokens(node)
    vocab = s.d.vocab
    pieces = vocab.words_of(toks)
    text = " ".join(w for w, _ in pieces)
    labels = tuple(vocab.labels[t] for t in toks)
    if logprobs is not None:
        framed, timesteps, confidence = align_tokens(text, toks, [w for w, _ in pieces], logprobs, vocab)
        return ScoredHypothesis(text, dict(scores), labels, framed, timesteps, confidence)
    words = []
    # end frame: first frame of the word's last token, plus one
    for wi, (w, start) in enumerate(pieces):
        stop = pieces[wi + 1][1] if wi + 1 < len(pieces) else len(toks)
        last_tok_idx = max(i for i in range(start, stop) if vocab.text[toks[i]])
        words.append((w, frames[start], frames[last_tok_idx] + 1))
    return ScoredHypothesis(text, dict(scores), labels, tuple(words))


def to_nbest(
    s: PrefixTree, *, utt_id: str = "utt", ref: str | None = None, tags: Mapping[str, Any] | None = None,
    logprobs: np.ndarray | None = None,
) -> NBestList:
    """The search's n-best list (``options.nbest`` hypotheses); aligned over ``logprobs`` when given
    (see :func:`to_hypothesis`)."""
    fin = final_hypotheses(s, s.d.options.nbest)
    lp = None if logprobs is None else np.ascontiguousarray(logprobs, dtype=np.float64)
    hyps = tuple(to_hypothesis(s, node, scores, lp) for _, node, scores in fin)
    return NBestList(utt_id, hyps, ref, dict(tags or {}))


@dataclass(frozen=True)
class CTCHypothesis:
    """A torchaudio-style view of a CTC hypothesis.

    Attributes:
        tokens: the label ids.
        words: the words.
        score: the fused total under the decoder's weights.
        timesteps: one frame per token, its first frame on the best alignment (:mod:`decoders.ctc.align`).
        confidence: one value in ``(0, 1]`` per word (:mod:`decoders.ctc.align`; not in torchaudio).
    """

    tokens: tuple[int, ...]
    words: tuple[str, ...]
    score: float
    timesteps: tuple[int, ...]
    confidence: tuple[float, ...] = ()


def ctc_hypothesis(hyp: ScoredHypothesis, labels: Sequence[str], blank: int,
                   weights: Mapping[str, float]) -> CTCHypothesis:
    """The :class:`CTCHypothesis` view of a decoder's hypothesis (label strings to ids)."""
    index = {lab: i for i, lab in enumerate(labels) if i != blank}
    return CTCHypothesis(
        tokens=tuple(index[t] for t in hyp.tokens),
        words=tuple(w for w, _, _ in hyp.words),
        score=float(hyp.total(weights)),
        timesteps=tuple(hyp.timesteps),
        confidence=tuple(hyp.confidence),
    )


def word_times(hyp: ScoredHypothesis, frame_shift: float = 0.02) -> list[tuple[str, float, float]]:
    """The hypothesis' words with ``(start, end)`` in seconds: frames x ``frame_shift`` (seconds per frame,
    e.g. 0.02 for wav2vec2 at 16 kHz)."""
    return [(w, s * frame_shift, e * frame_shift) for w, s, e in hyp.words]
