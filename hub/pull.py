"""``onnxg pull``: download a ready ONNX model from the Hugging Face hub into the store.

``pull("microsoft/Phi-3.5-mini-instruct-onnx/cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4")``
lists the repo's files (one ``/api/models/{repo}/revision/{rev}`` call), keeps the model
files of the subfolder (ONNX graphs, their external data, configs, tokenizer, chat
template), and downloads each one with huggingface_hub's ``http_get`` (redirects, retries,
``Range`` resumption) into ``ONNXG_HOME/models/<name>/``:

* a file already there with the right size is skipped (its sha256 is still verified
  against the hub's when the hub gives one);
* a download in progress lives in ``<name>/.pull/<content hash>.incomplete``; a pull that
  was killed resumes from there with a ``Range`` request;
* every finished file is checked (sha256 for LFS files, git blob sha1 for the others)
  before it is renamed into place; ``onnxg.json`` records source, revision, files with size
  and sha256, and the cached result of ``onnxg check``.

Progress is reported to a ``PullProgress`` listener (the CLI draws it with rich; host
programs get events). Offline (``HF_HUB_OFFLINE=1``, or the hub unreachable) a model
already in the store is used, and the result says so.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from onnxg.hub import download as hub
from onnxg.hub.download import (
    DiskFull,
    HubUnreachable,
    IntegrityError,
    NoOnnxFiles,
    PullRef,
    RemoteFile,
    default_name,
    parse_ref,
    select_files,
)
from onnxg.runtime import home, layout, store
from onnxg.runtime.errors import InvalidRequest, ModelNotFound, OnnxgError

_CHUNK = 1 << 20


class Checker(Protocol):
    """What ``pull(check=...)`` runs on the finished folder: ``onnxg.convert.check.check``."""

    def __call__(self, folder: Path) -> Any: ...


# --- progress -------------------------------------------------------------------------------


class PullProgress:
    """Receives a pull's events; every method is a no-op here (subclass what you need).

    Order: ``resolved`` once, ``plan`` once, then for each file to download ``start``,
    ``advance`` (bytes as they arrive; negative when the server ignored a resume), ``finish``;
    ``step`` for the phases after that ("verify", "check").
    """

    def resolved(self, repo: str, revision: str, name: str) -> None: ...

    def plan(self, files: list[RemoteFile], present: dict[str, int]) -> None:
        """``present``: bytes already on disk per file name (whole files are skipped)."""

    def start(self, file: RemoteFile, offset: int) -> None: ...

    def advance(self, file: RemoteFile, nbytes: int) -> None: ...

    def finish(self, file: RemoteFile) -> None: ...

    def step(self, text: str) -> None: ...


class _Relay:
    """What huggingface_hub's ``http_get`` takes as ``tqdm_class``: forwards byte counts."""

    listener: PullProgress
    file: RemoteFile

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = kwargs.get("initial") or 0
        self.total = kwargs.get("total")

    def update(self, n: float | None = 1) -> None:
        if n:
            self.n += int(n)
            self.listener.advance(self.file, int(n))

    def close(self) -> None: ...

    def refresh(self, *args: Any, **kwargs: Any) -> None: ...

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None: ...

    def __enter__(self) -> _Relay:
        return self

    def __exit__(self, *exc: object) -> None: ...


def _relay(listener: PullProgress, file: RemoteFile) -> type[_Relay]:
    return type("_FileRelay", (_Relay,), {"listener": listener, "file": file})


# --- the pull ---------------------------------------------------------------------------------


@dataclass
class PullResult:
    name: str
    path: Path
    repo: str
    subfolder: str
    revision: str | None  # the commit pulled (None when offline and unknown)
    downloaded: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    offline: bool = False  # the hub was not contacted / not reachable: the local copy is used
    note: str | None = None
    check_ok: bool | None = None  # None: the checker is not available
    check_failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "repo": self.repo, "subfolder": self.subfolder,
            "revision": self.revision, "downloaded": self.downloaded, "resumed": self.resumed,
            "skipped": self.skipped, "offline": self.offline, "note": self.note,
            "check": self.check_ok, "check_failures": self.check_failures,
        }


def _pulled_from(folder: Path) -> tuple[str, str] | None:
    """(repo, subfolder) a store folder was pulled from (or is being pulled from)."""
    state = store.read_manifest(folder / store.PULL_STATE, name="state.json")
    if state.get("repo"):
        return str(state["repo"]), str(state.get("subfolder") or "")
    src = store.read_manifest(folder).get("source")
    if isinstance(src, dict) and src.get("kind") == "hub" and src.get("repo"):
        return str(src["repo"]), str(src.get("subfolder") or "")
    return None


def _find_existing(ref: PullRef) -> Path | None:
    root = home.models_dir()
    if not root.is_dir():
        return None
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and _pulled_from(folder) == (ref.repo, ref.subfolder):
            return folder
    return None


