"""Shared fixtures: the bundled two-domain text and KenLM models built from it by real lmplz.

Fixtures that build models are session-scoped so the suite trains each model once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "data" / "text"


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
