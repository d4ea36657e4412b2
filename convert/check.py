"""``onnxg check``: will this folder load and serve? Each check is one line, with a hint.

Reads the folder through ``runtime/layout.py`` (the kind, the graph file, the output and
tokenizer the runtime will use, and what keeps the runtime from loading it: the same rules
the loaders follow) and verifies what makes it servable, without trusting the
runtime to explain itself later: configuration, files (external weights included, with
their sizes), tokenizer (a faithful encode/decode round trip through the same tokenizer the
runtime uses), chat template, limits, special tokens, graph inputs/outputs, operators and
custom ops. ``run=True`` adds a smoke run (one generated token, one embedding).

A check never raises on a broken folder: every problem becomes a failed item.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxg.runtime import layout

SAMPLE_TEXT = "Hello, world! The capital of France is Paris.\nSecond line: 42 cafés, naïve façade, 東京."
SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]
EXTENSIONS_DOMAIN = "ai.onnx.contrib"
ORT_DOMAINS = {"", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental", "ai.onnx.training"}


@dataclass
class CheckItem:
    name: str
    ok: bool
    detail: str
    hint: str | None = None


@dataclass
class Report:
    path: Path
    kind: str  # layout's kind ("chat" | "embedding" | "e2e" | "tensor"), or "unknown"
    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(item.ok for item in self.items)

    @property
    def failures(self) -> list[CheckItem]:
        return [item for item in self.items if not item.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "ok": self.ok,
            "checks": [
                {"name": i.name, "ok": i.ok, "detail": i.detail, "hint": i.hint} for i in self.items
            ],
        }


class _Stop(Exception):
    """Later checks depend on one that failed: stop this section."""


class _Checks:
    def __init__(self, report: Report) -> None:
        self.report = report

    def add(self, name: str, ok: bool, detail: str, hint: str | None = None) -> bool:
        self.report.items.append(CheckItem(name, ok, detail, None if ok and not hint else hint))
        return ok

    def require(self, name: str, ok: bool, detail: str, hint: str | None = None) -> None:
        if not self.add(name, ok, detail, hint):
            raise _Stop


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    # C++ texts from onnxruntime carry a "[ONNXRuntimeError] : 1 : FAIL : " prefix: keep the meaning.
    for marker in ("FAIL : ", "INVALID_ARGUMENT : ", "NO_SUCHFILE : ", "INVALID_GRAPH : ", "NOT_IMPLEMENTED : "):
        if marker in first:
            first = first.split(marker, 1)[1]
    return first[:300]


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


# ---------------------------------------------------------------------------- the check
def check(folder: Path, *, run: bool = False) -> Report:
    """Check ``folder``; ``run`` adds a smoke run. Never raises for a broken model folder."""
    folder = Path(folder)
    report = Report(path=folder, kind="unknown")
    checks = _Checks(report)
    if not folder.is_dir():
        checks.add("folder", False, f"{folder} is not a folder", "pass the folder that holds the model")
        return report
    found = layout.inspect(folder)
    report.kind = found.kind or "unknown"
    from onnxg.convert import check_chat, check_onnx

    sections: dict[str, Callable[[_Checks, layout.Layout, bool], None]] = {
        "chat": check_chat.check_chat,
        "embedding": check_onnx.check_embedding,
        "e2e": check_onnx.check_e2e,
        "tensor": check_onnx.check_tensor,
    }
    section = sections.get(report.kind)
    if section is None:
        for issue in found.issues:
            checks.add(issue.topic, False, issue.detail, issue.hint)
        return report
    try:
        section(checks, found, run)
    except _Stop:
        pass
    except Exception as exc:  # noqa: BLE001 - last resort: a check must report, not crash
        if os.environ.get("ONNXG_DEBUG", "") not in ("", "0"):
            raise
        checks.add("checker", False, f"unexpected error: {type(exc).__name__}: {_short(exc)}",
                   "a bug in the checker: rerun with ONNXG_DEBUG=1 to see the traceback, and report it")
    reported = {item.name for item in report.items}
    for issue in found.issues:  # whatever keeps the loader from loading it fails the check too
        if issue.topic not in reported:
            checks.add(issue.topic, False, issue.detail, issue.hint)
    _check_provenance(checks, folder)
    return report


def _check_provenance(checks: _Checks, folder: Path) -> None:
    """onnxg.json (written by convert/pull): the files it lists are present with their sizes."""
    path = folder / "onnxg.json"
    if not path.is_file():
        return
    try:
        data = _load_json(path)
    except (OSError, ValueError) as exc:
        checks.add("onnxg.json", False, f"cannot be read: {_short(exc)}", "reconvert, or delete onnxg.json")
        return
    from onnxg.runtime import store

    entries = store.manifest_files(data) if isinstance(data, dict) else {}
    bad = []
    for name, entry in entries.items():
        size = entry.get("size")
        if not name or name in ("None", store.MANIFEST):  # "None": a list entry with no path
            continue
        target = folder / name
        if not target.is_file():
            bad.append(f"{name} missing")
        elif isinstance(size, int) and target.stat().st_size != size:
            bad.append(f"{name} is {target.stat().st_size} bytes, recorded {size}")
    if bad:
        checks.add("provenance", False, "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""),
                   "files changed since conversion: reconvert or re-pull the model")
    else:
        checks.add("provenance", True, f"{len(entries)} files match onnxg.json")
