"""``onnxg serve``: the OpenAI-compatible server (Litestar under uvicorn)."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.markup import escape

from onnxg.cli._common import err, out, step
from onnxg.runtime.errors import InvalidRequest, OnnxgError
from onnxg.server.settings import DEFAULTS, LOG_LEVELS, Settings


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
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Store name or model folder; repeat to serve several (chat and embedding)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")
    ] = DEFAULTS.host,
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).", min=0, max=65535)] = DEFAULTS.port,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="ONNXG_API_KEY", show_envvar=True, help="Require 'Authorization: Bearer KEY' on /v1."
        ),
    ] = DEFAULTS.api_key,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="Allow browser requests from this origin (repeatable).")
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Inference requests in flight at once; more get 429.")
    ] = DEFAULTS.max_concurrency,
    grace_period: Annotated[
        float, typer.Option(min=0.0, help="Seconds in-flight requests get to finish on SIGTERM / Ctrl-C.")
    ] = DEFAULTS.grace_period,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Threads per model (default: the runtime's choice).")
    ] = DEFAULTS.threads,
    kv_cache_mb: Annotated[
        int | None, typer.Option("--kv-cache-mb", min=16, help="Key-value memory per chat model, in MB "
                                 "(default: half the memory this process may still use, cgroup limits included).")
    ] = DEFAULTS.kv_cache_mb,
    log_level: Annotated[str, typer.Option(help=", ".join(LOG_LEVELS[:-1]) + " or " + LOG_LEVELS[-1] + ".")
    ] = DEFAULTS.log_level,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the chat page at / (the API is at /v1).")
    ] = DEFAULTS.ui,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; print the URL once it answers.")
    ] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Serve replicas on a Ray cluster (pip install 'onnxg[ray]').",
                                      rich_help_panel="Ray")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster started for this "
        "server).", rich_help_panel="Ray")] = None,
    replicas: Annotated[int | None, typer.Option(min=1, help="Replicas, each a whole onnxg server (default 1).",
                                                 rich_help_panel="Ray")] = None,
    autoscale: Annotated[str | None, typer.Option(
        metavar="MIN:MAX", help="Scale replicas between MIN and MAX on requests in flight.", rich_help_panel="Ray")
    ] = None,
    replica_cpus: Annotated[float | None, typer.Option(
        min=0.0, help="CPUs Ray reserves per replica (default 1).", rich_help_panel="Ray")] = None,
) -> None:
    """Serve models behind an OpenAI-compatible API (chat, completions, embeddings)."""
    if log_level.lower() not in LOG_LEVELS:
        raise InvalidRequest(f"unknown log level {log_level!r}", hint="use one of " + ", ".join(LOG_LEVELS),
                             param="log_level")
    settings = Settings(
        models=list(model or []), host=host, port=port, api_key=api_key or None,
        cors_origins=list(cors_origin or []), max_concurrency=max_concurrency, grace_period=grace_period,
        threads=threads, kv_cache_mb=kv_cache_mb, log_level=log_level.lower(), ui=ui,
    )
    ray_args = _ray_args(ray, ray_address, replicas, autoscale, replica_cpus)
    if ray and replica_cpus is not None:
        from onnxg.cluster import serve as cluster_serve

        cluster_serve.check_replica_cpus(replica_cpus, ray_address)
    if detach:
        start_detached(settings, extra_args=ray_args)
        return
    if ray:
        run_on_ray(replace(settings, models=_models(settings.models)), ray_address, replicas, autoscale, replica_cpus)
        return
    run(replace(settings, models=_models(settings.models)))


def _ray_args(ray: bool, address: str | None, replicas: int | None, autoscale: str | None,
              replica_cpus: float | None) -> list[str]:
    """The Ray options as flags for a background child; refused without --ray."""
    given = {"--ray-address": address, "--replicas": replicas, "--autoscale": autoscale,
             "--replica-cpus": replica_cpus}
    if not ray:
        named = [flag for flag, value in given.items() if value is not None]
        if named:
            raise InvalidRequest(f"{named[0]} needs --ray", param=named[0].lstrip("-").replace("-", "_"))
        return []
    if replicas is not None and autoscale is not None:
        raise InvalidRequest("pass either --replicas or --autoscale, not both", param="autoscale")
    args = ["--ray"]
    for flag, value in given.items():
        if value is not None:
            args += [flag, str(value)]
    return args


def run_on_ray(settings: Settings, address: str | None, replicas: int | None, autoscale: str | None,
               replica_cpus: float | None) -> None:
    """``onnxg serve --ray`` in the foreground: deploy, print the URL, serve until SIGTERM / Ctrl-C."""
    from onnxg.cluster import serve as cluster_serve

    scale = cluster_serve.Scale(
        replicas=replicas or 1, replica_cpus=1.0 if replica_cpus is None else replica_cpus,
        autoscale=cluster_serve.parse_autoscale(autoscale) if autoscale is not None else None)
    if settings.port == 0:
        from onnxg.service import daemon

        settings = daemon.with_port(settings)
    count = f"{scale.autoscale[0]}-{scale.autoscale[1]}" if scale.autoscale else str(scale.replicas)
    step(f"deploying {count} replica(s) on " + (f"the Ray cluster at {address}" if address else "a local Ray cluster"))

    def ready(url: str) -> None:
        out.print(f"onnxg ready at {url}/v1 (Ray Serve)", markup=False)

    cluster_serve.run(settings, scale, address, ready)


def start_detached(settings: Settings, timeout: float | None = None, extra_args: list[str] | None = None) -> None:
    """``onnxg serve --detach``: the models made ready here (progress on stderr), then the server
    started in the background; returns once it answers /health and its URL is printed.

    An onnxg server with the same models already on the port is reused (nothing started).
    """
    from onnxg.service import daemon, records

    settings = daemon.with_port(settings)
    refs = settings.models
    log = records.log_path(settings.port)
    status = err.status(f"Starting the onnxg server on port {settings.port} (log: {log})")

    def show(_elapsed: float) -> None:  # shown only while a child we started gets ready
        status.start()
        last = daemon.log_tail(log, 1)
        if last:
            status.update(f"Starting the onnxg server on port {settings.port}: [dim]{escape(last[:100])}[/dim]")

    try:
        record, proc = daemon.start(
            replace(settings, models=daemon.normalize_models(refs)), origin="ray" if extra_args else "detach",
            extra_args=extra_args or (),
            timeout=daemon.DEFAULT_START_TIMEOUT_S if timeout is None else timeout,
            prepare=lambda: _models(refs), on_wait=show,
        )
    finally:
        status.stop()
    if proc is None:
        err.print(
            f"An onnxg server with these models already runs at {record.url} (pid {record.pid}); nothing started."
        )
    else:
        err.print(f"Started the onnxg server in the background (pid {proc.pid}); log: {escape(str(log))}")
        err.print("Stop it with `onnxg stop" + ("" if settings.port == DEFAULTS.port else f" --port {settings.port}")
                  + "`.")
    out.print(record.url, markup=False)


def run(settings: Settings) -> None:
    """The server in this process, until SIGTERM or Ctrl-C; ``settings.models`` are folders."""
    import uvicorn

    from onnxg.server.app import StartupState, create_app

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
                for name, chat in app.state.registry.chat.items():
                    budget = chat.stats().get("kv_budget_bytes")
                    if budget:
                        out.print(f"{name}: key-value memory budget {budget // 2**20} MB", markup=False)
                if settings.ui:
                    out.print(f"chat page at {url}/", markup=False)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=_logging(settings.log_level),
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
        raise OnnxgError(f"the server could not start on {settings.url}", hint="see the log above") from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if startup.error is not None:
        raise startup.error


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
