"""``onnxg convert SOURCE``: a repo id, folder, GGUF, SavedModel or recipe -> an ONNX model folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from onnxg.cli._common import JsonOpt, err, out, print_json
from onnxg.runtime.errors import InvalidRequest

HELP = """Convert a model to ONNX Runtime: chat models with onnxruntime-genai's builder, embedding models with optimum, TF SavedModels with tf2onnx.

SOURCE is a Hugging Face repo id, a local folder, a .gguf file, a SavedModel folder, or a recipe name (see --list)."""


class Steps:
    """Progress as steps on stderr: a spinner on the running one, a tick and time when done."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.current: str | None = None
        self.started = 0.0
        self.status: Any = None

    def __call__(self, text: str) -> None:
        self.done()
        self.current, self.started = text, time.monotonic()
        if self.quiet:
            return
        if err.is_terminal:
            self.status = err.status(f"{escape(text)}…")
            self.status.start()

    def done(self, ok: bool = True) -> None:
        if self.current is None:
            return
        if self.status is not None:
            self.status.stop()
            self.status = None
        if not self.quiet:
            mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
            err.print(f"{mark} {escape(self.current)} [dim]{time.monotonic() - self.started:.1f}s[/dim]")
        self.current = None


def _precision(int4: bool, int8: bool, fp16: bool, fp32: bool) -> str | None:
    chosen = [name for name, on in (("int4", int4), ("int8", int8), ("fp16", fp16), ("fp32", fp32)) if on]
    if len(chosen) > 1:
        raise InvalidRequest(f"choose one precision, not {' and '.join('--' + c for c in chosen)}", param="precision")
    return chosen[0] if chosen else None


def _extra(pairs: list[str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"--extra expects KEY=VALUE, got {pair!r}", "e.g. --extra block_size=64",
                                 param="extra")
        found[key.strip()] = value.strip()
    return found


def _max_memory(text: str | None) -> int | None:
    if text is None:
        return None
    from onnxg.convert import memory
    from onnxg.runtime.errors import ConversionError

    try:
        return memory.parse_size(text)
    except ConversionError as exc:
        raise InvalidRequest(f"--max-memory: {exc.message}", exc.hint, param="max_memory") from None


def _list(as_json: bool) -> None:
    from onnxg.convert import recipes as recipes_module

    recipes = recipes_module.load_all()
    if as_json:
        print_json([r.to_json() for r in recipes])
        return
    from rich.table import Table

    table = Table(title="onnxg recipes (onnxg convert NAME)", title_justify="left")
    for column in ("name", "task", "precision", "ep", "status", "source"):
        table.add_column(column, overflow="fold")
    for recipe in recipes:
        status = "[green]ok[/green]" if recipe.status == "ok" else f"[red]{escape(recipe.status)}[/red]"
        table.add_row(*(escape(v) for v in (recipe.name, recipe.task, recipe.precision, recipe.ep)), status,
                      escape(recipe.source))
    out.print(table)


def register(app: typer.Typer) -> None:
    @app.command("convert", help=HELP, no_args_is_help=True)
    def convert(
        source: Annotated[str | None, typer.Argument(help="Repo id, folder, .gguf, SavedModel or recipe.")] = None,
        int4: Annotated[bool, typer.Option("--int4", help="4-bit weights (default for chat).")] = False,
        int8: Annotated[bool, typer.Option("--int8", help="8-bit weights.")] = False,
        fp16: Annotated[bool, typer.Option("--fp16", help="float16.")] = False,
        fp32: Annotated[bool, typer.Option("--fp32", help="float32 (default for embeddings).")] = False,
        ep: Annotated[str, typer.Option("--ep", help="Execution provider: cpu, cuda, dml, webgpu.")] = "cpu",
        task: Annotated[str, typer.Option("--task", help="auto, chat or embedding (embed and e2e accepted).")] = "auto",
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder "
                          "(default: ONNXG_HOME/models/<name>-<precision>-<ep>).")] = None,
        trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code",
                                     help="Run the model repo's own Python code (only for repos you trust).")] = False,
        extra: Annotated[list[str] | None, typer.Option("--extra", metavar="KEY=VALUE",
                         help="Converter option, repeatable (e.g. block_size=64, accuracy_level=4).")] = None,
        revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit of a repo id.")] = None,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")] = False,
        max_memory: Annotated[str | None, typer.Option("--max-memory", metavar="SIZE",
                              help="Refuse a chat conversion whose estimated peak exceeds this (e.g. 12GB; "
                                   "default: this machine's memory).")] = None,
        list_recipes: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        if list_recipes:
            _list(as_json)
            return
        if not source:
            raise InvalidRequest("missing SOURCE", "run `onnxg convert --help`", param="source")
        from onnxg.convert import pipeline

        steps = Steps()
        started = time.monotonic()
        precision = _precision(int4, int8, fp16, fp32)
        options = _extra(extra)
        budget = _max_memory(max_memory)
        try:
            folder = pipeline.convert(
                source, output=output, task=task, precision=precision, ep=ep, extra=options,
                trust_remote_code=trust_remote_code, revision=revision, progress=steps, force=force,
                max_memory=budget,
            )
        except BaseException:
            steps.done(ok=False)
            raise
        steps.done()
        info = json.loads((folder / "onnxg.json").read_text(encoding="utf-8"))
        if as_json:
            print_json({"output": str(folder), **{k: v for k, v in info.items() if k != "files"}})
            return
        size = sum(item["size"] for item in info.get("files", []))
        err.print(f"[bold green]Converted[/bold green] in {time.monotonic() - started:.0f}s "
                  f"({size / 1e6:.1f} MB, {info['kind']}, {info['precision']}, {info['ep']})")
        out.print(str(folder), markup=False)
