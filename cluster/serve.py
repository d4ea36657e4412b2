"""``onnxg serve --ray``: whole onnxg apps as Ray Serve replicas, behind Serve's proxy.

Each replica builds ``server.app.create_app(settings)`` itself (``serve.ingress`` with a
builder), so it loads its models, warms up, batches and answers exactly like ``onnxg serve``;
Serve's proxy adds one hop and spreads requests (streams pass through unbuffered, a client
that leaves cancels the replica's stream). ``application(settings, scale)`` is the Serve app;
``build(args)`` is the same for an import path (``serve run onnxg.cluster.serve:build``, a
KubeRay ``RayService``); ``run`` is the foreground command.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onnxg.runtime.errors import InvalidRequest, OnnxgError
from onnxg.server.settings import Settings

APP_NAME = "onnxg"
REPLICA_HEADER = b"x-onnxg-replica"


class DeployError(OnnxgError):
    code = "ray_deploy_failed"


@dataclass(frozen=True)
class Scale:
    """How many replicas, and what each reserves."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    """(min, max) replicas: Serve scales on requests in flight, instead of ``replicas``."""
    replica_cpus: float = 1.0

    @property
    def most(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


# How fast autoscaling reacts. Serve's defaults (load averaged over 30 s, reported every 10 s,
# 30 s before scaling up) take about a minute to answer a rush, long after a chat user gave up;
# onnxg's requests last seconds, so 10 s of load is a fair sample. A report every 2 s is one
# small message per replica. 5 s before scaling up ignores a burst that would be over before a
# new replica loaded its models; 120 s before scaling down (Serve: 600 s) frees an idle replica's
# memory without reloading models between the lulls of a busy hour. (``metrics_interval_s`` is
# marked deprecated in Ray 2.60 for environment variables that 2.60 does not read yet.)
AUTOSCALE_TIMING: dict[str, float] = {
    "look_back_period_s": 10.0, "metrics_interval_s": 2.0, "upscale_delay_s": 5.0, "downscale_delay_s": 120.0,
}


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"1:4"`` -> (1, 4)."""
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high)) if sep else (-1, -1)
    except ValueError:
        bounds = (-1, -1)
    if bounds[0] < 0 or bounds[1] < max(1, bounds[0]):
        raise InvalidRequest(f"--autoscale takes MIN:MAX replicas (0 <= MIN <= MAX, MAX >= 1), not {text!r}",
                             param="autoscale")
    return bounds


