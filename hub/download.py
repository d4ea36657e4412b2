"""The Hugging Face hub as ``onnxg pull`` sees it: references, file listings, errors.

``REPO[/SUBFOLDER][@REVISION]`` (or a hub URL)
becomes a ``PullRef``; ``remote_files`` lists the repo at one commit (one
``/api/models/{repo}/revision/{rev}?blobs=true`` call: sizes, LFS sha256s, git blob ids);
``select_files`` keeps what a model folder needs; ``hub_error`` turns what huggingface_hub
raises into one-line ``OnnxgError``s with a hint. huggingface_hub is imported lazily.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import PurePosixPath

from onnxg.runtime import store
from onnxg.runtime.errors import ModelNotFound, OnnxgError

_SUPPORT_NAMES = {"vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model"}
_SUPPORT_SUFFIXES = (".json", ".jinja", ".model", ".tiktoken")
_MODEL_SUFFIXES = (".onnx", ".ort")
_DATA_SUFFIXES = (".onnx.data", ".onnx_data", ".data")
_ST_MODULE = re.compile(r"^\d+_[A-Za-z]+$")  # sentence-transformers module folders (1_Pooling, ...)
_URL = re.compile(r"^https?://[^/]+/(?:models/)?")


# --- errors -------------------------------------------------------------------------------


class HubError(OnnxgError):
    """The hub said no, or could not be reached."""

    code = "hub_error"


class RepoNotFound(ModelNotFound):
    code = "repo_not_found"


class AuthRequired(HubError):
    code = "hub_auth_required"


class HubUnreachable(HubError):
    code = "hub_unreachable"


class NoOnnxFiles(ModelNotFound):
    code = "no_onnx_files"


class DiskFull(OnnxgError):
    code = "disk_full"


class IntegrityError(HubError):
    code = "download_corrupt"


# --- what to pull ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PullRef:
    repo: str
    subfolder: str = ""
    revision: str | None = None

    def __str__(self) -> str:
        text = f"{self.repo}/{self.subfolder}" if self.subfolder else self.repo
        return f"{text}@{self.revision}" if self.revision else text


def parse_ref(text: str) -> PullRef:
    """``REPO[/SUBFOLDER][@REVISION]``; a hub URL (``.../tree/REV/SUBFOLDER``) works too."""
    raw = text.strip()
    revision: str | None = None
    url = _URL.match(raw)
    if url:
        raw = raw[url.end():].split("?", 1)[0].strip("/")
        parts = raw.split("/")
        if len(parts) > 3 and parts[2] in ("tree", "blob", "resolve"):
            revision = parts[3]
            raw = "/".join(parts[:2] + parts[4:])
    if "@" in raw:
        raw, revision = raw.rsplit("@", 1)
        if not revision:
            raise ModelNotFound(f"empty revision in {text!r}", hint="write REPO@REVISION, e.g. org/model@main")
    parts = [p for p in raw.strip("/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or not re.fullmatch(r"[\w.-]+", parts[0]):
        raise RepoNotFound(
            f"{text!r} is not a hub repo", hint="write REPO[/SUBFOLDER][@REVISION], e.g. org/model-onnx/cpu-int4"
        )
    repo = "/".join(parts[:2])
    return PullRef(repo=repo, subfolder="/".join(parts[2:]), revision=revision)


def default_name(ref: PullRef) -> str:
    """Store name of a pulled model: the repo's name, plus the subfolder's last part."""
    base = ref.repo.split("/")[-1]
    if ref.subfolder:
        base = f"{base}-{ref.subfolder.split('/')[-1]}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._").lower()
    return name[:200] or "model"


@dataclass(frozen=True)
class RemoteFile:
    path: str  # path in the repo
    name: str  # path inside the model folder
    size: int
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git blob sha1 (non-LFS files)

    @property
    def key(self) -> str:
        """Names the partial download after the content, so a new revision never resumes
        from an old file's bytes."""
        return (self.sha256 or self.blob_id or hashlib.sha1(f"{self.path}:{self.size}".encode()).hexdigest())[:64]


def _is_model(name: str) -> bool:
    return name.lower().endswith(_MODEL_SUFFIXES)


def _is_data(name: str) -> bool:
    return name.lower().endswith(_DATA_SUFFIXES)


def _is_support(name: str) -> bool:
    lower = name.lower()
    if lower == store.MANIFEST:  # onnxg writes its own; an uploader's would be overwritten
        return False
    return lower in _SUPPORT_NAMES or lower.endswith(_SUPPORT_SUFFIXES)


