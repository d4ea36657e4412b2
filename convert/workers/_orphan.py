"""Workers end themselves when onnxg dies, even by SIGKILL (which they cannot see)."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(interval: float = 0.5) -> None:
    """Exit as soon as the parent process is gone, so no orphan keeps writing a model."""
    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=loop, daemon=True, name="exit-with-parent").start()
