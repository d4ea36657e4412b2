"""One CLI convention, one set of serve defaults, one HTTP client: fast, torch-free, no model.

Every command that takes a model takes ``--model/-m``; every data command has ``--json``,
printed one way; errors reach the one boundary; ``onnxg serve``, ``--detach`` and
``onnxg.Server`` share ``server.settings.DEFAULTS``; ``bench --server`` picks a model by the
``kind`` that /v1/models gives; every onnxg module imports without POSIX-only modules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
import inspect
import json
import pkgutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer

from onnxg.cli import main as cli_main
from onnxg.server.settings import DEFAULTS, Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL_COMMANDS = ("chat", "embed", "serve", "bench", "check", "models rm")
DATA_COMMANDS = ("chat", "check", "convert", "pull", "models", "status", "bench")  # embed: JSON Lines always


def command(path: str):
    group = typer.main.get_command(cli_main.app)
    for name in path.split():
        group = group.commands[name]  # type: ignore[attr-defined]
    return group


def option(path: str, flag: str):
    return next((p for p in command(path).params if flag in getattr(p, "opts", [])), None)


def cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        cli_main.main(argv)
    return int(info.value.code or 0)


# --- the convention ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", MODEL_COMMANDS)
def test_every_model_command_takes_model_and_m(path: str) -> None:
    found = option(path, "--model")
    assert found is not None, f"`onnxg {path}` has no --model"
    assert "-m" in found.opts


@pytest.mark.parametrize("path", DATA_COMMANDS)
def test_every_data_command_has_json(path: str) -> None:
    assert option(path, "--json") is not None, f"`onnxg {path}` has no --json"


@pytest.mark.parametrize("path", ["bench", "check", "models rm"])
def test_the_model_can_also_be_positional(path: str) -> None:
    assert any(getattr(p, "param_type_name", "") == "argument" for p in command(path).params)


def test_bench_answers_model_as_an_option_not_no_such_option(capsys) -> None:
    assert cli(["bench", "--model", "/no/such/model", "--runs", "1"]) == 1
    err = capsys.readouterr().err
    assert "No such option" not in err and err.startswith("Error: ") and "/no/such/model" in err
    assert cli(["bench", "a", "--model", "b"]) == 1
    assert "two models given" in capsys.readouterr().err


def test_json_output_parses(capsys) -> None:
    for argv in (["status", "--json"], ["models", "--json"]):
        assert cli(argv) == 0
        assert json.loads(capsys.readouterr().out) == []
    assert cli(["convert", "--list", "--json"]) == 0
    recipes = json.loads(capsys.readouterr().out)
    assert recipes and all("name" in r for r in recipes)


def test_commands_print_no_error_lines_of_their_own() -> None:
    """`Error:` lines come from cli._common.print_error only (the boundary, chat's loop)."""
    for path in sorted((ROOT / "cli").glob("*.py")):
        if path.name in ("_common.py", "main.py"):  # the printer and the boundary
            continue
        text = path.read_text()
        assert "Error:[/" not in text, path.name
        # embed streams JSON Lines (one compact object per input) and writes a manifest: its output
        if path.name not in ("embed.py", "embed_out.py"):
            assert "json.dumps" not in text, f"{path.name}: print JSON with _common.print_json"


# --- serve's settings, declared once -----------------------------------------------------------

_FIELD = {"model": "models", "cors_origin": "cors_origins"}


def test_every_serve_default_is_the_settings_default() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    checked = []
    for param in command("serve").params:
        if param.name == "detach" or getattr(param, "rich_help_panel", None) == "Ray":  # where it runs, not how
            continue
        field = _FIELD.get(param.name, param.name)
        assert field in names, f"--{param.name} is no Settings field"
        default = getattr(DEFAULTS, field)
        assert (param.default if param.default is not None else ([] if isinstance(default, list) else None)) \
            == default, param.name
        checked.append(field)
    assert {"host", "port", "max_concurrency", "grace_period", "threads", "log_level"} <= set(checked)
    assert (DEFAULTS.port, DEFAULTS.max_concurrency, DEFAULTS.grace_period) == (8080, 64, 30.0)


def test_the_python_server_has_the_same_defaults() -> None:
    from onnxg.host import Server

    params = inspect.signature(Server.__init__).parameters
    assert params["host"].default == DEFAULTS.host and params["port"].default == DEFAULTS.port
    server = Server(["x"], port=0, max_concurrency=3)
    assert server.port > 0 and server.settings.max_concurrency == 3
    assert server.grace == DEFAULTS.grace_period + 5.0
    with pytest.raises(TypeError):
        Server(["x"], no_such_setting=1)


def test_every_settings_field_reaches_a_child_or_is_refused() -> None:
    from onnxg.service import daemon

    flags = {o for p in command("serve").params
             for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
    given = {f for flag in daemon.SERVE_FLAGS.values() for f in (flag if isinstance(flag, tuple) else (flag,))}
    assert given <= flags  # each flag the child gets exists
    assert "--no-ui" in daemon.serve_command(replace(DEFAULTS, ui=False))


# --- bench --server picks by kind ---------------------------------------------------------------


class _FakeServer(BaseHTTPRequestHandler):
    models: list[dict] = []
    calls: list[tuple[str, dict]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": self.models})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append((self.path, body))
        if self.path == "/v1/embeddings":
            self._send({"object": "list", "data": [{"index": i, "embedding": ""} for i in range(len(body["input"]))]})
        else:
            self._send({"error": {"message": "not here"}}, 404)


@pytest.fixture
def fake_server():
    _FakeServer.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_bench_server_kind_embedding_picks_the_embedding_model(fake_server, capsys) -> None:
    _FakeServer.models = [{"id": "chatty", "kind": "chat"}, {"id": "vectors", "kind": "embedding"}]
    argv = ["bench", "--server", fake_server, "--kind", "embedding", "-b", "2", "--sentences", "4", "-r", "1",
            "--json"]
    assert cli(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "vectors" and report["kind"] == "embedding" and report["target"] == fake_server
    assert {body["model"] for _, body in _FakeServer.calls} == {"vectors"}


def test_bench_server_detects_the_kind_of_a_named_model(fake_server, capsys) -> None:
    _FakeServer.models = [{"id": "chatty", "kind": "chat"}, {"id": "e2e-model", "kind": "e2e"}]
    assert cli(["bench", "-m", "e2e-model", "--server", fake_server, "-b", "1", "--sentences", "2", "-r", "1",
                "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "embedding"


def test_bench_server_without_kinds_asks_for_a_model(fake_server, capsys) -> None:
    from onnxg.runtime.errors import OnnxgError
    from onnxg.service.client import Client

    _FakeServer.models = [{"id": "a"}, {"id": "b"}]
    assert cli(["bench", "--server", fake_server, "--kind", "embedding", "-r", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: the server does not say which") and "--model" in err
    _FakeServer.models = [{"id": "only"}]
    assert Client(fake_server).pick_model("embedding") == "only"
    _FakeServer.models = [{"id": "chatty", "kind": "chat"}]
    with pytest.raises(OnnxgError, match="serves no embedding model"):
        Client(fake_server).pick_model("embedding")
    with pytest.raises(OnnxgError, match="server answered 404: not here"):
        Client(fake_server).post("/nothing", {})


# --- fixes ----------------------------------------------------------------------------------------


def test_every_module_imports_without_posix_only_modules() -> None:
    """Windows has no fcntl or resource: no onnxg module may import them at its top."""
    import onnxg

    names = [m.name for m in pkgutil.walk_packages(onnxg.__path__, "onnxg.")
             if not m.name.startswith(("onnxg.tests", "onnxg.benchmarks", "onnxg.convert.workers"))]
    assert "onnxg.convert.pipeline" in names and "onnxg.runtime.bench" in names
    code = (
        "import importlib, sys\n"
        "sys.modules['fcntl'] = None\nsys.modules['resource'] = None\n"
        f"for name in {names!r}:\n    importlib.import_module(name)\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_api_cache_follows_a_reconverted_folder(tmp_path: Path) -> None:
    from onnxg import api

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"one")
    loads: list[Path] = []

    class Fake:
        def __init__(self, path: Path) -> None:
            loads.append(path)

        def close(self) -> None:
            pass

    try:
        first = api._cached("embedding", folder, {}, Fake)
        assert api._cached("embedding", folder, {}, Fake) is first  # loaded once
        (folder / "model.onnx").write_bytes(b"two, longer")  # a re-convert in place
        assert api._cached("embedding", folder, {}, Fake) is not first
        assert len(loads) == 2
    finally:
        api.unload()