def select_files(siblings: list[RemoteFile], ref: PullRef, include: list[str] | None = None) -> list[RemoteFile]:
    """The files a model folder needs, named relative to the subfolder.

    From the subfolder: ONNX graphs (restricted to ``include`` globs when given), their
    external data, and config/tokenizer/template files, sentence-transformers module
    folders included. From its parent folders up to the repo root: config and tokenizer
    files the subfolder lacks (repos that keep ``onnx/model.onnx`` next to a root tokenizer).
    """
    prefix = f"{ref.subfolder}/" if ref.subfolder else ""
    chosen: dict[str, RemoteFile] = {}
    inside = [f for f in siblings if f.path.startswith(prefix)]
    graphs: list[str] = []
    for f in inside:
        rel = f.path[len(prefix):]
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts):
            continue
        top = len(parts) == 1
        if _is_model(rel) and top:
            if include and not any(fnmatch(rel, pat) for pat in include):
                continue
            graphs.append(rel)
            chosen[rel] = RemoteFile(f.path, rel, f.size, f.sha256, f.blob_id)
    for f in inside:
        rel = f.path[len(prefix):]
        parts = rel.split("/")
        if rel in chosen or any(p.startswith(".") for p in parts):
            continue
        top = len(parts) == 1
        nested_ok = len(parts) == 2 and _ST_MODULE.match(parts[0])
        if top and _is_data(rel) and not _is_model(rel):
            # External data can have any name; with --include only that of the chosen graphs.
            stem = re.sub(r"(\.onnx)?[._]data$", "", rel, flags=re.I)
            if not include or any(g.rsplit(".", 1)[0] == stem or rel.startswith(g) for g in graphs):
                chosen[rel] = RemoteFile(f.path, rel, f.size, f.sha256, f.blob_id)
        elif (top or nested_ok) and _is_support(parts[-1]):
            chosen[rel] = RemoteFile(f.path, rel, f.size, f.sha256, f.blob_id)
    if not graphs:
        return []
    # Config and tokenizer files of the parent folders, when the subfolder lacks them.
    parts = ref.subfolder.split("/") if ref.subfolder else []
    for depth in range(len(parts) - 1, -1, -1):
        parent = "/".join(parts[:depth])
        pre = f"{parent}/" if parent else ""
        for f in siblings:
            if not f.path.startswith(pre):
                continue
            rel = f.path[len(pre):]
            bits = rel.split("/")
            ok = (len(bits) == 1 or (len(bits) == 2 and _ST_MODULE.match(bits[0]))) and _is_support(bits[-1])
            if ok and not bits[0].startswith(".") and rel not in chosen:
                chosen[rel] = RemoteFile(f.path, rel, f.size, f.sha256, f.blob_id)
    return sorted(chosen.values(), key=lambda f: (not _is_support(f.name), f.name))


def onnx_folders(siblings: list[RemoteFile]) -> list[str]:
    folders = {str(PurePosixPath(f.path).parent) for f in siblings if _is_model(f.path)}
    return sorted(f for f in folders if f != ".")


# --- the hub ----------------------------------------------------------------------------------


def offline() -> bool:
    if os.environ.get("ONNXG_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_network_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectError", "TimeoutException", "ConnectionError",
                         "OfflineModeIsEnabled", "NetworkError", "ProtocolError"}) or isinstance(exc, ConnectionError)


def hub_error(exc: BaseException, ref: PullRef) -> OnnxgError:
    """One-line errors for what huggingface_hub raises."""
    from huggingface_hub import errors as hf

    if isinstance(exc, hf.GatedRepoError):
        return AuthRequired(
            f"{ref.repo} is gated: its files need an account that accepted its terms",
            hint="accept them on the repo's page, then set HF_TOKEN (or run `hf auth login`) and rerun",
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return RepoNotFound(f"{ref.repo} has no revision {ref.revision!r}",
                            hint="use a branch, tag or commit of the repo")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return RepoNotFound(
            f"no model repo {ref.repo!r} on the hub ({endpoint()})",
            hint="check the name (org/repo); a private repo needs HF_TOKEN or `hf auth login`",
        )
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return AuthRequired(f"the hub refused access to {ref.repo} ({status})",
                                hint="set HF_TOKEN or run `hf auth login`")
        return HubError(f"the hub answered {status or 'an error'} for {ref.repo}",
                        hint="retry later; ONNXG_DEBUG=1 shows the details")
    if is_network_error(exc):
        return HubUnreachable(
            f"cannot reach the hub at {endpoint()}",
            hint="check the network (or HF_ENDPOINT); a model already pulled is used offline",
        )
    return HubError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))


def remote_files(ref: PullRef) -> tuple[str, list[RemoteFile]]:
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint()).model_info(ref.repo, revision=ref.revision, files_metadata=True)
    files = [
        RemoteFile(
            path=s.rfilename,
            name=s.rfilename,
            size=int(s.lfs.size if s.lfs else (s.size or 0)),
            sha256=s.lfs.sha256 if s.lfs else None,
            blob_id=None if s.lfs else s.blob_id,
        )
        for s in info.siblings or []
    ]
    return str(info.sha or ref.revision or "main"), files
