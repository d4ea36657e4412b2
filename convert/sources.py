"""Where ``onnxg convert`` starts: what SOURCE is (a folder, a .gguf file, a SavedModel, a
recipe or a Hugging Face repo id, downloaded into ``ONNXG_HOME/cache``) and what kind of model
it converts to."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxg.runtime import home, layout
from onnxg.runtime.errors import ConversionError, OnnxgError

_REPO_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(/[^\s]+)?$")
# config.json architectures that generate text (chat); anything else with a config is an encoder.
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_ENCODER_TYPES = {
    "bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta", "deberta-v2",
    "albert", "camembert", "nomic_bert", "modernbert", "new", "e5", "xlm", "ernie", "t5", "mt5",
}
# Weights onnxg never needs from a repo (other frameworks' copies, ready ONNX exports).
_IGNORE = ["*.msgpack", "*.h5", "*.ot", "*.tflite", "flax_model*", "tf_model*", "rust_model*",
           "onnx/*", "openvino/*", "coreml/*", "*.onnx", "*.onnx_data", "*.gguf"]


@dataclass
class Source:
    """What SOURCE turned out to be, once local."""

    ref: str                      # what the user typed
    kind: str                     # "hf" | "gguf" | "tf"
    path: Path                    # local folder or file
    name: str                     # base of the default output name
    repo: str | None = None
    subfolder: str | None = None  # the folder inside the repo (owner/name/sub/folder)
    revision: str | None = None   # the commit a repo id resolved to
    recipe: Any = None            # onnxg.convert.recipes.Recipe when SOURCE named one
    options: dict[str, Any] = field(default_factory=dict)


def resolve_source(ref: str, *, revision: str | None = None,
                   progress: Callable[[str], None] | None = None) -> Source:
    """Turn SOURCE into a local path: a folder, a .gguf file, a recipe, or a repo id."""
    path = Path(ref).expanduser()
    if path.exists():
        return _local(ref, path.resolve())
    recipe = _recipe(ref)
    if recipe is not None:
        if recipe.status != "ok":
            raise ConversionError(f"recipe {recipe.name} is marked incompatible: {recipe.reason}",
                                  "see `onnxg convert --list` for the models that convert")
        if not recipe.source_is_hub and not Path(recipe.source).expanduser().exists():
            raise ConversionError(f"recipe {recipe.name} comes from {recipe.source}, which onnxg cannot download",
                                  "download it by hand and pass the local folder")
        src = resolve_source(recipe.source, revision=revision or recipe.revision, progress=progress)
        src.ref, src.name, src.recipe = ref, recipe.name, recipe
        return src
    match = _REPO_ID.match(ref)
    if match:
        return _download(match.group(1), revision, progress, subfolder=(match.group(2) or "").strip("/"))
    raise ConversionError(
        f"{ref!r} is not a file, a folder, a recipe or a Hugging Face repo id",
        "pass a model folder, a .gguf file, owner/name, or a recipe name (`onnxg convert --list`)",
    )


def _local(ref: str, path: Path) -> Source:
    base = path.stem if path.is_file() else path.name
    if path.is_dir() and (base == "saved_model" or base.isdigit()):  # TF layouts: name the parent
        base = path.parent.name
    name = safe_name(base)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return Source(ref, "gguf", path, name)
        raise ConversionError(f"{path} is a file onnxg cannot convert",
                              "pass a Hugging Face model folder, a .gguf file or a TF SavedModel folder")
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return Source(ref, "tf", path, name)
    if (path / "config.json").is_file() or (path / "modules.json").is_file():
        return Source(ref, "hf", path, name)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return Source(ref, "gguf", ggufs[0], safe_name(ggufs[0].stem))
    raise ConversionError(f"{path} holds no model onnxg knows (no config.json, saved_model.pb or .gguf)",
                          "pass a Hugging Face model folder, a .gguf file or a TF SavedModel folder")


def _recipe(name: str) -> Any:
    """The recipe called ``name``, or None."""
    if "/" in name:
        return None
    from onnxg.convert import recipes

    return recipes.get(name)


def _download(repo: str, revision: str | None, progress: Callable[[str], None] | None,
              subfolder: str = "") -> Source:
    """snapshot_download into ONNXG_HOME/cache (HF_TOKEN, HF_HUB_OFFLINE and ONNXG_OFFLINE honoured).

    ``owner/name/sub/folder`` converts the model in that folder of the repo.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from onnxg.hub import download as hub

    if progress:
        progress(f"download {repo}" + (f"@{revision}" if revision else ""))
    token = os.environ.get("HF_TOKEN") or None
    offline = hub.offline()
    try:
        folder = Path(snapshot_download(
            repo, revision=revision, cache_dir=str(home.ensure(home.cache_dir() / "hub")), token=token,
            ignore_patterns=_ignore_patterns(repo, revision, token, offline), local_files_only=offline,
        ))
    except LocalEntryNotFoundError:
        if offline:
            raise ConversionError(f"cannot download {repo}: offline and not in the cache",
                                  "connect to the network (and unset HF_HUB_OFFLINE / ONNXG_OFFLINE), "
                                  "or pass a local folder") from None
        raise ConversionError(f"cannot download {repo}: the hub is unreachable and it is not in the cache",
                              "check the network (or HF_ENDPOINT), or pass a local folder") from None
    except OnnxgError:
        raise
    except Exception as exc:  # noqa: BLE001 - gated, not found, 401/403/5xx, network: one line each
        raise hub.hub_error(exc, hub.PullRef(repo, subfolder, revision)) from None
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else revision
    if subfolder:
        folder = folder / subfolder
        if not folder.exists():
            raise ConversionError(f"{repo} has no folder {subfolder!r}", "check the path after owner/name")
    src = _local(repo, folder)
    src.ref = f"{repo}/{subfolder}" if subfolder else repo
    src.repo, src.name, src.revision = repo, safe_name(repo.split("/")[-1]), commit
    src.subfolder = subfolder or None
    return src


