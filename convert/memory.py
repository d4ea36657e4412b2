"""How much memory and disk a chat conversion needs, said before it starts.

The genai builder streams a safetensors model layer by layer (``workers/genai_stream.py``):
its peak is the toolchain's own footprint plus a few copies of the largest unit it reads
(a decoder layer, or the embedding / LM head), all in float32. The plain builder path
(GGUF dequantized to a folder, other quantization algorithms) holds the whole model in
float32 plus its ONNX copy. The constants below were measured with
``benchmarks/convert_memory.py`` (see the README) and are kept on the safe side.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from onnxg.runtime.errors import ConversionError

BASE = 0.8e9             # torch + transformers + onnxruntime + the builder, before any weight
STREAM_UNIT_COPIES = 3   # fp32 copies of the largest unit alive at once (measured ~2.2)
PLAIN_PER_PARAM = 7.5    # bytes per parameter at the plain path's peak (fp32 model + ONNX copy)
OUTPUT_PER_PARAM = {"int4": 0.6, "int8": 1.1, "fp16": 2.0, "fp32": 4.0}
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class Estimate:
    params: int          # parameters
    largest_unit: int    # parameters of the largest unit (a layer, or the embedding)
    streamed: bool
    peak: int            # bytes of memory at the peak
    output: int          # bytes of the converted model

    def describe(self) -> str:
        how = "layer by layer" if self.streamed else "whole model in memory"
        return f"{self.params / 1e9:.2f}B parameters, ~{gb(self.peak)} peak ({how})"


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def parse_size(text: str) -> int:
    """'12GB', '12G', '800MB', '16GiB' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text or "")
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ConversionError(f"cannot read the size {text!r}", "write it like 12GB, 800MB or 16GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def machine_memory() -> int:
    """The memory this process may use: the cgroup limit when lower than the RAM."""
    import psutil

    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def count_params(config: dict) -> tuple[int, int]:
    """(parameters, largest unit) of a decoder from its config.json (text_config honoured)."""
    c = {**config, **(config.get("text_config") or {})}
    hidden = int(c["hidden_size"])
    layers = int(c.get("num_hidden_layers") or c.get("n_layer") or 0)
    heads = int(c.get("num_attention_heads") or 1)
    kv = int(c.get("num_key_value_heads") or heads)
    head_dim = int(c.get("head_dim") or hidden // heads)
    inter = int(c.get("intermediate_size") or 4 * hidden)
    experts = int(c.get("num_local_experts") or c.get("num_experts") or 1)
    vocab = int(c.get("vocab_size") or 32000)
    layer = hidden * head_dim * (2 * heads + 2 * kv) + 3 * hidden * inter * experts + 2 * hidden
    embedding = vocab * hidden
    tied = bool(c.get("tie_word_embeddings", False))
    return layers * layer + embedding * (1 if tied else 2) + hidden, max(layer, embedding)


def estimate(params: int, largest_unit: int, precision: str, streamed: bool) -> Estimate:
    output = int(params * OUTPUT_PER_PARAM.get(precision, 4.0))
    if streamed:
        peak = BASE + STREAM_UNIT_COPIES * 4 * largest_unit
    else:
        peak = BASE + PLAIN_PER_PARAM * params
    return Estimate(params, largest_unit, streamed, int(peak), output)


def estimate_folder(folder: Path, precision: str, streamed: bool) -> Estimate | None:
    """The estimate for a Hugging Face folder, or None when its config says too little."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        params, unit = count_params(config)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return estimate(params, unit, precision, streamed)


def gguf_params(path: Path) -> tuple[int, int] | None:
    """(parameters, largest tensor) from a GGUF file's tensor table, if ``gguf`` is installed."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    try:
        sizes = [int(t.n_elements) for t in GGUFReader(str(path)).tensors]
    except Exception:  # noqa: BLE001 - a file gguf cannot read: the worker will say why
        return None
    return (sum(sizes), max(sizes)) if sizes else None


def check_memory(found: Estimate, limit: int | None, where: str) -> None:
    """Refuse before starting when the peak would not fit in ``limit`` (default: the machine)."""
    budget = limit if limit is not None else machine_memory()
    if found.peak <= budget:
        return
    said = f"--max-memory {gb(budget)}" if limit is not None else f"this machine's {gb(budget)}"
    ways = [] if found.streamed else ["a Hugging Face safetensors folder or repo converts layer by layer, in far less memory"]
    ways += ["raise --max-memory"] if limit is not None and limit < machine_memory() else []
    hint = "; ".join([*ways, "or convert on a machine with more memory"])
    raise ConversionError(f"converting {where} needs about {gb(found.peak)} of memory "
                          f"({found.describe()}), more than {said}", hint)


def check_disk(folder: Path, needed: int, what: str) -> None:
    """Refuse when ``folder``'s disk has less than ``needed`` bytes free."""
    import shutil

    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise ConversionError(f"{what} needs about {gb(needed)} of disk but only {gb(free)} are free "
                              f"under {probe}", "free some space, or write elsewhere with -o")
