"""The local model store: ``ONNXG_HOME/models/<name>/``.

``resolve(ref)`` turns what a user typed into a model folder on disk: a folder path or a
store name. Recipe names and the default models, which may need converting first, are
``onnxg.convert.defaults``' job (``resolve``, ``default_model``): the runtime never
converts. Every model folder may carry an ``onnxg.json`` (written by ``onnxg convert`` and
``onnxg pull``): where it came from, its files with size and sha256, and the cached result
of ``onnxg check``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxg.runtime import home, layout
from onnxg.runtime.errors import InvalidRequest, ModelNotFound

MANIFEST = "onnxg.json"
PULL_STATE = ".pull"  # present while `onnxg pull` has not finished the folder

# Default model names in the store (built by ``onnxg.convert.defaults`` on first use).
DEFAULT_NAMES: dict[str, str] = {
    "chat": "smollm2-135m-instruct-int4-cpu",
    "embedding": "all-minilm-l6-v2-fp32-cpu",
}
DEFAULT_ENV = {"chat": "ONNXG_DEFAULT_CHAT_MODEL", "embedding": "ONNXG_DEFAULT_EMBEDDING_MODEL"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_PRECISION = re.compile(r"(?<![a-z0-9])(int4|int8|uint8|fp16|fp32|bf16|q4|q8|quantized)(?![a-z0-9])")
_PRECISION_ALIASES = {"q4": "int4", "q8": "int8", "uint8": "int8", "quantized": "int8"}


def is_store_name(ref: str) -> bool:
    """A plain name (no separators, no ``..``): never usable to escape the store."""
    return bool(_NAME.match(ref)) and ".." not in ref


# --- resolving ---------------------------------------------------------------------------


def resolve(ref: str | Path) -> Path:
    """A model folder from a path or a store name; ModelNotFound otherwise."""
    text = str(ref)
    if is_store_name(text):
        candidate = home.models_dir() / text
        if candidate.is_dir():
            _require_complete(candidate)
            return candidate
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelNotFound(f"{text} is a file, not a model folder", hint="pass the folder that holds the model")
    if is_store_name(text) and _is_recipe(text):
        raise ModelNotFound(
            f"recipe {text!r} is not converted yet",
            hint=f"convert it with `onnxg convert {text}` (the CLI does this on first use)",
        )
    if re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?(@[\w./-]+)?", text):
        raise ModelNotFound(
            f"no model {text!r} in the store and no such folder",
            hint=f"a hub repo? download a ready ONNX model with `onnxg pull {text}`, "
                 f"or convert one with `onnxg convert {text}`",
        )
    raise ModelNotFound(
        f"no model named {text!r} in the store and no such folder",
        hint="run `onnxg models` to list the store, `onnxg convert --list` for recipes, or pass a model folder",
    )


def _is_recipe(name: str) -> bool:
    """Whether a recipe file of that name ships with onnxg (data only: no parsing here)."""
    from importlib import resources

    return resources.files("onnxg.recipes").joinpath(f"{name}.toml").is_file()


def _require_complete(folder: Path) -> None:
    if (folder / PULL_STATE).is_dir():
        data = read_manifest(folder / PULL_STATE, name="state.json")
        again = data.get("ref") or folder.name
        raise ModelNotFound(
            f"the download of {folder.name!r} did not finish",
            hint=f"run `onnxg pull {again}` to resume it, or `onnxg models rm {folder.name}`",
        )


def is_complete(folder: Path) -> bool:
    """A finished model folder: its ``onnxg.json`` is written and no pull is still filling it."""
    return folder.is_dir() and (folder / MANIFEST).is_file() and not (folder / PULL_STATE).exists()


def model_id(path: Path) -> str:
    """The id a model is served under: its store name, or its folder's name."""
    return path.name


def default_name(kind: str) -> str:
    if kind not in DEFAULT_NAMES:
        raise InvalidRequest(f"unknown model kind {kind!r}", hint="use 'chat' or 'embedding'")
    return DEFAULT_NAMES[kind]


# --- onnxg.json ------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a model folder as a dict; ``{}`` when absent, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_manifest(folder: Path, *, name: str = MANIFEST) -> dict[str, Any]:
    """The folder's ``onnxg.json`` as a dict; ``{}`` when absent or unreadable."""
    return read_json(folder / name)


