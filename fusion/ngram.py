"""KenLM n-gram LMs: the adapter (log10 -> ln at the boundary) and ``build_ngram`` around ``lmplz``.

Word-level and token-level models are the same code: a token-level n-gram is one trained on
sentencepiece pieces (as ESPnet does), and declares the tokenizer's identity as its units.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import kenlm
import numpy as np

from fusion.abilities import LMSpec
from fusion.errors import InputError, LMFusionError
from fusion.io import atomic_write_lines, iter_text_lines
from fusion.lm import LanguageModel, SentenceScore, State
from fusion.tokenizers import SentencePieceTokenizer, Tokenizer, WordTokenizer

LN10 = math.log(10.0)
"""Multiply a log10 score by this to get natural log."""

SENTENCE_MARKERS = ("<s>", "</s>")
BINARY_MAGIC = b"mmap lm "


def _check_lm_file(path: Path) -> str:
    """Return ``"arpa"`` or ``"binary"``, or raise a located error for anything else.

    ARPA files may be gzip-compressed (``.arpa.gz``) and may start with blank lines and comment lines
    (``#`` first) before ``\\data\\``, as KenLM accepts; other text before it is refused, as by KenLM.
    """
    import gzip

    if not path.exists():
        raise InputError("language model file not found", path=path)
    if not path.is_file():
        raise InputError("language model path is not a file", path=path)
    with path.open("rb") as f:
        head = f.read(65536)
    if head.startswith(BINARY_MAGIC):
        return "binary"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(65536)
        except (OSError, EOFError) as e:
            raise InputError(f"damaged gzip file ({e})", path=path) from None
    if not head.strip():
        raise InputError("language model file is empty", path=path)
    lines = head.decode("utf-8", errors="replace").splitlines()
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s == "\\data\\":
            return "arpa"
        raise InputError(
            f"not an ARPA file (expected '\\data\\' after any '#' comment lines, found {s[:60]!r}) "
            "nor a KenLM binary",
            path=path,
            line=lineno,
        )
    raise InputError("not an ARPA file (no '\\data\\' line in its first 64 KiB) nor a KenLM binary", path=path)


def read_arpa_vocab(path: str | Path) -> frozenset[str]:
    """The unigrams of an ARPA file, without ``<s>`` and ``</s>``."""
    path = Path(path)
    words: list[str] = []
    in_unigrams = False
    for lineno, line in iter_text_lines(path):
        s = line.strip()
        if s == "\\1-grams:":
            in_unigrams = True
            continue
        if in_unigrams:
            if not s:
                continue
            if s.startswith("\\"):
                break
            parts = s.split("\t")
            if len(parts) < 2:
                raise InputError("malformed 1-gram entry (expected 'logprob<TAB>word')", path=path, line=lineno)
            words.append(parts[1])
    if not words:
        raise InputError("no \\1-grams: section", path=path)
    return frozenset(w for w in words if w not in SENTENCE_MARKERS)


def checksum_sidecar(path: str | Path) -> Path:
    """Where ``build_ngram`` writes the model's SHA-256 (``sha256sum`` format, so ``sha256sum -c`` works)."""
    return Path(f"{path}.sha256")


def file_sha256(path: str | Path) -> str:
    import hashlib

    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_checksum(path: str | Path) -> None:
    """Write ``path``'s SHA-256 beside it (atomically)."""
    atomic_write_lines(checksum_sidecar(path), [f"{file_sha256(path)}  {Path(path).name}"])


KENLM_MAX_ORDER = 6
_BINARY_MODEL_TYPES = range(0, 6)  # PROBING, REST_PROBING, TRIE, QUANT_TRIE, ARRAY_TRIE, QUANT_ARRAY_TRIE


def verify_lm_file(path: Path, kind: str) -> None:
    """Check a model file before KenLM opens it: KenLM maps a binary into memory and trusts it, so a
    corrupted one crashes the process (a segfault) instead of raising.

    * With a checksum sidecar (``build_ngram`` writes one), the file must match it.
    * A binary without one gets header checks: KenLM's sanity block, a known model type, an order KenLM
      supports, and n-gram counts that fit in the file. Damage past the header is only caught by the
      checksum: keep the sidecar beside models you copy.
    """
    side = checksum_sidecar(path)
    if side.is_file():
        try:
            want = side.read_text(encoding="utf-8").split()[0].lower()
        except (UnicodeDecodeError, IndexError, OSError):
            raise InputError("unreadable checksum file", path=side) from None
        if file_sha256(path) != want:
            raise InputError(
                f"the model does not match its checksum in {side.name}: the file is damaged or was changed "
                "after it was built (rebuild it, or delete the .sha256 file if the change is intended)",
                path=path,
            )
        return
    if kind == "binary":
        _check_binary_header(path)


def _check_binary_header(path: Path) -> None:
    import struct

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(256)
    # KenLM's Sanity block: NUL-padded magic (56 bytes), 3 floats, 2 word indices, one uint64 (at 80);
    # then FixedWidthParameters (order at 88, model type at 96) and the n-gram counts (uint64, at 108)
    if len(head) < 120:
        raise InputError("KenLM binary is truncated (shorter than its header)", path=path)
    magic_end = head.find(b"\0")
    if not head.startswith(BINARY_MAGIC) or not 0 < magic_end <= 56:
        raise InputError("KenLM binary header is damaged (magic)", path=path)
    zero_f, one_f, minus_half_f, one_idx = struct.unpack_from("<fffI", head, 56)
    (one_u64,) = struct.unpack_from("<Q", head, 80)
    if (zero_f, one_f, minus_half_f, one_idx, one_u64) != (0.0, 1.0, -0.5, 1, 1):
        raise InputError("KenLM binary header is damaged (sanity values), or it was built on another "
                         "architecture", path=path)
    (order,) = struct.unpack_from("<B", head, 88)
    (model_type,) = struct.unpack_from("<I", head, 96)
    if not 1 <= order <= KENLM_MAX_ORDER or model_type not in _BINARY_MODEL_TYPES:
        raise InputError(f"KenLM binary header is damaged (order {order}, model type {model_type})", path=path)
    counts = struct.unpack_from(f"<{order}Q", head, 108)
    if counts[0] < 1 or any(c > size for c in counts):
        raise InputError(f"KenLM binary header is damaged (n-gram counts {list(counts)} for a {size}-byte file)",
                         path=path)


def arpa_beside(path: str | Path) -> Path:
    """Where :func:`build_ngram` (``keep_arpa=True``) keeps the ARPA text of a binary model."""
    return Path(f"{path}.arpa")


def vocab_sidecar(path: str | Path) -> Path:
    """Where ``build_ngram`` writes a binary model's vocabulary (one word per line)."""
    return Path(f"{path}.vocab")


class KenLM(LanguageModel):
    """A KenLM model (ARPA or binary) as a :class:`LanguageModel`.

    States are ``kenlm.State`` values, never mutated after creation (hashable, so callers can cache on
    them). Scores of ``(state, unit)`` pairs are memoised in a bounded cache.

    Args:
        path: ARPA or KenLM binary file.
        tokenizer: what the model's units are; whitespace words by default. Pass a
            :class:`~fusion.tokenizers.SentencePieceTokenizer` for an n-gram over pieces.
        name: a short name for reports and weights (default: the file stem).
        cache_size: most ``(state, unit)`` entries memoised before the cache is cleared.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        tokenizer: Tokenizer | None = None,
        name: str | None = None,
        cache_size: int = 1_000_000,
    ) -> None:
        self.path = Path(path)
        self.format = _check_lm_file(self.path)
        verify_lm_file(self.path, self.format)
        self.tokenizer: Tokenizer = tokenizer or WordTokenizer()
        super().__init__(name or self.path.name.split(".")[0], self.tokenizer.units)
        try:
            self.model = kenlm.Model(str(self.path))
        except (OSError, RuntimeError, Exception) as e:  # kenlm raises OSError with a long message
            msg = str(e).strip().splitlines()
            raise InputError(f"KenLM could not load it: {msg[-1] if msg else e}", path=self.path) from None
        self.order: int = int(self.model.order)
        self._cache: dict[tuple[State, str], tuple[float, State]] = {}
        self._cache_size = cache_size
        self._begin = kenlm.State()
        self.model.BeginSentenceWrite(self._begin)
        self._vocab: frozenset[str] | None = None
        self._vocab_loaded = False

    # -- core ------------------------------------------------------------------------------
    def begin(self) -> State:
        return self._begin

    def score(self, state: State, unit: str) -> tuple[float, State]:
        key = (state, unit)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        out = kenlm.State()
        lp = self.model.BaseScore(state, unit, out) * LN10
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        res = (lp, out)
        self._cache[key] = res
        return res

    def end(self, state: State) -> float:
        return self.score(state, "</s>")[0]

    # -- vocabulary --------------------------------------------------------------------------
    @property
    def vocab(self) -> frozenset[str] | None:
        if not self._vocab_loaded:
            self._vocab_loaded = True
            if self.format == "arpa":
                self._vocab = read_arpa_vocab(self.path)
            elif vocab_sidecar(self.path).is_file():
                self._vocab = frozenset(
                    line for _, line in iter_text_lines(vocab_sidecar(self.path)) if line
                )
        return self._vocab

    def is_oov(self, unit: str) -> bool:
        return unit not in self.model

    def unknown_unit(self) -> str:
        """KenLM scores every out-of-vocabulary unit as ``<unk>`` (:class:`~fusion.abilities.UnknownWordsAlike`)."""
        return "<unk>"

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text)

    # -- sentences: KenLM's own C++ loop ------------------------------------------------------
    def score_sentence(self, units: Sequence[str], *, eos: bool = True) -> SentenceScore:
        full = list(self.model.full_scores(" ".join(units), bos=True, eos=eos))
        if len(full) != len(units) + int(eos):
            bad = [u for u in units if not u or u.split() != [u]]
            raise LMFusionError(f"{self.name}: units {bad!r} are empty or contain whitespace")
        lps = np.array([f[0] for f in full], dtype=np.float64) * LN10
        oov = tuple([f[2] for f in full[: len(units)]])
        self.oov_seen += sum(oov)
        return SentenceScore(tuple(units), lps, oov)

    def sentence_logprob(self, units: Sequence[str] | str, bos: bool = True, eos: bool = True) -> float:
        """Total ``ln P`` of a sentence (units or a space-joined string): the fastest single-sentence path."""
        if units.__class__ is not str:
            units = " ".join(units)
        return self.model.score(units, bos, eos) * LN10

    def sentence_logprobs(self, texts: Sequence[str], bos: bool = True, eos: bool = True) -> np.ndarray:
        """Total ``ln P`` of many space-joined sentences, in one loop over KenLM's C++ scorer."""
        score = self.model.score
        return np.fromiter((score(t, bos, eos) for t in texts), dtype=np.float64, count=len(texts)) * LN10

    def clear_cache(self) -> None:
        self._cache.clear()

    def arpa_path(self) -> Path | None:
        """The ARPA holding this model: the file itself, or the ARPA kept beside a binary; ``None`` without one
        (:class:`~fusion.abilities.ArpaBacked`). A compiled search reads it into n-gram arrays whose scores
        equal this adapter's bit for bit."""
        if self.format == "arpa":
            return self.path
        beside = arpa_beside(self.path)
        return beside if beside.is_file() else None

    def spec(self) -> LMSpec:
        """The model file and tokenizer this LM was opened from (:class:`~fusion.abilities.Reloadable`).

        Raises:
            LMFusionError: the tokenizer is neither whitespace words nor a sentencepiece model file.
        """
        tok = self.tokenizer
        if isinstance(tok, WordTokenizer):
            tok_path = None
        elif isinstance(tok, SentencePieceTokenizer):
            tok_path = str(tok.path)
        else:
            raise LMFusionError(f"KenLM {self.name!r}: tokenizer {type(tok).__name__} cannot be reopened from a file")
        return LMSpec(name=self.name, path=str(self.path), tokenizer=tok_path, kind="kenlm")


# ----------------------------------------------------------------------------------------------
# Building n-grams with lmplz
# ----------------------------------------------------------------------------------------------
def find_kenlm_binary(name: str) -> str:
    """Locate ``lmplz`` / ``build_binary``: beside the running Python first, then on ``PATH``."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    raise LMFusionError(
        f"KenLM's {name} was not found beside {sys.executable} nor on PATH; run `make setup`, "
        "which builds it from the kenlm sdist"
    )


def _write_training_text(
    text_files: Sequence[str | Path], out, tokenizer: Tokenizer | None, progress: bool
) -> int:
    """Stream the training text into ``out`` (bytes), validated and optionally tokenized."""
    from fusion.progress import progress_bar

    n = 0
    total = sum(Path(f).stat().st_size for f in text_files if Path(f).is_file())
    with progress_bar(total=total, unit="B", unit_scale=True, desc="lmplz input", progress=progress) as bar:
        for f in text_files:
            for lineno, line in iter_text_lines(f):
                bar.update(len(line.encode("utf-8")) + 1)
                units = tokenizer.encode(line) if tokenizer is not None else line.split()
                if not units:
                    continue
                for marker in (*SENTENCE_MARKERS, "<unk>"):
                    if marker in units:
                        raise InputError(
                            f"training text contains the reserved token {marker!r}", path=f, line=lineno
                        )
                out.write((" ".join(units) + "\n").encode("utf-8"))
                n += 1
    return n


def _run_lmplz(
    cmd: Sequence[str], files: Sequence[str | Path], tokenizer: Tokenizer | None, log: Path, progress: bool
) -> None:
    """Run ``lmplz`` with the training text streamed into its stdin; raise with its log's tail on failure."""
    with log.open("wb") as logf:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT)
        assert proc.stdin is not None
        try:
            n = _write_training_text(files, proc.stdin, tokenizer, progress)
        except BrokenPipeError:
            n = -1
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        rc = proc.wait()
    if rc != 0 or n == 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-8:])
        why = "the training text has no sentences" if n == 0 else f"lmplz exited {rc}"
        raise LMFusionError(f"build_ngram({', '.join(map(str, files))}): {why}\n{tail}")


