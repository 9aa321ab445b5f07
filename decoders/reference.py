"""Plain, slow reference implementations of the decoders' fast paths, in one place the tests use.

* :func:`reference_beam_search` — the CTC decoder's search (:class:`decoders.ctc.CTCDecoder`) written plainly:
  prefixes are tuples of label ids in a dict, and every prefix's LM score is recomputed from scratch with
  ``LanguageModel.score`` (no caches, no batching, no pruning shortcuts, no compiled code).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from decoders.ctc import CTCDecoder, as_logprobs

NEG_INF = float("-inf")


def _ref_word_score(dec: CTCDecoder, k: int, state: Any, word: str) -> tuple[float, Any]:
    """Word LM ``k``'s score of a completed word, with the unknown-word offset for a word outside the lexicon."""
    lp, nxt = dec.lms[k].score(state, word)
    if dec._is_oov(word):
        lp += dec.options.unk_score_offset * math.log(10.0)
    return lp, nxt


def _ref_lm_state(dec: CTCDecoder, prefix: tuple[int, ...]) -> tuple[float, dict[str, float], int, int, str]:
    """Score a whole prefix from scratch: ``(weighted fixed part, per-LM sums, words, oovs, open word)``."""
    vocab = dec.vocab
    states = [m.begin() for m in dec.lms]
    comp = {n: 0.0 for n in dec.lm_names}
    nwords = noov = 0
    cur = ""
    for t in prefix:
        if vocab.completes[t]:
            if cur:
                for k in dec.word_lms:
                    lp, states[k] = _ref_word_score(dec, k, states[k], cur)
                    comp[dec.lm_names[k]] += lp
                nwords += 1
                noov += int(dec._is_oov(cur))
            cur = ""
        for k in dec.token_lms:
            lp, states[k] = dec.lms[k].score(states[k], vocab.labels[t])
            comp[dec.lm_names[k]] += lp
        cur += vocab.text[t]
    w = dec.weights
    fixed = sum(w[n] * comp[n] for n in dec.lm_names if w[n] != 0) + w["words"] * nwords + w["oov"] * noov
    return fixed, comp, nwords, noov, cur


def _ref_rank(dec: CTCDecoder, prefix: tuple[int, ...]) -> float | None:
    """Ranking LM score of a prefix, or ``None`` if lexicon-constrained search forbids it."""
    fixed, _, _, _, cur = _ref_lm_state(dec, prefix)
    o = dec.options
    lex = dec.lexicon
    if lex is None:
        return fixed
    alive = lex.is_prefix(cur)
    if o.lexicon_constrained:
        completed = dec.vocab.words_of(prefix)
        if cur:
            completed = completed[:-1]
        if not alive or any(w not in lex for w, _ in completed):
            return None
        return fixed + (float(dec.look[lex.walk(0, cur)]) if cur else 0.0)
    if not cur:
        return fixed
    if alive:
        return fixed + float(dec.look[lex.walk(0, cur)])
    return fixed + o.unk_prefix_score * max(1.0, len(cur) / o.unk_prefix_avg_len)


