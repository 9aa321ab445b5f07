"""Progress bars are drawn only on a terminal, and never when the caller says no."""

from __future__ import annotations

import io

import pytest

from fusion.progress import progress_bar, show_progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    assert list(progress_bar(range(5), desc="x", file=err)) == [0, 1, 2, 3, 4]
    assert err.getvalue() == ""
    assert not show_progress(True)


def test_bar_on_a_terminal_unless_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Tty()
    monkeypatch.setattr("sys.stderr", err)
    assert show_progress(True) and show_progress(None) and not show_progress(False)
    list(progress_bar(range(3), desc="shown", file=err))
    assert "shown" in err.getvalue()
    quiet = _Tty()
    list(progress_bar(range(3), desc="hidden", progress=False, file=quiet))
    assert quiet.getvalue() == ""
