"""Background servers: start, wait for /health, stop (their records: ``service.records``).

``start(settings, ...)`` is the one start path of ``onnxg serve --detach`` and ``onnxg.Server``:
the child is ``onnxg serve`` with the same ``Settings`` on its command line (the API key in its
environment), given model folders that the caller prepared (downloaded or converted, with
visible progress) before the spawn. /health is polled with urllib. Process liveness and
stopping are ``service.procs``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path

from onnxg.runtime import home
from onnxg.runtime.errors import OnnxgError
from onnxg.server.settings import DEFAULTS, Settings
from onnxg.service import procs, records

DEFAULT_START_TIMEOUT_S = 600.0  # a first start may convert the default models
STOP_MARGIN_S = 5.0  # waited on top of a server's own grace period before SIGKILL


class ServerStartError(OnnxgError):
    """The server process died, or did not answer /health in time."""

    code = "server_start_failed"


class PortInUse(OnnxgError):
    """The port is held by something that is not the onnxg server asked for."""

    code = "port_in_use"


# ----------------------------------------------------------------------------- addresses


def port_in_use(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``, or holds the port."""
    target = records.connect_host(host)
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        if sock.connect_ex((target, port)) == 0:
            return True
    # Nothing answers, but a socket may still be bound without listening.
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name == "posix":  # like uvicorn: a port in TIME_WAIT is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((target, port))
        except OSError:
            return True
    return False


