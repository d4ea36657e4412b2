"""``onnxg convert``: from a source (repo id, folder, GGUF, SavedModel, recipe) to a model folder.

The pipeline resolves the source and detects the task (``sources.py``), runs the backend (genai builder, optimum, tf2onnx) into a temporary folder next to
the output, writes ``onnxg.json`` (provenance), runs the checker and only then renames the
folder into place. A conversion killed halfway leaves only a hidden ``.<name>.onnxg-partial-*``
folder, which the next conversion to the same output removes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from onnxg.convert.sources import Source, detect_task, resolve_source, safe_name
from onnxg.runtime import home, layout, store
from onnxg.runtime.errors import ConversionError, InvalidRequest, OnnxgError

PRECISIONS = ("int4", "int8", "fp16", "fp32")
EPS = ("cpu", "cuda", "dml", "webgpu")
PARTIAL = ".onnxg-partial-"


def convert(
    source: str,
    *,
    output: Path | None = None,
    task: str = "auto",
    precision: str | None = None,
    ep: str = "cpu",
    extra: dict[str, str] | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
    log: Path | None = None,
    max_memory: int | None = None,
) -> Path:
    """Convert ``source`` and return the finished model folder (see the module docstring)."""
    step = progress or (lambda text: None)
    wanted: layout.Kind | None = None if task == "auto" else layout.kind_named(task)
    if precision is not None and precision not in PRECISIONS:
        raise InvalidRequest(f"unknown precision {precision!r}", f"use one of: {', '.join(PRECISIONS)}",
                             param="precision")
    if ep not in EPS:
        raise InvalidRequest(f"unknown execution provider {ep!r}", f"use one of: {', '.join(EPS)}", param="ep")

    step("resolve source")
    src = resolve_source(source, revision=revision, progress=step)
    recipe = src.recipe
    if recipe is not None:
        wanted, precision, ep, extra, trust_remote_code = recipe_options(
            recipe, wanted, precision, ep, extra, trust_remote_code)
    kind = detect_task(src) if wanted is None else wanted
    if src.kind == "tf":
        kind = "e2e"  # a SavedModel goes through tf2onnx whatever was asked
    precision = precision or default_precision(kind)
    output = Path(output).expanduser().resolve() if output else home.models_dir() / f"{src.name}-{precision}-{ep}"
    log = log or default_log(output.name)
    home.ensure(log.parent)
    _log(log, f"onnxg convert {source}: task={kind} precision={precision} ep={ep} extra={extra or {}}")

    home.ensure(output.parent)
    with _output_lock(output):
        if output.exists() and not force:
            raise ConversionError(f"{output} already exists",
                                  "pass --force to replace it, or -o to write somewhere else")
        _remove_partials(output)
        root = output.parent / f".{output.name}{PARTIAL}{os.getpid()}"
        root.mkdir()
        try:
            work = root / "model"
            work.mkdir()
            budget = {"max_memory": max_memory} if kind == "chat" else {}  # the genai builder's bound
            provenance = backend(kind).convert(
                src.path, work, precision=precision, ep=ep, extra=dict(extra or {}),
                trust_remote_code=trust_remote_code, log=log, progress=step, **budget,
            )
            if recipe is not None and recipe.chat_template and kind == "chat":
                install_chat_template(work, recipe.chat_template)
            step("write onnxg.json")
            write_provenance(work, src, kind, precision, ep, extra or {}, trust_remote_code, provenance)
            run_check(work, log, step, smoke=ep == "cpu")
            step("move into place")
            if output.exists():
                output.rename(root / "replaced")
            work.rename(output)
        except OnnxgError as exc:
            exc.hint = exc.hint or f"the converter's log: {log}"
            raise
        finally:
            shutil.rmtree(root, ignore_errors=True)
    _log(log, f"done: {output}")
    return output


# Reserved --extra key: attributes set on the HF config before the genai builder runs.
CONFIG_OVERRIDES = "_config_overrides"


def recipe_options(recipe: Any, kind: layout.Kind | None, precision: str | None, ep: str,
                   extra: dict[str, str] | None, trust_remote_code: bool
                   ) -> tuple[layout.Kind, str | None, str, dict[str, str], bool]:
    """A recipe's defaults under what the user asked for (the user's options win)."""
    return (
        kind or recipe.task,
        precision or recipe.precision,
        ep if ep != "cpu" else recipe.ep,
        {**recipe.builder_options, **_overrides(recipe), **(extra or {})},
        trust_remote_code or bool(getattr(recipe, "trust_remote_code", False)),
    )


def _overrides(recipe: Any) -> dict[str, str]:
    """A recipe's ``config_overrides`` travel to the genai backend as one reserved extra, its
    pooling to the embedding backend as ``pooling`` (which writes the matching metadata)."""
    overrides = getattr(recipe, "config_overrides", None)
    found = {CONFIG_OVERRIDES: json.dumps(overrides)} if overrides else {}
    if getattr(recipe, "pooling", None) and recipe.task == "embedding":
        found["pooling"] = recipe.pooling
    return found


# -- task and backend ------------------------------------------------------------------
def default_precision(kind: str) -> str:
    return "int4" if kind == "chat" else "fp32"


def backend(kind: layout.Kind) -> Any:
    """The backend module for a kind: genai (chat), optimum (embedding), tf (e2e, from a SavedModel)."""
    module = {"chat": "genai", "embedding": "optimum", "e2e": "tf"}[kind]
    return importlib.import_module(f"onnxg.convert.{module}")


# -- the output ------------------------------------------------------------------------

def default_log(name: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return home.logs_dir() / f"convert-{name}-{stamp}-{os.getpid()}.log"


def _log(log: Path, line: str) -> None:
    home.ensure(log.parent)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"[onnxg {dt.datetime.now().isoformat(timespec='seconds')}] {line}\n")


@contextlib.contextmanager
def _output_lock(output: Path) -> Iterator[None]:
    """One conversion per output at a time; the lock dies with its process (even SIGKILL).

    The lock file stays (deleting it would let a process on the old inode and a newcomer on a
    new file both hold the lock), in ONNXG_HOME/locks rather than next to the output.
    """
    key = hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:24]
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        yield
        return
    lock_path = home.ensure(home.home() / "locks") / f"convert-{safe_name(output.name)}-{key}.lock"
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConversionError(f"another conversion is writing {output}",
                                  "wait for it to finish, or pass -o to write somewhere else") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_partials(output: Path) -> None:
    """Leftovers of killed conversions to ``output`` (we hold its lock, so none is running)."""
    for stale in output.parent.glob(f".{output.name}{PARTIAL}*"):
        shutil.rmtree(stale, ignore_errors=True)


def install_chat_template(folder: Path, template: str) -> None:
    """Put a (recipe's fixed) chat template where every reader looks."""
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config["chat_template"] = template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def write_provenance(folder: Path, src: Source, kind: str, precision: str, ep: str, extra: dict[str, str],
                     trust_remote_code: bool, fields: dict[str, Any]) -> dict[str, Any]:
    """``onnxg.json``: where the model came from, how it was made, and every file's sha256.

    ``kind`` is what the finished folder holds (``layout.inspect``), as for a pulled model;
    the kind converted for is the fallback when the folder holds no recognisable model."""
    from onnxg import __version__

    files = [{"path": rel, **entry} for rel, entry in store.file_entries(folder).items()]
    data = {
        "onnxg": __version__,
        "created": store.now_iso(),
        "source": {
            "ref": src.ref, "kind": src.kind, "repo": src.repo, "subfolder": src.subfolder, "revision": src.revision,
            "path": None if src.repo else str(src.path),
            "recipe": src.recipe.name if src.recipe is not None else None,
        },
        "kind": layout.inspect(folder).kind or kind,
        "precision": precision,
        "ep": ep,
        "extra": dict(extra),
        "trust_remote_code": trust_remote_code,
        **fields,
        "files": files,
    }
    data = json.loads(json.dumps(data, default=str))  # paths and the like as strings
    store.write_manifest(folder, data)
    return data


def run_check(folder: Path, log: Path, progress: Callable[[str], None], *, smoke: bool = True) -> None:
    """The checker on the finished folder; a passing report is cached in onnxg.json.

    ``smoke`` adds its one-token / one-vector run; a model made for another EP (cuda, dml,
    webgpu) is not run here, since this machine's runtime may not have that provider.
    """
    from onnxg.convert import check

    progress("check" if smoke else "check (no smoke run: the model targets another EP)")
    try:
        report = check.check(folder, run=smoke)
    except OnnxgError as exc:
        raise ConversionError(f"the converted model failed its check: {exc.message}", exc.hint) from None
    failed = [item for item in report.items if not item.ok]
    for item in report.items:
        _log(log, f"check {'ok  ' if item.ok else 'FAIL'} {item.name}: {item.detail}")
    if not failed:
        store.record_check(folder, report)  # `onnxg models` shows the cached result
    if failed:
        first = failed[0]
        raise ConversionError(
            f"the converted model failed its check: {first.name}: {first.detail}",
            first.hint or f"the converter's log: {log}",
        )
