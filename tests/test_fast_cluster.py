"""onnxg.cluster without a cluster: the proxy's error rewriting, option parsing, CLI refusals.

The real 2-node runs are tests/test_ray.py (``-m ray``); nothing here imports Ray.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from onnxg.cli.main import main
from onnxg.cluster import proxy
from onnxg.cluster import serve as cluster_serve
from onnxg.runtime.errors import InvalidRequest
from onnxg.server.settings import Settings


def _call(app: Any, path: str = "/v1/chat/completions", headers: list[tuple[bytes, bytes]] | None = None,
          key: str | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": headers or []}
    asyncio.run(proxy.OpenAIErrors(app, api_key=key)(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def _plain(status: int, text: bytes, kind: bytes = b"text/plain; charset=utf-8",
           extra: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), *(extra or [])]})
        await send({"type": "http.response.body", "body": text[:5], "more_body": True})
        await send({"type": "http.response.body", "body": text[5:]})

    return app


@pytest.mark.parametrize(("status", "code"), [(500, "replica_failed"), (503, "service_unavailable"),
                                              (408, "timeout"), (404, "not_found")])
def test_the_proxys_plain_text_errors_become_openai_error_json(status: int, code: str) -> None:
    got, headers, body = _call(_plain(status, b"Internal Server Error", extra=[(b"retry-after", b"1")]))
    assert got == status
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert error["type"] == ("server_error" if status >= 500 or status == 408 else "invalid_request_error")
    assert headers[b"retry-after"] == b"1"


def test_json_errors_streams_and_successes_pass_untouched() -> None:
    replica_error = b'{"error":{"message":"m","type":"invalid_request_error","param":"model","code":"x"}}'
    assert _call(_plain(404, replica_error, b"application/json"))[2] == replica_error
    assert _call(_plain(200, b"hello there", b"text/plain"))[2] == b"hello there"
    assert _call(_plain(200, b"data: {}\n\n", b"text/event-stream"))[2] == b"data: {}\n\n"


def test_rays_own_routes_need_the_api_key() -> None:
    routes = _plain(200, b'{"/":"onnxg"}', b"application/json")
    status, _, body = _call(routes, "/-/routes", key="k")
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert _call(routes, "/-/routes", [(b"authorization", b"Bearer k")], key="k")[0] == 200
    assert _call(routes, "/-/routes")[0] == 200  # no key set: as open as /health


def test_autoscale_bounds() -> None:
    assert cluster_serve.parse_autoscale("0:4") == (0, 4)
    for bad in ("4", "3:2", "a:b", "0:0", "-1:2"):
        with pytest.raises(InvalidRequest) as caught:
            cluster_serve.parse_autoscale(bad)
        assert caught.value.param == "autoscale"


def test_deployment_options_fit_onnxg_batching() -> None:
    settings = Settings(max_concurrency=48, grace_period=7.0)
    fixed = cluster_serve.deployment_options(settings, cluster_serve.Scale(replicas=3, replica_cpus=2.0))
    assert fixed["num_replicas"] == 3 and fixed["max_ongoing_requests"] == 48
    assert fixed["ray_actor_options"] == {"num_cpus": 2.0} and fixed["graceful_shutdown_timeout_s"] == 7.0
    scaled = cluster_serve.deployment_options(settings, cluster_serve.Scale(autoscale=(1, 4)))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["max_replicas"] == 4
    timing = scaled["autoscaling_config"]
    assert timing["downscale_delay_s"] < 600 and timing["upscale_delay_s"] < timing["downscale_delay_s"]
    assert timing["metrics_interval_s"] < timing["look_back_period_s"] < 30  # Serve warns unless <; 30: its default


@pytest.mark.parametrize(("argv", "message"), [
    (["serve", "--replicas", "2"], "--replicas needs --ray"),
    (["serve", "--ray-address", "x:1"], "--ray-address needs --ray"),
    (["serve", "--ray", "--replicas", "2", "--autoscale", "1:3"], "either --replicas or --autoscale"),
    (["embed", "--workers", "2", "--text", "hi"], "--workers needs --ray"),
    (["serve", "--ray", "--replica-cpus", "100000", "-m", "nowhere"], "more than this machine's"),
])
def test_ray_options_without_ray_are_one_line_errors(argv: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "ray" not in sys.modules


def test_a_proxy_that_raises_before_answering_gives_openai_json() -> None:
    """A replica that dies can make the proxy raise rather than answer; its own handler would
    then write plain text, so the middleware answers instead (once nothing was sent yet)."""
    async def dying(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("replica died")

    status, headers, body = _call(dying)
    assert status == 500 and headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["code"] == "replica_failed"

    async def dies_mid_stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        raise RuntimeError("replica died")

    with pytest.raises(RuntimeError):
        _call(dies_mid_stream)

    async def dies_after_a_plain_error_began(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
        raise RuntimeError("replica died")  # the start was held back: the client has seen nothing yet

    status, headers, body = _call(dies_after_a_plain_error_began)
    assert status == 500 and json.loads(body)["error"]["type"] == "server_error"


def test_a_proxy_that_returns_without_answering_gives_openai_json() -> None:
    """Ray's proxy, when a replica dies before the answer began, returns without sending anything
    (uvicorn would then write a bare plain-text 500): the middleware answers in its place."""
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return

    status, headers, body = _call(silent)
    assert status == 500 and headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["code"] == "replica_failed"

    async def unfinished_plain_error(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})

    status, headers, body = _call(unfinished_plain_error)
    assert status == 503 and json.loads(body)["error"]["code"] == "service_unavailable"


def test_an_unreachable_cluster_address_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray would retry a dead address for minutes, logging each try: onnxg checks the port first."""
    import socket
    import time

    from onnxg.cluster import ray_session

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as listener:  # a port just freed: nothing listens there
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    imported = "ray" in sys.modules
    started = time.monotonic()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ray_session.RayUnavailable, match="cannot reach the Ray cluster at"), \
                ray_session.session(address):
            pass
    assert time.monotonic() - started < ray_session.CONNECT_TIMEOUT_S
    assert imported or "ray" not in sys.modules
