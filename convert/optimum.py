"""Embedding models: optimum ONNX export, then (``--int8``) per-channel dynamic quantization.

Steps, each a worker under the "optimum" toolchain (optimum-onnx pins transformers<4.58):

1. ``optimum_export``: optimum's ``feature-extraction`` export of the plain transformers
   model (3-D token states out, so pooling stays a runtime choice), plus ONNX Runtime's
   transformer fusions for BERT-family encoders when they keep the outputs; or, with
   ``--extra exporter=torch``, ``torch_export``: the same graph for a plain BERT-family
   encoder with torch alone, under the "genai" toolchain (the environment of
   ``onnxg[convert]``), so no second torch is installed (the default MiniLM uses it);
2. ``optimum_quantize`` (``--int8`` / ``--fp16``): ONNX Runtime dynamic quantization of
   every matrix product, per channel (per-tensor scales cost embedding models badly in
   accuracy), after SmoothQuant-style scaling of the layer-norm-fed inputs calibrated on
   ``CHECK_SENTENCES`` (see ``workers/smoothquant.py``).

Then, here: the source's tokenizer files and sentence-transformers metadata are copied
next to ``model.onnx`` verbatim, and the result is embedded through onnxg's own runtime;
an int8 model must stay close to the fp32 export (mean cosine >= 0.99, minimum >= 0.97 on
sample sentences) or the conversion fails.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxg.convert import toolchain
from onnxg.runtime.errors import ConversionError, OnnxgError, ToolchainError

PRECISIONS = ("fp32", "fp16", "int8")
EXPORTERS = {"optimum": "optimum", "torch": "genai"}  # exporter -> the toolchain it runs in
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
)
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
EXTRA_KEYS = {
    "exporter": "optimum | torch: torch exports plain BERT-family encoders in the genai toolchain (default optimum)",
    "pooling": "mean | cls | last | max: written as sentence-transformers pooling metadata",
    "opset": "ONNX opset of the export",
    "fuse": "true | false: ONNX Runtime's transformer fusions (default true)",
    "weight_type": "int8 | uint8: int8 weight type (default int8)",
    "per_channel": "true | false (default true)",
    "quantize_ops": "comma-separated op types to quantize (default MatMul,Attention)",
    "smooth": "SmoothQuant alpha for layer-norm-fed inputs before int8 (default 0.5; 0 = off)",
    "reduce_range": "true | false: 7-bit weights (default false)",
    "min_cosine": "the int8 check's minimum cosine (default 0.97)",
    "mean_cosine": "the int8 check's mean cosine (default 0.99)",
}
# varied enough to catch a quantization that went wrong (languages, code, numbers, emoji)
CHECK_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital and most populous city of France.",
    "How do I reset my password if I no longer have access to my email?",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Die Katze schläft auf dem warmen Sofa neben dem Fenster.",
    "El banco central subió los tipos de interés un cuarto de punto.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "Quarterly revenue rose 12% to $4.2 billion, beating analyst estimates.",
    "I can't believe it's already snowing 😂❄️",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "a",
    "The patient presented with acute chest pain radiating to the left arm.",
    "Les enfants jouent au football dans le parc après l'école.",
    "Machine learning models can overfit when the training data is small.",
    "Please deliver the package to the back door, not the front.",
)


def _flag(extra: dict[str, str], key: str, default: bool) -> bool:
    value = extra.get(key)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConversionError(f"--extra {key}={value}: expected true or false")


def _number(extra: dict[str, str], key: str, default: float) -> float:
    try:
        return float(extra.get(key, default))
    except ValueError:
        raise ConversionError(f"--extra {key}={extra[key]}: expected a number") from None


def _check_source(source: Path, precision: str, extra: dict[str, str]) -> None:
    if precision not in PRECISIONS:
        raise ConversionError(f"embedding models convert to {', '.join(PRECISIONS)}, not {precision}",
                              hint="use --int8 (fastest on CPU) or --fp32 (exact)")
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise ConversionError(f"unknown --extra option(s) for embedding models: {', '.join(unknown)}",
                              hint="known: " + "; ".join(f"{k} ({v})" for k, v in EXTRA_KEYS.items()))
    if not 0 <= _number(extra, "smooth", 0.5) <= 1:
        raise ConversionError(f"--extra smooth={extra['smooth']}: expected a number from 0 to 1 (0 = off)")
    if not source.is_dir() or not (source / "config.json").is_file():
        raise ConversionError(f"{source} is not a Hugging Face model folder (no config.json)",
                              hint="an embedding source is a transformers / sentence-transformers folder")
    modules = _json(source / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in ("Transformer", "Pooling", "Normalize"):
            raise ConversionError(
                f"the sentence-transformers pipeline has a {kind} module, which onnxg cannot export yet",
                hint="supported: Transformer, Pooling and Normalize modules",
            )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _run(resolved: toolchain.Resolved, worker: str, args: dict[str, Any], log: Path) -> dict[str, Any]:
    try:
        return toolchain.run_worker(resolved, worker, args, log)
    except ToolchainError as exc:
        raise ConversionError(exc.message, hint=exc.hint) from None


def copy_metadata(source: Path, exported: Path, work: Path, extra: dict[str, str]) -> list[str]:
    """Tokenizer files and sentence-transformers metadata next to model.onnx; the names copied."""
    copied: list[str] = []
    shutil.copy2(source / "config.json", work / "config.json")
    for name in TOKENIZER_FILES:
        origin = source / name if (source / name).is_file() else exported / name
        if origin.is_file():
            if origin.resolve() != (work / name).resolve():
                shutil.copy2(origin, work / name)
            copied.append(name)
    for name in ST_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, work / name)
            copied.append(name)
    modules = _json(source / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        sub = str(module.get("path", ""))
        if not sub or not (source / sub).is_dir():
            if sub and str(module.get("type", "")).endswith("Normalize"):
                (work / sub).mkdir(exist_ok=True)
            continue
        (work / sub).mkdir(exist_ok=True)
        for item in (source / sub).iterdir():
            if item.is_file() and item.suffix == ".json":
                shutil.copy2(item, work / sub / item.name)
                copied.append(f"{sub}/{item.name}")
    if extra.get("pooling"):
        copied += write_pooling(work, extra["pooling"])
    return copied


def write_pooling(folder: Path, mode: str) -> list[str]:
    """sentence-transformers metadata for ``mode`` (the runtime reads nothing else)."""
    from onnxg.runtime import pooling

    try:
        canonical = pooling.canonical(mode)
    except OnnxgError:
        raise ConversionError(f"--extra pooling={mode}: choose mean, cls, last or max") from None
    if canonical == "multi-vector":
        raise ConversionError("multi-vector is a runtime choice (--pooling), not a conversion option")
    keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
            "last": "pooling_mode_lasttoken", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens"}
    hidden = (_json(folder / "config.json") or {}).get("hidden_size")
    config = {"word_embedding_dimension": hidden, **{key: name == canonical for name, key in keys.items()}}
    pool_dir = folder / "1_Pooling"
    pool_dir.mkdir(exist_ok=True)
    (pool_dir / "config.json").write_text(json.dumps(config, indent=2))
    modules = _json(folder / "modules.json")
    if not isinstance(modules, list):
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (folder / "2_Normalize").mkdir(exist_ok=True)
        (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    return ["1_Pooling/config.json", "modules.json"]


def check_sentencepiece(folder: Path) -> str | None:
    """Drop a converted ``tokenizer.json`` that disagrees with the SentencePiece model it came from.

    Some slow-to-fast converters drop the leading word-boundary marker (▁) of the first
    word; the runtime then falls back to the SentencePiece model itself. Returns a note.
    """
    model = next((folder / n for n in ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
                  if (folder / n).is_file()), None)
    if model is None or not (folder / "tokenizer.json").is_file():
        return None
    import sentencepiece
    from tokenizers import Tokenizer

    sp = sentencepiece.SentencePieceProcessor()
    sp.Load(str(model))
    fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in CHECK_SENTENCES[:12]:
        if fast.encode(text, add_special_tokens=False).ids != sp.EncodeAsIds(text):
            (folder / "tokenizer.json").unlink()
            return f"tokenizer.json disagreed with {model.name} on {text!r}: removed (the runtime uses {model.name})"
    return f"tokenizer.json agrees with {model.name}"


def _cosines(a: Any, b: Any) -> Any:
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def verify(work: Path, reference: Path | None, extra: dict[str, str]) -> dict[str, Any]:
    """Embed sample sentences with onnxg's runtime; for int8 compare with the fp32 export."""
    import numpy as np

    from onnxg.runtime.embed import OnnxEmbeddingModel

    sentences = list(CHECK_SENTENCES)
    try:
        model = OnnxEmbeddingModel.load(work)
        vectors = model.embed(sentences).vectors
    except OnnxgError as exc:
        raise ConversionError(f"the converted model does not embed: {exc.message}", hint=exc.hint) from None
    if not np.isfinite(vectors).all():
        raise ConversionError("the converted model gives non-finite vectors")
    result: dict[str, Any] = {"dimensions": model.dimensions, "max_length": model.max_length,
                              "pooling": model.pooling, "normalize": model.normalize}
    if reference is not None:
        base = OnnxEmbeddingModel.load(reference).embed(sentences).vectors
        cos = _cosines(vectors, base)
        mean, low = float(cos.mean()), float(cos.min())
        result["vs_fp32"] = {"mean_cosine": round(mean, 5), "min_cosine": round(low, 5), "sentences": len(sentences)}
        want_mean, want_min = _number(extra, "mean_cosine", 0.99), _number(extra, "min_cosine", 0.97)
        if mean < want_mean or low < want_min:
            raise ConversionError(
                f"the quantized model drifts from fp32: mean cosine {mean:.4f} (needs {want_mean}), "
                f"minimum {low:.4f} (needs {want_min})",
                hint="try --extra quantize_ops=MatMul (attention projections fp32), --extra smooth=0.7, "
                     "or convert with --fp32",
            )
    return result


