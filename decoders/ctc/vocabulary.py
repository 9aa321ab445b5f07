"""The decoder's labels and words: what each label does to the text, and the lexicon glue.

* :class:`CTCVocab` — labels, blank, word delimiter (character vocabularies) or ``▁`` word starts
  (sentencepiece vocabularies);
* :class:`WordTables` — the known words (lexicon), the token trie over them and the per-label arrays
  the search's hot loops read;
* :func:`lookahead_table` and :func:`partial_scores` — the ranking-only score of an open word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from decoders.ctc.kernels import TEXT_P
from decoders.lexicon import DEAD, Lexicon, TokenTrie

if TYPE_CHECKING:
    from decoders.ctc.triecsr import TrieCSR
from fusion.errors import LMFusionError
from fusion.lm import LanguageModel

SPM_BOUNDARY = "\u2581"
"""sentencepiece's word-start marker ``▁``."""


@dataclass(frozen=True)
class CTCVocab:
    """The decoder's labels and what each one does to the text.

    Attributes:
        labels: one label per output index of the acoustic model.
        blank: the blank index.
        kind: ``"char"`` (characters, words split by ``word_delimiter``) or ``"spm"``
            (sentencepiece pieces; ``▁`` starts a word).
        word_delimiter: the delimiter label in a character vocabulary (``None``: no words).
        completes: per label, whether emitting it completes the open word.
        text: per label, the characters it appends to the (new) open word.
    """

    labels: tuple[str, ...]
    blank: int
    kind: str
    word_delimiter: str | None
    completes: tuple[bool, ...] = field(repr=False)
    text: tuple[str, ...] = field(repr=False)

    @classmethod
    def from_labels(
        cls, labels: Sequence[str], *, blank: int = 0, word_delimiter: str | None = None
    ) -> CTCVocab:
        """Recognise a character vocabulary (delimiter ``" "`` or ``"|"``) or a sentencepiece one.

        Raises:
            LMFusionError: no labels, duplicates, a blank index out of range, or a delimiter that
                is not a label.
        """
        labels = tuple(str(x) for x in labels)
        if not labels:
            raise LMFusionError("CTC vocabulary is empty")
        if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank < len(labels):
            raise LMFusionError(f"blank index {blank!r} is out of range for a vocabulary of {len(labels)} labels")
        blank = int(blank)
        seen: dict[str, int] = {}
        for i, lab in enumerate(labels):
            if i == blank:
                continue
            if lab in seen:
                raise LMFusionError(f"CTC vocabulary has label {lab!r} twice (indices {seen[lab]} and {i})")
            seen[lab] = i
        others = [lab for i, lab in enumerate(labels) if i != blank]
        if word_delimiter is None and any(lab.startswith(SPM_BOUNDARY) for lab in others):
            completes = tuple(i != blank and lab.startswith(SPM_BOUNDARY) for i, lab in enumerate(labels))
            text = tuple(
                "" if i == blank else (lab[1:] if lab.startswith(SPM_BOUNDARY) else lab) for i, lab in enumerate(labels)
            )
            return cls(labels, blank, "spm", None, completes, text)
        if word_delimiter is None:
            word_delimiter = " " if " " in others else ("|" if "|" in others else None)
        elif word_delimiter not in others:
            raise LMFusionError(f"word delimiter {word_delimiter!r} is not a label of the vocabulary")
        completes = tuple(i != blank and lab == word_delimiter for i, lab in enumerate(labels))
        text = tuple("" if (i == blank or lab == word_delimiter) else lab for i, lab in enumerate(labels))
        return cls(labels, blank, "char", word_delimiter, completes, text)

    def __len__(self) -> int:
        return len(self.labels)

    def words_of(self, tokens: Sequence[int]) -> list[tuple[str, int]]:
        """Split a token sequence into ``(word, index of its first token)`` pairs."""
        words: list[tuple[str, int]] = []
        cur: list[str] = []
        start = -1
        for i, t in enumerate(tokens):
            if self.completes[t]:
                if cur:
                    words.append(("".join(cur), start))
                cur = []
                start = -1
            if self.text[t]:
                if not cur:
                    start = i
                cur.append(self.text[t])
        if cur:
            words.append(("".join(cur), start))
        return words


def known_words(
    lexicon: Iterable[str] | Lexicon | None, word_lms: Sequence[LanguageModel]
) -> Lexicon | None:
    """The lexicon: the given words, else the union of the word LMs' vocabularies (``None`` when an LM
    cannot list its vocabulary, or there is no word LM)."""
    if isinstance(lexicon, Lexicon):
        return lexicon
    if lexicon is not None:
        return Lexicon(lexicon)
    vocabs = [m.vocab for m in word_lms]
    if not vocabs or any(v is None for v in vocabs):
        return None
    return Lexicon(frozenset().union(*vocabs))  # type: ignore[arg-type]


