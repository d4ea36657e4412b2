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
    max_memory: int | None = None,
    stream: bool = True,
) -> dict[str, Any]:
    """Build ``source`` (HF folder or .gguf) into ``work``; return provenance fields.

    Before anything runs, the memory and disk the conversion needs are estimated and
    refused plainly when they do not fit (``max_memory``, default: this machine's memory).
    ``stream=False`` keeps the builder's plain path (the benchmark's baseline).
    """
    from onnxg.convert import toolchain

    _check_options(precision, ep)
    progress("check memory and disk")
    needs = plan_resources(source, work, precision, extra, max_memory, stream)
    progress("prepare the genai toolchain")
    resolved = toolchain.ensure("genai", progress=progress)
    # Scratch (the builder's cache, a dequantized GGUF) lives next to ``work``, so the
    # pipeline's partial folder holds it too and a killed conversion leaves it in one place.
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=work.parent))
    provenance: dict[str, Any] = {"converter": CONVERTER, "toolchain": resolved.versions}
    try:
        hf_folder = source
        if source.is_file() and source.suffix.lower() == ".gguf":
            progress(f"load GGUF (dequantize to a Hugging Face folder){needs.get('gguf', '')}")
            hf_folder = scratch / "hf"
            loaded = _run(resolved, "genai_gguf", {"gguf": str(source), "out": str(hf_folder)}, log)
            provenance["gguf"] = {"file": source.name, **loaded}
        elif not (source / "config.json").is_file():
            raise ConversionError(
                f"{source} has no config.json: not a Hugging Face model folder",
                "pass a Hugging Face model folder, a .gguf file, or a repo id",
            )
        progress(f"export + quantize ({precision}, {ep}){needs.get('build', '')}")
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
                "stream": stream,
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
    provenance["build"] = {"streamed": bool(built.get("streaming", {}).get("streamed")),
                           **({"plain_reason": built["streaming"]["reason"]}
                              if built.get("streaming", {}).get("reason") else {})}
    if built.get("config_overrides"):
        provenance["config_overrides"] = built["config_overrides"]
    return provenance


def streams(source: Path, extra: dict[str, str]) -> bool:
    """Whether the builder will stream this source layer by layer (genai_stream.plan, seen
    from here): a safetensors folder, quantized with the default algorithm."""
    if source.is_file() or not any(source.glob("*.safetensors")):
        return False
    if extra.get("algo_config", "default") != "default":
        return False
    return not any(key in extra for key in ("adapter_path", "num_hidden_layers", "use_qdq", "int4_nodes_to_exclude"))


def plan_resources(source: Path, work: Path, precision: str, extra: dict[str, str], max_memory: int | None,
                   stream: bool) -> dict[str, str]:
    """Refuse what cannot fit (memory, disk); return the sizes each step's progress line shows."""
    from onnxg.convert import memory

    lines: dict[str, str] = {}
    if source.is_file():  # GGUF: dequantized whole to float32, then built from that folder
        counted = memory.gguf_params(source)
        if counted is None:
            return lines
        params, largest = counted
        dequantize = memory.estimate(params, largest, precision, streamed=False)  # transformers holds it all
        memory.check_memory(dequantize, max_memory, source.name)
        memory.check_disk(work.parent, 4 * params + 2 * dequantize.output, f"converting {source.name}")
        lines["gguf"] = f": {params / 1e9:.2f}B parameters, ~{memory.gb(4 * params)} float32 on disk"
        found = memory.estimate(params, largest, precision, streamed=stream)
    else:
        found = memory.estimate_folder(source, precision, streamed=stream and streams(source, extra))
        if found is None:
            return lines
        memory.check_memory(found, max_memory, source.name)
        memory.check_disk(work.parent, 2 * found.output, f"converting {source.name}")
    lines["build"] = f": {found.describe()}, ~{memory.gb(found.output)} out"
    return lines


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