def _check_target(folder: Path, ref: PullRef) -> None:
    """Never mix a pull into a folder that holds another model."""
    if not folder.exists() or _pulled_from(folder) == (ref.repo, ref.subfolder):
        return
    if folder.is_dir() and not any(folder.iterdir()):
        return
    raise InvalidRequest(
        f"the store already has a different model named {folder.name!r}",
        hint=f"choose another name with --name, or delete it first: `onnxg models rm {folder.name}`",
    )


def _git_sha1(path: Path, size: int) -> str:
    digest = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _verify(file: RemoteFile, path: Path) -> str:
    """The file's sha256; IntegrityError when it differs from what the hub says."""
    sha = store.sha256_file(path)
    size = path.stat().st_size
    bad = size != file.size or (file.sha256 is not None and sha != file.sha256)
    if not bad and file.sha256 is None and file.blob_id and len(file.blob_id) == 40:
        bad = _git_sha1(path, size) != file.blob_id
    if bad:
        path.unlink(missing_ok=True)
        raise IntegrityError(f"{file.name} arrived corrupted (size or checksum differ from the hub's)",
                             hint="rerun the pull")
    return sha


def _same_content(file: RemoteFile, path: Path, recorded_sha256: str | None) -> str | None:
    """The sha256 of a present file of the right size when its content is the hub's, else
    None. LFS files are hashed only when onnxg.json does not already record the hub's
    sha256 for them; small files are compared by their git blob sha1."""
    if file.sha256:
        if recorded_sha256 == file.sha256:
            return recorded_sha256
        sha = store.sha256_file(path)
        return sha if sha == file.sha256 else None
    if file.blob_id and len(file.blob_id) == 40 and _git_sha1(path, file.size) != file.blob_id:
        return None
    return recorded_sha256 or store.sha256_file(path)


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _download(file: RemoteFile, ref: PullRef, revision: str, part: Path, listener: PullProgress) -> None:
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(ref.repo, file.path, revision=revision, endpoint=hub.endpoint())
    offset = part.stat().st_size if part.exists() else 0
    if offset > file.size:
        part.unlink()
        offset = 0
    listener.start(file, offset)
    # http_get writes (and reports progress) once per chunk; its 10 MB default makes the
    # bars jump on slow links and loses up to 10 MB when a pull is killed. The constant is
    # huggingface_hub's global: set for this download only, then put back.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    constants.DOWNLOAD_CHUNK_SIZE = min(chunk, _CHUNK)
    try:
        with open(part, "ab") as handle:
            http_get(url, handle, resume_size=offset, headers=build_hf_headers(), expected_size=file.size,
                     displayed_filename=file.name, tqdm_class=_relay(listener, file))  # type: ignore[arg-type]
    finally:
        constants.DOWNLOAD_CHUNK_SIZE = chunk
    listener.finish(file)


def pull(
    ref: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    include: list[str] | None = None,
    check: Checker | None = None,
    progress: PullProgress | None = None,
) -> PullResult:
    """Download ``ref`` (``REPO[/SUBFOLDER][@REVISION]``) into the store; see the module doc.

    ``check`` (e.g. ``onnxg.convert.check.check``) runs on the finished folder; its verdict is
    cached in ``onnxg.json``. A recipe name is the caller's to map to its ``prebuilt`` repo
    (``onnxg.convert.recipes.prebuilt``): the hub knows nothing of recipes.
    """
    listener = progress or PullProgress()
    pref = parse_ref(ref)
    if revision:
        pref = PullRef(pref.repo, pref.subfolder, revision)
    if name is not None and not store.is_store_name(name):
        raise ModelNotFound(f"{name!r} is not a valid store name", hint="use letters, digits, '.', '_' and '-'")
    folder = home.models_dir() / name if name else (_find_existing(pref) or home.models_dir() / default_name(pref))
    _check_target(folder, pref)
    result = PullResult(name=folder.name, path=folder, repo=pref.repo, subfolder=pref.subfolder, revision=None)

    def local_copy(note: str) -> PullResult:
        result.offline, result.note = True, note
        result.revision = store.revision_of(store.read_manifest(folder))
        result.check_ok = store.cached_check(folder)
        return result

    if hub.offline():
        if store.is_complete(folder):
            return local_copy("offline mode (HF_HUB_OFFLINE): using the copy already in the store")
        raise HubUnreachable(
            f"offline mode is on and {pref} is not in the store",
            hint="unset HF_HUB_OFFLINE (and ONNXG_OFFLINE) to download it",
        )
    try:
        commit, siblings = hub.remote_files(pref)
    except OnnxgError:
        raise
    except Exception as exc:
        error = hub.hub_error(exc, pref)
        if isinstance(error, HubUnreachable) and store.is_complete(folder):
            return local_copy(f"cannot reach the hub at {hub.endpoint()}: using the copy already in the store")
        raise error from exc
    result.revision = commit
    listener.resolved(pref.repo, commit, folder.name)

    files = select_files(siblings, pref, include)
    if not files:
        where = f"{pref.repo}/{pref.subfolder}" if pref.subfolder else pref.repo
        options = [f"{pref.repo}/{d}" for d in hub.onnx_folders(siblings)]
        hint = ("pick a subfolder: " + ", ".join(options[:6])) if options \
            else f"convert it instead: `onnxg convert {pref.repo}`"
        if include:
            hint = "no ONNX file matches --include; " + hint
        raise NoOnnxFiles(f"no ONNX model files in {where}", hint=hint)

    old = store.manifest_files(store.read_manifest(folder))
    todo, present, hashes = _plan(folder, files, old, result)
    needed = sum(f.size - present.get(f.name, 0) for f in todo)
    free = _free_bytes(folder)
    if needed > free:
        raise DiskFull(
            f"{pref} needs {needed / 1e9:.2f} GB more but only {free / 1e9:.2f} GB are free",
            hint=f"free some space, or move the store with ONNXG_HOME (now {home.home()})",
        )
    listener.plan(files, present)
    try:
        _fetch(folder, pref, commit, todo, hashes, result, listener)
    except OnnxgError as exc:
        if exc.hint is None or "resume" not in exc.hint:
            exc.hint = (exc.hint + "; " if exc.hint else "") + f"rerun `onnxg pull {pref}` to resume"
        raise
    listener.step("verifying and recording the files")
    _record(folder, pref, commit, {**old, **hashes})
    if check is not None:
        _check(check, folder, result, listener)
    return result


