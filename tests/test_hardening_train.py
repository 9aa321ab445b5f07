"""Issue 13, train-nnlm findings: no data loss, no tracebacks, exact resume after an interrupt."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from fusion.errors import OutputError
from fusion.neural import load_checkpoint as load_lm
from fusion.nnlm_train import TrainConfig, train_nnlm
from recipes.cli import main

torch.set_num_threads(1)
TINY = {"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("hsmall")
    (d / "train.txt").write_text("\n".join((text_dir / "bible.train.txt").read_text().splitlines()[:160]) + "\n")
    (d / "dev.txt").write_text("\n".join((text_dir / "bible.dev.txt").read_text().splitlines()[:20]) + "\n")
    return str(d / "train.txt"), str(d / "dev.txt")


def _cfg(small: tuple[str, str], spm: str, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = {"text": [small[0]], "dev": [small[1]], "spm": spm, "output": str(out), "model": TINY,
                               "epochs": 2, "batch_tokens": 512, "lr": 1e-2, "eval_every": 4, "seed": 3,
                               "progress": False}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _cli(small: tuple[str, str], spm: str, out: Path, *extra: str) -> int:
    return main(["-q", "train-nnlm", "--text", small[0], "--spm", spm, "-o", str(out), "--emb", "8",
                 "--hidden", "8", "--max-steps", "2", "--batch-tokens", "512", *extra])


def test_output_folder_with_user_files_is_refused_not_deleted(small, tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputError, match="not a checkpoint"):
        train_nnlm(_cfg(small, str(tiny_spm.path), out, max_steps=1))
    assert (out / "keep.txt").read_text() == "precious"
    f = tmp_path / "file.txt"
    f.write_text("mine")
    assert _cli(small, str(tiny_spm.path), f) == 2
    assert f.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "o"]


def test_no_dev_text_still_writes_a_checkpoint(small, tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert _cli(small, str(tiny_spm.path), tmp_path / "nodev") == 0
    assert load_lm(tmp_path / "nodev").meta["steps"] == 2


@pytest.mark.parametrize(
    "extra", [("--lr", "nan"), ("--lr", "-1"), ("--epochs", "0"), ("--spm-vocab-size", "-5"), ("--device", "tpu")]
)
def test_bad_settings_are_clear_errors(small, tiny_spm, tmp_path: Path, extra: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    assert _cli(small, str(tiny_spm.path), tmp_path / "x", *extra) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_clear_error(small, tiny_spm, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(small, str(tiny_spm.path), tmp_path / "x", "--device", "cuda") == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_interrupt_inside_a_step_resumes_bit_exact(small, tiny_spm, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spm = str(tiny_spm.path)
    straight = train_nnlm(_cfg(small, spm, tmp_path / "a", max_steps=12))
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_then_interrupt(self, *a, **k):  # type: ignore[no-untyped-def]
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 10:  # the update is applied, the step not yet counted
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_nnlm(_cfg(small, spm, tmp_path / "b", max_steps=12))
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    resumed = train_nnlm(_cfg(small, spm, tmp_path / "b", max_steps=12))
    assert resumed.resumed_from_step in (8, 9) and resumed.steps == straight.steps
    a, b = load_lm(tmp_path / "a").model.state_dict(), load_lm(tmp_path / "b").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_ctrl_c_during_startup_imports_is_held_then_raised() -> None:
    from recipes.commands.train_nnlm import deferred_sigint

    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the block ran to its end")
    assert done


def test_integer_safetensors_weights_are_refused(tiny_nnlm: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from fusion.errors import InputError

    d = tmp_path / "ck"
    shutil.copytree(tiny_nnlm, d)
    t = load_file(str(d / "model.safetensors"))
    save_file({k: (v * 100).to(torch.int32) for k, v in t.items()}, str(d / "model.safetensors"))
    with pytest.raises(InputError, match="dtype int32"):
        load_lm(d)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_log_probs_are_accepted(dtype: torch.dtype) -> None:
    from decoders.ctc import as_logprobs

    g = torch.Generator().manual_seed(0)
    x = torch.log_softmax(torch.randn(80, 40, generator=g) * 3, -1).to(dtype)
    out = as_logprobs(x, 40)
    assert out.shape == (80, 40) and abs(float(torch.logsumexp(x.float(), -1).abs().max())) < 0.05
    from fusion.errors import InputError

    with pytest.raises(InputError, match="not log-probabilities"):
        as_logprobs((x.float() + 1.0).to(dtype), 40)  # logits are still refused


def test_checkpoint_respects_umask_and_clears_stale_temporaries(small, tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / ".ck.999999999.abc.tmp"  # a killed writer's half-built checkpoint (no such pid)
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    old = os.umask(0o022)
    try:
        train_nnlm(_cfg(small, str(tiny_spm.path), tmp_path / "ck", max_steps=1))
    finally:
        os.umask(old)
    assert not stale.exists()
    assert oct((tmp_path / "ck").stat().st_mode & 0o777) == oct(0o755)
    assert oct((tmp_path / "ck" / "model.safetensors").stat().st_mode & 0o777) == oct(0o644)
