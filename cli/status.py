"""``onnxg status``: the onnxg servers running in the background."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from onnxg.cli._common import JsonOpt, err, out, print_json


def format_uptime(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def status(as_json: JsonOpt = False) -> None:
    """List the onnxg servers running in the background (pid, URL, models, uptime)."""
    from rich.table import Table

    from onnxg.service import records

    records = records.list_records()
    if as_json:
        print_json([r.to_json() for r in records])
        return
    if not records:
        err.print("No onnxg server is running.")
        return
    table = Table(box=None, header_style="bold")
    table.add_column("PID", no_wrap=True)
    table.add_column("URL", no_wrap=True)
    table.add_column("MODELS", overflow="fold")
    table.add_column("UPTIME", no_wrap=True)
    for r in records:
        # model ids as served (a folder's name); --json has the full paths and the log file
        models = ", ".join(Path(m).name for m in r.models) if r.models else "(defaults)"
        table.add_row(str(r.pid), escape(r.url), escape(models), format_uptime(r.uptime_s))
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
