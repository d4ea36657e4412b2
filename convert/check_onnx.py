"""Checks on ONNX files (weights, operators) and on embedding / end-to-end model folders."""

from __future__ import annotations

import importlib.util

import math
from pathlib import Path
from typing import Any

from onnxg.runtime import onnxproto, pooling
from onnxg.convert.check import (
    EXTENSIONS_DOMAIN,
    ORT_DOMAINS,
    SAMPLE_TEXT,
    TOKENIZER_FILES,
    _Checks,
    _load_json,
    _main_onnx,
    _short,
    _size,
)
from onnxg.runtime.errors import InvalidRequest, ModelLoadError

TOKEN_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}
TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
POOLED_OUTPUTS = ("sentence_embedding", "pooler_output", "embeddings", "text_embeds")


def check_weights(checks: _Checks, folder: Path, path: Path) -> onnxproto.OnnxInfo | None:
    """``path`` parses as ONNX and every external-data file it names is present and long enough."""
    label = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name
    try:
        info = onnxproto.read(path)
    except (OSError, onnxproto.ProtoError) as exc:
        checks.add(f"{label}", False, f"not a readable ONNX model: {_short(exc)}",
                   "the file is damaged or incomplete: download or convert it again")
        return None
    needed: dict[str, int] = {}
    for ref in info.external:
        end = ref.offset + (ref.length or 0)
        needed[ref.location] = max(needed.get(ref.location, 0), end)
    problems = []
    parts = [f"{label} ({_size(path.stat().st_size)})"]
    for location, end in sorted(needed.items()):
        target = path.parent / location
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            problems.append(f"{label} names external data {location!r} outside its folder")
        elif not target.is_file():
            problems.append(f"{label} needs {location}, which is missing")
        elif target.stat().st_size < end:
            problems.append(f"{location} is truncated: {target.stat().st_size} bytes, {label} needs {end}")
        else:
            count = sum(1 for r in info.external if r.location == location)
            parts.append(f"{location} ({_size(target.stat().st_size)}, {count} tensors)")
    if problems:
        checks.add("weights", False, "; ".join(problems),
                   "the weights file did not come along or was cut short: copy it next to the .onnx file "
                   "(interrupted downloads are the usual cause), or convert again")
        return None
    checks.add("weights", True, " + ".join(parts))
    return info


def check_operators(checks: _Checks, info: onnxproto.OnnxInfo, *, label: str) -> bool:
    """Opset and custom-op domains are ones the installed onnxruntime (+ extensions) can load."""
    import onnxruntime as ort

    opset = info.opsets.get("", 0)
    unknown = sorted(d for d in info.domains if d not in ORT_DOMAINS and d != EXTENSIONS_DOMAIN)
    if unknown:
        return checks.add("operators", False, f"{label} uses custom op domain(s) {', '.join(unknown)}",
                          "those operators need a custom-op library onnxruntime does not have: export without them")
    if EXTENSIONS_DOMAIN in info.domains and not _extensions_available():
        return checks.add("operators", False, f"{label} uses onnxruntime-extensions operators, not installed",
                          "pip install onnxruntime-extensions")
    max_opset = _max_opset()
    if max_opset and opset > max_opset:
        return checks.add("operators", False,
                          f"{label} needs opset {opset}; onnxruntime {ort.__version__} supports up to {max_opset}",
                          "upgrade onnxruntime, or export with a lower opset")
    extra = " + onnxruntime-extensions ops" if EXTENSIONS_DOMAIN in info.domains else ""
    return checks.add("operators", True, f"opset {opset}, {len(info.ops)} op types{extra} (onnxruntime {ort.__version__})")