def convert(source: Path, work: Path, *, precision: str, ep: str, extra: dict[str, str], trust_remote_code: bool,
            log: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Export ``source`` (a transformers / sentence-transformers folder) into ``work``."""
    source, work = Path(source), Path(work)
    extra = {k: str(v) for k, v in (extra or {}).items()}
    _check_source(source, precision, extra)
    exporter = extra.get("exporter", "optimum")
    if exporter not in EXPORTERS:
        raise ConversionError(f"--extra exporter={exporter}: choose {' or '.join(EXPORTERS)}")
    progress("toolchain")
    try:
        resolved = toolchain.ensure(EXPORTERS[exporter], progress)
    except ToolchainError as exc:
        raise ConversionError(exc.message, hint=exc.hint) from None
    exported = work / ".export"
    work.mkdir(parents=True, exist_ok=True)
    progress("export")
    export_args: dict[str, Any] = {"source": str(source), "output": str(exported), "fuse": _flag(extra, "fuse", True),
                                   "ep": ep}
    if "opset" in extra:
        export_args["opset"] = int(_number(extra, "opset", 0))
    if exporter == "torch":
        exported_info = _run(resolved, "torch_export", export_args, log)
        command = [f"torch.onnx.export(AutoModel.from_pretrained({source}), dynamo=False, "
                   f"opset_version={exported_info.get('opset')}) -> last_hidden_state"]
    else:
        exported_info = _run(resolved, "optimum_export", {**export_args, "trust_remote_code": trust_remote_code}, log)
        command = [f"optimum main_export {source} --task feature-extraction --library-name transformers"
                   + (" --trust-remote-code" if trust_remote_code else "")]
    if exported_info.get("fused"):
        command.append("onnxruntime.transformers.optimizer --model_type bert --opt_level 1"
                       + ("" if ep == "cuda" else " --disable_skip_layer_norm"))
    quant: dict[str, Any] = {}
    try:
        if precision == "fp32":
            for item in exported.iterdir():
                if item.name.startswith("model.onnx"):
                    item.rename(work / item.name)
        else:
            progress("quantize")
            args: dict[str, Any] = {"model": str(exported / "model.onnx"), "output": str(work / "model.onnx"),
                                    "precision": precision}
            if precision == "int8":
                args.update(per_channel=_flag(extra, "per_channel", True), weight_type=extra.get("weight_type", "int8"),
                            reduce_range=_flag(extra, "reduce_range", False))
                args.update(smooth_alpha=_number(extra, "smooth", 0.5), calibration=list(CHECK_SENTENCES))
                if extra.get("quantize_ops"):
                    args["op_types"] = [op.strip() for op in extra["quantize_ops"].split(",") if op.strip()]
            quant = _run(resolved, "optimum_quantize", args, log)
            command.append(f"onnxruntime quantize {precision} {json.dumps(quant.get('quantization', {}))}")
        progress("metadata")
        copied = copy_metadata(source, exported, work, extra)
        note = check_sentencepiece(work)
        progress("verify")
        reference = None
        if precision == "int8":
            # the fp32 export, with the same metadata, is the reference for the int8 check
            copy_metadata(source, exported, exported, extra)
            check_sentencepiece(exported)
            reference = exported
        checked = verify(work, reference, extra)
    finally:
        shutil.rmtree(exported, ignore_errors=True)
    return {
        "converter": f"{exporter} (onnx export)" + (" + onnxruntime quantization" if quant else ""),
        "toolchain": resolved.versions,
        "command": command,
        "export": exported_info,
        **quant,
        "files_copied": copied,
        **({"tokenizer_note": note} if note else {}),
        "verified": checked,
    }
