"""Checks on ONNX files (weights, operators) and on embedding / end-to-end model folders.

What the folder is (its graph, inputs, outputs, tokenizer) is ``runtime/layout.py``'s
finding, shared with the runtime loaders: an input, output or tokenizer fails here exactly
when the loader would refuse it, with the layout's own words.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from onnxg.convert.check import EXTENSIONS_DOMAIN, ORT_DOMAINS, SAMPLE_TEXT, _Checks, _short, _size
from onnxg.runtime import layout, loading, onnxproto, pooling
from onnxg.runtime.errors import InvalidRequest, ModelLoadError


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


def _check_load(checks: _Checks, found: layout.Layout) -> Any:
    assert found.graph is not None
    try:
        sess = loading.open_session(found, threads=1)
    except Exception as exc:  # noqa: BLE001 - ModelLoadError, or anything else onnxruntime raises
        reason = exc.message if isinstance(exc, ModelLoadError) else f"onnxruntime cannot load {found.graph.name}: {_short(exc)}"
        checks.add("load", False, reason,
                   "the graph uses an operator or attribute this onnxruntime lacks (or a locale missing here): "
                   "convert again with the installed toolchain, or upgrade onnxruntime")
        return None
    checks.add("load", True, f"{found.graph.name} loads in onnxruntime")
    return sess


def _model_file(checks: _Checks, found: layout.Layout) -> Path:
    issue = found.issue("model file")
    if issue is not None or found.graph is None:
        checks.require("model file", False, issue.detail if issue else "no model.onnx here",
                       issue.hint if issue else "put the exported model next to its tokenizer as model.onnx")
    assert found.graph is not None
    checks.add("model file", True, found.graph.relative_to(found.folder).as_posix())
    return found.graph


def _layout_item(checks: _Checks, found: layout.Layout, topic: str, ok_detail: str) -> bool:
    """One item the layout decides: failed with its issue, or passed with ``ok_detail``."""
    issue = found.issue(topic)
    if issue is None:
        return checks.add(topic, True, ok_detail)
    return checks.add(topic, False, issue.detail, issue.hint)


# ---------------------------------------------------------------------------- embeddings
def check_embedding(checks: _Checks, found: layout.Layout, run: bool) -> None:
    folder = found.folder
    path = _model_file(checks, found)
    info = check_weights(checks, folder, path)
    if info is None:
        return
    _layout_item(checks, found, "inputs", layout.describe_io(found.inputs))
    _layout_item(checks, found, "outputs", layout.describe_io(found.outputs))
    _check_embed_tokenizer(checks, found)
    _check_pooling(checks, found)
    if not check_operators(checks, info, label=path.name):
        return
    sess = _check_load(checks, found)
    if run and sess is not None:
        _run_sample(checks, found)


def _check_embed_tokenizer(checks: _Checks, found: layout.Layout) -> None:
    """The tokenizer the runtime will use (``embed_tokenizer``), on a sample."""
    issue = found.issue("tokenizer")
    if issue is not None or found.tokenizer is None:
        checks.add("tokenizer", False, issue.detail if issue else "no tokenizer", issue.hint if issue else None)
        return
    from onnxg.runtime import embed_tokenizer

    name = found.tokenizer.name
    try:
        tok = embed_tokenizer.load(found.tokenizer, 512)
        ids = tok.encode([SAMPLE_TEXT]).ids[0]
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exceptions
        detail = exc.message if isinstance(exc, ModelLoadError) else _short(exc)
        checks.add("tokenizer", False, f"{name} cannot be loaded: {detail}", "copy a valid tokenizer file from the source model")
        return
    checks.add("tokenizer", bool(ids), f"{name} ({tok.vocab_size} tokens)",
               None if ids else "the tokenizer turns text into no tokens: wrong tokenizer file?")


def _check_pooling(checks: _Checks, found: layout.Layout) -> None:
    """What the runtime will do: runtime/pooling.py reads the metadata, as OnnxEmbeddingModel.load does."""
    try:
        config = pooling.read_config(found.folder)
    except (ModelLoadError, InvalidRequest) as exc:
        checks.add("pooling", False, f"pooling metadata is broken: {exc.message}",
                   exc.hint or "fix or remove modules.json / 1_Pooling/config.json, or pass --pooling")
        return
    except (AttributeError, TypeError, ValueError) as exc:  # e.g. modules.json entries that are not objects
        checks.add("pooling", False, f"pooling metadata is broken: {_short(exc)}",
                   "fix or remove modules.json / 1_Pooling/config.json, or pass --pooling")
        return
    normalized = ", normalized" if config.normalize else ""
    if found.output is not None and not found.token_states:
        checks.add("pooling", True, f"pooled inside the graph ({found.output}){normalized}")
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


def _run_sample(checks: _Checks, found: layout.Layout) -> None:
    """One sample through the runtime's own loader (embedding and end-to-end models alike)."""
    import numpy as np

    try:
        model = loading.load_embedding(found.folder, threads=1)
        vectors = np.asarray(model.embed([SAMPLE_TEXT]).vectors, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - OnnxgError or onnxruntime failure: report it
        checks.add("embed", False, f"embedding a sample failed: {_short(exc)}",
                   getattr(exc, "hint", None) or "convert again and compare with the source model")
        return
    norm = float(np.linalg.norm(vectors[0])) if vectors.ndim == 2 and len(vectors) else 0.0
    ok = vectors.ndim == 2 and bool(np.isfinite(vectors).all()) and not math.isclose(norm, 0.0)
    checks.add("embed", ok, f"1 sample -> shape {list(vectors.shape)}, norm {norm:.3f}" if ok
               else f"bad vector (shape {list(vectors.shape)}, norm {norm})",
               None if ok else "the model produces NaN/zero vectors: convert again (fp32) and compare")


# ---------------------------------------------------------------------------- end-to-end
def check_e2e(checks: _Checks, found: layout.Layout, run: bool) -> None:
    path = _model_file(checks, found)
    info = check_weights(checks, found.folder, path)
    if info is None:
        return
    inputs_ok = _layout_item(checks, found, "inputs", layout.describe_io(found.inputs))
    outputs_ok = _layout_item(checks, found, "outputs", layout.describe_io(found.outputs))
    if not check_operators(checks, info, label=path.name):
        return
    sess = _check_load(checks, found)
    if run and sess is not None and inputs_ok and outputs_ok:
        _run_sample(checks, found)


# ---------------------------------------------------------------------------- numeric graphs
def check_tensor(checks: _Checks, found: layout.Layout, run: bool) -> None:
    path = _model_file(checks, found)
    info = check_weights(checks, found.folder, path)
    if info is None:
        return
    checks.add("inputs", bool(found.inputs), layout.describe_io(found.inputs) + " (numeric: Python API, not /v1/embeddings)",
               None if found.inputs else "the graph has no inputs")
    if found.issue(layout.META_FILE) or not _layout_item(checks, found, "outputs", layout.describe_io(found.outputs)):
        return  # check() reports the layout's issues
    sess = _check_load(checks, found) if check_operators(checks, info, label=path.name) else None
    if run and sess is not None:
        import numpy as np

        try:
            feeds = {}
            for value in found.inputs:
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in (value.shape or [1])]
                dtype = "float32" if value.elem_type == "float" else str(value.elem_type)
                feeds[value.name] = np.zeros(shape, dtype=np.dtype(dtype))
            arr = np.asarray(sess.run([found.output], feeds)[0], dtype=np.float32)
        except Exception as exc:  # noqa: BLE001
            checks.add("run", False, f"running on zeros failed: {_short(exc)}", "convert the model again")
            return
        ok = bool(np.isfinite(arr).all())
        checks.add("run", ok, f"zeros -> {found.output} shape {list(arr.shape)}", None if ok else "the model returns NaN")
