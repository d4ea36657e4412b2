"""The records of background servers: ``ONNXG_HOME/run/<port>.json``, one per server.

A record holds the server's pid, address, models, log file and the process's OS start time.
The start time guards against pid reuse: a record whose pid now belongs to another process
(or to no process) is stale, and every reader removes it. Written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnxg.runtime import home
from onnxg.service import procs


@dataclass
class Record:
    """What ``ONNXG_HOME/run/<port>.json`` holds about one background server."""

    pid: int
    port: int
    host: str
    models: list[str]
    started: float  # time.time() at spawn
    log: str
    proc_start: str | None  # the OS's start time of ``pid`` (guards against pid reuse)
    origin: str = "detach"  # "detach" (the CLI) or "python" (onnxg.Server)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return base_url(self.host, self.port)

    @property
    def uptime_s(self) -> float:
        return max(0.0, time.time() - self.started)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["url"] = self.url
        data["uptime_s"] = round(self.uptime_s, 1)
        return data


def connect_host(host: str) -> str:
    """The address a client on this machine uses to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def base_url(host: str, port: int) -> str:
    target = connect_host(host)
    if ":" in target:
        target = f"[{target}]"
    return f"http://{target}:{port}"


def is_alive(record: Record) -> bool:
    """Whether the record's process still runs and is the same process (not a reused pid)."""
    if not procs.pid_alive(record.pid):
        return False
    if record.proc_start is None:
        return True
    now = procs.proc_start_time(record.pid)
    return now is None or now == record.proc_start


def run_dir() -> Path:
    return home.home() / "run"


def record_path(port: int) -> Path:
    return run_dir() / f"{port}.json"


def log_path(port: int) -> Path:
    return home.logs_dir() / f"serve-{port}.log"


def write_record(record: Record) -> Path:
    """Write the record atomically (a reader never sees half a file)."""
    path = record_path(record.port)
    home.ensure(path.parent)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    data = {k: v for k, v in record.to_json().items() if k not in ("url", "uptime_s")}
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove_record(port: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_path(port).unlink()


def _load(path: Path) -> Record | None:
    try:
        data = json.loads(path.read_text())
        return Record(
            pid=int(data["pid"]),
            port=int(data["port"]),
            host=str(data["host"]),
            models=[str(m) for m in data.get("models", [])],
            started=float(data["started"]),
            log=str(data.get("log", "")),
            proc_start=data.get("proc_start"),
            origin=str(data.get("origin", "detach")),
            extra=dict(data.get("extra", {})),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def get_record(port: int) -> Record | None:
    """The live record for ``port``; a stale or unreadable one is removed."""
    path = record_path(port)
    if not path.exists():
        return None
    record = _load(path)
    if record is None or not is_alive(record):
        remove_record(port)
        return None
    return record


def list_records() -> list[Record]:
    """Every live background server, by port; stale records are removed on the way."""
    if not run_dir().is_dir():
        return []
    records = []
    for path in sorted(run_dir().glob("*.json")):
        if not path.stem.isdigit():
            continue
        record = get_record(int(path.stem))
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: r.port)


def new_record(
    proc: subprocess.Popen[bytes], host: str, port: int, models: Sequence[str], log: Path, origin: str
) -> Record:
    return Record(
        pid=proc.pid,
        port=port,
        host=host,
        models=list(models),
        started=time.time(),
        log=str(log),
        proc_start=procs.proc_start_time(proc.pid),
        origin=origin,
    )
