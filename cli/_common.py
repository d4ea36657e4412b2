"""What every command shares: consoles, option aliases, JSON output, error lines, progress steps."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from onnxg.runtime.errors import OnnxgError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

MODEL_HELP = "Store name, model folder, or recipe name."
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)]
ModelArg = Annotated[str | None, typer.Argument(help=MODEL_HELP + " The same as --model.", metavar="MODEL")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def one_model(positional: str | None, option: str | None) -> str | None:
    """The model named as an argument or with ``--model`` (both only when they agree)."""
    from onnxg.runtime.errors import InvalidRequest

    if positional is not None and option is not None and positional != option:
        raise InvalidRequest(f"two models given: {positional!r} and --model {option!r}",
                             hint="name the model once, as an argument or with --model", param="model")
    return option if option is not None else positional


def print_json(data: Any) -> None:
    """The one way every command prints JSON: indented, UTF-8 as is, plain (no markup, no colour)."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_error(exc: OnnxgError) -> None:
    """An OnnxgError as one red line and its hint (the boundary in cli/main.py, and chat's loop)."""
    err.print(f"[bold red]Error:[/bold red] {escape(exc.message)}")
    if exc.hint:
        err.print(f"[dim]Hint:[/dim] {escape(exc.hint)}")


def step(text: str) -> None:
    """One dimmed progress line on stderr (e.g. "converting X..."); the text is printed literally."""
    err.print(f"[dim]{escape(text)}[/dim]")
