"""Where onnxg keeps its files: ``ONNXG_HOME`` (default ``~/.onnxg``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The onnxg home folder; read from the environment on every call so tests can move it."""
    raw = os.environ.get("ONNXG_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".onnxg"


def models_dir() -> Path:
    return home() / "models"


def cache_dir() -> Path:
    """Downloads (the Hugging Face cache used by ``pull`` and ``convert``)."""
    return home() / "cache"


def logs_dir() -> Path:
    return home() / "logs"


def toolchains_dir() -> Path:
    """Pinned converter environments; ``ONNXG_TOOLCHAINS`` moves them (tests share one)."""
    raw = os.environ.get("ONNXG_TOOLCHAINS")
    return Path(raw).expanduser() if raw else home() / "toolchains"


def ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
