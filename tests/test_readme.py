"""The README's first Python example runs as written (from the repository root)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    shutil.copytree(REPO / "data", tmp_path / "data")
    old = os.getcwd()
    os.chdir(tmp_path)
    namespace: dict[str, object] = {}
    try:
        for block in blocks:  # the examples continue one another
            exec(compile(block, "README.md", "exec"), namespace)
    finally:
        os.chdir(old)
    out = capsys.readouterr().out
    assert "'tech'" in out and "mix" in out
    best = namespace["best"]
    assert best.error_rate <= best.start_error_rate  # type: ignore[attr-defined]
    assert "ScoredHypothesis(text=" in out
    assert (tmp_path / "bible.bin").is_file() and (tmp_path / "tech.bin").is_file()


def test_every_public_fusion_name_resolves() -> None:
    import fusion

    for name in fusion.__all__:
        assert getattr(fusion, name) is not None, name
