"""Tiny random-weight chat models of each tool-call family, built with the family's real
tokenizer and chat template (tests/modelkit/tool_families.py) and converted to int4 for the CPU
by onnxg's genai backend (cached). Random weights give random logits: exactly what a test of
the call syntax and the grammar needs, through the real runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

from modelkit import cache
from modelkit.chat import SEED, genai_build
from modelkit.chat_families import FAMILIES as ARCH_CONFIGS
from modelkit.tool_families import family_tokenizer

ARCHITECTURES = {
    "qwen2.5": "Qwen2ForCausalLM",
    "llama3.2": "LlamaForCausalLM",
    "mistral-nemo": "MistralForCausalLM",
    "phi3.5": "Phi3ForCausalLM",
    "granite3.3": "GraniteForCausalLM",
}


def _save_hf(folder: Path, family: str) -> None:
    import torch
    import transformers

    tokenizer_dir = family_tokenizer(family)
    for item in tokenizer_dir.iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, folder / item.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    architecture = ARCHITECTURES[family]
    config_class = getattr(transformers, architecture.replace("ForCausalLM", "Config"))
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    config = config_class(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                          pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
                          **{"tie_word_embeddings": False, **ARCH_CONFIGS[architecture]})
    torch.manual_seed(SEED)
    getattr(transformers, architecture)(config).eval().save_pretrained(str(folder))


def family_model(family: str) -> Path:
    """The int4 CPU genai folder of ``family``'s tiny model."""
    tokenizer = family_tokenizer(family)
    source = cache.cached(f"tool-hf-{family}", {"tokenizer": tokenizer.name, "arch": ARCHITECTURES[family],
                                                "seed": SEED}, lambda folder: _save_hf(folder, family))
    name = f"tool-genai-{family}"
    return cache.cached(name, {"source": source.name}, lambda folder: genai_build(source, folder, name))
