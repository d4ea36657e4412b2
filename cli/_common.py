"""What every command shares: consoles, option aliases, and the progress-step printer."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Store name, model folder, or recipe name."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def step(text: str) -> None:
    """One dimmed progress line on stderr (e.g. "converting X..."); the text is printed literally."""
    err.print(f"[dim]{escape(text)}[/dim]")
