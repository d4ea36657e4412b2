"""``onnxg models``: list the local store; ``onnxg models rm NAME`` removes a model."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from onnxg.cli._common import JsonOpt, err, one_model, out, print_json

models_app = typer.Typer(
    name="models",
    help="List local models (`onnxg models rm NAME` removes one).",
    invoke_without_command=True,
    no_args_is_help=False,
)

_KIND = {"chat": "chat", "embedding": "embedding", "e2e": "E2E"}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _source_cell(source: str | None) -> str:
    if not source:
        return "[dim]local[/dim]"
    source = escape(source)
    parts = source.replace("\\", "/").split("/")
    if source.startswith(("/", "~")) or (len(source) > 1 and source[1] == ":"):
        return "…/" + "/".join(parts[-2:]) if len(parts) > 2 else source  # a local path: its tail
    return source


def _check_cell(value: bool | None, complete: bool) -> str:
    if not complete:
        return "[yellow]incomplete[/yellow]"
    return {True: "[green]✓[/green]", False: "[red]✗[/red]", None: "[dim]?[/dim]"}[value]


def _run_checks(entries: list) -> None:
    """Run `onnxg check` on the models whose cached result is missing or stale."""
    from onnxg.convert import check as checker
    from onnxg.runtime import store

    for entry in entries:
        if entry.complete and entry.check is None:
            err.print(f"[dim]checking {escape(entry.name)}…[/dim]")
            try:
                report = checker.check(entry.path)
            except Exception as exc:  # a broken folder is reported, not fatal for the listing
                err.print(f"[red]✗[/red] {escape(entry.name)}: {escape(str(exc))}")
                continue
            entry.check = store.record_check(entry.path, report)["ok"]


@models_app.callback()
def list_models(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    check: Annotated[
        bool, typer.Option("--check", help="Run `onnxg check` on models not checked yet (results are cached).")
    ] = False,
) -> None:
    """List the models in the store: name, kind, precision, EP, size, source, check."""
    if ctx.invoked_subcommand is not None:
        return
    from onnxg.runtime import home, store

    entries = store.list_models()
    if check:
        _run_checks(entries)
    if as_json:
        print_json([e.to_json() for e in entries])
        return
    if not entries:
        err.print(f"No models in {escape(str(home.models_dir()))}.")
        err.print("[dim]Hint:[/dim] `onnxg pull REPO/SUBFOLDER`, `onnxg convert SOURCE`, "
                  "or `onnxg serve` (builds the defaults).")
        return
    from rich import box
    from rich.table import Table

    table = Table(title=f"Models in {escape(str(home.models_dir()))}", title_justify="left", title_style="dim",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    wide = out.width >= 110  # narrow terminals: the source is in `--json`
    for column, justify in (("name", "left"), ("kind", "left"), ("precision", "left"), ("EP", "left"),
                            ("size", "right"), ("source", "left"), ("check", "center")):
        if column == "source" and not wide:
            continue
        table.add_column(column, justify=justify, no_wrap=column != "source",  # type: ignore[arg-type]
                         overflow="fold")
    for e in entries:
        cells = [escape(e.name), escape(_KIND.get(e.kind, e.kind)), escape(e.precision or "?"), escape(e.ep),
                 _size(e.size), _source_cell(e.source), _check_cell(e.check, e.complete)]
        table.add_row(*(cells if wide else cells[:5] + cells[6:]))
    out.print(table)
    if any(e.check is None and e.complete for e in entries):
        err.print("[dim]? = not checked yet: `onnxg models --check` checks them (and remembers).[/dim]")


@models_app.command("rm")
def remove(
    name: Annotated[str | None, typer.Argument(help="Store name of the model to delete (or --model).",
                                               show_default=False, metavar="NAME")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Store name of the model to delete.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a model from the store (never anything outside it)."""
    from onnxg.runtime import home, store
    from onnxg.runtime.errors import InvalidRequest, ModelNotFound

    name = one_model(name, model)
    if name is None:
        raise InvalidRequest("missing NAME", hint="run `onnxg models` to list the store", param="model")
    if not store.is_store_name(name):
        raise InvalidRequest(f"{name!r} is not a store name", hint="run `onnxg models` to list the store")
    target = home.models_dir() / name
    if not (target.is_dir() or target.is_symlink()):
        raise ModelNotFound(f"no model named {name!r} in the store", hint="run `onnxg models` to list the store")
    if not yes:
        size = _size(store.disk_size(target)) if not target.is_symlink() else "a link"
        if not typer.confirm(f"Delete {name} ({size}) from {home.models_dir()}?", default=False, err=True):
            err.print("Nothing deleted.")
            raise typer.Exit(1)
    store.remove(name)
    out.print(f"Deleted {escape(name)}.")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
