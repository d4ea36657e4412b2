"""Everything a server needs, in one typed object: the ONE declaration of serve's defaults.

``onnxg serve`` (its options take their defaults from ``DEFAULTS``), ``onnxg serve --detach``
and ``onnxg.Server`` all build a ``Settings``; a background server gets the same object back
through its command line (``service.daemon.serve_command``). Plain data, no web import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass
class Settings:
    models: list[str] = field(default_factory=list)
    """Store names or model folders; each is served under ``store.model_id(path)``."""
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = field(default=None, repr=False)
    """When set, every /v1 route needs ``Authorization: Bearer <api_key>``; never logged."""
    cors_origins: list[str] = field(default_factory=list)
    max_concurrency: int = 64
    """Inference requests in flight at once; beyond it requests get 429 at once."""
    max_body_bytes: int = 16 * 1024 * 1024
    grace_period: float = 30.0
    """Seconds in-flight requests get to finish after SIGTERM / Ctrl-C."""
    threads: int | None = None
    """Intra-op threads per model (None: the runtime's choice)."""
    log_level: str = "info"
    """One of ``LOG_LEVELS`` (uvicorn's and onnxg's loggers)."""
    kv_cache_mb: int | None = None
    """Key-value memory budget per chat model, in MB (None: half the memory the process may
    still use, cgroup limits included, when the model loads)."""
    warmup: bool = True
    ui: bool = True
    """Serve the chat page at ``/`` (``onnxg serve --no-ui`` turns it off)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


DEFAULTS = Settings()
