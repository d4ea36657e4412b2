"""Worker (toolchain "genai"): a GGUF file -> a plain Hugging Face folder, with transformers.

The genai builder reads only float16/float32 GGUF files, and even those need the model's
Hugging Face config from the hub. transformers 5 dequantizes any GGUF it knows (Q4_1,
Q8_0, K-quants, ...) and restores the tokenizer and chat template, so onnxg always goes
through it: GGUF -> float32 HF folder -> builder.
"""

from __future__ import annotations

from pathlib import Path

from _worker import run  # the script's own folder is on sys.path


def gguf_chat_template(path: Path) -> str | None:
    """The chat template stored in the GGUF metadata, if any."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(str(path))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def convert(gguf: str, out: str) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    print(f"loading tokenizer from {path}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if not getattr(tokenizer, "chat_template", None):
        template = gguf_chat_template(path)
        if template:
            tokenizer.chat_template = template
    print(f"loading and dequantizing weights from {path}", flush=True)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    config = model.config
    # transformers dequantizes GGUF weights while loading: they are plain float32 now. The
    # leftover quantizer blocks save_pretrained, and a leftover quantization_config would
    # make the builder treat the folder as a pre-quantized checkpoint.
    model.hf_quantizer = None
    for attribute in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(target))
    print(f"saved {target}", flush=True)
    return {
        "architecture": (config.architectures or [type(model).__name__])[0],
        "vocab_size": int(config.vocab_size),
        "transformers": transformers.__version__,
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }


if __name__ == "__main__":
    run(convert)