def _ignore_patterns(repo: str, revision: str | None, token: str | None, offline: bool) -> list[str]:
    """Skip other frameworks' weights, and .bin copies when safetensors exist."""
    patterns = list(_IGNORE)
    if not offline:
        try:
            from huggingface_hub import HfApi

            files = HfApi().list_repo_files(repo, revision=revision, token=token)
        except Exception:  # the download itself reports what went wrong
            return patterns
        if any(name.endswith(".safetensors") for name in files):
            patterns += ["*.bin", "*.pt", "*.pth"]
        if not any(name.endswith((".safetensors", ".bin", ".pt")) or name == "config.json" for name in files):
            patterns.remove("*.gguf")  # a GGUF-only repo: the GGUF is the model
    return patterns


def safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return name or "model"


def detect_task(src: Source) -> layout.Kind:
    """The kind of model a source converts to, from what it holds (the config's architecture)."""
    if src.kind == "gguf":
        return "chat"
    if src.kind == "tf":
        return "e2e"
    folder = src.path
    if (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file():
        return "embedding"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read {folder / 'config.json'}: {exc}",
                              "pass --task chat or --task embedding") from None
    architectures = config.get("architectures") or []
    if any(arch.endswith(_CAUSAL_SUFFIXES) for arch in architectures):
        return "chat"
    if config.get("model_type") in _ENCODER_TYPES or any(
        arch.endswith(("Model", "ForMaskedLM", "ForSequenceClassification")) for arch in architectures
    ):
        return "embedding"
    raise ConversionError(
        f"cannot tell whether {folder.name} is a chat or an embedding model "
        f"(architectures: {architectures or 'none'}, model_type: {config.get('model_type')})",
        "pass --task chat or --task embedding",
    )
