"""Random-weight Llama folders of a chosen size, written tensor by tensor (never the whole model
in memory), in bfloat16 safetensors shards with the real SmolLM2 tokenizer.

``write_llama`` builds the model skeleton on the ``meta`` device only to learn its tensor
names and shapes; each tensor is then drawn (fixed seed, normal(0, 0.02), norms at 1) and
written to a shard of at most ``shard_bytes``, with the usual ``model.safetensors.index.json``.
So a 3B source costs a shard of memory to make, not 6 GB.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    # ~0.36B: the memory-limit test's model (a few hundred MB of bf16 weights).
    "0.4B": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 20, "num_attention_heads": 16,
             "num_key_value_heads": 4},
    "0.5B": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 4},
    # the 1.17B model (hidden 2048, 22 layers)
    "1.2B": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
             "num_key_value_heads": 4},
    "3B": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
           "num_key_value_heads": 8},
}


def write_llama(folder: Path, tokenizer: Path, size: dict[str, Any], *, tie: bool = False, seed: int = 1234,
                shard_bytes: int = 1 << 30) -> int:
    """Write the model into ``folder``; return its parameter count."""
    import torch
    import transformers
    from accelerate import init_empty_weights
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for item in tokenizer.iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, folder / item.name)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    eos = tok.eos_token_id
    config = transformers.LlamaConfig(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=eos,
        max_position_embeddings=4096, tie_word_embeddings=tie, dtype="bfloat16",
        architectures=["LlamaForCausalLM"], **size)
    with init_empty_weights():
        model = transformers.LlamaForCausalLM(config)
    if tie:
        model.tie_weights()
    generator = torch.Generator().manual_seed(seed)
    names = [(n, p.shape) for n, p in model.named_parameters()]  # tied weights appear once
    shards: list[dict[str, Any]] = [{}]
    used, total = 0, 0
    for name, shape in names:
        if name.endswith("norm.weight"):
            tensor = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensor = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        if used and used + tensor.numel() * 2 > shard_bytes:
            _flush(folder, shards, save_file)
            shards.append({})
            used = 0
        shards[-1][name] = tensor
        used += tensor.numel() * 2
        total += tensor.numel()
    _flush(folder, shards, save_file)
    _index(folder, len(shards))
    config.save_pretrained(str(folder))
    model.generation_config.save_pretrained(str(folder))
    return total


def _flush(folder: Path, shards: list[dict[str, Any]], save_file: Any) -> None:
    number = len(shards)
    save_file(shards[-1], str(folder / f"shard-{number:05d}.safetensors"), metadata={"format": "pt"})
    shards[-1] = {name: None for name in shards[-1]}  # keep the names for the index, drop the data


def _index(folder: Path, count: int) -> None:
    from safetensors import safe_open

    weight_map, size = {}, 0
    for number in range(1, count + 1):
        name = f"shard-{number:05d}.safetensors"
        final = f"model-{number:05d}-of-{count:05d}.safetensors"
        (folder / name).rename(folder / final)
        with safe_open(str(folder / final), framework="pt") as handle:
            for key in handle.keys():
                weight_map[key] = final
        size += (folder / final).stat().st_size
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def llama_source(name: str) -> Path:
    """The cached random-weight Llama of size ``name`` (see SIZES)."""
    from modelkit import cache
    from modelkit.chat import tokenizer_folder

    tokenizer = tokenizer_folder()
    return cache.cached(f"sized-llama-{name}", {"size": SIZES[name], "tokenizer": tokenizer.name},
                        lambda folder: write_llama(folder, tokenizer, SIZES[name]))
