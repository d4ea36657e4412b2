"""Entry point: the Typer app and the one error boundary.

Start-up stays instant: this module and the command modules import only typer and rich;
each command imports what it needs (onnxruntime, litestar, ...) inside its function.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from onnxg import __version__
from onnxg.cli import bench, chat, check, convert, embed, models, pull, serve, status, stop
from onnxg.cli._common import err, print_error
from onnxg.runtime.errors import OnnxgError

app = typer.Typer(
    name="onnxg",
    help="Local chat and embeddings behind the OpenAI API, on ONNX Runtime.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"onnxg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Local chat and embeddings behind the OpenAI API, on ONNX Runtime."""


# One module per command (group) in cli/, each with ``register(app)``, in --help order.
for _module in (convert, check, pull, models, chat, embed, serve, bench, status, stop):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    debug = os.environ.get("ONNXG_DEBUG", "") not in ("", "0")
    try:
        code = app(args=argv, prog_name="onnxg", standalone_mode=False)
    except OnnxgError as exc:
        if debug:
            raise
        print_error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("[dim]Interrupted.[/dim]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt) or isinstance(exc.__cause__, KeyboardInterrupt):
            err.print("[dim]Interrupted.[/dim]")
            sys.exit(130)
        err.print("[red]Aborted.[/red]")
        sys.exit(1)
    except Exception as exc:
        # Usage errors from the (vendored) click: duck-typed, since nothing imports click.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        err.print(f"[bold red]Internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))}")
        err.print("[dim]Hint:[/dim] rerun with ONNXG_DEBUG=1 to see the traceback, and report it.")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
