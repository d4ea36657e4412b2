"""``onnxg embed``: text, a file (one input per non-empty line) or stdin -> vectors.

Output is JSON Lines on stdout (``{"index", "text", "embedding"}``) or, with ``--out``, a
``.npy`` matrix or a ``.jsonl`` file. Inputs are read and embedded in chunks, so a large
file takes constant memory; a ``.npy`` header is rewritten with the final row count.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.markup import escape

from onnxg.cli._common import ModelOpt, err, step
from onnxg.runtime.errors import InvalidRequest

HELP = """Embed text with a local embedding model.

INPUT is a text file (one input per non-empty line), `-` for stdin, or the text itself;
with no INPUT, stdin is read when piped. Vectors go to stdout as JSON Lines
({"index", "text", "embedding"}) unless --out names a .npy or .jsonl file."""

CHUNK_LINES = 2048  # inputs embedded per chunk: bounds memory on any input size
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


class _NpyWriter:
    """Rows appended to a .npy file whose header is rewritten with the final shape."""

    _RESERVED = 128  # header bytes: room for any row count

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.rows, self.dim = handle, 0, 0
        handle.write(b"\0" * self._RESERVED)

    def write(self, vectors: Any) -> None:
        import numpy as np

        block = np.ascontiguousarray(vectors, dtype="<f4")
        self.dim = block.shape[1]
        self.handle.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> None:
        header = repr({"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.dim)}).encode("latin1")
        room = self._RESERVED - 10  # magic (6) + version (2) + header length (2)
        header = header + b" " * (room - len(header) - 1) + b"\n"
        self.handle.seek(0)
        self.handle.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)


def _jsonl(index: int, text: str, vector: Any) -> str:
    return json.dumps({"index": index, "text": text, "embedding": vector.tolist()}, ensure_ascii=False,
                      separators=(",", ":")) + "\n"


def _resolve_model(model: str | None) -> Any:
    from onnxg.convert import defaults

    return defaults.resolve(model, step) if model is not None else defaults.default_model("embedding", step)


def embed(
    input: Annotated[str | None, typer.Argument(help="Text file, '-' for stdin, or the text itself.",
                                                show_default=False)] = None,
    model: ModelOpt = None,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Write vectors to a .npy or .jsonl file.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Inputs per model call.")] = 32,
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
    if out_path is not None and out_path.suffix.lower() not in (".npy", ".jsonl"):
        raise InvalidRequest(f"--out must end in .npy or .jsonl, not {out_path.name!r}", param="out")
    source = _open_source(input, as_text)
    lines = source.lines()
    first = next(_chunks(lines, CHUNK_LINES), None)  # read (and validate) before loading the model
    if not first:
        raise InvalidRequest(f"nothing to embed: {source.name} has no non-empty lines")
    if not ray and (ray_address is not None or workers is not None):
        raise InvalidRequest(f"{'--ray-address' if ray_address is not None else '--workers'} needs --ray",
                             param="ray_address" if ray_address is not None else "workers")
    started = time.monotonic()
    path = _resolve_model(model)
    options = {"threads": threads, "pooling": pooling, "normalize": False if no_normalize else None,
               "max_length": max_length, "truncate": not no_truncate}
    with _embedder(path, options, batch_size, ray, ray_address, workers) as (info, embed_chunks):
        if out_path is not None and out_path.suffix.lower() == ".npy" and info.multi_vector:
            raise InvalidRequest("multi-vector output has one vector per token: write it to .jsonl", param="out")
        count, tokens = _run(embed_chunks, source, first, lines, out_path, started)
    if out_path is not None:
        err.print(f"[green]✓[/green] {count} input{'s' if count != 1 else ''} ({tokens} tokens, "
                  f"{info.dimensions} dimensions) -> {escape(str(out_path))} in {time.monotonic() - started:.1f}s")


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


def _run(embed_chunks: EmbedChunks, source: _Source, first: list[str], rest: Iterator[str], out_path: Path | None,
         started: float) -> tuple[int, int]:
    partial = out_path.with_name(f".{out_path.name}.partial") if out_path else None
    binary = bool(out_path and out_path.suffix.lower() == ".npy")
    handle: IO[Any]
    if partial is None:
        handle = sys.stdout
    else:
        try:
            handle = open(partial, "wb" if binary else "w", encoding=None if binary else "utf-8")
        except OSError as exc:
            raise InvalidRequest(f"cannot write {out_path}: {exc.strerror}", param="out") from None
    npy = _NpyWriter(handle) if binary else None
    progress = _Progress(source, started)
    count = tokens = 0
    try:
        chunks = _chain(first, _chunks(rest, CHUNK_LINES))
        for chunk, result in embed_chunks(chunks):
            tokens += result.total_tokens
            if npy is not None:
                npy.write(result.vectors)
            else:
                handle.write("".join(_jsonl(count + i, text, vector)
                                     for i, (text, vector) in enumerate(zip(chunk, result.vectors, strict=True))))
            count += len(chunk)
            progress.update(count)
        if npy is not None:
            npy.close()
        handle.flush()
    except BrokenPipeError:  # `onnxg embed file | head`: the reader left, and that is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return count, tokens
    except BaseException:
        if partial is not None:
            handle.close()
            partial.unlink(missing_ok=True)
        raise
    finally:
        progress.stop()
    if partial is not None and out_path is not None:
        handle.close()
        partial.replace(out_path)
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

