"""A small Hugging Face hub on 127.0.0.1, serving model repos the way the real hub does.

What huggingface_hub calls, and what this answers:

* ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=true``): the repo's commit ``sha`` and
  ``siblings`` with ``size``, ``blobId`` and, for LFS files, ``lfs: {size, sha256, pointerSize}``;
  404 with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` like the hub.
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``: small files are served directly with an ``ETag``
  (the git blob sha1) and ``X-Repo-Commit``; LFS files answer ``302`` to a CDN-like
  ``/cdn/{sha256}`` URL with ``X-Linked-Etag`` / ``X-Linked-Size``, as the hub does.
* ``GET /cdn/{sha256}`` honours ``Range: bytes=N-`` (``206`` + ``Content-Range``).
* Gated repos answer ``401`` + ``X-Error-Code: GatedRepo`` to file requests without a token.

Test hooks: ``requests`` logs (method, path, Range header); ``stall(name, after)`` makes the
server send ``after`` bytes of a file, then hold the connection until ``release()`` (so a
test can kill the client mid-download); ``sent[name]`` counts the bytes sent per file.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".onnx", ".data", ".onnx_data", ".bin", ".safetensors", ".gguf")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    sha: str = ""
    gated: bool = False
    fake_sizes: dict[str, int] = field(default_factory=dict)  # advertised sizes that lie (disk-full tests)

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1(self.repo_id.encode())
            for name in sorted(self.files):
                digest.update(name.encode() + hashlib.sha1(self.files[name]).digest())
            self.sha = digest.hexdigest()

    @staticmethod
    def is_lfs(name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def sibling(self, name: str) -> dict:
        data = self.files[name]
        size = self.fake_sizes.get(name, len(data))
        entry: dict = {"rfilename": name, "size": size, "blobId": git_blob_sha1(data)}
        if self.is_lfs(name):
            entry["lfs"] = {"size": size, "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return entry


class FakeHub:
    """``with FakeHub() as hub: hub.add_repo(...); env HF_ENDPOINT=hub.url``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.sent: dict[str, int] = {}
        self._stalls: dict[str, int] = {}
        self._release = threading.Event()
        self.stalled = threading.Event()  # set once a stalled transfer reached its mark
        self.chunk_delay = 0.0  # seconds between 64 KiB chunks (to watch progress bars move)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- setup ---
    def add_repo(self, repo_id: str, files: dict[str, bytes] | Path, *, prefix: str = "", gated: bool = False) -> Repo:
        """Files given as bytes, or a folder copied under ``prefix`` (a subfolder in the repo)."""
        if isinstance(files, Path):
            folder = files
            files = {}
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts):
                    files[f"{prefix}{path.relative_to(folder).as_posix()}"] = path.read_bytes()
        repo = Repo(repo_id, dict(files), gated=gated)
        self.repos[repo_id] = repo
        return repo

    def stall(self, name: str, after: int) -> None:
        """Send only ``after`` bytes of file ``name`` (a repo path), then hold until release()."""
        self._stalls[name] = after
        self._release.clear()
        self.stalled.clear()

    def release(self) -> None:
        self._stalls.clear()
        self._release.set()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- lookups used by the handler ---
    def find_blob(self, sha256: str) -> tuple[Repo, str] | None:
        for repo in self.repos.values():
            for name, data in repo.files.items():
                if Repo.is_lfs(name) and hashlib.sha256(data).hexdigest() == sha256:
                    return repo, name
        return None


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?/?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # --- helpers ---
    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *,
               head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self._reply(status, body, {"Content-Type": "application/json", "X-Error-Code": code,
                                   "X-Error-Message": message}, head=head)

    def _repo(self, repo_id: str, rev: str | None, head: bool) -> Repo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head)
            return None
        if rev not in (None, "main", repo.sha):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + rev, head)
            return None
        return repo

    def _route(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.fake.requests.append((self.command, path, self.headers.get("Range")))
        if m := _API.match(path):
            repo = self._repo(m["repo"], m["rev"], head)
            if repo is not None:
                info = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha, "private": False,
                        "gated": "auto" if repo.gated else False,
                        "siblings": [repo.sibling(n) for n in sorted(repo.files)]}
                self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head=head)
            return
        if m := _RESOLVE.match(path):
            repo = self._repo(m["repo"], m["rev"], head)
            if repo is None:
                return
            name = m["path"]
            if name not in repo.files:
                self._error(404, "EntryNotFound", f"{name} does not exist on main", head)
                return
            if repo.gated and not self.headers.get("Authorization"):
                self._error(401, "GatedRepo", "Access to this model is restricted", head)
                return
            data = repo.files[name]
            common = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
            if Repo.is_lfs(name):
                sha = hashlib.sha256(data).hexdigest()
                self._reply(302, b"", {**common, "Location": f"/cdn/{sha}", "ETag": f'"{sha}"',
                                       "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))}, head=head)
                return
            self._send_file(name, data, {**common, "ETag": f'"{git_blob_sha1(data)}"'}, head)
            return
        if m := _CDN.match(path):
            found = self.fake.find_blob(m["sha"])
            if found is None:
                self._reply(404, b"not found", head=head)
                return
            repo, name = found
            self._send_file(name, repo.files[name], {"ETag": f'"{m["sha"]}"'}, head)
            return
        self._error(404, "NotFound", "Not found", head)

    def _send_file(self, name: str, data: bytes, headers: dict[str, str], head: bool) -> None:
        start, status = 0, 200
        ranged = self.headers.get("Range")
        if ranged and (m := re.match(r"bytes=(\d+)-(\d*)$", ranged.strip())):
            start = int(m[1])
            end = int(m[2]) if m[2] else len(data) - 1
            if start >= len(data):
                self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head=head)
                return
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
            body = data[start:end + 1]
        else:
            body = data
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/octet-stream"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        stall = self.fake._stalls.get(name)
        offset = start
        view = memoryview(body)
        step = 64 * 1024
        try:
            for i in range(0, len(body), step):
                chunk = view[i:i + step]
                if stall is not None and offset + len(chunk) > stall:
                    keep = max(stall - offset, 0)
                    self.wfile.write(chunk[:keep])
                    self.wfile.flush()
                    self._count(name, keep)
                    self.fake.stalled.set()
                    self.fake._release.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                self._count(name, len(chunk))
                offset += len(chunk)
                if self.fake.chunk_delay:
                    time.sleep(self.fake.chunk_delay)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _count(self, name: str, n: int) -> None:
        with self.fake._lock:
            self.fake.sent[name] = self.fake.sent.get(name, 0) + n