def write_manifest(folder: Path, data: dict[str, Any], *, name: str = MANIFEST) -> Path:
    """Write atomically (a temporary file renamed over the old one)."""
    target = folder / name
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def manifest_files(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``files`` of a manifest as ``{relative path: {"size", "sha256"}}`` (dict or list form)."""
    files = data.get("files")
    if isinstance(files, dict):
        return {str(k): v for k, v in files.items() if isinstance(v, dict)}
    if isinstance(files, list):
        return {str(f.get("path") or f.get("name")): f for f in files if isinstance(f, dict)}
    return {}


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_files(folder: Path) -> Iterator[Path]:
    """The model's own files: everything but ``onnxg.json`` and hidden entries."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or (name == MANIFEST and Path(root) == folder):
                continue
            yield Path(root) / name


def file_entries(folder: Path, *, known: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` for every model file.

    A file whose size matches an entry of ``known`` that already has a sha256 keeps it
    (hashing gigabytes again after every pull would be wasted time).
    """
    known = known or {}
    entries: dict[str, dict[str, Any]] = {}
    for path in model_files(folder):
        rel = path.relative_to(folder).as_posix()
        size = path.stat().st_size
        prior = known.get(rel) or {}
        sha = prior.get("sha256") if prior.get("size") == size else None
        entries[rel] = {"size": size, "sha256": sha or sha256_file(path)}
    return entries


def fingerprint(folder: Path) -> str:
    """Cheap identity of the folder's files (names, sizes, mtimes): a cached check is valid
    while it is unchanged."""
    digest = hashlib.sha1()
    for path in model_files(folder):
        st = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def record_check(folder: Path, report: Any) -> dict[str, Any]:
    """Cache a ``onnxg.convert.check.Report`` in ``onnxg.json`` (``onnxg models`` shows it)."""
    items = getattr(report, "items", []) or []
    entry = {
        "ok": bool(report.ok),
        "kind": getattr(report, "kind", None),
        "failed": [i.name for i in items if not getattr(i, "ok", True)],
        "fingerprint": fingerprint(folder),
        "checked": now_iso(),
    }
    data = read_manifest(folder)
    data["check"] = entry
    write_manifest(folder, data)
    return entry


def cached_check(folder: Path, data: dict[str, Any] | None = None) -> bool | None:
    """The cached check result, or None when there is none or the files changed since."""
    data = read_manifest(folder) if data is None else data
    entry = data.get("check")
    if not isinstance(entry, dict) or "ok" not in entry:
        return None
    stamp = entry.get("fingerprint")
    if stamp is not None and stamp != fingerprint(folder):
        return None
    return bool(entry["ok"])


# --- what a folder holds (its kind: ``layout.inspect``) -------------------------------------


def precision_of(folder: Path, data: dict[str, Any]) -> str | None:
    if data.get("precision"):
        return str(data["precision"])
    text = " ".join([folder.name, source_of(data) or "", *(p.name for p in folder.glob("*.onnx"))]).lower()
    match = _PRECISION.search(text.replace("_", "-"))
    if match:
        return _PRECISION_ALIASES.get(match.group(1), match.group(1))
    return None


def ep_of(folder: Path, data: dict[str, Any]) -> str:
    if data.get("ep"):
        return str(data["ep"])
    try:
        genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        options = genai["model"]["decoder"]["session_options"].get("provider_options") or []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "cpu"
    for option in options:
        if isinstance(option, dict) and option:
            return str(next(iter(option)))
    return "cpu"


def disk_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


@dataclass
class ModelEntry:
    """One model of the store, as ``onnxg models`` shows it."""

    name: str
    path: Path
    kind: str  # layout's kind; "?" while a pull is unfinished or when the folder holds no model
    precision: str | None
    ep: str
    size: int
    source: str | None
    check: bool | None  # cached `onnxg check` result; None: not checked (or files changed)
    complete: bool  # False while a pull has not finished
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "kind": self.kind,
            "precision": self.precision,
            "ep": self.ep,
            "size": self.size,
            "source": self.source,
            "revision": revision_of(self.manifest),
            "check": self.check,
            "complete": self.complete,
        }


def source_of(data: dict[str, Any]) -> str | None:
    """Where a model came from, in one short string: ``org/repo[/subfolder]``, a recipe,
    or a local path (``source`` is a dict in the converter's onnxg.json, a string in old ones)."""
    src = data.get("source")
    if isinstance(src, str):
        return f"{src}/{data['subfolder']}" if data.get("subfolder") else src
    if not isinstance(src, dict):
        return None
    if src.get("repo"):
        return f"{src['repo']}/{src['subfolder']}" if src.get("subfolder") else str(src["repo"])
    if src.get("recipe"):
        return f"recipe {src['recipe']}"
    return str(src.get("path") or src.get("ref") or "") or None


def revision_of(data: dict[str, Any]) -> str | None:
    src = data.get("source")
    rev = data.get("revision") or (src.get("revision") if isinstance(src, dict) else None)
    return str(rev) if rev else None


def describe(folder: Path) -> ModelEntry:
    data = read_manifest(folder)
    complete = not (folder / PULL_STATE).exists()
    source = source_of(data)
    if not complete and not source:
        state = read_manifest(folder / PULL_STATE, name="state.json")
        source = state.get("ref")
    return ModelEntry(
        name=folder.name,
        path=folder,
        kind=(layout.inspect(folder).kind or "?") if complete else "?",
        precision=precision_of(folder, data),
        ep=ep_of(folder, data),
        size=disk_size(folder),
        source=source,
        check=cached_check(folder, data) if complete else None,
        complete=complete,
        manifest=data,
    )


def list_models() -> list[ModelEntry]:
    """Every model folder of the store, by name (hidden and temporary folders skipped)."""
    root = home.models_dir()
    if not root.is_dir():
        return []
    return [describe(p) for p in sorted(root.iterdir(), key=lambda p: p.name.lower())
            if p.is_dir() and not p.name.startswith(".")]


def remove(name: str) -> Path:
    """Delete a model from the store; only ever a direct child of the models folder."""
    if not is_store_name(name):
        raise InvalidRequest(f"{name!r} is not a store name", hint="run `onnxg models` to list the store")
    root = home.models_dir()
    target = root / name
    if target.is_symlink():
        target.unlink()  # the link only, never what it points to
        return target
    if not target.is_dir() or target.resolve().parent != root.resolve():
        raise ModelNotFound(f"no model named {name!r} in the store", hint="run `onnxg models` to list the store")
    shutil.rmtree(target)
    return target
