"""Where ``onnxg embed`` writes its vectors: stdout, one ``.npy``/``.jsonl`` file, or a folder.

A folder (``--out DIR``) receives numbered shards ``part-00000.npy``, ``part-00001.npy``, ...
of ``shard_rows`` rows each (``.jsonl`` for multi-vector models), each written under a hidden
partial name and renamed once complete, and ``manifest.json``, rewritten after every shard and
last with ``"complete": true``. A shard is a whole number of the command's chunks, so the
model sees the same chunks and batches as for one file: the shards, concatenated in manifest
order, equal the single-file output bit for bit.

The manifest records what the vectors depend on (the input, the model folder and its
fingerprint, the options, the shard size) and a sha256 of each shard's input lines. A rerun
with the same ones resumes after the last complete shard: it reads the lines those shards hold
(checking their hashes) without embedding them. A folder holding anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from onnxg.runtime import store
from onnxg.runtime.errors import InvalidRequest

MANIFEST = "manifest.json"
FORMAT = "onnxg-embeddings/1"
FILE_SUFFIXES = (".npy", ".jsonl")


def is_folder(value: str) -> bool:
    """``--out`` names a folder: an existing one, a trailing slash, or a new path with no suffix."""
    path = Path(value).expanduser()
    return path.is_dir() or value.endswith(("/", os.sep)) or (not path.exists() and not path.suffix)


class NpyWriter:
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


def jsonl(first: int, texts: list[str], vectors: Any) -> str:
    """JSON Lines ``{"index", "text", "embedding"}`` for ``texts``, numbered from ``first``
    (the vectors as ``pooling.vector_json`` writes them)."""
    from onnxg.runtime.pooling import vector_json

    return "".join(f'{{"index":{first + i},"text":{json.dumps(text, ensure_ascii=False)},'
                   f'"embedding":{vector_json(vector).decode()}}}\n'
                   for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)))


class _Partial:
    """A file written under ``.NAME.partial`` and renamed to NAME by ``commit`` (removed by ``abort``)."""

    def __init__(self, path: Path, binary: bool) -> None:
        self.path, self.partial = path, path.with_name(f".{path.name}.partial")
        try:
            self.handle: IO[Any] = open(  # noqa: SIM115 - open until commit/abort
                self.partial, "wb" if binary else "w", encoding=None if binary else "utf-8")
        except OSError as exc:
            raise InvalidRequest(f"cannot write {path}: {exc.strerror}", param="out") from None
        self.npy = NpyWriter(self.handle) if binary else None

    def write(self, first: int, texts: list[str], vectors: Any) -> None:
        if self.npy is not None:
            self.npy.write(vectors)
        else:
            self.handle.write(jsonl(first, texts, vectors))

    def commit(self) -> None:
        if self.npy is not None:
            self.npy.close()
        self.handle.close()
        self.partial.replace(self.path)

    def abort(self) -> None:
        self.handle.close()
        self.partial.unlink(missing_ok=True)


class Stdout:
    """JSON Lines on stdout."""

    def write(self, first: int, texts: list[str], vectors: Any) -> None:
        sys.stdout.write(jsonl(first, texts, vectors))

    def finish(self) -> None:
        sys.stdout.flush()

    def abort(self) -> None:
        pass


class File:
    """One ``.npy`` or ``.jsonl`` file, in place only once complete."""

    def __init__(self, path: Path) -> None:
        self.file = _Partial(path, path.suffix.lower() == ".npy")

    def write(self, first: int, texts: list[str], vectors: Any) -> None:
        self.file.write(first, texts, vectors)

    def finish(self) -> None:
        self.file.commit()

    def abort(self) -> None:
        self.file.abort()


# --- a folder of shards ----------------------------------------------------------------------


def _lines_digest(lines: list[str], digest: Any = None) -> Any:
    """``digest`` (a new sha256 by default) updated with ``lines``, each ended by a newline."""
    digest = digest if digest is not None else hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest


@dataclass
class Shards:
    """The state of ``--out DIR``: what its vectors depend on, and the shards complete so far."""

    folder: Path
    identity: dict[str, Any]
    """``input``, ``model``, ``options``, ``shard_rows``, ``batching`` (how the runtime cuts
    model calls, ``runtime.embed.BATCHING``): a resumed run must have the same."""
    done: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    previous: dict[str, Any] = field(default_factory=dict)
    """The folder's manifest as found."""

    @property
    def rows(self) -> int:
        return int(self.identity["shard_rows"])

    @property
    def ended(self) -> bool:
        """Whether the shards already hold the input's last line (the last shard is short)."""
        return self.complete or bool(self.done and int(self.done[-1]["rows"]) < self.rows)

    @property
    def resumed(self) -> int:
        """Rows already in the folder (their lines are skipped, not embedded)."""
        return sum(int(s["rows"]) for s in self.done)

    @classmethod
    def open(cls, folder: Path, identity: dict[str, Any]) -> Shards:
        """A new or empty folder, or one holding shards of the same input, model and options."""
        shards = cls(folder, identity)
        if folder.exists() and not folder.is_dir():
            raise InvalidRequest(f"--out {folder} is a file, not a folder", param="out")
        manifest = folder / MANIFEST
        if not manifest.is_file():
            if folder.is_dir() and any(folder.iterdir()):
                raise InvalidRequest(f"--out {folder} is a folder holding other files",
                                     "choose a new or empty folder", param="out")
            return shards
        data = store.read_json(manifest)
        if data.get("format") != FORMAT:
            raise InvalidRequest(f"--out {folder} holds a manifest.json that onnxg embed did not write",
                                 "choose a new or empty folder", param="out")
        for key, wanted in identity.items():
            if data.get(key) != wanted:
                raise InvalidRequest(f"--out {folder} holds vectors of another {key.replace('_', ' ')} "
                                     f"({_differs(data.get(key), wanted)})",
                                     "rerun with the same input, model and options to resume, "
                                     "or choose a new folder", param="out")
        shards.done = list(data.get("shards") or [])
        shards.complete = bool(data.get("complete"))
        shards.previous = data
        return shards

    def skip(self, lines: Iterator[str]) -> None:
        """Read the lines the complete shards hold from ``lines``, checking they are the same."""
        for shard in self.done:
            taken = [line for _, line in zip(range(int(shard["rows"])), lines)]
            if len(taken) < int(shard["rows"]) or _lines_digest(taken).hexdigest() != shard["sha256"]:
                raise InvalidRequest(f"--out {self.folder} holds vectors of other lines than the input's "
                                     f"({shard['file']})", "choose a new folder, or remove this one", param="out")

    def finish(self) -> None:
        """Mark a resumed folder complete when its shards already hold every line."""
        if not self.complete:
            self.writer(int(self.previous["dimensions"]), bool(self.previous["multi_vector"])).finish()

    def writer(self, dimensions: int, multi_vector: bool) -> ShardWriter:
        """The sink for the rows after ``resumed``; writes the manifest (no shard yet on a new folder)."""
        suffix = ".jsonl" if multi_vector else ".npy"
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".part-*.partial"):
            stale.unlink(missing_ok=True)
        return ShardWriter(self, dimensions, suffix)