def _plan(folder: Path, files: list[RemoteFile], old: dict[str, dict[str, Any]], result: PullResult
          ) -> tuple[list[RemoteFile], dict[str, int], dict[str, dict[str, Any]]]:
    """What to download, the bytes already on disk per file, and the hashes already known."""
    manifest = folder / store.MANIFEST
    recorded_at = manifest.stat().st_mtime_ns if manifest.is_file() else 0
    present: dict[str, int] = {}
    todo: list[RemoteFile] = []
    hashes: dict[str, dict[str, Any]] = {}
    for f in files:
        dest = folder / f.name
        if dest.is_file() and dest.stat().st_size == f.size:
            # A recorded sha256 is trusted only for files not modified since it was recorded.
            recorded = old.get(f.name, {}).get("sha256") if dest.stat().st_mtime_ns <= recorded_at else None
            same = _same_content(f, dest, recorded)
            if same is not None:
                hashes[f.name] = {"size": f.size, "sha256": same}
                present[f.name] = f.size
                result.skipped.append(f.name)
                continue
        part = folder / store.PULL_STATE / f"{f.key}.incomplete"
        if part.is_file() and 0 < part.stat().st_size <= f.size:
            present[f.name] = part.stat().st_size
            result.resumed.append(f.name)
        todo.append(f)
    return todo, present, hashes


def _fetch(folder: Path, pref: PullRef, commit: str, todo: list[RemoteFile], hashes: dict[str, dict[str, Any]],
           result: PullResult, listener: PullProgress) -> None:
    """Download, verify and move into place each file of ``todo``."""
    parts_dir = folder / store.PULL_STATE
    parts_dir.mkdir(parents=True, exist_ok=True)
    store.write_manifest(parts_dir, {"ref": str(pref), "repo": pref.repo, "subfolder": pref.subfolder,
                                     "revision": commit}, name="state.json")
    for f in todo:
        part = parts_dir / f"{f.key}.incomplete"
        try:
            _download(f, pref, commit, part, listener)
        except OnnxgError:
            raise
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull(f"the disk filled up while downloading {f.name}",
                               hint="free some space and rerun: the download resumes") from exc
            raise hub.hub_error(exc, pref) from exc
        except Exception as exc:
            raise hub.hub_error(exc, pref) from exc
        hashes[f.name] = {"size": f.size, "sha256": _verify(f, part)}
        dest = folder / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
        result.downloaded.append(f.name)


def _record(folder: Path, pref: PullRef, commit: str, known: dict[str, dict[str, Any]]) -> None:
    """onnxg.json in the converter's provenance format (convert/pipeline.py), with the
    hub's coordinates; then the pull is marked finished."""
    from onnxg import __version__

    entries = store.file_entries(folder, known=known)
    manifest: dict[str, Any] = {
        "onnxg": __version__,
        "created": store.now_iso(),
        "source": {
            "ref": str(pref), "kind": "hub", "repo": pref.repo, "subfolder": pref.subfolder or None,
            "revision": commit, "requested_revision": pref.revision, "endpoint": hub.endpoint(),
            "path": None, "recipe": None,
        },
        "method": "pull",
        "files": [{"path": rel, **entry} for rel, entry in entries.items()],
    }
    manifest["kind"] = layout.inspect(folder).kind
    manifest["precision"] = store.precision_of(folder, manifest)
    manifest["ep"] = store.ep_of(folder, manifest)
    store.write_manifest(folder, manifest)
    shutil.rmtree(folder / store.PULL_STATE, ignore_errors=True)  # last: until here the pull is unfinished


def _check(check: Checker, folder: Path, result: PullResult, listener: PullProgress) -> None:
    listener.step("checking the model (onnxg check)")
    report = check(folder)
    store.record_check(folder, report)
    result.check_ok = bool(report.ok)
    result.check_failures = [
        f"{item.name}: {item.detail}" for item in getattr(report, "items", []) if not getattr(item, "ok", True)
    ]
