"""``onnxg serve --detach``: start the server in the background and return once it answers.

The serve command (cli/serve.py) hands over with one line at the top of its function::

    if detach:
        from onnxg.cli._detach import detach_from_context
        raise typer.Exit(detach_from_context(ctx))

(its function takes ``ctx: typer.Context``). ``detach_from_context`` rebuilds the command
line from what the user typed, minus ``--detach``, and calls ``detach``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

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
    from onnxg.runtime import daemon, procs

    wanted = daemon.normalize_models(models)
    if port == 0:  # any free port: the record and the URL need the real one
        from onnxg.runtime.daemon import free_port

        port = free_port(host)
    with daemon.port_lock(port):
        running = daemon.get_record(port)
        if running is not None and daemon.same_models(running, wanted) and _wait_running(running):
            err.print(
                f"An onnxg server with these models already runs at {running.url} "
                f"(pid {running.pid}); nothing started."
            )
            out.print(running.url)
            return 0
        running = daemon.get_record(port)  # it may have ended while we waited
        if running is not None:
            models_text = ", ".join(running.models) or "the default models"
            err.print(
                f"[bold red]Error:[/bold red] port {port} is taken by another onnxg server "
                f"(pid {running.pid}, {models_text})"
            )
            err.print(f"[dim]Hint:[/dim] stop it with `onnxg stop --port {port}`, or pick another --port")
            return 1
        if daemon.port_in_use(host, port):
            err.print(f"[bold red]Error:[/bold red] port {port} is already in use by another program")
            err.print("[dim]Hint:[/dim] pick another --port, or stop what listens there")
            return 1

        log = daemon.log_path(port)
        env = dict(os.environ)
        if api_key:  # through the environment: a command line is visible to every user in `ps`
            env["ONNXG_API_KEY"] = api_key
        proc = daemon.spawn(daemon.serve_command(host, port, wanted, extra_args), log, env=env)
        record = daemon.new_record(proc, host, port, wanted, log, origin="detach")
        if grace is not None:
            record.extra["grace_s"] = grace
        daemon.write_record(record)
        try:
            with err.status(f"Starting the onnxg server on port {port} (log: {log})") as status:

                def show(_elapsed: float) -> None:
                    last = daemon.log_tail(log, 1)
                    if last:
                        status.update(f"Starting the onnxg server on port {port}: [dim]{last[:100]}[/dim]")

                daemon.wait_healthy(
                    proc, host, port, log,
                    timeout=daemon.DEFAULT_START_TIMEOUT_S if timeout is None else timeout,
                    on_wait=show,
                )
        except BaseException:
            procs.terminate(proc.pid, 5.0, alive=lambda: proc.poll() is None)
            daemon.remove_record(port)
            raise
    err.print(f"Started the onnxg server in the background (pid {proc.pid}); log: {log}")
    err.print("Stop it with `onnxg stop" + ("" if port == 8080 else f" --port {port}") + "`.")
    out.print(record.url)
    return 0


def _wait_running(record: Any) -> bool:
    """A server with a record may still be starting (another start is waiting on it)."""
    from onnxg.runtime import daemon

    try:
        daemon.wait_record_healthy(record)
    except daemon.ServerStartError:
        return False
    return True


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
