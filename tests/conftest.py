"""Shared fixtures: the bundled two-domain text, KenLM models built from it by real lmplz, and a
committed tiny ARPA for fast unit tests of LM semantics.

Fixtures that build models are session-scoped so the suite trains each model once. A test that uses a
model built with ``lmplz`` (:data:`LMPLZ_FIXTURES`) is marked ``slow`` at collection: ``slow`` is a
marker, not a skip — CI runs those tests too; ``-m "not slow"`` is the quick loop without lmplz.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "data" / "text"
TINY_ARPA = Path(__file__).resolve().parent / "data" / "tiny.arpa"

LMPLZ_FIXTURES = frozenset({"bible_arpa", "tech_arpa", "general_arpa"})
"""Fixtures that build a KenLM model with lmplz."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LMPLZ_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_arpa() -> Path:
    """A committed word 3-gram ARPA (31 words, 138 n-grams), made once by ``lmplz -o 3 --discount_fallback``
    from ``tests/data/tiny.txt`` (nine Genesis/Exodus/Psalms-style sentences). No lmplz needed."""
    return TINY_ARPA


@pytest.fixture(scope="session")
def text_dir() -> Path:
    return TEXT


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lms")


@pytest.fixture(scope="session")
def bible_arpa(lm_dir: Path) -> Path:
    """3-gram word ARPA on the bundled bible training text."""
    from fusion.ngram import build_ngram

    return build_ngram([TEXT / "bible.train.txt"], lm_dir / "bible.arpa", order=3, progress=False)


@pytest.fixture(scope="session")
def tech_arpa(lm_dir: Path) -> Path:
    """3-gram word ARPA on the bundled tech (Python docs) training text."""
    from fusion.ngram import build_ngram

    return build_ngram([TEXT / "tech.train.txt"], lm_dir / "tech.arpa", order=3, progress=False)


@pytest.fixture(scope="session")
def general_arpa(lm_dir: Path) -> Path:
    """2-gram word ARPA on both domains' training text (a 'general' LM)."""
    from fusion.ngram import build_ngram

    return build_ngram(
        [TEXT / "bible.train.txt", TEXT / "tech.train.txt"], lm_dir / "general.arpa", order=2, progress=False
    )


@pytest.fixture(scope="session")
def tiny_spm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A sentencepiece unigram model (~300 pieces) trained on both domains' training text."""
    from fusion.tokenizers import train_sentencepiece

    d = tmp_path_factory.mktemp("spm")
    return train_sentencepiece(
        [TEXT / "bible.train.txt", TEXT / "tech.train.txt"], d / "tiny300", vocab_size=300
    )


@pytest.fixture(scope="session")
def tiny_nnlm(tiny_spm, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A tiny LSTM LM over ``tiny_spm`` trained for a few seconds on both domains; a saved checkpoint.

    Returns the checkpoint directory; open it with ``fusion.loading.load_lm(path)``.
    """
    from fusion.nnlm_train import TrainConfig, train_nnlm

    out = tmp_path_factory.mktemp("nnlm") / "tiny_lstm"
    train_nnlm(
        TrainConfig(
            text=[str(TEXT / "bible.train.txt"), str(TEXT / "tech.train.txt")],
            dev=[str(TEXT / "bible.dev.txt"), str(TEXT / "tech.dev.txt")],
            spm=str(tiny_spm.path),
            output=str(out),
            model={"arch": "lstm", "emb": 32, "hidden": 64, "layers": 1, "dropout": 0.0},
            epochs=1,
            batch_tokens=1024,
            lr=1e-2,
            seed=0,
            threads=1,
            progress=False,
        )
    )
    return out
