"""An extension compiled ahead of time is used only while it is the code of the sources beside it (fusion.aot)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from decoders.ctc import kernels
from fusion.aot import aot_state, fingerprint_file, source_fingerprint, write_fingerprint
from fusion.errors import LMFusionError


def test_fresh_stale_absent(tmp_path: Path) -> None:
    src = tmp_path / "kernel.py"
    src.write_text("def f(x):\n    return x\n")
    assert aot_state(tmp_path, "_x", [src]) == "absent"
    (tmp_path / "_x.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    assert aot_state(tmp_path, "_x", [src]) == "stale"  # built, but no fingerprint: not known to be current
    write_fingerprint(tmp_path, "_x", source_fingerprint([src], "host"), "host")
    assert aot_state(tmp_path, "_x", [src]) == "fresh"
    src.write_text("def f(x):\n    return x + 1\n")  # a kernel edited after the build
    assert aot_state(tmp_path, "_x", [src]) == "stale"
    write_fingerprint(tmp_path, "_x", source_fingerprint([src], "host"), "host")
    assert aot_state(tmp_path, "_x", [src]) == "fresh"
    text = fingerprint_file(tmp_path, "_x").read_text()
    fingerprint_file(tmp_path, "_x").write_text(text.replace("host", "", 1))  # another CPU target recorded
    assert aot_state(tmp_path, "_x", [src]) == "stale"


def test_stale_ctc_extension_is_refused_and_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.ENV, raising=False)
    monkeypatch.setattr(kernels, "aot_state", lambda: "stale")
    monkeypatch.setattr(kernels, "_LOADED", {})
    kernels._warn_stale.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kernels.default_kind() == "jit"
    assert any("build_aot" in str(w.message) for w in caught)
    with pytest.raises(LMFusionError, match="other kernel sources"):
        kernels.load("aot")


def test_built_extension_matches_its_sources() -> None:
    """``make setup`` builds the extension; it must be the code of the kernels in this checkout."""
    if kernels.aot_state() == "absent":
        pytest.skip("the ahead-of-time CTC kernels are not built (python -m decoders.ctc.build_aot)")
    assert kernels.aot_state() == "fresh"


def test_makefile_rebuilds_on_the_fingerprinted_sources() -> None:
    """``make setup`` rebuilds the extension when one of the sources its fingerprint covers changes."""
    from decoders.ctc.aot_spec import CTC_KERNEL_FILES

    root = Path(__file__).resolve().parent.parent
    text = (root / "Makefile").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("AOT_SOURCES"))
    prefix = line.split("$(addprefix ", 1)[1].split(",", 1)[0]
    inside = line.split(",", 1)[1].split(")", 1)[0].split()
    listed = {prefix + f for f in inside} | set(line.split(")", 2)[-1].split())
    assert listed == {str(f.resolve().relative_to(root)) for f in CTC_KERNEL_FILES}
