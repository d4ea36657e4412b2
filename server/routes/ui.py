"""GET / and GET /ui/{file}: the chat page, static files shipped inside the package (server/ui/).

The files are read and gzipped once, when the app is built; a request can only name one of
them (no path reaches the disk). Every answer carries an ETag and ``Cache-Control: no-cache``
(the browser revalidates and gets a 304 when nothing changed), gzip when the browser accepts
it, and a Content-Security-Policy that lets the page run only its own scripts: even if model
output slipped past the Markdown renderer, no injected script could run.
The page is public; the API key guards /v1 only, and the page asks for it when /v1 says 401.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def load(folder: Path = UI_DIR) -> dict[str, Asset]:
    """The page's files by name, read and compressed once."""
    assets = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[path.name] = Asset(body, gzip.compress(body, 9, mtime=0), TYPES[path.suffix], etag)
    if "index.html" not in assets:
        raise FileNotFoundError(f"the chat page's files are missing from {folder}")
    return assets


def _answer(request: Request, asset: Asset) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding", **SECURITY}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(b"", status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _assets(state: State) -> dict[str, Asset]:
    return state.ui  # type: ignore[no-any-return]


@get("/", include_in_schema=False)
async def page(request: Request, state: State) -> Response:
    return _answer(request, _assets(state)["index.html"])


@get("/ui/{name:str}", include_in_schema=False)
async def asset(request: Request, state: State, name: str) -> Response:
    found = _assets(state).get(name)
    if found is None:
        raise NotFoundException()
    return _answer(request, found)


route_handlers = [page, asset]