def reference_beam_search(dec: CTCDecoder, logprobs: Any) -> list[tuple[str, float, dict[str, float]]]:
    """The plain version of :class:`CTCDecoder`'s search: ``[(text, total, components)]``, best first.

    Prefixes are tuples of label ids in a dict; every prefix's LM score is recomputed from scratch
    with ``LanguageModel.score`` (no caches, no batching, no pruning shortcuts).
    """
    o = dec.options
    arr = np.asarray(as_logprobs(logprobs, len(dec.vocab), check_normalized=o.check_normalized), np.float64)
    arr = arr * dec.weights["am"]
    vocab = dec.vocab
    blank = vocab.blank
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}

    def lae(a: float, b: float) -> float:
        return float(np.logaddexp(a, b))

    for lp in arr:
        cand = [v for v in range(len(vocab)) if v != blank and lp[v] >= o.token_min_logp]
        if not cand and int(np.argmax(lp)) != blank:
            cand = [int(np.argmax(lp))]
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(p: tuple[int, ...], b: float, nb: float, nxt: dict[tuple[int, ...], list[float]] = nxt) -> None:
            cur = nxt.setdefault(p, [NEG_INF, NEG_INF])
            cur[0] = lae(cur[0], b)
            cur[1] = lae(cur[1], nb)

        for prefix, (pb, pnb) in beams.items():
            last = prefix[-1] if prefix else None
            tot = lae(pb, pnb)
            add(prefix, tot + lp[blank], pnb + lp[last] if last is not None else NEG_INF)
            open_word = _ref_lm_state(dec, prefix)[4] if prefix else ""
            for c in cand:
                e = (pb if c == last else tot) + lp[c]
                if vocab.completes[c] and not vocab.text[c] and not open_word:
                    add(prefix, NEG_INF, e)  # a delimiter with no open word keeps the text
                else:
                    add((*prefix, c), NEG_INF, e)
        scored = []
        for p, (b, nb) in nxt.items():
            r = _ref_rank(dec, p)
            if r is None:
                continue
            scored.append((lae(b, nb) + r, p, b, nb))
        best = max(s[0] for s in scored)
        scored = [s for s in scored if s[0] >= best + o.beam_prune_logp]
        scored.sort(key=lambda s: -s[0])
        beams = {p: (b, nb) for _, p, b, nb in scored[: o.beam_width]}
    return _ref_finals(dec, beams)


def _ref_finals(
    dec: CTCDecoder, beams: dict[tuple[int, ...], tuple[float, float]]
) -> list[tuple[str, float, dict[str, float]]]:
    """The final beam's hypotheses, one per text (alignments summed into ``am``), best first."""
    o = dec.options
    vocab = dec.vocab

    def lae(a: float, b: float) -> float:
        return float(np.logaddexp(a, b))

    out: dict[str, tuple[float, dict[str, float]]] = {}
    entries = []
    for p, (b, nb) in beams.items():
        fixed, comp, nwords, noov, cur = _ref_lm_state(dec, p)
        entries.append((p, lae(b, nb), fixed, comp, nwords, noov, cur))
    if o.lexicon_constrained and any((not e[6]) or e[6] in dec.lexicon for e in entries):  # type: ignore[operator]
        entries = [e for e in entries if (not e[6]) or e[6] in dec.lexicon]  # type: ignore[operator]
    for p, am, _fixed, _comp, _nwords, _noov, _cur in entries:
        words = [w for w, _ in vocab.words_of(p)]
        states = [m.begin() for m in dec.lms]
        comp = {n: 0.0 for n in dec.lm_names}
        for k in dec.word_lms:
            for w in words:
                lp, states[k] = _ref_word_score(dec, k, states[k], w)
                comp[dec.lm_names[k]] += lp
        for k in dec.token_lms:
            for t in p:
                lp, states[k] = dec.lms[k].score(states[k], vocab.labels[t])
                comp[dec.lm_names[k]] += lp
        if o.eos:
            for k, m in enumerate(dec.lms):
                comp[dec.lm_names[k]] += m.end(states[k])
        noov = sum(int(dec._is_oov(w)) for w in words)
        scores = {"am": am / dec.weights["am"], **comp, "words": float(len(words)), "oov": float(noov)}
        wts = dec.weights
        total = am + sum(wts[n] * comp[n] for n in dec.lm_names if wts[n] != 0) + wts["words"] * len(words)
        total += wts["oov"] * noov
        text = " ".join(words)
        if text in out:
            t0, s0 = out[text]
            merged = lae(s0["am"], scores["am"])
            if total > t0:
                t0, s0 = total, scores
            t0 += (merged - s0["am"]) * wts["am"]
            s0 = {**s0, "am": merged}
            out[text] = (t0, s0)
        else:
            out[text] = (total, scores)
    res = [(t, tot, sc) for t, (tot, sc) in out.items()]
    res.sort(key=lambda x: -x[1])
    return res[: o.nbest]