def deployment_options(settings: Settings, scale: Scale) -> dict[str, Any]:
    """Serve's options sized for onnxg: each replica takes as many requests as it batches."""
    options: dict[str, Any] = {
        "name": "onnxg",
        "max_ongoing_requests": settings.max_concurrency,  # Serve's default (5) starves the batcher
        "graceful_shutdown_timeout_s": settings.grace_period,
        "health_check_period_s": 5.0,
        "ray_actor_options": {"num_cpus": scale.replica_cpus},
    }
    if scale.autoscale:
        options["autoscaling_config"] = {
            "min_replicas": scale.autoscale[0], "max_replicas": scale.autoscale[1],
            "initial_replicas": max(1, scale.autoscale[0]),
            "target_ongoing_requests": max(1, settings.max_concurrency // 2),
            **AUTOSCALE_TIMING,
        }
    else:
        options["num_replicas"] = scale.replicas
    return options


def application(settings: Settings, scale: Scale) -> Any:
    """The Serve application; ``settings.models`` must be folders that exist on every node."""
    from ray import serve

    @serve.ingress()
    class OnnxgReplica:
        """One replica: a whole onnxg server app, built where the replica runs."""

        def __init__(self, fields: dict[str, Any]) -> None:
            self.fields = fields

        def __serve_build_asgi_app__(self) -> Any:
            from onnxg.server.app import create_app

            replica = serve.get_replica_context().replica_id.to_full_id_str()
            return ReplicaHeader(create_app(Settings(**self.fields)), replica)

    fields = dataclasses.asdict(settings)
    return serve.deployment(OnnxgReplica, **deployment_options(settings, scale)).bind(fields)


class ReplicaHeader:
    """ASGI wrapper: every response says which replica answered (``x-onnxg-replica``)."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app, self.value = app, replica.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (REPLICA_HEADER, self.value)]}
            await send(message)

        await self.app(scope, receive, tagged)


def build(args: dict[str, Any]) -> Any:
    """Import-path builder (``onnxg.cluster.serve:build``) for ``serve run`` or a RayService config.

    ``args``: ``models`` (folders on every node), optional ``replicas``, ``autoscale`` ("1:4"),
    ``replica_cpus`` and any ``Settings`` field (``api_key``, ``max_concurrency``, ...).
    """
    args = dict(args)
    models = args.pop("models", [])
    scale = Scale(replicas=int(args.pop("replicas", 1)), replica_cpus=float(args.pop("replica_cpus", 1.0)),
                  autoscale=parse_autoscale(str(args.pop("autoscale"))) if "autoscale" in args else None)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InvalidRequest(f"unknown onnxg setting(s): {', '.join(unknown)}", param=unknown[0])
    return application(Settings(models=[models] if isinstance(models, str) else list(models), **args), scale)


def check_replica_cpus(replica_cpus: float, address: str | None) -> None:
    """A local cluster (no ``address``, no ``RAY_ADDRESS``) has only this machine's CPUs."""
    if address is None and not os.environ.get("RAY_ADDRESS") and replica_cpus > (os.cpu_count() or 1):
        raise InvalidRequest(f"--replica-cpus {replica_cpus:g} is more than this machine's {os.cpu_count()} CPUs",
                             hint="a local Ray cluster has only this machine; join a bigger one with --ray-address",
                             param="replica_cpus")


def run(settings: Settings, scale: Scale, address: str | None,
        on_ready: Callable[[str], None], stop: threading.Event | None = None) -> None:
    """Start or join a cluster, deploy, call ``on_ready(url)``, and serve until SIGTERM / Ctrl-C
    (or ``stop`` is set); then delete the app (and end a cluster this call started)."""
    from onnxg.cluster import ray_session

    cpus = max(os.cpu_count() or 1, math.ceil(scale.most * scale.replica_cpus))
    with ray_session.session(address, num_cpus=cpus, api_key=settings.api_key) as session:
        import logging

        from ray import serve

        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO lines would bury onnxg's own

        stop = stop or threading.Event()
        previous = _on_signals(stop)
        serve_was_running = serve_running()
        deployed = False
        try:
            deploy(settings, scale, serve_was_running)
            deployed = True
            on_ready(settings.url)
            while not stop.wait(0.5):
                pass
        finally:
            _restore(previous)
            try:
                if deployed:  # replicas finish their requests (--grace-period); never another command's app
                    serve.delete(APP_NAME)
                if not session.started and not serve_was_running:  # Serve (and its proxy's port) ends with us;
                    serve.shutdown()  # a cluster we started ends whole (Serve's shutdown drains its proxy 30 s)
            except Exception:  # noqa: BLE001 - a cluster gone meanwhile has nothing left to delete
                pass


def serve_running() -> bool:
    """Whether Ray Serve already runs on the connected cluster (its controller actor is alive)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def deploy(settings: Settings, scale: Scale, serve_was_running: bool = False) -> None:
    """Start Serve (its proxy on ``settings.host:port``, head node only) and deploy the app.

    Serve already running on a joined cluster keeps its proxy's address (Serve ignores a new
    one) and may hold an ``onnxg`` app already: both are refused rather than printing a URL that
    does not answer or replacing someone's app."""
    from ray import serve

    serve.start(proxy_location="HeadOnly", http_options={"host": settings.host, "port": settings.port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    if serve_was_running:
        from ray.serve.context import _get_global_client

        http = _get_global_client().http_config
        if (http.host, http.port) != (settings.host, settings.port):
            raise DeployError(f"Ray Serve on this cluster already listens on {http.host}:{http.port}, not "
                              f"{settings.host}:{settings.port}",
                              hint=f"pass --host {http.host} --port {http.port} (Serve has one HTTP address per cluster)")
        if APP_NAME in serve.status().applications:
            raise DeployError(f"an app named {APP_NAME!r} already runs on this Ray cluster",
                              hint="stop it first (`onnxg stop`, or `serve delete onnxg`)")
    try:
        serve.run(application(settings, scale), name=APP_NAME, route_prefix="/",
                  logging_config={"log_level": "WARNING", "enable_access_log": False})
    except Exception as exc:  # noqa: BLE001 - Serve reports a replica's failure as a long RuntimeError
        raise DeployError(f"the onnxg replicas could not start: {_first_line(exc)}",
                          hint="see the replica logs under the Ray session's logs/serve folder") from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):  # the replica's own error is the last exception line
        if "Error:" in line and not line.startswith("Traceback"):
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