class WordTables:
    """The lexicon, its token trie, and the per-label arrays of the search's hot loops.

    Attributes:
        completes: per label, whether it completes the open word.
        pure_delim: per label, a delimiter that adds no text (``" "``, ``"|"``).
        toklen: per label, the number of characters it adds.
        start_trie: per completing label, the trie node of the new word it starts.
    """

    def __init__(self, vocab: CTCVocab, lexicon: Lexicon | None) -> None:
        self.lexicon = lexicon
        self.trie = TokenTrie(lexicon, vocab.text) if lexicon is not None else None
        V = len(vocab)
        self.completes = np.array(vocab.completes, dtype=bool)
        self.pure_delim = np.array([c and not t for c, t in zip(vocab.completes, vocab.text, strict=True)])
        self.toklen = np.array([len(t) for t in vocab.text], dtype=np.int32)
        self.start_trie = np.zeros(V, np.int32)
        if self.trie is not None:
            self.start_trie = np.array([self.trie.step_one(0, v) for v in range(V)], np.int32)
        self.start_trie[~self.completes] = 0  # unused for non-completing labels
        self.start_trie[self.pure_delim] = 0
        self.has_pure_delim = bool(self.pure_delim.any())
        self.has_completing_text = any(c and t for c, t in zip(vocab.completes, vocab.text, strict=True))
        self._csr: TrieCSR | None = None
        self._text_hash: tuple[np.ndarray, np.ndarray] | None = None
        self._kernel: SimpleNamespace | None = None

    def kernel_tables(self) -> SimpleNamespace:
        """What every compiled search reads, built once: ``trie_csr`` (the CSR trie's arrays or ``None``),
        ``terminal``, and ``toklen64`` / ``start64`` (int64 copies of :attr:`toklen` / :attr:`start_trie`)."""
        if self._kernel is None:
            csr = self.csr()
            self._kernel = SimpleNamespace(
                trie_csr=(csr.ptr, csr.tok, csr.nxt, csr.empty) if csr is not None else None,
                terminal=self.lexicon.terminal if self.lexicon is not None else np.zeros(1, bool),
                toklen64=self.toklen.astype(np.int64), start64=self.start_trie.astype(np.int64))
        return self._kernel

    def text_hash_tables(self, texts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Per label, its text's polynomial hash and power (:func:`text_hash_tables`), built once."""
        if self._text_hash is None:
            self._text_hash = text_hash_tables(texts)
        return self._text_hash

    @property
    def dense(self) -> bool:
        """Whether the trie has a dense ``[node, label]`` table (the numpy search's fast step)."""
        return self.trie is None or self.trie.fits_dense

    def csr(self) -> TrieCSR | None:
        """The trie's token transitions as sparse arrays (what the compiled search reads; any vocabulary size),
        built once; ``None`` without a lexicon."""
        if self.lexicon is None or self.trie is None:
            return None
        if self._csr is None:
            from decoders.ctc.triecsr import build_csr

            self._csr = build_csr(self.lexicon, self.trie.token_text)
        return self._csr


def lookahead_table(
    lexicon: Lexicon | None, word_lms: Sequence[LanguageModel], w_word_lms: Sequence[float], enabled: bool
) -> np.ndarray:
    """Per trie node, the look-ahead score of an open word at it: the best weighted word-LM score (from
    the sentence start) of the known words below it; all zero when not ``enabled``."""
    if lexicon is None:
        return np.zeros(1)
    if not enabled or not word_lms:
        return np.zeros(lexicon.n_nodes)
    words = list(lexicon.words)
    total = np.zeros(len(words))
    for lm, w in zip(word_lms, w_word_lms, strict=True):
        lps, _ = lm.score_batch([lm.begin()], words)
        total += w * np.asarray(lps[0], dtype=np.float64)
    return lexicon.smear_max(dict(zip(words, total.tolist(), strict=True)))


def partial_scores(
    look: np.ndarray, trie_node: np.ndarray, wlen: np.ndarray, unk_score: float, unk_avg_len: int
) -> np.ndarray:
    """Ranking-only score of open words: the look-ahead while they can still become a known word (0
    without look-ahead), the unknown-prefix penalty (growing past ``unk_avg_len`` characters) once they
    cannot."""
    scale = np.maximum(1.0, wlen / unk_avg_len)
    alive = trie_node != DEAD
    la = np.where(alive & (wlen > 0), look[np.where(alive, trie_node, 0)], 0.0)
    return np.where(~alive & (wlen > 0), unk_score * scale, la)


def text_hash_tables(texts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per label, its text as a polynomial hash and ``P ** len(text)`` (uint64, wrapping): for
    :func:`decoders.ctc.scan.text_hashes`."""
    p = TEXT_P
    mask = (1 << 64) - 1
    h = np.zeros(len(texts), np.uint64)
    pw = np.ones(len(texts), np.uint64)
    for i, s in enumerate(texts):
        a, b = 0, 1
        for ch in reversed(s):
            a = (a + (ord(ch) + 2) * b) & mask
            b = (b * p) & mask
        h[i], pw[i] = a, b
    return h, pw
