"""TensorFlow SavedModel -> ONNX (tf2onnx, opset >= 13, onnxruntime-extensions string ops).

The work happens in the ``tf_convert`` worker under the "tf" toolchain (TensorFlow is not
in onnxg's environment): tf2onnx exports the signature, the worker repairs the string ops
tf2onnx gets wrong (``workers/tf_fixes.py``), and compares the ONNX model's outputs with
TensorFlow's on sample inputs. A model whose outputs differ is an error here, not a model.

Output: ``model.onnx`` and ``model_io.json`` (inputs, outputs, the text input and the
embedding output the runtime uses, the fixes applied, the verification figures).

``extra`` options (``--extra KEY=VALUE``): ``opset`` (default 17, at least 13),
``signature`` (default ``serving_default``), ``tag`` (default ``serve``), ``samples`` (a
UTF-8 text file, one sample input per line, instead of the built-in ones), ``atol`` and
``rtol`` (the float tolerance of the comparison, default 1e-4 and 1e-3).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxg.runtime.errors import ConversionError, ToolchainError

CONVERTER = "tf2onnx"
DEFAULT_OPSET = 17
PRECISIONS = ("fp32",)
EPS = ("cpu", "cuda", "dml", "webgpu")
OPTIONS = ("opset", "signature", "tag", "samples", "atol", "rtol")


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file())


def _worker_args(source: Path, work: Path, extra: dict[str, str]) -> dict[str, Any]:
    unknown = sorted(set(extra) - set(OPTIONS))
    if unknown:
        raise ConversionError(f"unknown option(s) for a TensorFlow conversion: {', '.join(unknown)}",
                              f"known: {', '.join(OPTIONS)}")
    try:
        opset = int(extra.get("opset", DEFAULT_OPSET))
        atol = float(extra.get("atol", 1e-4))
        rtol = float(extra.get("rtol", 1e-3))
    except ValueError as exc:
        raise ConversionError(f"bad --extra value: {exc}", "opset is an integer; atol and rtol are numbers") from None
    if opset < 13:
        raise ConversionError(f"opset {opset} is too old for string models", "use --extra opset=13 or newer")
    args: dict[str, Any] = {
        "source": str(source.resolve()), "output": str(work.resolve()), "opset": opset,
        "tag": extra.get("tag", "serve"), "signature": extra.get("signature", "serving_default"),
        "atol": atol, "rtol": rtol, "farmhash": str(Path(__file__).parent.parent / "runtime" / "farmhash.py"),
    }
    if "samples" in extra:
        path = Path(extra["samples"]).expanduser()
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConversionError(f"cannot read the samples file {path}: {exc}", "pass a UTF-8 text file") from None
        if not lines:
            raise ConversionError(f"the samples file {path} has no non-empty line", "one sample input per line")
        args["samples"] = lines
    return args


def differences(checks: list[dict[str, Any]]) -> str:
    """One line naming each output that differs from TensorFlow, and by how much."""
    parts = []
    for item in checks:
        if not item.get("ok"):
            parts.append(f"{item['output']}: {item.get('detail', 'differs')} (batch of {item.get('batch', '?')})")
    return "; ".join(parts)


def convert(source: Path, work: Path, *, precision: str, ep: str, extra: dict[str, str],
            trust_remote_code: bool, log: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Convert the SavedModel folder ``source`` into ``work``; return provenance fields."""
    from onnxg.convert import toolchain

    del trust_remote_code  # a SavedModel runs no Python code of its own
    if not is_saved_model(source):
        raise ConversionError(f"{source} is not a TensorFlow SavedModel folder (no saved_model.pb)",
                              "pass the folder that holds saved_model.pb and variables/")
    if precision not in PRECISIONS:
        raise ConversionError(f"TensorFlow models convert to fp32 only, not {precision}",
                              "use --fp32 (string ops and lookups do not quantize)")
    if ep not in EPS:
        raise ConversionError(f"unknown execution provider {ep!r}", f"use one of: {', '.join(EPS)}")
    args = _worker_args(source, work, extra)
    progress("prepare the tf toolchain")
    resolved = toolchain.ensure("tf", progress=progress)
    progress("export with tf2onnx, fix string ops, compare with TensorFlow")
    try:
        result = toolchain.run_worker(resolved, "tf_convert", args, log)
    except ToolchainError as exc:
        detail = exc.message.removeprefix("tf_convert failed: ")
        raise ConversionError(f"TensorFlow conversion failed: {detail}", f"the converter's log: {log}") from None
    if not result.get("ok"):
        raise ConversionError(
            f"the converted model's outputs differ from TensorFlow's: {differences(result.get('checks', []))}",
            f"the converter's log: {log} (fixes applied: {len(result.get('fixes', []))})",
        )
    return {
        "converter": CONVERTER,
        "converter_version": resolved.versions.get("tf2onnx"),
        "toolchain": resolved.versions,
        "command": result["command"],
        "opset": result["opset"],
        "fixes": result.get("fixes", []),
        "python_ops": result.get("python_ops", []),
        "verification": result.get("checks", []),
    }
