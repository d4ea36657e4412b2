"""A recipe's ``config_overrides`` reach the genai builder (Gemma 3 needs them with transformers 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelkit import cache
from modelkit.chat import SMOLLM2_VOCAB, og_generate, tokenizer_folder
from onnxg.convert import genai, pipeline, recipes
from onnxg.runtime.errors import OnnxgError

pytestmark = pytest.mark.model  # converts a tiny Gemma 3 built with transformers

TINY_GEMMA3 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
               "num_key_value_heads": 1, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16,
               "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
               "max_position_embeddings": 2048,
               "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}}


def tiny_gemma3() -> Path:
    """A random-weight Gemma3ForCausalLM (text config, as gemma-3-1b-it) with the SmolLM2 tokenizer."""

    def save(folder: Path) -> None:
        import shutil

        import torch
        import transformers

        for item in tokenizer_folder().iterdir():
            if item.is_file() and not item.name.startswith("."):
                shutil.copy2(item, folder / item.name)
        config = transformers.Gemma3TextConfig(vocab_size=SMOLLM2_VOCAB, bos_token_id=1, eos_token_id=2,
                                               pad_token_id=2, **TINY_GEMMA3)
        config.architectures = ["Gemma3ForCausalLM"]
        torch.manual_seed(1234)
        transformers.Gemma3ForCausalLM(config).eval().save_pretrained(str(folder))

    return cache.cached("tiny-hf-Gemma3ForCausalLM", TINY_GEMMA3, save)


def build(source: Path, work: Path, extra: dict[str, str]) -> dict:
    return genai.convert(source, work, precision="int4", ep="cpu", extra=extra, trust_remote_code=False,
                         log=work.parent / "convert.log", progress=lambda _step: None)


def test_gemma3_recipe_overrides_make_the_build_work(tmp_path: Path) -> None:
    recipe = recipes.get("gemma-3-1b-it")
    assert recipe is not None and recipe.config_overrides
    source = tiny_gemma3()

    with pytest.raises(OnnxgError):  # transformers 5's rope layout: the builder alone fails
        build(source, tmp_path / "plain", {})

    _task, _precision, _ep, extra, _trust = pipeline.recipe_options(recipe, "auto", None, "cpu", {}, False)
    provenance = build(source, tmp_path / "fixed", extra)
    assert provenance["config_overrides"] == recipe.config_overrides
    prompt, answer, tokens = og_generate(tmp_path / "fixed", [{"role": "user", "content": "Hello"}], 8)
    assert tokens > 0
