"""onnxg: local chat and embeddings behind the OpenAI API, on ONNX Runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The Python API, imported on first use so that `import onnxg` (and `onnxg --help`) stay light.
_LAZY = {
    "Server": "onnxg.host",
    "DownloadProgress": "onnxg.host",
    "chat": "onnxg.api",
    "embed": "onnxg.api",
    "OnnxgError": "onnxg.runtime.errors",
}
__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from onnxg.api import chat, embed
    from onnxg.runtime.errors import OnnxgError
    from onnxg.host import DownloadProgress, Server


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxg' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
