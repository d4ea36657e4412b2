"""``onnxg pull REPO[/SUBFOLDER][@REVISION]``: a ready ONNX model from the hub into the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from onnxg.cli._common import JsonOpt, err, out, print_json

from onnxg.runtime.errors import OnnxgError

if TYPE_CHECKING:
    from onnxg.hub.pull import PullProgress


def _rich_progress() -> PullProgress:
    """A PullProgress drawing a bar per file and one for the total on stderr."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from onnxg.hub.pull import PullProgress, RemoteFile

    class RichPull(PullProgress):
        def __init__(self) -> None:
            self.bars = Progress(
                TextColumn("{task.description}", table_column=None),
                BarColumn(bar_width=30),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=False,
            )
            self.total: TaskID | None = None
            self.tasks: dict[str, TaskID] = {}

        def resolved(self, repo: str, revision: str, name: str) -> None:
            err.print(f"[bold]{escape(repo)}[/bold] @ {escape(revision[:12])} "
                      f"-> store name [cyan]{escape(name)}[/cyan]")

        def plan(self, files: list[RemoteFile], present: dict[str, int]) -> None:
            whole = [f for f in files if present.get(f.name) == f.size]
            if whole:
                err.print(f"[dim]{len(whole)} of {len(files)} files already present with the right size: skipped[/dim]")
            self.bars.start()
            self.total = self.bars.add_task(
                "[bold]total[/bold]", total=sum(f.size for f in files), completed=sum(present.values())
            )

        def start(self, file: RemoteFile, offset: int) -> None:
            label = escape(file.name if len(file.name) <= 40 else "…" + file.name[-39:])
            if offset:
                label += " [dim](resumed)[/dim]"
            self.tasks[file.name] = self.bars.add_task(label, total=file.size, completed=offset)

        def advance(self, file: RemoteFile, nbytes: int) -> None:
            task = self.tasks.get(file.name)
            if task is not None:
                self.bars.advance(task, nbytes)
            if self.total is not None:
                self.bars.advance(self.total, nbytes)

        def finish(self, file: RemoteFile) -> None:
            task = self.tasks.get(file.name)
            if task is not None:
                self.bars.update(task, completed=file.size)

        def step(self, text: str) -> None:
            self.close()
            err.print(f"[dim]{escape(text)}…[/dim]")

        def close(self) -> None:
            if self.bars.live.is_started:
                self.bars.stop()

    return RichPull()


def pull_command(
    ref: Annotated[
        str, typer.Argument(help="REPO[/SUBFOLDER][@REVISION] on the Hugging Face hub.", show_default=False)
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Store name (default: from the repo and subfolder).")
    ] = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch, tag or commit (overrides @REVISION).")
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="Only ONNX files matching this glob (repeatable), e.g. model.onnx."),
    ] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip `onnxg check` after the download.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download a ready ONNX model from the Hugging Face hub into the store.

    Only the model's files are fetched (ONNX graphs and their data, configs, tokenizer,
    chat template); files already present are skipped and an interrupted download resumes.
    """
    from onnxg.convert import recipes
    from onnxg.convert.check import check
    from onnxg.hub.pull import pull

    listener = _rich_progress()
    try:
        result = pull(recipes.prebuilt(ref) or ref, name=name, revision=revision, include=include or None,
                      check=None if no_check else check, progress=listener)
    except KeyboardInterrupt:
        err.print(f"[dim]Stopped: run `onnxg pull {escape(ref)}` again to resume.[/dim]")
        raise
    finally:
        listener.close()  # type: ignore[attr-defined]
    if result.note:
        err.print(f"[yellow]{escape(result.note)}[/yellow]")
    if as_json:
        print_json(result.to_json())
    else:
        fetched = len(result.downloaded)
        parts = [f"{fetched} file{'s' if fetched != 1 else ''} downloaded"]
        if result.resumed:
            parts.append(f"{len(result.resumed)} resumed")
        if result.skipped:
            parts.append(f"{len(result.skipped)} already present")
        state = "" if result.offline else " (" + ", ".join(parts) + ")"
        out.print(f"[green]✓[/green] {escape(result.name)}{state}: {escape(str(result.path))}")
        if result.check_ok:
            out.print("[green]✓[/green] onnxg check passed")
    if result.check_ok is False:
        for line in result.check_failures:
            err.print(f"[red]✗[/red] {escape(line)}")
        raise OnnxgError(f"{result.name} was downloaded but `onnxg check` fails",
                         hint=f"run `onnxg check {result.path}` for details")


def register(app: typer.Typer) -> None:
    app.command("pull", help="Download a ready ONNX model from the Hugging Face hub.")(pull_command)
