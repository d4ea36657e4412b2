"""``onnxg embed``: text, a file (one input per non-empty line) or stdin -> vectors.

Output is JSON Lines on stdout (``{"index", "text", "embedding"}``) or, with ``--out``, a
``.npy`` matrix, a ``.jsonl`` file, or a folder of resumable shards (``cli.embed_out``).
Inputs are read and embedded in chunks, so a large file takes constant memory.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.markup import escape

from onnxg.cli import embed_out
from onnxg.cli._common import ModelOpt, err, step
from onnxg.runtime.errors import InvalidRequest

HELP = """Embed text with a local embedding model.

INPUT is a text file (one input per non-empty line), `-` for stdin, or the text itself;
with no INPUT, stdin is read when piped. Vectors go to stdout as JSON Lines
({"index", "text", "embedding"}) unless --out names a .npy or .jsonl file, or a folder
(DIR/): numbered shards and a manifest.json; rerun the same command to resume."""

CHUNK_LINES = 2048  # inputs embedded per chunk: bounds memory on any input size
SHARD_ROWS = 50 * CHUNK_LINES  # rows per shard with --out DIR (a whole number of chunks)
PROGRESS_AFTER_S = 0.5
_PATH_SUFFIXES = (".txt", ".text", ".md", ".csv", ".tsv", ".jsonl", ".json", ".log", ".lst")


def register(app: typer.Typer) -> None:
    app.command("embed", help=HELP)(embed)


class _Source:
    """Non-empty lines of a file, of stdin, or one literal text, with bytes read for progress."""

    def __init__(self, name: str, stream: IO[bytes] | None, text: str | None, size: int | None) -> None:
        self.name, self.stream, self.text, self.size = name, stream, text, size
        self.read = 0

    def lines(self) -> Iterator[str]:
        if self.text is not None:
            if self.text.strip():
                yield self.text
            return
        assert self.stream is not None
        number = 0
        first = True
        for raw in self.stream:
            number += 1
            self.read += len(raw)
            if first and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            first = False
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequest(f"{self.name} is not UTF-8 text (line {number}, byte {exc.start + 1})",
                                     "convert it first, e.g. iconv -f latin1 -t utf-8") from None
            line = line.rstrip("\r\n")
            if line.strip():
                yield line


def _looks_like_path(value: str) -> bool:
    return not any(c.isspace() for c in value) and (os.sep in value or value.lower().endswith(_PATH_SUFFIXES))


def _open_source(value: str | None, as_text: bool) -> _Source:
    if as_text:
        if value is None:
            raise InvalidRequest("--text needs the text as INPUT")
        return _Source("the text", None, value, None)
    if value is None or value == "-":
        if value is None and sys.stdin.isatty():
            raise InvalidRequest("nothing to embed", "pass the text, a file, or pipe lines into `onnxg embed -`")
        return _Source("stdin", sys.stdin.buffer, None, None)
    path = Path(value).expanduser()
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except (OSError, ValueError):  # e.g. a text longer than any file name can be
        is_file = is_dir = False
    if is_file:
        try:
            return _Source(str(path), open(path, "rb"), None, path.stat().st_size)
        except OSError as exc:
            raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from None
    if is_dir:
        raise InvalidRequest(f"{path} is a folder, not a text file")
    if _looks_like_path(value):
        raise InvalidRequest(f"no such file: {value}", "to embed this text itself, pass --text")
    return _Source("the text", None, value, None)


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _resolve_model(model: str | None) -> Any:
    from onnxg.convert import defaults

    return defaults.resolve(model, step) if model is not None else defaults.default_model("embedding", step)


def embed(
    input: Annotated[str | None, typer.Argument(help="Text file, '-' for stdin, or the text itself.",
                                                show_default=False)] = None,
    model: ModelOpt = None,
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help="Write vectors to a .npy or .jsonl file, or to numbered shards in a folder (DIR/; "
        "an interrupted run resumes).", show_default=False)] = None,
    shard_rows: Annotated[int | None, typer.Option(
        "--shard-rows", help=f"Rows per shard with --out DIR (a multiple of {CHUNK_LINES}; default {SHARD_ROWS}).",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", "-b", help="At most this many inputs per model call (long inputs make smaller calls).")] = 32,
    pooling: Annotated[str | None, typer.Option(
        "--pooling", help="mean, cls, last, max or multi-vector (default: the model's).")] = None,
    no_normalize: Annotated[bool, typer.Option("--no-normalize", help="Skip L2 normalisation.")] = False,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Tokens per input (default: the model's).")] = None,
    no_truncate: Annotated[bool, typer.Option("--no-truncate", help="Fail on over-long inputs instead of truncating.")] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for the model.")] = None,
    as_text: Annotated[bool, typer.Option("--text", "-t", help="Treat INPUT as text even if it looks like a path.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Spread the work over Ray workers (pip install 'onnxg[ray]').",
                                      rich_help_panel="Ray")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster for this command).",
        rich_help_panel="Ray")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Ray workers, each with the model loaded (default 2).",
                                                rich_help_panel="Ray")] = None,
) -> None:
    if batch_size < 1:
        raise InvalidRequest("--batch-size must be at least 1", param="batch_size")
    out_path, folder = _target(out, shard_rows)
    source = _open_source(input, as_text)
    lines = source.lines()
    options = {"threads": threads, "pooling": pooling, "normalize": False if no_normalize else None,
               "max_length": max_length, "truncate": not no_truncate}
    started = time.monotonic()
    path = shards = None
    if folder is not None:  # the model's identity first: a folder of other vectors is refused before any work
        path = _resolve_model(model)
        shards = embed_out.Shards.open(folder, _identity(source, path, options, batch_size,
                                                         shard_rows or SHARD_ROWS))
        shards.skip(lines)
    first = next(_chunks(lines, CHUNK_LINES), None)  # read (and validate) before loading the model
    if shards is not None and shards.done:
        if first and shards.ended:
            raise InvalidRequest(f"--out {folder} holds vectors of other lines than the input's",
                                 "choose a new folder, or remove this one", param="out")
        if not first:  # a complete folder, or one whose last shard was written before the manifest
            shards.finish()
            err.print(f"[green]✓[/green] {shards.resumed} inputs already in {escape(str(folder))}")
            return
    elif not first:
        raise InvalidRequest(f"nothing to embed: {source.name} has no non-empty lines")
    if not ray and (ray_address is not None or workers is not None):
        raise InvalidRequest(f"{'--ray-address' if ray_address is not None else '--workers'} needs --ray",
                             param="ray_address" if ray_address is not None else "workers")
    path = path or _resolve_model(model)
    with _embedder(path, options, batch_size, ray, ray_address, workers) as (info, embed_chunks):
        sink: Any
        if shards is not None:
            sink = shards.writer(info.dimensions, info.multi_vector)
        elif out_path is not None:
            if out_path.suffix.lower() == ".npy" and info.multi_vector:
                raise InvalidRequest("multi-vector output has one vector per token: write it to .jsonl", param="out")
            sink = embed_out.File(out_path)
        else:
            sink = embed_out.Stdout()
        resumed = shards.resumed if shards is not None else 0
        count, tokens = _run(embed_chunks, source, first, lines, sink, resumed, started)
    if out is not None:
        note = f", {resumed} of them resumed" if resumed else ""
        err.print(f"[green]✓[/green] {count} input{'s' if count != 1 else ''} ({tokens} tokens, "
                  f"{info.dimensions} dimensions{note}) -> {escape(out)} in {time.monotonic() - started:.1f}s")


def _target(out: str | None, shard_rows: int | None) -> tuple[Path | None, Path | None]:
    """(a .npy/.jsonl file, a folder of shards) that ``--out`` names (at most one of them)."""
    folder = out is not None and embed_out.is_folder(out)
    if shard_rows is not None:
        if not folder:
            raise InvalidRequest("--shard-rows needs --out DIR (a folder)", param="shard_rows")
        if shard_rows < 1 or shard_rows % CHUNK_LINES:
            raise InvalidRequest(f"--shard-rows must be a multiple of {CHUNK_LINES} (the lines embedded per "
                                 f"chunk), e.g. {CHUNK_LINES * 10}", param="shard_rows")
    if out is None:
        return None, None
    path = Path(out).expanduser()
    if folder:
        return None, path
    if path.suffix.lower() not in embed_out.FILE_SUFFIXES:
        raise InvalidRequest(f"--out must end in .npy or .jsonl, or name a folder, not {path.name!r}", param="out")
    return path, None


def _identity(source: _Source, model: Path, options: dict[str, Any], batch_size: int,
              shard_rows: int) -> dict[str, Any]:
    """What vectors in a folder depend on: a resumed run must have the same (``embed_out.Shards``)."""
    from onnxg.runtime import embed, store

    name = str(Path(source.name).resolve()) if source.size is not None else source.name
    return {"input": {"name": name, "size": source.size},
            "model": {"name": model.name, "path": str(model.resolve()),
                      "fingerprint": store.fingerprint(model) if model.is_dir() else None},
            "options": {**{k: v for k, v in options.items() if k != "threads"}, "batch_size": batch_size},
            "shard_rows": shard_rows, "batching": embed.BATCHING}


EmbedChunks = Callable[[Iterator[list[str]]], Iterator[tuple[list[str], Any]]]


@contextlib.contextmanager
def _embedder(path: Path, options: dict[str, Any], batch_size: int, ray: bool, address: str | None,
              workers: int | None) -> Iterator[tuple[Any, EmbedChunks]]:
    """(the model's ``dimensions``/``multi_vector``, chunks -> (chunk, result) in input order):
    the model in this process, or ``workers`` copies of it on Ray (``cluster.embed``)."""
    if ray:
        from onnxg.cluster import embed as cluster_embed

        with cluster_embed.pool(path, options, batch_size, workers or 2, address) as pool:
            yield pool.info, pool.embed_in_order
        return
    from onnxg.runtime import loading

    loaded = loading.load_embedding(path, **options)
    yield loaded, lambda chunks: ((chunk, loaded.embed(chunk, batch_size=batch_size)) for chunk in chunks)


def _run(embed_chunks: EmbedChunks, source: _Source, first: list[str], rest: Iterator[str], sink: Any,
         count: int, started: float) -> tuple[int, int]:
    """Embed ``first`` and the chunks of ``rest`` into ``sink``, numbered from ``count``."""
    progress = _Progress(source, started)
    tokens = 0
    try:
        chunks = _chain(first, _chunks(rest, CHUNK_LINES))
        for chunk, result in embed_chunks(chunks):
            tokens += result.total_tokens
            sink.write(count, chunk, result.vectors)
            count += len(chunk)
            progress.update(count)
        sink.finish()
    except BrokenPipeError:  # `onnxg embed file | head`: the reader left, and that is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return count, tokens
    except BaseException:
        sink.abort()
        raise
    finally:
        progress.stop()
    return count, tokens


def _chain(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


class _Progress:
    """A rich progress bar on stderr, shown once the job has taken more than a moment."""

    def __init__(self, source: _Source, started: float) -> None:
        self.source, self.started, self.bar, self.task = source, started, None, None

    def update(self, count: int) -> None:
        if self.bar is None:
            if not err.is_terminal or time.monotonic() - self.started < PROGRESS_AFTER_S:
                return
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("embedding"), BarColumn(), TextColumn("{task.fields[count]} inputs"),
                                TimeElapsedColumn(), console=err, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("embed", total=self.source.size, count=0)
        self.bar.update(self.task, completed=self.source.read or count, count=count)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()

