"""Background servers: records, stale records, stop, `onnxg status|stop`, `onnxg serve --detach`.

The record/stop logic is exercised first with plain long-running child processes; the
end-to-end part starts real `onnxg serve --detach` processes with the tiny test models.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnxg.cli import main as cli_main
from onnxg.service import daemon, procs, records

SLEEPER = "import time; print('ready', flush=True); time.sleep(600)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


def cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        cli_main.main(argv)
    return int(info.value.code or 0)


def onnxg(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh process (inherits this test's ONNXG_HOME)."""
    return subprocess.run(
        [sys.executable, "-m", "onnxg.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ, COLUMNS="200"),
    )


def _wait_line(log: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {log}")


@pytest.fixture
def background(free_port: int):
    """Start a long-running child and record it as a background server on ``free_port``."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(code: str = SLEEPER, port: int = free_port, models: list[str] | None = None):
        log = records.log_path(port)
        proc = daemon.spawn([sys.executable, "-c", code], log)
        procs.append(proc)
        _wait_line(log, "ready")
        record = records.new_record(proc, "127.0.0.1", port, models or ["tiny-chat"], log, "detach")
        records.write_record(record)
        return proc, record

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_record_is_listed_and_status_shows_it(background, free_port, capsys) -> None:
    proc, record = background()
    assert records.record_path(free_port).exists()
    assert proc_start_known(proc.pid)
    (listed,) = records.list_records()
    assert (listed.pid, listed.port, listed.models) == (proc.pid, free_port, ["tiny-chat"])

    assert cli(["status", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["pid"] == proc.pid
    assert entry["url"] == f"http://127.0.0.1:{free_port}"
    assert entry["models"] == ["tiny-chat"]
    assert entry["uptime_s"] == pytest.approx(time.time() - record.started, abs=5)
    assert entry["proc_start"] == record.proc_start and entry["origin"] == "detach"

    assert cli(["status"]) == 0
    table = capsys.readouterr().out
    assert str(proc.pid) in table and f"127.0.0.1:{free_port}" in table and "tiny-chat" in table


def proc_start_known(pid: int) -> bool:
    return procs.proc_start_time(pid) is not None


def test_stop_ends_the_process_and_removes_the_record(background, free_port, capsys) -> None:
    proc, _ = background()
    assert cli(["stop", "--port", str(free_port)]) == 0
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert not records.record_path(free_port).exists()
    assert records.list_records() == []
    assert "stopped" in capsys.readouterr().err


def test_stop_escalates_to_sigkill_after_the_grace_period(background, free_port, capsys) -> None:
    proc, record = background(STUBBORN)
    start = time.monotonic()
    assert cli(["stop", "--grace", "0.5"]) == 0
    elapsed = time.monotonic() - start
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert elapsed >= 0.5
    assert "killed" in capsys.readouterr().err
    assert not records.record_path(free_port).exists()


def test_a_record_whose_process_was_sigkilled_is_cleaned(background, free_port, capsys) -> None:
    proc, _ = background()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    assert records.record_path(free_port).exists()  # nobody has looked yet
    assert cli(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert not records.record_path(free_port).exists()


def test_a_stale_record_is_cleaned_by_stop_and_get_record(background, free_port, capsys) -> None:
    proc, _ = background()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    assert cli(["stop", "--port", str(free_port)]) == 0
    assert "No onnxg server is running on port" in capsys.readouterr().err
    assert not records.record_path(free_port).exists()

    _, record = background()
    record.pid = 2**22 + 12345  # no such process
    records.write_record(record)
    assert records.get_record(free_port) is None
    assert not records.record_path(free_port).exists()


def test_a_reused_pid_is_not_mistaken_for_the_server(free_port) -> None:
    """A record whose pid now belongs to another process: stale, and that process is spared."""
    record = records.Record(
        pid=os.getpid(), port=free_port, host="127.0.0.1", models=[], started=time.time(),
        log="", proc_start="1",  # not this process's start time
    )
    records.write_record(record)
    assert records.list_records() == []
    assert not records.record_path(free_port).exists()
    assert cli(["stop", "--all"]) == 0  # nothing to stop; this test process survives


def test_unreadable_records_are_removed(free_port) -> None:
    path = records.record_path(free_port)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert records.list_records() == []
    assert not path.exists()


def test_stop_needs_a_choice_when_several_run(background, free_port, capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        other = sock.getsockname()[1]
    first, _ = background(port=free_port)
    second, _ = background(port=other)
    assert cli(["stop"]) == 1
    assert "--all" in capsys.readouterr().err
    assert first.poll() is None and second.poll() is None
    assert cli(["stop", "--all", "--grace", "5"]) == 0
    assert first.wait(timeout=5) == second.wait(timeout=5) == -signal.SIGTERM
    assert records.list_records() == []


def test_detach_refuses_a_port_held_by_a_plain_listener(free_port) -> None:
    from onnxg.cli.serve import start_detached
    from onnxg.server.settings import Settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port))
        sock.listen()
        with pytest.raises(daemon.PortInUse, match="already in use by another program"):
            start_detached(Settings(models=["whatever"], port=free_port))
    assert not records.record_path(free_port).exists()
    assert not records.log_path(free_port).exists()  # nothing was started


def test_detach_refuses_a_port_held_by_another_onnxg_server(background, free_port) -> None:
    from onnxg.cli.serve import start_detached
    from onnxg.server.settings import Settings

    proc, _ = background(models=["other-model"])
    with pytest.raises(daemon.PortInUse, match="another onnxg server"):
        start_detached(Settings(models=["tiny-chat"], port=free_port))  # refused before "tiny-chat" is looked up
    assert proc.poll() is None


def test_serve_command_carries_the_settings_that_differ_from_the_defaults() -> None:
    from onnxg.server.settings import Settings

    argv = daemon.serve_command(Settings(models=["/m/a", "/m/b"], port=9000, api_key="s3cret", max_concurrency=4,
                                         cors_origins=["http://x", "http://y"], log_level="debug"))
    assert argv[:4] == [sys.executable, "-m", "onnxg.cli.main", "serve"]
    assert " ".join(argv[4:]) == (
        "--model /m/a --model /m/b --host 127.0.0.1 --port 9000 --cors-origin http://x --cors-origin http://y "
        "--max-concurrency 4 --log-level debug"
    )  # the key goes through the environment, never the command line
    with pytest.raises(ValueError, match="warmup"):
        daemon.serve_command(Settings(warmup=False))  # `onnxg serve` has no option for it


def test_status_and_stop_with_nothing_running(capsys) -> None:
    assert cli(["status"]) == 0
    assert "No onnxg server is running" in capsys.readouterr().err
    assert cli(["stop"]) == 0
    assert cli(["stop", "--port", "1", "--all"]) == 1
    assert "Error: pass either --port or --all, not both" in capsys.readouterr().err


# ------------------------------------------------------------------ end to end: onnxg serve --detach


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0") if Path("/proc/self").exists() else []


def test_detach_status_stop_end_to_end(tiny_chat_model, free_port) -> None:
    import urllib.request

    port = str(free_port)
    models = ["--model", str(tiny_chat_model), "--max-concurrency", "4"]
    started = onnxg("serve", "--detach", "--port", port, *models)
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    assert started.stdout.strip() == url
    record = records.get_record(free_port)
    assert record is not None
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            assert resp.status == 200
        log = records.log_path(free_port)
        assert log.exists() and record.log == str(log)
        assert os.getsid(record.pid) == record.pid  # its own session: the terminal's signals miss it

        again = onnxg("serve", "--detach", "--port", port, *models)
        assert again.returncode == 0, again.stderr
        assert "already runs" in again.stderr and again.stdout.strip() == url
        assert records.get_record(free_port).pid == record.pid  # nothing new started

        defaults = onnxg("serve", "--detach", "--port", port)  # other models: refused
        assert defaults.returncode == 1 and "another onnxg server" in defaults.stderr
        assert "--max-concurrency 4" in " ".join(_cmdline(record.pid))  # options are forwarded

        status = onnxg("status", "--json")
        (entry,) = json.loads(status.stdout)
        assert entry["pid"] == record.pid and entry["url"] == url
        assert entry["models"] == [str(Path(tiny_chat_model).resolve())]

        stopped = onnxg("stop", "--port", port)
        assert stopped.returncode == 0 and "stopped" in stopped.stderr
        assert not procs.pid_alive(record.pid)
        assert not records.record_path(free_port).exists()
        assert json.loads(onnxg("status", "--json").stdout) == []
    finally:
        if procs.pid_alive(record.pid):
            os.kill(record.pid, signal.SIGKILL)


def test_detach_on_a_port_held_by_a_plain_listener_exits_1(tiny_chat_model, free_port) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port))
        sock.listen()
        result = onnxg("serve", "--detach", "--port", str(free_port), "--model", str(tiny_chat_model))
    assert result.returncode == 1
    assert "already in use by another program" in result.stderr
    assert records.list_records() == []


def test_detach_of_a_server_that_dies_points_at_the_log(tmp_path, free_port) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    result = onnxg("serve", "--detach", "--port", str(free_port), "--model", str(broken))
    assert result.returncode == 1
    assert "before it was ready" in result.stderr
    assert str(records.log_path(free_port)) in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr
    assert records.list_records() == []
