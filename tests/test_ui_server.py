"""The chat page's files as the server sends them (raw HTTP, no browser): what / and /ui/
answer, caching and gzip, the size budget, --no-ui, and the API key guarding /v1 only."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fakes import FakeChatModel, FakeEmbeddingModel
from serverkit import AppServer, error_of

KEY = "sk-ui-7c1f"
BUDGET = 500 * 1024  # the limit on the page's files, compressed


@pytest.fixture(scope="module")
def server() -> Any:
    with AppServer([FakeChatModel(), FakeEmbeddingModel()]) as srv:
        yield srv


def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/ui/[^"]+)"', html)


def _modules(js: str) -> list[str]:
    return [f"/ui/{name}" for name in re.findall(r'from "\./([\w.-]+\.js)"', js)]


def test_the_page_and_every_file_it_loads_are_served(server: AppServer) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    pending, seen = _assets(page.text), set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        answer = httpx.get(server.url + path)
        assert answer.status_code == 200, path
        if path.endswith(".js"):
            assert answer.headers["content-type"].startswith("text/javascript")
            pending += _modules(answer.text)
    assert {"/ui/app.js", "/ui/app.css", "/ui/chat.js", "/ui/embed.js", "/ui/markdown.js"} <= seen


def test_files_are_gzipped_cached_and_within_the_budget(server: AppServer) -> None:
    from onnxg.server.routes import ui

    total = 0
    for name in ui.load():
        path = "/" if name == "index.html" else f"/ui/{name}"
        plain = httpx.get(server.url + path, headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        with httpx.stream("GET", server.url + path, headers={"Accept-Encoding": "gzip"}) as zipped:
            sent = b"".join(zipped.iter_raw())
        assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["vary"] == "Accept-Encoding"
        assert zipped.headers["cache-control"] == "no-cache"
        assert gzip.decompress(sent) == plain.content
        total += len(sent)
        again = httpx.get(server.url + path, headers={"If-None-Match": zipped.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    assert total < BUDGET, f"the page's files are {total} bytes gzipped"


def test_unknown_files_are_404_in_openai_shape(server: AppServer) -> None:
    for path in ("/ui/nope.js", "/ui/..%2Fapp.py", "/ui/", "/favicon.ico"):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 404, path
        assert error_of(answer)["message"].startswith("Invalid URL")


def test_no_ui_turns_the_page_off() -> None:
    with AppServer([FakeChatModel()], ui=False) as srv:
        assert httpx.get(f"{srv.url}/").status_code == 404
        assert httpx.get(f"{srv.url}/ui/app.js").status_code == 404
        assert httpx.get(f"{srv.url}/v1/models").status_code == 200


def test_the_page_is_public_while_v1_needs_the_key() -> None:
    with AppServer([FakeChatModel()], api_key=KEY) as srv:
        assert httpx.get(f"{srv.url}/").status_code == 200
        assert httpx.get(f"{srv.url}/ui/app.js").status_code == 200
        assert httpx.get(f"{srv.url}/v1/models").status_code == 401
        ok = httpx.get(f"{srv.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200


def test_serve_has_a_no_ui_option() -> None:
    done = subprocess.run([sys.executable, "-m", "onnxg.cli.main", "serve", "--help"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "--no-ui" in done.stdout
