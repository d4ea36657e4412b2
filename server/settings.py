"""Everything ``create_app`` needs, in one typed object (the CLI fills it from its options)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    warmup: bool = True
    ui: bool = True
    """Serve the chat page at ``/`` (``onnxg serve --no-ui`` turns it off)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
