"""The one error boundary: OnnxgError -> one red line + hint, exit 1; Ctrl-C -> 130."""

from __future__ import annotations

import pytest
import typer

from onnxg.cli import main as cli_main
from onnxg.runtime.errors import ModelNotFound, NotImplementedYet


@pytest.fixture
def app_with(monkeypatch: pytest.MonkeyPatch):
    """The real app and boundary, with one extra command that raises what the test asks."""

    def install(exc: BaseException) -> None:
        app = typer.Typer()
        for command in cli_main.app.registered_commands:
            app.registered_commands.append(command)
        app.registered_callback = cli_main.app.registered_callback

        @app.command("boom")
        def boom() -> None:
            raise exc

        monkeypatch.setattr(cli_main, "app", app)

    return install


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        cli_main.main(argv)
    return info.value.code


def test_onnxg_error_is_one_line_with_hint(app_with, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ONNXG_DEBUG", raising=False)
    app_with(ModelNotFound("no model named 'x'", hint="run `onnxg models` to list them"))
    assert run(["boom"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines[0] == "Error: no model named 'x'"
    assert lines[1] == "Hint: run `onnxg models` to list them"
    assert "Traceback" not in captured.err


def test_debug_shows_the_traceback(app_with, monkeypatch) -> None:
    monkeypatch.setenv("ONNXG_DEBUG", "1")
    app_with(ModelNotFound("no model"))
    with pytest.raises(ModelNotFound):
        cli_main.main(["boom"])


def test_ctrl_c_exits_130(app_with, capsys) -> None:
    app_with(KeyboardInterrupt())
    assert run(["boom"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_unexpected_error_is_one_line(app_with, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ONNXG_DEBUG", raising=False)
    app_with(RuntimeError("kaput"))
    assert run(["boom"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: kaput" in err and "Traceback" not in err


def test_not_implemented_exits_2(app_with, capsys) -> None:
    app_with(NotImplementedYet("later"))
    assert run(["boom"]) == 2
