"""A disk cache of built test models, keyed by a hash of what went into them.

``ONNXG_TEST_CACHE`` (default ``~/.cache/onnxg-tests``) holds them, and the shared
converter toolchains, so a second test session reuses both. A build happens in a
temporary folder renamed into place when complete, under a file lock, so an interrupted
build leaves nothing that looks finished and parallel sessions build once.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxg.runtime import home


def root() -> Path:
    raw = os.environ.get("ONNXG_TEST_CACHE")
    path = Path(raw).expanduser() if raw else Path.home() / ".cache" / "onnxg-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


def toolchains() -> Path:
    return root() / "toolchains"


refused_by: str | None = None
"""The fast-tier test running now (set by tests/conftest.py): it may not use built models."""


def cached(name: str, spec: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """The folder built by ``build(folder)`` for ``spec``; built once, then reused.

    The key covers the spec and the source of the builder, so editing either rebuilds.
    """
    if refused_by is not None:
        raise AssertionError(f"{refused_by} uses the test model {name!r}: mark it @pytest.mark.model")
    source = inspect.getsource(inspect.getmodule(build) or build)
    key = hashlib.sha256((json.dumps(spec, sort_keys=True) + source).encode()).hexdigest()[:12]
    models = root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    final = models / f"{name}-{key}"
    with home.file_lock(models / f"{name}-{key}.lock"):
        if final.is_dir():
            return final
        work = models / f".{name}-{key}.partial"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        started = time.monotonic()
        try:
            build(work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        (work / ".built.json").write_text(json.dumps({"spec": spec, "seconds": round(time.monotonic() - started, 1)}))
        work.rename(final)
    return final
