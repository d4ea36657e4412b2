"""``onnxg stop``: stop background onnxg servers gracefully."""

from __future__ import annotations

from typing import Annotated

import typer

from onnxg.cli._common import err
from onnxg.runtime.errors import InvalidRequest

PortOpt = Annotated[int | None, typer.Option("--port", "-p", help="Stop the server on this port.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Stop every onnxg server running in the background.")]
GraceOpt = Annotated[
    float | None,
    typer.Option(
        "--grace", min=0,
        help="Seconds to wait after SIGTERM before SIGKILL (default: the server's grace period + 5).",
    ),
]


def stop(port: PortOpt = None, all_: AllOpt = False, grace: GraceOpt = None) -> None:
    """Stop background onnxg servers: SIGTERM, then SIGKILL after the grace period."""
    from onnxg.service import daemon, records

    if port is not None and all_:
        raise InvalidRequest("pass either --port or --all, not both", param="port")
    records = records.list_records()
    if port is not None:
        records = [r for r in records if r.port == port]
        if not records:
            err.print(f"No onnxg server is running on port {port}.")
            return
    elif not records:
        err.print("No onnxg server is running.")
        return
    elif len(records) > 1 and not all_:
        ports = ", ".join(str(r.port) for r in records)
        raise InvalidRequest(f"{len(records)} onnxg servers are running (ports {ports})",
                             hint="pass --port P to stop one, or --all", param="port")
    for record in records:
        result = daemon.stop(record, grace)
        how = {"terminated": "stopped", "killed": "killed (it did not exit within the grace period)",
               "gone": "already gone"}[result]
        err.print(f"onnxg server on port {record.port} (pid {record.pid}): {how}.")


def register(app: typer.Typer) -> None:
    app.command("stop")(stop)
