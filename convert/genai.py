"""Chat backend: onnxruntime-genai's model builder (HF folders and GGUF files).

Both steps run as workers under the "genai" toolchain (the builder needs transformers 5):
``genai_gguf`` turns a GGUF file into a float32 Hugging Face folder, ``genai_build`` runs
the builder and puts the tokenizer files and chat template next to the model.
"""

from __future__ import annotations

import json

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxg.runtime.errors import ConversionError, OnnxgError

EPS = ("cpu", "cuda", "dml", "webgpu")
# What the builder accepts (its -p/-e choices); fp32 on dml/webgpu and fp16 on cpu are not.
SUPPORTED = {
    "cpu": ("int4", "int8", "fp32"),
    "cuda": ("int4", "int8", "fp16", "fp32"),
    "dml": ("int4", "fp16"),
    "webgpu": ("int4", "int8", "fp16"),
}
CONVERTER = "onnxruntime-genai builder"


def _check_options(precision: str, ep: str) -> None:
    if ep not in EPS:
        raise ConversionError(f"unknown execution provider {ep!r}", f"use one of: {', '.join(EPS)}")
    if precision not in SUPPORTED[ep]:
        raise ConversionError(
            f"the genai builder cannot make a {precision} model for {ep}",
            f"for {ep} use one of: {', '.join('--' + p for p in SUPPORTED[ep])}",
        )


def convert(
    source: Path,
    work: Path,
    *,
    precision: str,
    ep: str,
    extra: dict[str, str],
    trust_remote_code: bool,
    log: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Build ``source`` (HF folder or .gguf) into ``work``; return provenance fields."""
    from onnxg.convert import toolchain

    _check_options(precision, ep)
    progress("prepare the genai toolchain")
    resolved = toolchain.ensure("genai", progress=progress)
    # Scratch (the builder's cache, a dequantized GGUF) lives next to ``work``, so the
    # pipeline's partial folder holds it too and a killed conversion leaves it in one place.
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=work.parent))
    provenance: dict[str, Any] = {"converter": CONVERTER, "toolchain": resolved.versions}
    try:
        hf_folder = source
        if source.is_file() and source.suffix.lower() == ".gguf":
            progress("load GGUF (dequantize to a Hugging Face folder)")
            hf_folder = scratch / "hf"
            loaded = _run(resolved, "genai_gguf", {"gguf": str(source), "out": str(hf_folder)}, log)
            provenance["gguf"] = {"file": source.name, **loaded}
        elif not (source / "config.json").is_file():
            raise ConversionError(
                f"{source} has no config.json: not a Hugging Face model folder",
                "pass a Hugging Face model folder, a .gguf file, or a repo id",
            )
        progress(f"export + quantize ({precision}, {ep})")
        built = _run(
            resolved,
            "genai_build",
            {
                "source": str(hf_folder),
                "output": str(work),
                "precision": precision,
                "ep": ep,
                "cache_dir": str(scratch / "builder-cache"),
                "extra": {k: v for k, v in extra.items() if k != "_config_overrides"},
                "config_overrides": json.loads(extra.get("_config_overrides", "{}")),
                "trust_remote_code": trust_remote_code,
            },
            log,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    provenance.update(
        converter_version=built["builder_version"],
        command=built["command"],
        architecture=built.get("architecture"),
        model_type=built.get("model_type"),
    )
    if built.get("config_overrides"):
        provenance["config_overrides"] = built["config_overrides"]
    return provenance


def _run(resolved: Any, worker: str, args: dict[str, Any], log: Path) -> dict[str, Any]:
    from onnxg.convert import toolchain

    try:
        return toolchain.run_worker(resolved, worker, args, log)
    except OnnxgError as exc:
        raise ConversionError(_explain(exc.message), f"the converter's log: {log}") from None


def _explain(message: str) -> str:
    """The builder's own words, shortened; unsupported architectures said plainly."""
    text = message.replace("genai_build failed: ", "").replace("genai_gguf failed: ", "")
    if "is not supported by this builder" in text:
        return "the installed onnxruntime-genai builder cannot convert this model: " + text.split(": ", 1)[-1]
    return f"conversion failed: {text}"
