"""Start or join a Ray cluster for one onnxg command, and always leave it as found.

``session(address)`` joins ``address`` (or ``RAY_ADDRESS``); with neither, it starts a private
one-machine cluster bound to 127.0.0.1 that ends with the command. Settings that a local
cluster needs are put in the environment before Ray starts, since every Ray process inherits
them: no binding on other interfaces, a random auth token kept in memory (not written to
``~/.ray``), the proxy's error hook (``cluster.proxy``), a short temp dir (Ray's socket paths
break when it is long), a small object store.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from onnxg.runtime.errors import OnnxgError

PROXY_HOOK = "onnxg.cluster.proxy.middlewares"
OBJECT_STORE_MB = 200
CONNECT_TIMEOUT_S = 5.0


class RayUnavailable(OnnxgError):
    code = "ray_unavailable"


@dataclass(frozen=True)
class Session:
    address: str
    """The GCS address of the cluster joined or started."""
    started: bool
    """Whether this command started the cluster (it then ends with the command)."""


def require_ray() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RayUnavailable("Ray is not installed", hint="pip install 'onnxg[ray]'")


def local_env(api_key: str | None = None) -> dict[str, str]:
    """What a private one-machine cluster's processes need in their environment."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # otherwise Ray binds the outbound interface too
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": PROXY_HOOK,
        "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    if api_key:
        env["ONNXG_API_KEY"] = api_key  # the proxy hook guards Ray's own /-/routes with it
    return env


def short_temp_dir() -> str:
    """A temp dir short enough for Ray's unix sockets (about 100 bytes in all)."""
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return tempfile.mkdtemp(prefix="og", dir=base)


def reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast on a cluster address nothing answers at: Ray itself retries for minutes, logging
    each try. ``auto`` / ``local`` and unparsable addresses are left to Ray."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                             hint="check --ray-address / RAY_ADDRESS (the head node's GCS port, 6379 by "
                             "default) and that the head node is up") from None


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


@contextlib.contextmanager
def session(address: str | None = None, *, num_cpus: int | None = None, api_key: str | None = None,
            object_store_mb: int = OBJECT_STORE_MB) -> Iterator[Session]:
    """Ray initialised for this process; shut down (and a cluster it started stopped) on exit."""
    require_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = address is None
    temp_dir = None
    if started:  # before Ray is imported: it reads some of these once, at import
        os.environ.update(local_env(api_key))
    else:
        reachable(address)
    import ray

    try:
        try:
            if started:
                temp_dir = short_temp_dir()
                info = ray.init(num_cpus=num_cpus or os.cpu_count() or 1,
                                object_store_memory=object_store_mb * 2**20, include_dashboard=False,
                                _node_ip_address="127.0.0.1", _temp_dir=temp_dir, log_to_driver=False,
                                logging_level="WARNING")
            else:
                info = ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except (ConnectionError, ValueError) as exc:  # ValueError: an address Ray cannot parse
            raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {_first_line(exc)}",
                                 hint="check --ray-address / RAY_ADDRESS, and RAY_AUTH_TOKEN if the cluster uses "
                                 "token auth") from None
        yield Session(address=str(info.address_info.get("gcs_address", address or "")), started=started)
    finally:
        ray.shutdown()
        if temp_dir is not None:
            import shutil

            shutil.rmtree(temp_dir, ignore_errors=True)
