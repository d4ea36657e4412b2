"""The Python host API: ``onnxg.Server`` (a real server the openai client talks to), its
events in order, reuse of a running server, and the in-process ``onnxg.chat``/``onnxg.embed``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import onnxg
from onnxg.service import daemon, procs, records
from onnxg.runtime.errors import ModelNotFound, OnnxgError

pytestmark = pytest.mark.timeout(600)


class Events:
    """Records the Server's callbacks in the order they fire (from any thread)."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.lock = threading.Lock()
        self.terminated = threading.Event()

    def add(self, *item: object) -> None:
        with self.lock:
            self.items.append(item)

    def callbacks(self) -> dict[str, object]:
        def on_terminate(pid: int, code: int | None) -> None:
            self.add("terminate", pid, code)
            self.terminated.set()

        return {
            "on_download": lambda p: self.add("download", p.model, p.done),
            "on_ready": lambda ids: self.add("ready", ids),
            "on_error": lambda e: self.add("error", e),
            "on_terminate": on_terminate,
        }

    @property
    def kinds(self) -> list[str]:
        return [item[0] for item in self.items]


def test_import_onnxg_stays_light() -> None:
    code = (
        "import sys, onnxg\n"
        "heavy = [m for m in ('onnxg.host', 'onnxg.api', 'onnxruntime', 'numpy')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert onnxg.Server.__module__ == 'onnxg.host'\n"
        "assert callable(onnxg.chat) and callable(onnxg.embed)\n"
        "assert 'Server' in dir(onnxg)\n"
        "try:\n    onnxg.nope\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_missing_model_fires_on_error_and_raises(free_port: int) -> None:
    events = Events()
    server = onnxg.Server(models=["no-such-model-anywhere"], port=free_port, **events.callbacks())
    with pytest.raises(ModelNotFound):
        server.start()
    assert events.kinds == ["error"]
    assert isinstance(events.items[0][1], OnnxgError)
    assert not server.running
    assert not records.record_path(free_port).exists()


def test_a_port_held_by_another_program_is_refused(free_port: int) -> None:
    import socket

    events = Events()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port))
        sock.listen()
        with pytest.raises(daemon.PortInUse):
            onnxg.Server(models=["x"], port=free_port, **events.callbacks()).start()
    assert events.kinds == ["error"]


def test_context_manager_serves_the_openai_client(tiny_chat_model, tiny_embed_model, free_port) -> None:
    from openai import AuthenticationError, OpenAI

    events = Events()
    chat_id, embed_id = Path(tiny_chat_model).name, Path(tiny_embed_model).name
    with onnxg.Server(
        models=[tiny_chat_model, tiny_embed_model], port=free_port, api_key="s3cret", **events.callbacks()
    ) as srv:
        assert srv.owned and srv.running
        assert srv.url == f"http://127.0.0.1:{free_port}"
        assert sorted(srv.models) == sorted([chat_id, embed_id])
        pid = srv.pid
        assert pid is not None and procs.pid_alive(pid)

        # `onnxg status` sees it; the key is not on its command line (ps shows that to everyone)
        record = records.get_record(free_port)
        assert record is not None and record.pid == pid and record.origin == "python"
        assert "s3cret" not in Path(f"/proc/{pid}/cmdline").read_text() if Path("/proc").is_dir() else True

        client = OpenAI(base_url=srv.base_url, api_key="s3cret", max_retries=0)
        assert sorted(m.id for m in client.models.list()) == sorted([chat_id, embed_id])
        answer = client.chat.completions.create(
            model=chat_id, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0
        )
        assert answer.choices[0].finish_reason in ("stop", "length")
        assert answer.usage.completion_tokens <= 4
        vectors = client.embeddings.create(model=embed_id, input=["one", "two"])
        assert [d.index for d in vectors.data] == [0, 1]
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0).models.list()

    assert events.terminated.wait(15)
    assert not procs.pid_alive(pid)
    assert not records.record_path(free_port).exists()
    kinds = events.kinds
    # downloads (one "done" per model) -> ready -> terminate, and nothing else
    first_ready = kinds.index("ready")
    assert set(kinds[:first_ready]) == {"download"}
    assert [item[1] for item in events.items if item[0] == "download" and item[2]] == [
        str(tiny_chat_model), str(tiny_embed_model)
    ]
    assert kinds[first_ready:] == ["ready", "terminate"]
    assert sorted(events.items[first_ready][1]) == sorted([chat_id, embed_id])
    assert events.items[-1][1:] == (pid, 0)  # SIGTERM: a graceful exit