def _max_opset() -> int | None:
    """The newest ONNX opset the installed onnxruntime implements (from its schema registry)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        schemas = state.get_all_operator_schema()  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return None
    versions = [s.since_version for s in schemas if getattr(s, "domain", "") in ("", "ai.onnx")]
    return max(versions) if versions else None


def _extensions_available() -> bool:
    # find_spec, not import: the package's __init__ pulls in onnx, torch and transformers.
    return importlib.util.find_spec("onnxruntime_extensions") is not None


def session(path: Path, info: onnxproto.OnnxInfo) -> Any:
    """The session the runtime itself opens: e2e's (custom ops registered) for string inputs, else embed's."""
    if any(i.elem_type == "string" for i in info.inputs):
        from onnxg.runtime.e2e import open_session

        return open_session(path, threads=1)
    from onnxg.runtime.embed import _session

    return _session(path, 1)


def _check_load(checks: _Checks, path: Path, info: onnxproto.OnnxInfo) -> Any:
    try:
        sess = session(path, info)
    except Exception as exc:  # noqa: BLE001 - ModelLoadError, or anything else onnxruntime raises
        reason = exc.message if isinstance(exc, ModelLoadError) else f"onnxruntime cannot load {path.name}: {_short(exc)}"
        checks.add("load", False, reason,
                   "the graph uses an operator or attribute this onnxruntime lacks (or a locale missing here): "
                   "convert again with the installed toolchain, or upgrade onnxruntime")
        return None
    checks.add("load", True, f"{path.name} loads in onnxruntime")
    return sess


def _io(value: onnxproto.ValueInfo) -> str:
    shape = "?" if value.shape is None else ",".join("?" if d is None else str(d) for d in value.shape)
    return f"{value.name}:{value.elem_type}[{shape}]"


def _model_file(checks: _Checks, folder: Path) -> Path:
    path = _main_onnx(folder)
    hint = "put the exported model next to its tokenizer as model.onnx (one model per folder)"
    checks.require("model file", path is not None, str(path.name) if path else "no model.onnx here", None if path else hint)
    assert path is not None
    return path


# ---------------------------------------------------------------------------- embeddings
def check_embedding(checks: _Checks, folder: Path, run: bool) -> None:
    path = _model_file(checks, folder)
    info = check_weights(checks, folder, path)
    if info is None:
        return
    names = {i.name for i in info.inputs}
    bad = [i for i in info.inputs if i.name not in TOKEN_INPUTS or i.elem_type not in ("int64", "int32")]
    ok = "input_ids" in names and not bad
    checks.add("inputs", ok, ", ".join(_io(i) for i in info.inputs),
               None if ok else "the runtime feeds input_ids, attention_mask and token_type_ids (integers): "
               "re-export with `onnxg convert --task embed` (optimum feature-extraction)")
    outputs = {o.name: o for o in info.outputs}
    usable = [n for n in (*TOKEN_OUTPUTS, *POOLED_OUTPUTS) if n in outputs]
    if not usable and len(info.outputs) >= 1 and info.outputs[0].elem_type in ("float", "float16"):
        usable = [info.outputs[0].name]
    checks.add("outputs", bool(usable), ", ".join(_io(o) for o in info.outputs),
               None if usable else "no float token or sentence embedding output: export the feature-extraction task")
    _check_embed_tokenizer(checks, folder)
    _check_pooling(checks, folder, info)
    if not check_operators(checks, info, label=path.name):
        return
    sess = _check_load(checks, path, info)
    if run and sess is not None:
        _run_embedding(checks, folder, path)


def _check_embed_tokenizer(checks: _Checks, folder: Path) -> None:
    present = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not present:
        checks.add("tokenizer", False, "no tokenizer.json or tokenizer.model",
                   "copy tokenizer.json (Hugging Face models) or tokenizer.model (T5, ALBERT, ...) next to model.onnx")
        return
    name = present[0]
    try:
        if name == "tokenizer.json":
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(folder / name))
            ids = tok.encode(SAMPLE_TEXT).ids
            kind = type(tok.model).__name__
            size = tok.get_vocab_size()
        else:
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor(model_file=str(folder / name))
            ids = sp.encode(SAMPLE_TEXT)
            kind, size = "SentencePiece", sp.get_piece_size()
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exceptions
        checks.add("tokenizer", False, f"{name} cannot be loaded: {_short(exc)}", "copy a valid tokenizer file from the source model")
        return
    checks.add("tokenizer", bool(ids), f"{name} ({kind}, {size} tokens)",
               None if ids else "the tokenizer turns text into no tokens: wrong tokenizer file?")


def _check_pooling(checks: _Checks, folder: Path, info: onnxproto.OnnxInfo) -> None:
    """What the runtime will do: runtime/pooling.py reads the metadata, as OnnxEmbeddingModel.load does."""
    from onnxg.runtime.embed import POOLED_OUTPUTS as RUNTIME_POOLED

    try:
        config = pooling.read_config(folder)
    except (ModelLoadError, InvalidRequest) as exc:
        checks.add("pooling", False, f"pooling metadata is broken: {exc.message}",
                   exc.hint or "fix or remove modules.json / 1_Pooling/config.json, or pass --pooling")
        return
    except (AttributeError, TypeError, ValueError) as exc:  # e.g. modules.json entries that are not objects
        checks.add("pooling", False, f"pooling metadata is broken: {_short(exc)}",
                   "fix or remove modules.json / 1_Pooling/config.json, or pass --pooling")
        return
    normalized = ", normalized" if config.normalize else ""
    pooled = next((o.name for o in info.outputs
                   if o.name in RUNTIME_POOLED and o.shape is not None and len(o.shape) == 2), None)
    if pooled is not None:
        checks.add("pooling", True, f"pooled inside the graph ({pooled}){normalized}")
        return
    if config.unsupported:
        checks.add("pooling", False,
                   f"the sentence-transformers pipeline has a {config.unsupported[0]} module this graph lacks",
                   "export the whole sentence-transformers pipeline (its sentence_embedding output)")
        return
    if len(config.modes) > 1:
        checks.add("pooling", False,
                   f"{config.source} sets {len(config.modes)} pooling modes: the runtime concatenates "
                   f"{config.name} into one vector",
                   "a sentence-transformers model uses one pooling mode: fix 1_Pooling/config.json, or pass --pooling")
        return
    checks.add("pooling", True, f"{config.name}{normalized} (from {config.source})")


def _run_embedding(checks: _Checks, folder: Path, path: Path) -> None:
    import numpy as np

    from onnxg.runtime.embed import OnnxEmbeddingModel

    try:
        model = OnnxEmbeddingModel.load(folder, threads=1)
        vectors = np.asarray(model.embed([SAMPLE_TEXT]).vectors, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - OnnxgError or onnxruntime failure: report it
        checks.add("embed", False, f"embedding a sample failed: {_short(exc)}", getattr(exc, "hint", None) or "see the error above")
        return
    norm = float(np.linalg.norm(vectors[0])) if vectors.ndim == 2 and len(vectors) else 0.0
    ok = vectors.ndim == 2 and bool(np.isfinite(vectors).all()) and norm > 0
    checks.add("embed", ok, f"1 x {vectors.shape[-1]} vector, norm {norm:.3f}" if ok else f"bad vector (shape {vectors.shape}, norm {norm})",
               None if ok else "the model produces NaN/zero vectors: convert again (fp32) and compare")


# ---------------------------------------------------------------------------- end-to-end
def check_e2e(checks: _Checks, folder: Path, run: bool) -> None:
    path = _model_file(checks, folder)
    info = check_weights(checks, folder, path)
    if info is None:
        return
    strings = [i for i in info.inputs if i.elem_type == "string"]
    checks.add("inputs", len(strings) == 1, ", ".join(_io(i) for i in info.inputs),
               None if len(strings) == 1 else "an end-to-end model takes one string tensor of texts")
    floats = [o for o in info.outputs if o.elem_type in ("float", "float16", "double")]
    checks.add("outputs", bool(floats), ", ".join(_io(o) for o in info.outputs),
               None if floats else "no float output: the model does not return vectors")
    if not check_operators(checks, info, label=path.name):
        return
    sess = _check_load(checks, path, info)
    if run and sess is not None and strings and floats:
        _run_e2e(checks, folder)


def _run_e2e(checks: _Checks, folder: Path) -> None:
    """One sample through the end-to-end runtime."""
    import numpy as np

    from onnxg.runtime.e2e import E2EModel

    try:
        arr = np.asarray(E2EModel.load(folder, threads=1).embed([SAMPLE_TEXT]).vectors)
    except Exception as exc:  # noqa: BLE001 - OnnxgError or onnxruntime failure: report it
        checks.add("embed", False, f"running the model on a sample failed: {_short(exc)}",
                   getattr(exc, "hint", None) or "the text ops fail at run time: convert again and compare with TensorFlow")
        return
    arr = arr.astype(np.float32)
    ok = arr.size > 0 and bool(np.isfinite(arr).all()) and not math.isclose(float(np.abs(arr).sum()), 0.0)
    checks.add("embed", ok, f"1 sample -> shape {list(arr.shape)}",
               None if ok else "the model returns NaN or zero vectors")


# ---------------------------------------------------------------------------- numeric graphs
def is_tensor_model(folder: Path, info: onnxproto.OnnxInfo) -> bool:
    """A converted graph with numeric, non-token inputs (a TensorFlow model with model_io.json)."""
    names = {i.name for i in info.inputs}
    return (folder / "model_io.json").is_file() and "input_ids" not in names and all(
        i.elem_type not in (None, "string") for i in info.inputs)


def check_tensor(checks: _Checks, folder: Path, run: bool) -> None:
    path = _model_file(checks, folder)
    info = check_weights(checks, folder, path)
    if info is None:
        return
    checks.add("inputs", bool(info.inputs), ", ".join(_io(i) for i in info.inputs) + " (numeric: Python API, not /v1/embeddings)",
               None if info.inputs else "the graph has no inputs")
    try:
        meta = _load_json(folder / "model_io.json")
        wanted = meta.get("embedding_output") or (meta.get("outputs") or [{}])[0].get("name")
    except (OSError, ValueError, AttributeError) as exc:
        checks.add("model_io.json", False, f"cannot be read: {_short(exc)}", "convert the model again")
        return
    names = [o.name for o in info.outputs]
    checks.add("outputs", wanted in names, ", ".join(_io(o) for o in info.outputs),
               None if wanted in names else f"model_io.json names output {wanted!r}, which the graph lacks: convert again")
    if not check_operators(checks, info, label=path.name):
        return
    sess = _check_load(checks, path, info)
    if run and sess is not None and wanted in names:
        import numpy as np

        try:
            feeds = {}
            for value in info.inputs:
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in (value.shape or [1])]
                dtype = "float32" if value.elem_type == "float" else str(value.elem_type)
                feeds[value.name] = np.zeros(shape, dtype=np.dtype(dtype))
            arr = np.asarray(sess.run([wanted], feeds)[0], dtype=np.float32)
        except Exception as exc:  # noqa: BLE001
            checks.add("run", False, f"running on zeros failed: {_short(exc)}", "convert the model again")
            return
        ok = bool(np.isfinite(arr).all())
        checks.add("run", ok, f"zeros -> {wanted} shape {list(arr.shape)}", None if ok else "the model returns NaN")
