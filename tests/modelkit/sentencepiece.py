"""A tiny ALBERT-style embedding model whose only tokenizer is a SentencePiece model.

The SentencePiece model is trained here (sentencepiece's trainer) on generated text; the
random-weight AlbertModel is saved with transformers and exported by onnxg's optimum
backend, which also converts the tokenizer to ``tokenizer.json`` and keeps it only if it
encodes exactly like SentencePiece (leading ``▁`` included).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

SPEC = {"vocab": 200, "hidden": 32, "layers": 2, "seed": 1}
WORDS = (
    "the a of and to in is was for on that with as by at from his her they we you it this which be are "
    "city river music paper window garden engine market doctor winter summer language computer story "
    "house water light night morning letter island mountain table school friend number system "
    "run walk read write build open close speak think grow carry bring hold learn teach sing "
    "quick slow bright dark green blue old new small large happy quiet early late "
    "Paris Berlin Tokyo Lisbon Oslo café naïve über résumé"
).split()


def corpus(lines: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(lines)]


def train(path: Path) -> None:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=model, vocab_size=SPEC["vocab"], model_type="unigram",
        character_coverage=1.0, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"], hard_vocab_limit=False, minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def build_source(folder: Path) -> None:
    import torch
    from transformers import AlbertConfig, AlbertModel

    import sentencepiece as spm

    train(folder / "spiece.model")
    size = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model")).GetPieceSize()
    torch.manual_seed(SPEC["seed"])
    config = AlbertConfig(vocab_size=size, embedding_size=16, hidden_size=SPEC["hidden"],
                          num_hidden_layers=SPEC["layers"], num_attention_heads=2, intermediate_size=64,
                          max_position_embeddings=128, pad_token_id=0)
    AlbertModel(config).eval().save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "AlbertTokenizer", "do_lower_case": False, "keep_accents": True,
        "remove_space": True, "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>",
        "sep_token": "[SEP]", "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]",
        "model_max_length": 128,
    }))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
        "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]",
    }))


def build_model(folder: Path) -> None:
    """Source and export side by side: ``source/`` (HF folder) and ``model/`` (onnxg)."""
    from modelkit.embed import export

    source, model = folder / "source", folder / "model"
    source.mkdir()
    build_source(source)
    model.mkdir()
    export(source, model, "fp32")
