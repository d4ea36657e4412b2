"""Where onnxg keeps its files: ``ONNXG_HOME`` (default ``~/.onnxg``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (made with its parents), waiting for it.

    The lock dies with its process (even SIGKILL). Never delete a lock file: a waiter holding the
    old inode and a newcomer creating a new file could then both hold "the" lock. On Windows (no
    fcntl) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        yield
        return
    ensure(path.parent)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
