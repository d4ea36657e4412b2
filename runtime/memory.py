"""How much memory this process may use, cgroup limits included: the default key-value budget."""

from __future__ import annotations

import os
from pathlib import Path

MB = 1024 * 1024
DEFAULT_SHARE = 0.5  # of the memory still free to this process
MIN_BUDGET = 64 * MB


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) is not a number


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_bytes() -> int:
    """Memory this process may still take: the free memory of the machine, or of its cgroup
    (v2 ``memory.max - memory.current``, v1 ``limit - usage``) when that is less."""
    free = _meminfo("MemAvailable") or 4096 * MB
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, now = _read_int(limit), _read_int(used)
        if cap is not None and cap < (1 << 60):
            free = min(free, max(0, cap - (now or 0)))
    return free


def default_kv_budget() -> int:
    """Half of what this process may still take (env ``ONNXG_KV_CACHE_MB`` overrides), at least 64 MB."""
    override = os.environ.get("ONNXG_KV_CACHE_MB")
    if override and override.isdigit():
        return int(override) * MB
    return max(MIN_BUDGET, int(available_bytes() * DEFAULT_SHARE))