def _build_binary(arpa: Path, out: Path, memory: str, binary_type: str) -> Path:
    """KenLM's ``build_binary`` from ``arpa`` to ``out``."""
    res = subprocess.run(
        [find_kenlm_binary("build_binary"), "-S", memory, binary_type, str(arpa), str(out)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise LMFusionError(f"build_binary failed: {res.stderr.strip()[-800:]}")
    return out


def build_ngram(
    text_files: Sequence[str | Path] | str | Path,
    output: str | Path,
    *,
    order: int = 3,
    memory: str = "20%",
    discount_fallback: bool = True,
    prune: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    binary: bool | None = None,
    binary_type: str = "probing",
    keep_arpa: bool = True,
    temp_dir: str | Path | None = None,
    progress: bool = True,
    extra_args: Sequence[str] = (),
) -> Path:
    """Train an n-gram with KenLM's ``lmplz``; write ARPA, or a KenLM binary via ``build_binary``.

    Args:
        text_files: plain UTF-8 text, one sentence per line.
        output: the model to write. A ``.arpa`` suffix writes ARPA; anything else (``.bin``,
            ``.binary``, ``.klm``) writes a KenLM binary, unless ``binary`` says otherwise.
        order: n-gram order.
        memory: ``lmplz -S``, the sorting memory cap (``"20%"``, ``"1G"``).
        discount_fallback: pass ``--discount_fallback`` (needed for tiny or unusual data).
        prune: ``--prune`` counts per order (e.g. ``[0, 1, 1]``).
        tokenizer: tokenize the text first (e.g. a sentencepiece model for a token-level LM).
        binary_type: ``probing`` (fastest) or ``trie`` (smallest).
        keep_arpa: with a binary output, also keep the ARPA text beside it (``<output>.arpa``, default),
            which :func:`fusion.ngram_arrays.load_ngram_arrays` reads (KenLM binaries cannot be read back)
            so the CTC decoder can score the model inside its compiled search; ``False`` saves the disk
            space and leaves that model on the slower Python LM path (the decoder warns).

    Returns:
        The path written. Writes are atomic; a vocabulary sidecar ``<output>.vocab`` is written too.
    """
    files = [text_files] if isinstance(text_files, (str, Path)) else list(text_files)
    if not files:
        raise LMFusionError("build_ngram: no training text files given")
    for f in files:
        if not Path(f).is_file():
            raise InputError("training text not found", path=f)
    if order < 1:
        raise LMFusionError(f"build_ngram: order must be >= 1, got {order}")
    from fusion.io import check_output_path

    output = check_output_path(output, inputs=files, what="model output")
    want_binary = (output.suffix != ".arpa") if binary is None else binary
    if want_binary and keep_arpa:
        check_output_path(arpa_beside(output), inputs=files, what="ARPA kept beside the binary")
    output.parent.mkdir(parents=True, exist_ok=True)
    lmplz = find_kenlm_binary("lmplz")

    cmd = [lmplz, "-o", str(order), "-S", memory]
    if discount_fallback:
        cmd.append("--discount_fallback")
    if prune:
        cmd += ["--prune", *map(str, prune)]
    cmd += list(extra_args)
    with tempfile.TemporaryDirectory(dir=temp_dir or output.parent, prefix=".lmplz-") as tmp:
        tmpdir = Path(tmp)
        arpa = tmpdir / "model.arpa"
        _run_lmplz([*cmd, "-T", str(tmpdir), "--arpa", str(arpa)], files, tokenizer, tmpdir / "lmplz.log", progress)
        vocab = read_arpa_vocab(arpa)
        out_tmp = _build_binary(arpa, tmpdir / "model.bin", memory, binary_type) if want_binary else arpa
        if want_binary and keep_arpa:
            os.replace(arpa, arpa_beside(output))
        os.replace(out_tmp, output)  # the temp dir sits beside the output: same filesystem, atomic
    atomic_write_lines(vocab_sidecar(output), sorted(vocab))
    write_checksum(output)
    return output

