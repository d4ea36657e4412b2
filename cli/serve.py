"""``onnxg serve``: the OpenAI-compatible server (Litestar under uvicorn)."""

from __future__ import annotations

import logging
import os
import signal
from typing import Annotated, Any

import typer
from rich.markup import escape

from onnxg.cli._common import err, out, step
from onnxg.runtime.errors import InvalidRequest

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _models(refs: list[str] | None) -> list[str]:
    """Model folders: the given refs resolved (recipes convert on first use, with progress),
    or the default chat and embedding models."""
    from onnxg.convert import defaults

    if refs:
        return [str(defaults.resolve(ref, progress=step)) for ref in refs]
    models = [str(m) for m in defaults.default_models(progress=step)]
    if not models:
        raise InvalidRequest(
            "no model to serve and no default model is installed",
            hint="pass --model NAME_OR_PATH, or install the defaults: pip install 'onnxg[default-models]'",
        )
    return models


class _TracebackFilter(logging.Filter):
    """uvicorn logs a failed start-up's traceback; the CLI prints the one-line error instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Traceback (most recent call last)" not in record.getMessage()


def _logging(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"no_traceback": {"()": _TracebackFilter}},
        "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
                "filters": [] if os.environ.get("ONNXG_DEBUG") else ["no_traceback"],
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "onnxg": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }


def serve(
    ctx: typer.Context,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Store name or model folder; repeat to serve several (chat and embedding)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8080,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="ONNXG_API_KEY", show_envvar=True, help="Require 'Authorization: Bearer KEY' on /v1."
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="Allow browser requests from this origin (repeatable).")
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Inference requests in flight at once; more get 429.")
    ] = 64,
    grace_period: Annotated[
        float, typer.Option(min=0.0, help="Seconds in-flight requests get to finish on SIGTERM / Ctrl-C.")
    ] = 30.0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Threads per model (default: the runtime's choice).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error or critical.")] = "info",
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the chat page at / (the API is at /v1).")] = True,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; print the URL once it answers.")
    ] = False,
) -> None:
    """Serve models behind an OpenAI-compatible API (chat, completions, embeddings)."""
    if log_level.lower() not in LOG_LEVELS:
        raise InvalidRequest(f"unknown log level {log_level!r}", hint="use one of " + ", ".join(LOG_LEVELS),
                             param="log_level")
    if detach:
        from onnxg.cli._detach import detach_from_context

        raise typer.Exit(detach_from_context(ctx))
    import uvicorn

    from onnxg.server.app import StartupState, create_app
    from onnxg.server.settings import Settings

    settings = Settings(
        models=_models(model),
        host=host,
        port=port,
        api_key=api_key or None,
        cors_origins=list(cors_origin or []),
        max_concurrency=max_concurrency,
        grace_period=grace_period,
        threads=threads,
        ui=ui,
    )
    startup = StartupState()
    app = create_app(settings, startup)

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                port_bound = settings.port
                for server in self.servers:
                    for sock in server.sockets:
                        port_bound = sock.getsockname()[1]
                ids = ", ".join(app.state.registry.ids)
                url = Settings(host=settings.host, port=port_bound).url
                out.print(f"onnxg ready at {url}/v1 serving {ids}", markup=False)
                if settings.ui:
                    out.print(f"chat page at {url}/", markup=False)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=_logging(log_level),
        access_log=False,
        timeout_graceful_shutdown=settings.grace_period,  # type: ignore[arg-type]
        lifespan="on",
        server_header=False,
    )
    # uvicorn re-raises the signal it shut down on once it is done; these handlers make
    # that a no-op, so SIGTERM and Ctrl-C end in a clean exit 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        Server(config).run()
    except SystemExit as exc:  # uvicorn exits 3 when start-up fails (a model, the port)
        if startup.error is not None:
            raise startup.error from None
        err.print(f"[bold red]Error:[/bold red] the server could not start on {escape(settings.url)} "
                  "(see the log above)")
        raise typer.Exit(1) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if startup.error is not None:
        raise startup.error


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
