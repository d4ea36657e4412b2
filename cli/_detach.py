"""``onnxg serve --detach``: start the server in the background and return once it answers.

The serve command (cli/serve.py) hands over with one line at the top of its function::

    if detach:
        from onnxg.cli._detach import detach_from_context
        raise typer.Exit(detach_from_context(ctx))

(its function takes ``ctx: typer.Context``). ``detach_from_context`` rebuilds the command
line from what the user typed, minus ``--detach``, and calls ``detach``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from onnxg.cli._common import err, out

# Options of `serve` that detach handles itself; every other option given is forwarded as typed.
_MODEL, _HOST, _PORT, _KEY, _DETACH = "--model", "--host", "--port", "--api-key", "--detach"


def detach(
    models: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    api_key: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float | None = None,
    grace: float | None = None,
) -> int:
    """Start ``onnxg serve`` in the background, wait for /health, print the URL; the exit code.

    0: started, or an onnxg server with the same models already runs there (nothing started).
    1: the port is taken by something else. A start that fails raises ServerStartError.
    """
    from onnxg.runtime import daemon

    if port == 0:  # any free port: the record and the URL need the real one
        port = daemon.free_port(host)
    log = daemon.log_path(port)
    status = err.status(f"Starting the onnxg server on port {port} (log: {log})")

    def show(_elapsed: float) -> None:  # shown only while a child we started gets ready
        status.start()
        last = daemon.log_tail(log, 1)
        if last:
            status.update(f"Starting the onnxg server on port {port}: [dim]{last[:100]}[/dim]")

    try:
        record, proc = daemon.start(
            host, port, daemon.normalize_models(models), origin="detach", api_key=api_key,
            extra_args=extra_args, timeout=daemon.DEFAULT_START_TIMEOUT_S if timeout is None else timeout,
            extra={} if grace is None else {"grace_s": grace}, on_wait=show,
        )
    except daemon.PortInUse as exc:  # exit code 1, not an exception: callers test the code
        err.print(f"[bold red]Error:[/bold red] {escape(exc.message)}")
        err.print(f"[dim]Hint:[/dim] {escape(exc.hint or '')}")
        return 1
    finally:
        status.stop()
    if proc is None:
        err.print(
            f"An onnxg server with these models already runs at {record.url} (pid {record.pid}); nothing started."
        )
    else:
        err.print(f"Started the onnxg server in the background (pid {proc.pid}); log: {log}")
        err.print("Stop it with `onnxg stop" + ("" if port == 8080 else f" --port {port}") + "`.")
    out.print(record.url)
    return 0


def detach_from_context(ctx: typer.Context, timeout: float | None = None) -> int:
    """``detach`` with the options of the running ``serve`` command (``ctx``)."""
    models: list[str] = []
    host, port, api_key = "127.0.0.1", 8080, None
    grace: float | None = None
    extra: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        value = ctx.params.get(name)
        opts = list(getattr(param, "opts", []))
        if _MODEL in opts:
            models = [str(v) for v in (value or [])] if isinstance(value, (list, tuple)) else ([str(value)] if value else [])
            continue
        if _HOST in opts:
            host = str(value) if value else host
            continue
        if _PORT in opts:
            port = int(value) if value is not None else port
            continue
        if _KEY in opts:
            api_key = str(value) if value else None
            continue
        if _DETACH in opts or value is None:
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name != "COMMANDLINE":
            continue  # defaults stay defaults; environment variables reach the child anyway
        if name == "grace_period":  # `onnxg stop` waits that long before SIGKILL
            grace = float(value)
        extra += _as_args(param, value)
    return detach(models, host, port, api_key=api_key, extra_args=extra, timeout=timeout, grace=grace)


def _as_args(param: Any, value: Any) -> list[str]:
    """The command-line words that give ``param`` the value ``value``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if getattr(param, "param_type_name", "option") == "argument":
        return [_text(v) for v in values]
    opt = param.opts[0]
    if getattr(param, "is_flag", False):
        if value:
            return [opt]
        secondary = getattr(param, "secondary_opts", [])
        return [secondary[0]] if secondary else []
    args: list[str] = []
    for item in values:
        args += [opt, _text(item)]
    return args


def _text(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value"):  # enums
        return str(value.value)
    return str(value)
