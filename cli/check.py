"""``onnxg check FOLDER``: will this model load and serve? One line per check, with hints."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from onnxg.cli._common import JsonOpt, ModelOpt, err, one_model, out, print_json

RunOpt = Annotated[bool, typer.Option("--run", help="Also run the model once (one token / one embedding).")]
TargetArg = Annotated[str | None, typer.Argument(help="A model folder or a store name (or --model).", metavar="FOLDER")]


def register(app: typer.Typer) -> None:
    app.command("check", help="Check that a model folder is servable (exit 1 when a check fails).")(check_command)


def check_command(folder: TargetArg = None, model: ModelOpt = None, run: RunOpt = False, json_out: JsonOpt = False) -> None:
    """Check that a model folder is servable: config, files, tokenizer, template, operators."""
    from onnxg.convert.check import check
    from onnxg.runtime.errors import InvalidRequest
    from onnxg.runtime.store import resolve

    target = one_model(folder, model)
    if target is None:
        raise InvalidRequest("missing FOLDER", hint="run `onnxg check --help`", param="model")
    path = resolve(target)
    if json_out:
        report = check(path, run=run)
        print_json(report.to_json())
        raise typer.Exit(0 if report.ok else 1)
    with err.status(f"Checking {escape(str(path))}...", spinner="dots"):
        report = check(path, run=run)
    out.print(f"[bold]{escape(str(path))}[/bold] ({report.kind})")
    width = max((len(item.name) for item in report.items), default=0)
    for item in report.items:
        mark = "[green]✓[/green]" if item.ok else "[red]✗[/red]"
        out.print(f"  {mark} {escape(item.name.ljust(width))}  {escape(item.detail)}")
        if item.hint:
            style = "yellow" if not item.ok else "dim"
            out.print(f"      [{style}]hint: {escape(item.hint)}[/{style}]")
    failed = len(report.failures)
    if failed:
        out.print(f"[red]{failed} check{'s' if failed > 1 else ''} failed[/red]")
        raise typer.Exit(1)
    out.print("[green]ready to serve[/green]")