def test_a_running_server_with_the_same_models_is_reused(tiny_chat_model, free_port) -> None:
    first_events, second_events = Events(), Events()
    first = onnxg.Server(models=[tiny_chat_model], port=free_port, **first_events.callbacks())
    first.start()
    try:
        second = onnxg.Server(models=[str(tiny_chat_model)], port=free_port, **second_events.callbacks())
        with second:
            assert not second.owned
            assert second.pid == first.pid
        assert second_events.kinds == ["ready"]  # nothing downloaded, nothing started or ended
        assert first.running  # leaving the reusing block leaves the server up

        other = Events()
        with pytest.raises(daemon.PortInUse):
            onnxg.Server(models=["something-else"], port=free_port, **other.callbacks()).start()
        assert other.kinds == ["error"]
        assert first.running
    finally:
        first.stop()
    assert first_events.terminated.wait(15)
    assert not first.running
    assert first_events.kinds[-2:] == ["ready", "terminate"]


def test_a_server_that_dies_while_starting_reports_it(tmp_path: Path, free_port: int) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    events = Events()
    server = onnxg.Server(models=[broken], port=free_port, timeout=120, **events.callbacks())
    with pytest.raises(OnnxgError) as info:
        server.start()
    assert "log" in (info.value.hint or "")
    assert "error" in events.kinds and "ready" not in events.kinds
    assert not server.running
    assert not records.record_path(free_port).exists()


def test_start_without_waiting_reports_through_events(tiny_chat_model, free_port) -> None:
    events = Events()
    server = onnxg.Server(models=[tiny_chat_model], port=free_port, **events.callbacks())
    assert server.start(wait=False) is server
    try:
        assert server.wait_ready(300)
        assert "ready" in events.kinds
    finally:
        server.stop()
    assert events.terminated.wait(15)


# ------------------------------------------------------------------ in-process helpers


def test_chat_helper_answers_in_process(tiny_chat_model) -> None:
    from onnxg import api

    text = onnxg.chat("Hello", model=tiny_chat_model, max_tokens=6, temperature=0)
    assert isinstance(text, str)
    pieces = list(onnxg.chat("Hello", model=tiny_chat_model, max_tokens=6, temperature=0, stream=True))
    assert "".join(pieces) == text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert isinstance(onnxg.chat(messages, model=tiny_chat_model, max_tokens=3, temperature=0), str)
    assert api.load_chat(tiny_chat_model) is api.load_chat(str(tiny_chat_model))  # loaded once
    with pytest.raises(OnnxgError) as info:
        onnxg.chat("Hello", model=tiny_chat_model, tempreature=0)
    assert info.value.param == "tempreature"
    with pytest.raises(OnnxgError):
        onnxg.chat("Hello", model=tiny_chat_model, temperature=-1)


def test_embed_helper_returns_arrays(tiny_embed_model) -> None:
    one = onnxg.embed("hello world", model=tiny_embed_model)
    many = onnxg.embed(["hello world", "another text"], model=tiny_embed_model)
    assert one.ndim == 1 and many.shape == (2, one.shape[0]) and many.dtype == np.float32
    assert np.allclose(many[0], one, atol=1e-5)
    short = onnxg.embed(["hello world"], model=tiny_embed_model, dimensions=4)
    assert short.shape == (1, 4) and np.isclose(np.linalg.norm(short[0]), 1.0, atol=1e-5)
    with pytest.raises(OnnxgError):
        onnxg.embed([], model=tiny_embed_model)


def test_helpers_name_a_missing_model() -> None:
    with pytest.raises(ModelNotFound):
        onnxg.embed("x", model="no-such-model-anywhere")
