"""The one error boundary: OnnxgError -> one red line + hint, exit 1; Ctrl-C -> 130."""

from __future__ import annotations

import pytest
import typer

from onnxg.cli import main as cli_main
from onnxg.runtime.errors import ModelNotFound


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


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_error_text_is_printed_literally_not_as_markup(app_with, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ONNXG_DEBUG", raising=False)
    app_with(ModelNotFound("no model '[red]x[/y]' at [/x]", hint="write REPO[/SUBFOLDER] or [bold]NAME"))
    assert run(["boom"]) == 1
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert lines[0] == "Error: no model '[red]x[/y]' at [/x]"
    assert lines[1] == "Hint: write REPO[/SUBFOLDER] or [bold]NAME"
    assert "Traceback" not in captured.err


def test_unexpected_error_text_is_printed_literally(app_with, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ONNXG_DEBUG", raising=False)
    app_with(RuntimeError("bad [/x] and [red]red"))
    assert run(["boom"]) == 1
    assert "RuntimeError: bad [/x] and [red]red" in capsys.readouterr().err


def test_a_model_path_with_brackets_is_printed_literally(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ONNXG_DEBUG", raising=False)
    model = f"{tmp_path}/[red]x[/y]"
    assert run(["chat", "--model", model, "hi"]) == 1
    captured = capsys.readouterr()
    assert f"'{model}'" in _error_lines(captured.err)[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_pull_of_a_bad_ref_shows_the_hint_literally(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ONNXG_DEBUG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run(["pull", "bad name!!"]) == 1
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert lines[0].startswith("Error: ") and "bad name!!" in lines[0]
    assert "REPO[/SUBFOLDER][@REVISION]" in lines[1]
    assert "Traceback" not in captured.err and "MarkupError" not in captured.err


@pytest.mark.parametrize("level", ["foo", "verbose", ""])
def test_serve_rejects_an_unknown_log_level_before_loading_anything(level, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ONNXG_DEBUG", raising=False)
    # a model that does not exist: the log level must be refused before it is looked up
    assert run(["serve", "--log-level", level, "--model", "/no/such/model"]) == 1
    lines = _error_lines(capsys.readouterr().err)
    assert lines[0] == f"Error: unknown log level {level!r}"
    assert "debug, info, warning, error, critical" in lines[1]
    assert "no model named" not in "\n".join(lines)


def test_serve_accepts_a_log_level_in_any_case(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ONNXG_DEBUG", raising=False)
    assert run(["serve", "--log-level", "WARNING", "--model", "/no/such/model"]) == 1
    assert "no model named '/no/such/model'" in capsys.readouterr().err  # got past the log level
