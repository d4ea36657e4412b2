"""Processes: is a pid alive (and still the same process), and stopping one for good.

Used for background servers (``service.daemon``) and the children that onnxg starts
(``onnxg.Server``, ``onnxg serve --detach``). A process's OS start time guards against pid
reuse: a record whose pid now belongs to another process is stale.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from onnxg.runtime.errors import OnnxgError

class StopError(OnnxgError):
    """A server that could not be signalled (another user's process)."""

    code = "server_stop_failed"


def proc_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` as the OS reports it, or None if unknown.

    Linux: field 22 of /proc/<pid>/stat (clock ticks since boot). Elsewhere: ``ps -o lstart=``.
    """
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and Path("/proc/self/stat").exists():
        try:
            text = stat.read_text()
        except OSError:
            return None
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = text[text.rfind(")") + 2 :].split()
        return fields[19] if len(fields) > 19 else None
    try:
        result = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _is_zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].startswith("Z")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    except OSError:
        return False
    return not _is_zombie(pid)


def _signal(pid: int, sig: int) -> None:
    """Signal the server's whole process group when it leads one (its own session)."""
    try:
        if hasattr(os, "getpgid") and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def terminate(pid: int, grace: float, *, alive: Callable[[], bool] | None = None) -> str:
    """SIGTERM, then SIGKILL after ``grace`` seconds. Returns "terminated", "killed" or "gone".

    ``alive()`` tells whether the process still runs (default: ``pid_alive(pid)``); a parent
    passes one that reaps its own child, which would otherwise linger as a zombie.
    """
    check = alive or (lambda: pid_alive(pid))
    if not check():
        return "gone"
    try:
        _signal(pid, signal.SIGTERM)
    except PermissionError as exc:
        raise StopError(
            f"not allowed to stop process {pid}", hint="it belongs to another user"
        ) from exc
    if _wait_dead(check, grace):
        return "terminated"
    _signal(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    if _wait_dead(check, 10.0):
        return "killed"
    raise StopError(f"process {pid} did not end after SIGKILL")


def _wait_dead(alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if not alive():
            return True
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    return not alive()
