"""The MT recipe's training loop end to end: a tiny model overfits a few pairs and decodes them back.

A regression test for the whole chain (vocabulary ids, target shifting, pad/eos, label masking, saving and
loading, lmfusion's beam search and ``generate()``, detokenisation): a working chain reproduces its training
pairs; a broken one (a shifted label, an id collision, a lost decoder-start token) does not.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("sacrebleu")

ES = "uno dos tres cuatro cinco seis siete ocho nueve diez casa perro gato sol luna agua".split()
EN = "one two three four five six seven eight nine ten house dog cat sun moon water".split()


def _data(d: Path, n: int = 24, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        idx = [rng.randrange(len(ES)) for _ in range(rng.randint(3, 6))]
        src.append(" ".join(ES[i] for i in idx))
        tgt.append(" ".join(EN[i] for i in reversed(idx)))  # reversed: the decoder must attend to the source
    for split in ("train", "dev"):
        (d / f"{split}.es").write_text("".join(s + "\n" for s in src), encoding="utf-8")
        (d / f"{split}.en").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")
    return src, tgt


def _train(data: Path, out: Path, *extra: str) -> None:
    from recipes.mt.train import main

    main([str(data), str(out), "--train", "train", "--dev", "dev", "--src-ext", "es", "--tgt-ext", "en",
          "--shared-vocab", "--vocab-size", "60", "--d-model", "64", "--layers", "1", "--heads", "2", "--ffn", "128",
          "--lr", "3e-3", "--warmup", "30", "--label-smoothing", "0", "--dropout", "0", "--threads", "1",
          "--eval-every", "50", *extra])


@pytest.mark.slow
def test_tiny_model_overfits_and_decodes_its_training_pairs(tmp_path: Path) -> None:
    import sacrebleu
    import torch

    from recipes.mt.evaluate import best_texts, decode, generate_texts
    from recipes.mt.model import load_model

    torch.manual_seed(0)
    src, tgt = _data(tmp_path)
    _train(tmp_path, tmp_path / "m", "--max-steps", "300")
    model, vocabs = load_model(tmp_path / "m")
    assert vocabs.shared and model.config.share_encoder_decoder_embeddings
    hyps = best_texts(decode(model, vocabs, src, tgt, [], {"am": 1.0}, 2, 8, "t", 1.0))
    gen, _ = generate_texts(model, vocabs, src, None, {}, 2, 8)
    assert sacrebleu.corpus_bleu(hyps, [tgt]).score > 80, list(zip(hyps, tgt, strict=True))[:5]
    assert sacrebleu.corpus_bleu(gen, [tgt]).score > 80, list(zip(gen, tgt, strict=True))[:5]


def test_resume_continues_the_step_count_and_schedule(tmp_path: Path) -> None:
    from fusion.io import read_json

    _data(tmp_path, n=8)
    out = tmp_path / "m"
    _train(tmp_path, out, "--max-steps", "4", "--eval-every", "2")
    assert read_json(out / "last" / "state.json")["step"] == 4
    _train(tmp_path, out, "--max-steps", "7", "--eval-every", "2", "--resume")
    info = read_json(out / "train-info.json")
    assert read_json(out / "last" / "state.json")["step"] == 7
    assert [r["steps"] for r in info["runs"]] == [4, 3]


def test_special_ids_never_collide_with_source_pieces(tmp_path: Path) -> None:
    from fusion.tokenizers import train_sentencepiece
    from recipes.mt.model import Vocabs
    from recipes.mt.train import collate

    _data(tmp_path, n=24)
    big = train_sentencepiece([tmp_path / "train.es"], tmp_path / "src", vocab_size=70)
    small = train_sentencepiece([tmp_path / "train.en"], tmp_path / "tgt", vocab_size=40, model_type="char")
    v = Vocabs(big, small)
    assert len(big) > len(small)
    assert v.eos_id >= len(big) and v.pad_id > v.eos_id and v.tgt_size == v.src_size == v.pad_id + 1
    assert not v.shared
    pairs = [(v.encode_src("uno dos"), v.encode_tgt("two one")), (v.encode_src("sol"), v.encode_tgt("sun"))]
    x, a, di, y = collate(pairs, [0, 1], v.pad_id, v.eos_id)
    for b, (s, t) in enumerate(pairs):
        assert x[b, : len(s)].tolist() == s and int(a[b].sum()) == len(s)
        assert y[b, : len(t)].tolist() == t and t[-1] == v.eos_id
        assert (y[b, len(t):] == -100).all()
        assert di[b, 0] == v.pad_id and di[b, 1 : len(t)].tolist() == t[:-1]
    assert v.decode_tgt(v.encode_tgt("two one")) == "two one"


def test_a_model_of_other_vocabularies_is_refused(tmp_path: Path) -> None:
    from transformers import MarianMTModel

    from fusion.errors import InputError
    from fusion.tokenizers import train_sentencepiece
    from recipes.mt.model import Vocabs, check_model_vocabs, marian_config

    _data(tmp_path, n=24)
    spm = train_sentencepiece([tmp_path / "train.es", tmp_path / "train.en"], tmp_path / "s", vocab_size=60)
    other = train_sentencepiece([tmp_path / "train.en"], tmp_path / "o", vocab_size=30)
    model = MarianMTModel(marian_config(Vocabs(spm, spm), d_model=16, layers=1, heads=2, ffn=32))
    check_model_vocabs(model, Vocabs(spm, spm))
    with pytest.raises(InputError, match="other sentencepiece"):
        check_model_vocabs(model, Vocabs(other, other))


def test_a_fresh_run_refuses_a_directory_with_weights(tmp_path: Path) -> None:
    from fusion.errors import InputError

    _data(tmp_path, n=8)
    out = tmp_path / "m"
    _train(tmp_path, out, "--max-steps", "2", "--eval-every", "2")
    spm_before = (out / "spm.model").read_bytes()
    with pytest.raises(InputError, match="--resume"):
        _train(tmp_path, out, "--max-steps", "2", "--vocab-size", "40")
    assert (out / "spm.model").read_bytes() == spm_before


def test_grid_option_parses_and_names_bad_items() -> None:
    from fusion.errors import InputError
    from recipes.mt.evaluate import parse_grid

    assert parse_grid(["ngram=0.2,0.4", "words=1"]) == {"ngram": (0.2, 0.4), "words": (1.0,)}
    with pytest.raises(InputError, match="bogus"):
        parse_grid(["bogus=1"])
    with pytest.raises(InputError, match="numbers"):
        parse_grid(["ngram=a"])
