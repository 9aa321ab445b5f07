"""The LM adapters have the optional abilities of fusion/abilities.py, and a spec reopens the same LM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusion.abilities import FullDistribution, Reloadable, SentenceBatchScorer, spec_of
from fusion.errors import LMFusionError
from fusion.loading import load_lm, open_spec
from fusion.ngram import KenLM


def test_kenlm_scores_sentence_batches_and_reopens_from_its_spec(tiny_arpa: Path) -> None:
    lm = KenLM(tiny_arpa, name="tiny")
    assert isinstance(lm, SentenceBatchScorer) and isinstance(lm, Reloadable)
    assert not isinstance(lm, FullDistribution)
    texts = ["and the lord said unto moses", "the lord is my shepherd", "zzz unseen words"]
    got = lm.sentence_logprobs(texts)
    assert got.dtype == np.float64 and got.shape == (3,)
    np.testing.assert_allclose(got, [lm.score_text(t).total for t in texts], rtol=1e-6)
    spec = spec_of(lm)
    assert spec.name == "tiny" and spec.path == str(tiny_arpa) and spec.tokenizer is None
    again = open_spec(spec)
    assert isinstance(again, KenLM) and again.name == "tiny"
    np.testing.assert_array_equal(again.sentence_logprobs(texts), got)


def test_neural_checkpoint_is_reloadable_and_gives_full_distributions(tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fusion.neural import NeuralLM

    mem = NeuralLM.from_config({"arch": "lstm", "emb": 8, "hidden": 8, "layers": 1, "dropout": 0.0}, tiny_spm,
                               name="nn")
    assert isinstance(mem, FullDistribution) and isinstance(mem, Reloadable)
    with pytest.raises(LMFusionError, match="built in memory"):
        spec_of(mem)
    mem.save(tmp_path / "ckpt")
    lm = load_lm(f"nn={tmp_path / 'ckpt'}")
    spec = spec_of(lm)
    assert spec.path == str(tmp_path / "ckpt") and spec.kind == "neural"
    again = open_spec(spec)
    st = [lm.begin(), lm.extend(lm.begin(), lm.tokenize("the lord"))]
    full = lm.logprobs_all(st)  # type: ignore[attr-defined]
    assert full.shape == (2, len(lm.pieces))  # type: ignore[attr-defined]
    with_end = np.logaddexp(np.logaddexp.reduce(full, axis=1), lm.end_batch(st))  # eos is no piece of tiny_spm
    np.testing.assert_allclose(with_end, 0.0, atol=1e-4)
    np.testing.assert_allclose(again.logprobs_all(st), full, atol=1e-6)  # type: ignore[attr-defined]
