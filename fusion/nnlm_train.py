"""Training the built-in neural LMs (:mod:`fusion.neural`) on plain text.

CPU-friendly: length-bucketed batches of at most ``batch_tokens`` padded tokens, AdamW with warm-up and
linear decay, gradient clipping, a tqdm bar, dev perplexity after each epoch (and every ``eval_every``
steps). The output directory is always a loadable checkpoint (``lmfusion-lm.json`` + ``model.safetensors`` +
the sentencepiece model) plus ``train-state.pt`` (optimizer, RNG; read back with
``torch.load(weights_only=True)``) and ``train-state.json`` (position, history). Checkpoints are written
atomically (built beside the target, then swapped in), and training resumes from the position it reached,
so an interrupted run continued with the same config ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from fusion.checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_checkpoint
from fusion.errors import InputError, LMFusionError, OutputError
from fusion.io import iter_text_lines, read_json
from fusion.neural import NeuralLM, load_checkpoint
from fusion.nn_models import _padded_batch, normalize_config, sequence_logprobs
from fusion.progress import progress_bar
from fusion.tokenizers import SentencePieceTokenizer

STATE_PT = "train-state.pt"
STATE_JSON = "train-state.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the checkpoint).

    Attributes:
        text: training text files, one sentence per line.
        dev: held-out text files for perplexity (optional).
        spm: the sentencepiece model defining the units.
        output: checkpoint directory (created, or resumed from when ``resume``).
        model: model config (``{"arch": "lstm" | "transformer", ...}``, see :data:`fusion.nn_models.ARCH_DEFAULTS`).
        epochs: passes over the training text.
        max_steps: stop after this many optimizer steps in all (``None``: run all epochs).
        batch_tokens: most padded tokens per batch.
        lr, weight_decay, warmup, clip: AdamW settings, warm-up steps, gradient-norm clip.
        eval_every: also evaluate and checkpoint every this many steps (``0``: only per epoch).
        seed: data order, initialisation and dropout.
        threads: ``torch.set_num_threads`` (``None`` leaves it).
        device: ``"cpu"`` or ``"cuda"``.
        max_len: sentences longer than this many pieces are cut (the transformer also needs ``<= max_len - 1``).
        name: the model's name in reports and weights.
    """

    text: Sequence[str]
    spm: str
    output: str
    dev: Sequence[str] = ()
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "lstm"})
    epochs: int = 3
    max_steps: int | None = None
    batch_tokens: int = 4096
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 50
    clip: float = 1.0
    eval_every: int = 0
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    max_len: int = 256
    name: str = "nnlm"
    resume: bool = True
    progress: bool = True

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        d = asdict(self)
        for k in ("output", "resume", "progress", "threads", "device", "max_steps", "eval_every", "epochs"):
            d.pop(k)
        d["text"] = list(self.text)
        d["dev"] = list(self.dev)
        d["model"] = normalize_config(self.model)
        return d


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_nnlm` did."""

    output: Path
    steps: int
    epochs_done: float
    dev_ppl: float | None
    history: list[dict[str, float]]
    resumed_from_step: int


def read_ids(files: Sequence[str], tok: SentencePieceTokenizer, max_len: int) -> list[list[int]]:
    """Encode text files into piece-id sequences (empty lines skipped, long ones cut to ``max_len``)."""
    out = []
    for f in files:
        for _, line in iter_text_lines(f):
            s = " ".join(line.split())
            if s:
                out.append(tok.encode_ids(s)[:max_len])
    return out


def make_batches(seqs: Sequence[Sequence[int]], batch_tokens: int, seed: int) -> list[list[int]]:
    """Indices grouped into length-bucketed batches of at most ``batch_tokens`` padded tokens, shuffled."""
    rng = random.Random(seed)
    idx = list(range(len(seqs)))
    rng.shuffle(idx)
    idx.sort(key=lambda i: len(seqs[i]))  # stable: ties keep the shuffled order
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in idx:
        t = len(seqs[i]) + 1
        if cur and (len(cur) + 1) * t > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def evaluate_ppl(lm: NeuralLM, seqs: Sequence[Sequence[int]], batch_tokens: int = 8192) -> float:
    """Perplexity over pieces and end-of-sentence (natural log), full-sequence forwards."""
    model = lm.model
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for b in make_batches(seqs, batch_tokens, 0):
        for lp in sequence_logprobs(model, [seqs[i] for i in b], lm.bos_id, lm.eos_id):
            total += float(lp.double().sum())
            n += lp.numel()
    model.train(was)
    if n == 0:
        raise LMFusionError("no dev sentences to evaluate")
    return math.exp(-total / n)


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up (at most a tenth of the run), then linear decay to a tenth of ``lr``."""
    warm = max(1, min(cfg.warmup, total // 10))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return cfg.lr * max(0.1, 1.0 - 0.9 * frac)


def _save(lm: NeuralLM, opt: torch.optim.Optimizer, cfg: TrainConfig, pos: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state()}, buf)
    state_json = json.dumps({"config": cfg.fingerprint(), **pos}, indent=2).encode()
    lm.meta = {"trained_by": "lmfusion train-nnlm", "steps": pos["step"], "epoch": pos["epoch"],
               "dev_ppl": pos["history"][-1].get("dev_ppl") if pos["history"] else None,
               "train_text": [str(t) for t in cfg.text]}
    save_checkpoint(cfg.output, lm.to_json(), lm.state_dict_cpu(), lm.tokenizer.path,
                    extra_files={STATE_PT: buf.getvalue(), STATE_JSON: state_json})


def check_settings(cfg: TrainConfig) -> None:
    """Refuse settings training would fail on later (or silently misuse): a clear error up front."""
    for name in ("lr", "weight_decay", "clip"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise LMFusionError(f"{name} must be a finite number >= 0, got {v!r}")
    if not cfg.lr > 0:
        raise LMFusionError(f"lr must be > 0, got {cfg.lr!r}")
    for name in ("epochs", "batch_tokens", "max_len"):
        if getattr(cfg, name) < 1:
            raise LMFusionError(f"{name} must be >= 1, got {getattr(cfg, name)!r}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise LMFusionError(f"max_steps must be >= 1, got {cfg.max_steps!r}")
    if cfg.eval_every < 0 or cfg.seed < 0:
        raise LMFusionError("eval_every and seed must be >= 0")
    if cfg.threads is not None and cfg.threads < 1:
        raise LMFusionError(f"threads must be >= 1, got {cfg.threads!r}")
    dev = str(cfg.device)
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise LMFusionError(f"device {dev!r}: CUDA is not available here (torch {torch.__version__}); use cpu")
    if dev != "cpu" and not dev.startswith("cuda"):
        raise LMFusionError(f"device must be 'cpu' or 'cuda[:N]', got {dev!r}")


CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME, STATE_PT, STATE_JSON)


def check_output_dir(cfg: TrainConfig) -> None:
    """The output must be a new or empty directory, or a checkpoint of ours holding nothing else.

    A checkpoint is replaced when it is saved, so a directory with any other file (or a file in place of
    the directory) is refused rather than deleted.
    """
    out = Path(cfg.output)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"output {str(out)!r} is a file, not a checkpoint directory; give a directory")
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    ours = {*CHECKPOINT_FILES, Path(cfg.spm).name}
    if CONFIG_NAME in names:
        try:
            ours.add(str(read_json(out / CONFIG_NAME)["tokenizer"]["file"]))
        except (LMFusionError, AttributeError, KeyError, TypeError):
            pass
    other = sorted(names - ours)
    if CONFIG_NAME not in names or other:
        raise OutputError(
            f"output directory {str(out)!r} holds files that are not a checkpoint of this trainer "
            f"({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); it would be replaced: "
            "choose a new or empty directory"
        )
    for t in [*cfg.text, *cfg.dev]:
        if Path(t).resolve().parent == out.resolve():
            raise OutputError(f"training text {t!r} is inside the output directory {str(out)!r}")


def _resume(cfg: TrainConfig, out: Path) -> tuple[NeuralLM, dict[str, Any], dict[str, Any]] | None:
    if not (cfg.resume and (out / CONFIG_NAME).is_file() and (out / STATE_JSON).is_file()):
        return None
    pos = read_json(out / STATE_JSON)
    if pos.get("config") != cfg.fingerprint():
        raise InputError("a checkpoint from a run with different settings is there; pass resume=False "
                         "(--no-resume) to start over, or use another output directory", path=out / STATE_JSON)
    lm = load_checkpoint(out, name=cfg.name, device=cfg.device)
    try:
        st = torch.load(out / STATE_PT, map_location=cfg.device, weights_only=True)
    except Exception as e:
        raise InputError(f"unreadable training state ({type(e).__name__}: {e})", path=out / STATE_PT) from None
    return lm, pos, st


def _read_data(
    cfg: TrainConfig, tok: SentencePieceTokenizer, mcfg: dict[str, Any]
) -> tuple[list[list[int]], list[list[int]]]:
    """Training and dev sentences as piece ids (cut to the model's positions)."""
    max_len = min(cfg.max_len, mcfg["max_len"] - 1) if mcfg["arch"] == "transformer" else cfg.max_len
    train = read_ids(cfg.text, tok, max_len)
    if not train:
        raise InputError("training text has no sentences", path=cfg.text[0])
    return train, (read_ids(cfg.dev, tok, max_len) if cfg.dev else [])


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, state: dict[str, Any] | None) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (not embeddings), restored from ``state`` or freshly seeded."""
    def decays(n: str, p: torch.Tensor) -> bool:
        return p.ndim >= 2 and "embed" not in n and "pos" not in n

    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not decays(n, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
    else:
        torch.manual_seed(cfg.seed)
    return opt


def _train_step(
    lm: NeuralLM, opt: torch.optim.Optimizer, seqs: Sequence[Sequence[int]], lr: float, clip: float | None, step: int
) -> tuple[float, int]:
    """One optimiser step on a batch; returns the mean loss per predicted piece and how many there were."""
    inp, tgt = _padded_batch(seqs, lm.bos_id, lm.eos_id, lm.device)
    lens = torch.tensor([len(s) + 1 for s in seqs], device=lm.device)
    valid = torch.arange(inp.shape[1], device=lm.device)[None] < lens[:, None]
    tgt = tgt.masked_fill(~valid, -100)
    for g in opt.param_groups:
        g["lr"] = lr
    logits = lm.model(inp)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), ignore_index=-100)
    if not torch.isfinite(loss):
        raise LMFusionError(f"training loss became {loss.item()} at step {step}; lower the learning rate")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(lm.model.parameters(), clip)
    opt.step()
    return loss.item(), int(valid.sum())


def train_nnlm(cfg: TrainConfig, *, on_eval: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train (or resume training) a neural LM; returns where it is and the dev-perplexity history."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not cfg.text:
        raise LMFusionError("no training text given")
    check_settings(cfg)
    check_output_dir(cfg)
    tok = SentencePieceTokenizer(cfg.spm)
    mcfg = normalize_config(cfg.model)
    train, dev = _read_data(cfg, tok, mcfg)
    out = Path(cfg.output)

    resumed = _resume(cfg, out)
    if resumed is None:
        lm = NeuralLM.from_config(mcfg, tok, seed=cfg.seed, name=cfg.name, device=cfg.device)
        pos: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "history": []}
        opt_state = None
    else:
        lm, pos, opt_state = resumed
    model = lm.model
    model.train()
    opt = _optimizer(model, cfg, opt_state)
    start_step = int(pos["step"])
    n_batches = len(make_batches(train, cfg.batch_tokens, cfg.seed))
    total_steps = cfg.epochs * n_batches
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    history: list[dict[str, float]] = list(pos["history"])

    def do_eval(epoch_frac: float, train_loss: float) -> None:
        rec = {"step": float(pos["step"]), "epoch": epoch_frac, "train_ppl": math.exp(train_loss),
               "dev_ppl": evaluate_ppl(lm, dev) if dev else float("nan"), "time": time.time()}
        if not dev:
            rec.pop("dev_ppl")
        history.append(rec)
        pos["history"] = history
        msg = f"step {pos['step']} epoch {epoch_frac:.2f}: train ppl {rec['train_ppl']:.2f}"
        if dev:
            msg += f", dev ppl {rec['dev_ppl']:.2f}"
        tqdm.write(msg) if cfg.progress else None
        if on_eval is not None:
            on_eval(rec)

    bar = progress_bar(total=total_steps, initial=min(start_step, total_steps), desc=f"train {cfg.name}", unit="step",
               progress=cfg.progress)
    run_loss, run_n = 0.0, 0
    consistent = True  # False while a step is half done: an interrupt then keeps the last checkpoint
    try:
        while pos["epoch"] < cfg.epochs and pos["step"] < total_steps:
            batches = make_batches(train, cfg.batch_tokens, cfg.seed + 1000 * int(pos["epoch"]))
            while pos["batch"] < len(batches) and pos["step"] < total_steps:
                consistent = False
                seqs = [train[i] for i in batches[pos["batch"]]]
                loss, n_valid = _train_step(lm, opt, seqs, _lr_at(int(pos["step"]), total_steps, cfg), cfg.clip,
                                            int(pos["step"]))
                pos["batch"] += 1
                pos["step"] += 1
                consistent = True
                run_loss += loss * n_valid
                run_n += n_valid
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", epoch=pos["epoch"])
                if cfg.eval_every and pos["step"] % cfg.eval_every == 0:
                    do_eval(pos["epoch"] + pos["batch"] / len(batches), run_loss / max(run_n, 1))
                    run_loss, run_n = 0.0, 0
                    _save(lm, opt, cfg, pos)
                    model.train()
            if pos["batch"] >= len(batches):
                pos["epoch"] += 1
                pos["batch"] = 0
                if not (cfg.eval_every and pos["step"] % cfg.eval_every == 0):
                    do_eval(float(pos["epoch"]), run_loss / max(run_n, 1))
                    run_loss, run_n = 0.0, 0
                    _save(lm, opt, cfg, pos)
                    model.train()
    except KeyboardInterrupt:
        bar.close()
        if consistent:  # between steps: save exactly where we are (resuming gives the uninterrupted result)
            _save(lm, opt, cfg, pos)
        raise
    bar.close()
    if pos["step"] > start_step and (not history or history[-1]["step"] != pos["step"]):
        do_eval(pos["epoch"] + pos["batch"] / max(n_batches, 1), run_loss / max(run_n, 1))
    _save(lm, opt, cfg, pos)
    model.eval()
    last = history[-1].get("dev_ppl") if history else None
    return TrainResult(out, int(pos["step"]), pos["epoch"] + pos["batch"] / max(n_batches, 1), last, history,
                       start_step)
