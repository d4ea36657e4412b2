"""Headless Chromium for the chat page's tests: the system's Chromium (``apt-get install
chromium``) driven by the ``playwright`` package (its own browser download is not needed).

``ONNXG_CHROMIUM`` points at another Chromium binary; ``ONNXG_UI_SCREENSHOTS`` chooses the
folder screenshots are written to (default: a folder under pytest's temporary directory,
printed at the end of the run).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIZES = {"phone": (390, 844), "wide": (1280, 800)}


def chromium_path() -> str:
    found = os.environ.get("ONNXG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("the browser tests need Chromium: apt-get install -y chromium (or set ONNXG_CHROMIUM)")
    return found


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=chromium_path(), args=ARGS)


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "a condition") -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Screens:
    """Writes ``<name>-phone.png`` and ``<name>-wide.png`` of a page, restoring its size after."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def shoot(self, page: Any, name: str) -> list[Path]:
        before = page.viewport_size
        paths = []
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(150)  # layout and the panels' fold settle
            path = self.folder / f"{name}-{size}.png"
            page.screenshot(path=str(path))
            paths.append(path)
        if before:
            page.set_viewport_size(before)
        return paths
