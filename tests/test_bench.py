"""`onnxg bench` on the test models: figures present and positive, JSON schema stable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCHEMA_KEYS = {"schema", "model", "kind", "target", "settings", "metrics"}
METRIC_KEYS = {"name", "unit", "median", "min", "max", "runs"}


def run_bench(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "onnxg.cli.main", "bench", *args, "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def check_schema(report: dict, kind: str) -> dict[str, dict]:
    assert set(report) == SCHEMA_KEYS
    assert report["schema"] == "onnxg.bench/1"
    assert report["kind"] == kind
    metrics = {m["name"]: m for m in report["metrics"]}
    for metric in metrics.values():
        assert set(metric) == METRIC_KEYS
        assert metric["min"] <= metric["median"] <= metric["max"]
    return metrics


def test_bench_chat_model(tiny_chat_model: Path) -> None:
    report = run_bench(str(tiny_chat_model), "-p", "32", "-n", "16", "-c", "2", "-r", "2")
    metrics = check_schema(report, "chat")
    for name in ("load_time", "ttft", "prefill", "decode", "aggregate_x2", "peak_memory"):
        assert metrics[name]["median"] > 0, name
    assert metrics["ttft"]["runs"] == 2
    assert report["settings"]["prompt_tokens"] == 32


def test_bench_embedding_model(tiny_embed_model: Path) -> None:
    report = run_bench(str(tiny_embed_model), "-b", "1", "-b", "4", "--sentences", "16", "-r", "2")
    metrics = check_schema(report, "embedding")
    for name in ("sentences_per_s_b1", "sentences_per_s_b4", "latency_p50_b4", "latency_p95_b4"):
        assert metrics[name]["median"] > 0, name
    assert metrics["latency_p50_b4"]["median"] <= metrics["latency_p95_b4"]["median"]


@pytest.mark.parametrize("args", [["--runs", "0"], ["--kind", "video"]])
def test_bench_bad_options_are_one_line_errors(tiny_chat_model: Path, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "onnxg.cli.main", "bench", str(tiny_chat_model), *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Error:" in done.stderr


@pytest.mark.parametrize("args", [["/no/such/model"], ["--model", "/no/such/model"], ["-m", "/no/such/model"]])
def test_bench_missing_model(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "onnxg.cli.main", "bench", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Internal error" not in done.stderr  # an internal crash also exits 1 without a traceback
    assert done.stderr.startswith("Error: ") and "/no/such/model" in done.stderr


def test_bench_unreachable_server_is_a_one_line_error() -> None:
    import socket

    with socket.socket() as probe:  # a free port with nothing listening once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    done = subprocess.run(
        [sys.executable, "-m", "onnxg.cli.main", "bench", "--server", url, "--kind", "chat", "-r", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert "Internal error" not in done.stderr and "Traceback" not in done.stderr
    assert f"cannot reach an onnxg server at {url}" in done.stderr
    assert len([line for line in done.stderr.splitlines() if "Error" in line]) == 1


def test_bench_through_a_running_server(tiny_chat_model: Path, tiny_embed_model: Path, tmp_path: Path) -> None:
    from serverkit import ServerProcess

    with ServerProcess(["--model", str(tiny_chat_model), "--model", str(tiny_embed_model)], tmp_path) as srv:
        chat = run_bench(tiny_chat_model.name, "--server", srv.url, "-p", "24", "-n", "12", "-c", "2", "-r", "2")
        metrics = check_schema(chat, "chat")
        assert chat["target"] == srv.url
        for name in ("ttft", "prefill", "decode", "aggregate_x2"):
            assert metrics[name]["median"] > 0, name
        embed = run_bench(tiny_embed_model.name, "--server", srv.url, "--kind", "embedding", "-b", "2",
                          "--sentences", "8", "-r", "1")
        assert check_schema(embed, "embedding")["sentences_per_s_b2"]["median"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--sentences", "0", "--kind", "embedding"], "--sentences must be at least 1"),
    (["--prompt-tokens", "0"], "--prompt-tokens must be at least 1"),
    (["--max-tokens", "1"], "--max-tokens must be at least 2"),
    (["-b", "4", "-b", "0", "--kind", "embedding"], "--batch-size must be at least 1"),
])
def test_bench_bad_numbers_fail_before_the_default_model_is_resolved(args: list[str], message: str) -> None:
    done = subprocess.run(  # no MODEL: the default would be looked up (or converted) first
        [sys.executable, "-m", "onnxg.cli.main", "bench", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith(f"Error: {message}, not ")
    assert "Traceback" not in done.stderr
