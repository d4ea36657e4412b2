"""``onnxg.Server``: run an onnxg server from a Python program.

Like the original tool's host API: starting does nothing when an onnxg server with the same
models already runs on the port (it is reused); otherwise the models are first made ready
(downloaded or converted, with progress events), then ``onnxg serve`` starts as a child
process and ``start()`` returns once it answers /health. Events::

    on_download(progress)      while a model is downloaded or converted (DownloadProgress)
    on_ready(model_ids)        the server answers; the ids it serves
    on_error(error)            an OnnxgError; start() raises it right after
    on_terminate(pid, code)    the server process ended (from a watcher thread)

The server's output goes to ``ONNXG_HOME/logs/serve-<port>.log``, and it is recorded in
``ONNXG_HOME/run/<port>.json`` so that ``onnxg status`` and ``onnxg stop`` see it too.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from onnxg.runtime.errors import OnnxgError
from onnxg.server.settings import DEFAULTS, Settings
from onnxg.service import daemon, procs, records

log = logging.getLogger("onnxg.host")


@dataclass(frozen=True)
class DownloadProgress:
    """One progress event while a model is made ready (download or conversion)."""

    model: str  # the reference as given (store name, recipe, path; "chat"/"embedding" for defaults)
    message: str  # a short step, e.g. "download", "convert: quantize", "ready"
    completed: float | None = None  # bytes or steps done, when known
    total: float | None = None
    done: bool = False  # this model is ready

    @property
    def fraction(self) -> float | None:
        if self.completed is None or not self.total:
            return None
        return min(1.0, self.completed / self.total)


OnDownload = Callable[[DownloadProgress], None]
OnReady = Callable[[list[str]], None]
OnError = Callable[[OnnxgError], None]
OnTerminate = Callable[[int, "int | None"], None]


class Server:
    """An ``onnxg serve`` process, started (or reused) on ``host:port``.

    ``with Server(models=[...]) as srv:`` starts it and stops it at the end of the block;
    ``start()`` / ``stop()`` do the same by hand. ``port=0`` picks a free port. A server this
    object reused rather than started is left running by ``stop()`` (``terminate()`` stops
    whatever serves the port, like the original tool's terminate call).

    ``**settings`` are the other fields of ``onnxg.server.settings.Settings`` (what ``onnxg
    serve`` takes as options, with the same defaults): ``max_concurrency``, ``grace_period``,
    ``threads``, ``cors_origins``, ``log_level``. ``grace`` (what ``stop()`` waits before
    SIGKILL) defaults to the server's grace period plus a margin.
    """

    def __init__(
        self,
        models: Sequence[str | Path] | None = None,
        *,
        host: str = DEFAULTS.host,
        port: int = DEFAULTS.port,
        api_key: str | None = DEFAULTS.api_key,
        extra_args: Sequence[str] = (),
        reuse: bool = True,
        timeout: float = daemon.DEFAULT_START_TIMEOUT_S,
        grace: float | None = None,
        on_download: OnDownload | None = None,
        on_ready: OnReady | None = None,
        on_error: OnError | None = None,
        on_terminate: OnTerminate | None = None,
        **settings: Any,
    ) -> None:
        unknown = sorted(set(settings) & {"models", "host", "port", "api_key"})
        if unknown:
            raise TypeError(f"Server() got {unknown[0]!r} twice")
        self.requested = [str(m) for m in (models or [])]
        self.settings = daemon.with_port(Settings(host=host, port=port, api_key=api_key, **settings))
        self.host = host
        self.port = self.settings.port
        self.api_key = api_key
        self.extra_args = list(extra_args)
        self.reuse = reuse
        self.timeout = timeout
        self.grace = self.settings.grace_period + daemon.STOP_MARGIN_S if grace is None else grace
        self.on_download = on_download
        self.on_ready = on_ready
        self.on_error = on_error
        self.on_terminate = on_terminate
        self.models: list[str] = []  # the ids served, once ready
        self.pid: int | None = None
        self.owned = False  # True when this object started the process
        self.log_path = records.log_path(self.port)
        self._proc = None
        self._watcher: threading.Thread | None = None
        self._ended = threading.Event()
        self._ready = threading.Event()
        self._settled = threading.Event()  # ready or failed
        self._error: OnnxgError | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:8080``."""
        return records.base_url(self.host, self.port)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``), for ``openai.OpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._alive()
        return self.pid is not None and procs.pid_alive(self.pid)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, *, wait: bool = True) -> Server:
        """Make the models ready, start (or reuse) the server, and wait for /health.

        ``wait=False`` does all that in a background thread and returns at once; the events
        report the outcome (``wait_ready()`` blocks until then).
        """
        if not wait:
            threading.Thread(target=self._start_quietly, name="onnxg-server-start", daemon=True).start()
            return self
        try:
            self._start()
        except OnnxgError as exc:
            self._fail(exc)
            raise
        except OSError as exc:
            error = daemon.ServerStartError(f"could not start the server: {exc}", hint=f"see the log: {self.log_path}")
            self._fail(error)
            raise error from exc
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """After ``start(wait=False)``: block until ready; False if it failed or timed out."""
        self._settled.wait(timeout)
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server process this object started ends; its exit code."""
        if self._proc is None:
            return None
        self._ended.wait(timeout)
        return self._proc.returncode

    def stop(self) -> None:
        """Stop the server if this object started it (SIGTERM, then SIGKILL after ``grace``)."""
        proc = self._proc
        if proc is None or not self.owned:
            return
        procs.terminate(proc.pid, self.grace, alive=self._alive)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=10)

    def terminate(self) -> None:
        """Stop whatever onnxg server runs on this port, started by this object or not."""
        if self.owned and self._proc is not None:
            self.stop()
            return
        record = records.get_record(self.port)
        if record is not None:
            daemon.stop(record, self.grace)

    # ------------------------------------------------------------------ internals

    def _alive(self) -> bool:
        """Whether our child still runs. Once the watcher thread waits on it, ``poll()`` cannot
        tell (it answers None while another thread holds the wait), so ask the watcher."""
        if self._proc is None:
            return False
        if self._watcher is not None:
            return not self._ended.is_set()
        return self._proc.poll() is None

    def _start_quietly(self) -> None:
        try:
            self.start()
        except (OnnxgError, OSError):
            pass  # reported through on_error

    def _fail(self, error: OnnxgError) -> None:
        self._error = error
        self._settled.set()
        if self.on_error is not None:
            self.on_error(error)

    def _emit(self, progress: DownloadProgress) -> None:
        if self.on_download is not None:
            self.on_download(progress)

    def _start(self) -> None:
        if self._proc is not None:
            if self._alive():
                return
            # started before and ended since: start afresh
            self._proc, self._watcher, self.pid, self.owned = None, None, None, False
            self._ended, self._ready, self._settled = threading.Event(), threading.Event(), threading.Event()
            self._error = None
        paths: list[Path] = []

        def prepare() -> list[str]:  # only once a start is decided (not for a reused server)
            paths.extend(prepare_models(self.requested, self._emit))
            return [str(p) for p in paths]

        def spawned(proc: subprocess.Popen[bytes]) -> None:  # stop() works while it starts
            self._proc, self.pid, self.owned = proc, proc.pid, True

        record, proc = daemon.start(
            replace(self.settings, models=daemon.normalize_models(self.requested)), origin="python",
            extra_args=self.extra_args, reuse=self.reuse, timeout=self.timeout, prepare=prepare, on_spawn=spawned,
        )
        if proc is None:
            self._attach(record)
            return
        self.models = self._model_ids(paths)
        self._ready.set()
        self._settled.set()
        try:
            if self.on_ready is not None:
                self.on_ready(list(self.models))
        finally:  # watched only now, so on_terminate can never come before on_ready
            self._watcher = threading.Thread(target=self._watch, name="onnxg-server-watch", daemon=True)
            self._watcher.start()

    def _attach(self, record: records.Record) -> None:
        self.pid, self.owned = record.pid, False
        self.host = record.host
        self.log_path = Path(record.log)
        self.models = self._model_ids([Path(m) for m in record.models])
        self._ready.set()
        self._settled.set()
        if self.on_ready is not None:
            self.on_ready(list(self.models))

    def _watch(self) -> None:
        proc = self._proc
        assert proc is not None
        code = proc.wait()
        self._ended.set()
        record = records.get_record(self.port)
        if record is None or record.pid == proc.pid:
            records.remove_record(self.port)
        if self.on_terminate is not None:
            try:
                self.on_terminate(proc.pid, code)
            except Exception:  # a callback's bug must not kill the watcher silently
                log.exception("on_terminate raised")

    def _model_ids(self, paths: Sequence[Path]) -> list[str]:
        """The ids served, from GET /v1/models (folder names if that fails)."""
        from onnxg.service.client import Client

        try:
            return [str(item["id"]) for item in Client(self.url, self.api_key, timeout=10).models()]
        except (OnnxgError, ValueError, KeyError, TypeError):
            return [Path(p).name for p in paths]




def prepare_models(refs: Sequence[str], emit: OnDownload) -> list[Path]:
    """Model folders for ``refs``, downloading or converting what is missing, with progress.

    No refs: the default models (chat and embedding), built on first use.
    """
    from onnxg.convert import defaults

    def progress_for(name: str) -> Callable[..., None]:
        def report(step: object = "", completed: float | None = None, total: float | None = None) -> None:
            emit(DownloadProgress(name, str(step), completed, total))

        return report

    if not refs:
        paths = []
        for kind in ("chat", "embedding"):
            path = defaults.default_model(kind, progress=progress_for(kind))
            emit(DownloadProgress(kind, "ready", done=True))
            paths.append(Path(path))
        return paths
    paths = []
    for ref in refs:
        path = defaults.resolve(ref, progress=progress_for(ref))
        emit(DownloadProgress(ref, "ready", done=True))
        paths.append(Path(path))
    return paths

