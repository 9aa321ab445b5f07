"""The sparse (CSR) lexicon trie of the compiled CTC search: the same transitions as the dense table, and the
compiled back end kept (and stated) for piece vocabularies whose dense table would not fit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import decoders.lexicon as lexicon_mod
from decoders.ctc import CTCDecoder, CTCOptions
from decoders.emissions import NOISE_LEVELS, piece_confusions, synth_piece_emissions
from decoders.lexicon import Lexicon, TokenTrie
from decoders.reference import reference_beam_search
from fusion.ngram import KenLM
from fusion.tokenizers import SentencePieceTokenizer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")
TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


def test_csr_steps_equal_the_dense_table_everywhere(tiny_spm: SentencePieceTokenizer) -> None:
    from decoders.ctc.triecsr import build_csr

    words = (TEXT / "bible.train.txt").read_text().split()[:4000]
    lex = Lexicon(words)
    # pieces as the decoder sees them: "▁"-pieces start a word (their text has no "▁"), plus an empty label
    texts = ["", *[p.replace("▁", "") for p in tiny_spm.pieces]]
    dense = TokenTrie(lex, texts)
    assert dense.fits_dense
    csr = build_csr(lex, texts)
    nodes = np.repeat(np.arange(-1, lex.n_nodes), len(texts))
    toks = np.tile(np.arange(len(texts)), lex.n_nodes + 1)
    want = dense.step(nodes, toks)
    assert (csr.step(nodes, toks) == want).all()
    assert (want >= 0).sum() > lex.n_nodes  # real transitions, not only the empty label's
    table = dense._dense
    assert table is not None and csr.nbytes < table.nbytes


def test_piece_vocabulary_too_big_for_a_dense_table_stays_compiled(
    bible_arpa: Path, tiny_spm: SentencePieceTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexicon_mod, "DENSE_TABLE_MAX_CELLS", 1000)  # as if V were 32k pieces
    labels = ["<blank>", *tiny_spm.pieces]
    refs = [s for s in (TEXT / "bible.test.txt").read_text().splitlines() if s.strip() and len(s) < 50][:2]
    index = {p: i for i, p in enumerate(labels)}
    conf = piece_confusions(labels)
    ems = [synth_piece_emissions([index[p] for p in tiny_spm.encode(r)], len(labels), confusions=conf,
                                 config=NOISE_LEVELS["noisy"], seed=np.random.default_rng([4, i]))
           for i, r in enumerate(refs)]
    lm = KenLM(bible_arpa, name="lm")
    w = {"lm": 0.5, "words": 1.0, "oov": -3.0}
    for constrained in (False, True):
        opts = CTCOptions(beam_width=6, nbest=3, lexicon_constrained=constrained, lookahead=constrained,
                          beam_prune_logp=-20.0)
        fast = CTCDecoder(labels, [lm], w, options=opts)
        assert fast.backend.startswith("compiled") and fast.lm_backend == "compiled-ngram"
        assert not fast.tables.dense
        for em in ems:
            nb = fast.decode(em)
            ref = reference_beam_search(fast, em)
            assert [h.text for h in nb.hyps] == [t for t, _, _ in ref]
            for h, (_, _, sc) in zip(nb.hyps, ref, strict=True):
                assert {k: h.scores[k] for k in sc} == pytest.approx(sc, abs=1e-9, rel=1e-12)
