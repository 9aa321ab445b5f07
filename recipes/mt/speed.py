"""Speed checks of fusion in Hugging Face ``generate()`` with a real MT model (used by :mod:`recipes.mt.evaluate`).

Two measurements, each the median of ``repeats`` timed runs on the same test sentences, the compared runs
alternating so that load changes on a shared machine hit both alike:

* :func:`generate_overhead`: plain ``generate(num_beams=beam)`` against the same call with a
  :class:`~decoders.hf.FusionLogitsProcessor` (a fresh processor, so no cached LM state, per batch).
* :func:`nnlm_incremental_vs_reread`: the neural LM fused through ``generate()`` two ways: lmfusion's
  incremental :class:`~fusion.scorers.TokenLMScorer` (cached LM states, one batched one-token step per
  decoder step) and :class:`~fusion.reference.FullPrefixLMScorer` with ``reread_forward=True`` (one uncached
  forward pass over ``<s> + prefix`` per step, as an LM without state caching does). Time spent inside the
  processor (the LM's part) and the whole ``generate()`` are both reported; the fused scores of the two are
  first checked to agree on a few sentences, so neither can win by computing something else.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fusion.errors import LMFusionError
from fusion.scorers import Scorer


def timed_generate(model: Any, vocabs: Any, src: Sequence[str], make_proc: Callable[[], Any] | None, beam: int,
         batch: int) -> tuple[float, float, list[list[int]]]:
    """One timed ``generate(num_beams=beam)`` pass over ``src`` in batches of ``batch``, with a fresh processor
    from ``make_proc`` per batch (``None``: plain): (seconds in ``generate()``, seconds inside the processor,
    output ids)."""
    import torch
    from transformers import LogitsProcessorList

    from decoders.hf_logits import TimedProcessor

    wall = in_proc = 0.0
    outs: list[list[int]] = []
    for lo in range(0, len(src), batch):
        inputs = vocabs.source_batch(src[lo : lo + batch])
        procs = LogitsProcessorList()
        timed = None
        if make_proc is not None:
            timed = TimedProcessor(make_proc())
            procs.append(timed)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**inputs, num_beams=beam, max_new_tokens=80, logits_processor=procs,
                                 early_stopping=True)
        wall += time.perf_counter() - t
        in_proc += timed.seconds if timed is not None else 0.0
        outs.extend([int(t) for t in row] for row in out)
    return wall, in_proc, outs


def generate_overhead(model: Any, vocabs: Any, src: Sequence[str], make_scorers: Callable[[], list[Scorer]],
                      weights: Mapping[str, float], beam: int, batch: int, repeats: int = 3) -> dict[str, Any]:
    """Median wall time of plain and fused ``generate()`` over ``src`` (``repeats`` runs each, alternating).

    ``make_scorers`` builds fresh scorers for each batch (no LM state carried between runs). The result also
    holds the last run's output texts (``texts_plain``, ``texts_fused``).
    """
    from decoders.hf import FusionLogitsProcessor

    def proc() -> Any:
        return FusionLogitsProcessor(make_scorers(), weights, pre_beam=2 * beam)

    plain, fused = [], []
    for _ in range(repeats):
        t_plain, _, ids_plain = timed_generate(model, vocabs, src, None, beam, batch)
        t_fused, _, ids_fused = timed_generate(model, vocabs, src, proc, beam, batch)
        plain.append(t_plain)
        fused.append(t_fused)
    p, f = statistics.median(plain), statistics.median(fused)
    return {"n": len(src), "beam": beam, "repeats": repeats, "seconds_plain": plain, "seconds_fused": fused,
            "median_plain": p, "median_fused": f, "overhead": f / p,
            "texts_plain": [vocabs.decode_tgt(r[1:]) for r in ids_plain],
            "texts_fused": [vocabs.decode_tgt(r[1:]) for r in ids_fused]}


def nnlm_incremental_vs_reread(model: Any, vocabs: Any, src: Sequence[str], open_lm: Callable[[], Any],
                               units: Sequence[str | None], eos: int, weight: float, beam: int, batch: int,
                               repeats: int = 3, check_n: int = 2, tol: float = 1e-4) -> dict[str, Any]:
    """Median seconds of neural-LM fusion in ``generate()``: incremental scorer vs prefix re-read.

    ``open_lm`` opens a fresh copy of the neural LM (no cache carried over between runs).

    Raises:
        LMFusionError: the two scorers' fused scores differ by more than ``tol`` on the check sentences.
    """
    import torch

    from decoders.hf import FusionLogitsProcessor
    from fusion.reference import FullPrefixLMScorer
    from fusion.scorers import TokenLMScorer

    w = {"am": 1.0, "nnlm": weight}

    def incremental() -> Any:
        return FusionLogitsProcessor([TokenLMScorer(open_lm(), units, eos, name="nnlm")], w, pre_beam=2 * beam)

    def reread() -> Any:
        return FusionLogitsProcessor([FullPrefixLMScorer(open_lm(), units, eos, name="nnlm", reread_forward=True)],
                                     w, pre_beam=2 * beam)

    gap = 0.0
    a, b = incremental(), reread()

    def both(ids: Any, scores: Any) -> Any:
        nonlocal gap
        x, y = a(ids, scores.clone()), b(ids, scores.clone())
        fin = torch.isfinite(y) & torch.isfinite(x)
        gap = max(gap, float((x[fin] - y[fin]).abs().max()))
        return x

    timed_generate(model, vocabs, src[:check_n], lambda: both, beam, check_n)
    if gap > tol:
        raise LMFusionError(f"incremental and re-read neural-LM scores differ by {gap:.3g} (> {tol})")
    inc, rr = [], []
    for _ in range(repeats):
        inc.append(timed_generate(model, vocabs, src, incremental, beam, batch)[:2])
        rr.append(timed_generate(model, vocabs, src, reread, beam, batch)[:2])
    lm_inc, lm_rr = statistics.median(x[1] for x in inc), statistics.median(x[1] for x in rr)
    tot_inc, tot_rr = statistics.median(x[0] for x in inc), statistics.median(x[0] for x in rr)
    return {"n": len(src), "beam": beam, "repeats": repeats, "max_score_gap": gap,
            "lm_seconds_incremental": lm_inc, "lm_seconds_reread": lm_rr, "lm_speedup": lm_rr / lm_inc,
            "generate_seconds_incremental": tot_inc, "generate_seconds_reread": tot_rr,
            "generate_speedup": tot_rr / tot_inc}