def health(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``GET /health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{records.base_url(host, port)}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop(record: records.Record, grace: float | None = None) -> str:
    """Stop a background server and remove its record; see ``terminate`` for the result.

    ``grace`` defaults to the server's own grace period (as started) plus a margin.
    """
    if grace is None:
        grace = float(record.extra.get("grace_s", DEFAULTS.grace_period)) + STOP_MARGIN_S  # type: ignore[arg-type]
    result = procs.terminate(record.pid, grace, alive=lambda: records.is_alive(record))
    records.remove_record(record.port)
    return result


@contextlib.contextmanager
def port_lock(port: int) -> Iterator[None]:
    """Serialise starts on one port, so two concurrent starts do not both spawn."""
    with home.file_lock(records.run_dir() / "locks" / f"{port}.lock"):  # apart from the records
        yield


# ----------------------------------------------------------------------------- spawning


def normalize_models(models: Sequence[str | Path]) -> list[str]:
    """Model refs as compared between starts: store/recipe names as typed, folders absolute."""
    from onnxg.runtime import store

    result = []
    for ref in models:
        text = str(ref)
        if store.is_store_name(text) and (home.models_dir() / text).is_dir():
            result.append(text)
        elif Path(text).expanduser().is_dir():
            result.append(str(Path(text).expanduser().resolve()))
        else:
            result.append(text)
    return result


def same_models(record: records.Record, models: Sequence[str]) -> bool:
    return sorted(record.models) == sorted(models)


# Settings fields and the `onnxg serve` option that sets each (models: --model, repeated; the API
# key travels in the environment, since a command line shows in `ps`).
SERVE_FLAGS = {
    "host": "--host", "port": "--port", "cors_origins": "--cors-origin", "max_concurrency": "--max-concurrency",
    "grace_period": "--grace-period", "threads": "--threads", "kv_cache_mb": "--kv-cache-mb",
    "log_level": "--log-level", "ui": ("--ui", "--no-ui"),
}
_NOT_FLAGS = {"models", "api_key"}


def serve_command(settings: Settings, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line of an ``onnxg serve`` child in this Python environment, for ``settings``.

    Host and port always, every other setting that differs from the default; a setting that
    ``onnxg serve`` has no option for cannot reach a child, so it is refused.
    """
    argv = [sys.executable, "-m", "onnxg.cli.main", "serve"]
    for model in settings.models:
        argv += ["--model", str(model)]
    for item in fields(Settings):
        value = getattr(settings, item.name)
        if item.name in _NOT_FLAGS or (value == getattr(DEFAULTS, item.name) and item.name not in ("host", "port")):
            continue
        flag = SERVE_FLAGS.get(item.name)
        if flag is None:
            raise ValueError(f"`onnxg serve` has no option for the setting {item.name!r}")
        if isinstance(flag, tuple):  # a switch: --ui / --no-ui
            argv.append(flag[0] if value else flag[1])
            continue
        for one in value if isinstance(value, list) else [value]:
            argv += [flag, str(one)]
    return argv + list(extra_args)


def with_port(settings: Settings) -> Settings:
    """``settings`` with a real port: port 0 (any) becomes a port free right now."""
    return settings if settings.port else replace(settings, port=free_port(settings.host))


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr into ``log`` (truncated), stdin closed.

    ``new_session``: its own process session, so the terminal's Ctrl-C and hang-up do not
    reach it and ``stop`` can signal its whole group.
    """
    home.ensure(log.parent)
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    flags = 0
    if new_session and os.name == "nt":  # pragma: no cover - Windows
        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(subprocess, "DETACHED_PROCESS", 0)
    with open(log, "wb") as handle:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, env=child_env,
            close_fds=True, start_new_session=new_session and os.name == "posix", creationflags=flags,
        )


def log_tail(log: Path | str, lines: int = 15) -> str:
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def start(
    settings: Settings,
    *,
    origin: str,
    extra_args: Sequence[str] = (),
    reuse: bool = True,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    prepare: Callable[[], Sequence[str]] | None = None,
    on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> tuple[records.Record, subprocess.Popen[bytes] | None]:
    """Start ``onnxg serve`` with ``settings`` in the background and wait for /health.

    ``settings.models`` are normalised refs (``normalize_models``): what the record holds and
    what a running server is compared with. With ``reuse``, an onnxg server with the same
    models already on the port is waited for and returned with ``None`` for the process.
    Otherwise ``prepare()`` (called once a start is decided, before the spawn) gives the model
    folders for the child's command line, so the child only loads them; without it the refs
    go as they are. ``on_spawn(proc)`` runs once the child exists. The record keeps the
    server's grace period for ``stop``.

    Raises PortInUse (another onnxg server, or another program, holds the port) or
    ServerStartError (the child died or did not answer in time; it is stopped, its record removed).
    """
    host, port = settings.host, settings.port
    if not port:
        raise ValueError("start() needs a real port: see with_port()")
    with port_lock(port):
        record = records.get_record(port)
        if record is not None and reuse and same_models(record, settings.models):
            try:
                wait_healthy(record.host, port, record.log, lambda: _record_gone(record), timeout=timeout)
            except ServerStartError:
                pass  # it ended meanwhile: start our own
            else:
                return record, None
        record = records.get_record(port)  # it may have ended while we waited
        if record is not None:
            served = ", ".join(record.models) or "the default models"
            raise PortInUse(
                f"port {port} is taken by another onnxg server (pid {record.pid}, {served})",
                hint=f"stop it with `onnxg stop --port {port}`, or use another port",
            )
        if port_in_use(host, port):
            raise PortInUse(
                f"port {port} is already in use by another program",
                hint="use another port (0 picks a free one), or stop what listens there",
            )
        folders = list(prepare()) if prepare is not None else list(settings.models)
        argv = serve_command(replace(settings, models=folders), extra_args)
        env = dict(os.environ)
        if settings.api_key:
            env["ONNXG_API_KEY"] = settings.api_key
        log = records.log_path(port)
        proc = spawn(argv, log, env=env)
        if on_spawn is not None:
            on_spawn(proc)
        record = records.new_record(proc, host, port, settings.models, log, origin)
        record.extra["grace_s"] = settings.grace_period
        records.write_record(record)
        try:
            wait_healthy(host, port, log, lambda: _exit_message(proc, log), timeout=timeout, on_wait=on_wait)
        except BaseException:
            procs.terminate(proc.pid, 5.0, alive=lambda: proc.poll() is None)
            records.remove_record(port)
            raise
    return record, proc


def wait_healthy(
    host: str,
    port: int,
    log: Path | str,
    gone: Callable[[], str | None],
    *,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    on_wait: Callable[[float], None] | None = None,
) -> None:
    """Block until /health answers 200; raise ServerStartError if the server ends or times out.

    ``gone()`` says why the server is no more (one line), or None while it runs.
    ``on_wait(elapsed_s)`` is called between polls (a progress display, or an abort check).
    """
    start = time.monotonic()
    delay = 0.05
    while True:
        why = gone()
        if why is not None:
            raise ServerStartError(why, hint=f"see the log: {log}")
        if health(host, port, timeout=2.0):
            return
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise ServerStartError(
                f"the server did not answer {records.base_url(host, port)}/health within {timeout:.0f} s",
                hint=f"it is still starting or stuck; see the log: {log}",
            )
        if on_wait is not None:
            on_wait(elapsed)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _exit_message(proc: subprocess.Popen[bytes], log: Path) -> str | None:
    code = proc.poll()
    if code is None:
        return None
    last = _last_error_line(log_tail(log, 60))
    return f"the server exited with code {code} before it was ready" + (f": {last}" if last else "")


def _record_gone(record: records.Record) -> str | None:
    if records.is_alive(record):
        return None
    return f"the onnxg server on port {record.port} (pid {record.pid}) ended before it was ready"


_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception)): (.+)$")


def _last_error_line(tail: str) -> str:
    """The most telling line of a log tail.

    In order: the CLI's own "Error: ..." line; the last exception line of a traceback
    ("ModelLoadError: ...", module path dropped); the last line mentioning an error; the last line.
    """
    lines = [line.strip().lstrip("|").strip() for line in tail.splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("Error: "):
            return line[len("Error: "):][:300]
    for line in reversed(lines):
        match = _EXC_LINE.match(line)
        if match and "Group" not in match.group(1):
            return f"{match.group(1)}: {match.group(2)}"[:300]
    for line in reversed(lines):
        if "error" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    target = records.connect_host(host)
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((target, 0))
        return int(sock.getsockname()[1])