def _differs(had: Any, wanted: Any) -> str:
    if isinstance(had, dict) and isinstance(wanted, dict):
        keys = sorted(k for k in set(had) | set(wanted) if had.get(k) != wanted.get(k))
        return ", ".join(f"{k}: {had.get(k)!r} there, {wanted.get(k)!r} now" for k in keys[:2])
    return f"{'not recorded' if had is None else repr(had)} there, {wanted!r} now"


class ShardWriter:
    """Rows into ``part-NNNNN`` shards of ``shards.rows`` rows; the manifest after each shard."""

    def __init__(self, shards: Shards, dimensions: int, suffix: str) -> None:
        self.shards, self.dimensions, self.suffix = shards, dimensions, suffix
        self.file: _Partial | None = None
        self.first = self.held = 0
        self.digest = _lines_digest([])
        self._manifest(complete=False)

    def write(self, first: int, texts: list[str], vectors: Any) -> None:
        at = 0
        while at < len(texts):
            if self.file is None:
                name = f"part-{len(self.shards.done):05d}{self.suffix}"
                self.file = _Partial(self.shards.folder / name, self.suffix == ".npy")
                self.first, self.held, self.digest = first + at, 0, _lines_digest([])
            take = min(len(texts) - at, self.shards.rows - self.held)
            part = texts[at:at + take]
            self.file.write(first + at, part, vectors[at:at + take])
            _lines_digest(part, self.digest)
            self.held += take
            at += take
            if self.held == self.shards.rows:
                self._close_shard()

    def finish(self) -> None:
        if self.file is not None:
            self._close_shard()
        self._manifest(complete=True)

    def abort(self) -> None:
        if self.file is not None:
            self.file.abort()

    def _close_shard(self) -> None:
        assert self.file is not None
        self.file.commit()
        self.shards.done.append({"file": self.file.path.name, "first": self.first, "rows": self.held,
                                 "sha256": self.digest.hexdigest()})
        self.file = None
        self._manifest(complete=False)

    def _manifest(self, complete: bool) -> None:
        shards = self.shards
        data = {"format": FORMAT, **shards.identity, "dimensions": self.dimensions,
                "dtype": "float32", "multi_vector": self.suffix == ".jsonl", "count": shards.resumed,
                "complete": complete, "shards": shards.done}
        store.write_manifest(shards.folder, data, name=MANIFEST)
