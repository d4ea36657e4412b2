"""Worker (toolchain "genai"): a Hugging Face folder -> an onnxruntime-genai model folder.

Runs the model builder in-process (``parse_extra_options`` then ``create_model``, as
``python -m onnxruntime_genai.models.builder`` does) and then makes sure the output has
what a chat runtime needs: tokenizer files and the chat template, in both the places
readers look (``chat_template.jinja`` and ``tokenizer_config.json``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from _worker import run  # the script's own folder is on sys.path

# What onnxg calls an option -> what the builder calls it (None: not a builder option).
EP_NAMES = {"cpu": "cpu", "cuda": "cuda", "dml": "dml", "webgpu": "webgpu"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def builder_version() -> str:
    from importlib import metadata

    return metadata.version("onnxruntime-genai")


def extra_pairs(extra: dict[str, str], trust_remote_code: bool) -> list[str]:
    """KEY=VALUE strings for the builder; trust_remote_code is ``hf_remote`` in 0.1x builders."""
    pairs = dict(extra)
    if trust_remote_code:
        pairs.setdefault("hf_remote", "true")
    return [f"{key}={value}" for key, value in pairs.items()]


def read_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name, key in (("chat_template.json", "chat_template"), ("tokenizer_config.json", "chat_template")):
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list):  # named templates: take "default"
                named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
                if named.get("default"):
                    return named["default"]
    return None


def fix_processing_files(source: Path, out: Path) -> dict[str, Any]:
    """Copy tokenizer files the builder left behind, and write the chat template everywhere."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file() and not (out / name).exists():
            shutil.copy2(source / name, out / name)
            copied.append(name)
    template = read_template(out) or read_template(source)
    if template:
        (out / "chat_template.jinja").write_text(template, encoding="utf-8")
        config_path = out / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        if config.get("chat_template") != template:
            config["chat_template"] = template
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return {"copied": copied, "chat_template": bool(template)}


def build(
    source: str,
    output: str,
    precision: str,
    ep: str,
    cache_dir: str,
    extra: dict[str, str] | None = None,
    trust_remote_code: bool = False,
    config_overrides: dict[str, Any] | None = None,
    stream: bool = True,
) -> dict[str, Any]:
    from onnxruntime_genai.models import builder

    src, out = Path(source), Path(output)
    builder_ep = EP_NAMES.get(ep, ep)
    pairs = extra_pairs(extra or {}, trust_remote_code)
    command = [
        "python", "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out),
        "-p", precision, "-e", builder_ep, "-c", cache_dir,
    ]
    if pairs:
        command += ["--extra_options", *pairs]

    print("$ " + " ".join(command), flush=True)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    architecture = (config.get("architectures") or ["(none)"])[0]
    if hasattr(builder, "parse_extra_options"):  # 0.18: it also loads the HF config
        options = builder.parse_extra_options(None, str(src), str(out), precision, builder_ep, cache_dir, pairs)
        if config_overrides:  # a recipe's fixes to the HF config (e.g. Gemma 3's rope settings)
            hf_config = options["hf_details"]["hf_config"]
            for key, value in config_overrides.items():
                setattr(hf_config, key, value)
            print(f"config overrides: {json.dumps(config_overrides)}", flush=True)
    else:  # older builders take the plain dict and check it themselves
        options = dict(pair.split("=", 1) for pair in pairs)
    streaming = _install_streaming() if stream else {"streamed": False, "reason": "not asked"}
    try:
        builder.create_model(None, str(src), str(out), precision, builder_ep, cache_dir, **options)
    except NotImplementedError as exc:
        if "not currently supported" in str(exc):
            raise NotImplementedError(f"architecture {architecture} is not supported by this builder") from exc
        raise
    processing = fix_processing_files(src, out)
    genai_config = json.loads((out / "genai_config.json").read_text(encoding="utf-8"))
    return {
        "builder_version": builder_version(),
        "command": command,
        "model_type": genai_config.get("model", {}).get("type"),
        "architecture": architecture,
        "processing": processing,
        "config_overrides": config_overrides or {},
        "streaming": streaming,
    }


def _install_streaming() -> dict[str, Any]:
    """Layer-by-layer building (genai_stream.py) where this builder has the hooks it needs."""
    import sys

    import genai_stream
    from onnxruntime_genai.models import builder

    model_class = getattr(builder, "Model", None)  # builder.py imports it as ``builders.base.Model``
    base = sys.modules.get(getattr(model_class, "__module__", ""))
    if base is None or not hasattr(model_class, "make_model"):
        return {"streamed": False, "reason": "this onnxruntime-genai builder has no Model.make_model"}

    return genai_stream.install(base, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    run(build)
