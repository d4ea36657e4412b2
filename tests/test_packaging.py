"""Packaging and start-up: one import namespace, an instant `onnxg --help`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "onnxruntime", "onnxruntime_genai", "litestar", "optimum", "tensorflow")


def test_wheel_holds_only_the_onnxg_namespace(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("onnxg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"onnxg", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    for package in ("cli", "convert", "hub", "runtime", "server", "service", "recipes"):
        assert f"onnxg/{package}/__init__.py" in names
    assert not any(name.startswith("onnxg/tests/") for name in names)
    assert "onnxg/convert/workers/_worker.py" in names
    assert any(name.startswith("onnxg/recipes/") and name.endswith(".toml") for name in names)
    from onnxg.server.routes import ui  # the chat page's files, all of them, in the wheel

    assert {f"onnxg/server/ui/{name}" for name in ui.load()} <= set(names)
    assert "onnxg/server/ui/index.html" in names


def test_importing_the_cli_imports_no_heavy_library() -> None:
    code = f"import onnxg.cli.main, sys, json; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_help_imports_nothing_heavy_and_is_quick() -> None:
    code = (
        "import sys, json\nfrom onnxg.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
        f"print('MODULES', json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("MODULES"))
    assert line.split(" ", 1)[1] == "[] 0"
    for command in ("convert", "check", "pull", "models", "chat", "embed", "serve", "bench"):
        assert command in done.stdout
    # Start-up time as a ratio to a bare interpreter, measured in the same run.
    def best(cmd: list[str]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=False)
            times.append(time.perf_counter() - start)
        return min(times)

    bare = best([sys.executable, "-c", "import typer, rich.console"])
    ours = best([sys.executable, "-m", "onnxg.cli.main", "--help"])
    assert ours < bare * 3 + 0.1, (ours, bare)


def test_version() -> None:
    import onnxg

    done = subprocess.run([sys.executable, "-m", "onnxg.cli.main", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"onnxg {onnxg.__version__}"


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "onnxg"
    assert exe.exists()
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "serve" in done.stdout


@pytest.mark.parametrize("argv", [["--no-such-option"], ["no-such-command"]])
def test_usage_errors_exit_2_without_traceback(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "onnxg.cli.main", *argv], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
