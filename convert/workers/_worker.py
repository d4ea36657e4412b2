"""Harness for worker scripts run under a toolchain's interpreter.

Workers import only their toolchain's libraries (never onnxg, which the toolchain may not
have): they take one JSON argument, write a JSON result (or ``{"error": ...}``) to the path
in ``_result``, and print their chatter to stdout, which onnxg keeps in a log file.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from _orphan import exit_with_parent  # the worker script's own folder is on sys.path


def run(fn: Callable[..., dict[str, Any] | None]) -> None:
    """Run ``fn`` on the JSON argument; the worker dies with onnxg (see _orphan.py)."""
    exit_with_parent()
    args = json.loads(sys.argv[1])
    result_path = args.pop("_result")
    try:
        result = fn(**args) or {}
    except BaseException as exc:  # reported to the parent, which owns the error message
        traceback.print_exc()
        with open(result_path, "w") as handle:
            json.dump({"error": f"{type(exc).__name__}: {exc}".strip()[:2000]}, handle)
        sys.exit(1)
    with open(result_path, "w") as handle:
        json.dump(result, handle)
