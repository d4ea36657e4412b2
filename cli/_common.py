"""What every command shares: consoles, option aliases, and the not-implemented exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Store name, model folder, or recipe name."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
PathArg = Annotated[Path, typer.Argument(help="A model folder.")]


def not_implemented(command: str, issue: int) -> None:
    err.print(f"[red]onnxg {command} is not implemented yet[/red] (issue #{issue}).")
    raise typer.Exit(2)
