"""Model recipes: ``recipes/*.toml``, one file per model, validated when loaded.

A recipe says where a model comes from (the ORIGINAL upstream repo to convert from), how to
convert it (task, default precision and EP, builder options, pooling, a chat-template fix)
and what is known about it (context length, languages, notes). Models that the current
toolchain cannot handle carry ``status = "incompatible"`` and the exact ``reason``;
``onnxg convert <recipe>`` refuses them with that reason.

Recipes are data: a bad file fails loudly with an error naming the file and the key, so a
typo never silently changes a conversion.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from onnxg.runtime import layout
from onnxg.runtime.errors import OnnxgError

TASKS = tuple(layout.KIND_WORDS)  # a recipe's ``task``: a kind, or an older word for one
PRECISIONS = ("int4", "int8", "fp16", "fp32")
EPS = ("cpu", "cuda", "dml", "webgpu")
STATUSES = ("ok", "incompatible")
POOLINGS = ("mean", "cls", "last", "max", "none")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(/[^\s]+)?$")


class RecipeError(OnnxgError):
    """A recipe file that is not valid (names the file and the key)."""

    code = "invalid_recipe"


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    source: str
    task: str
    precision: str
    ep: str
    builder_options: dict[str, str]
    pooling: str | None
    chat_template: str | None
    status: str
    reason: str | None
    notes: str
    context_length: int | None
    languages: str | None
    # Extensions of the contract (all optional in the TOML):
    prebuilt: str | None = None
    trust_remote_code: bool = False
    architecture: str | None = None
    parameters: float | None = None
    vocab_size: int | None = None
    revision: str | None = None
    # Attributes set on the Hugging Face config the builder loads, before it builds (the genai
    # worker applies them with setattr): how a recipe works around a builder/transformers gap.
    config_overrides: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def source_is_hub(self) -> bool:
        """True when ``source`` is a Hugging Face repo id (else a URL to fetch by hand)."""
        return bool(_REPO.match(self.source)) and "://" not in self.source

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "path"}
        data["builder_options"] = dict(self.builder_options)
        data["config_overrides"] = dict(self.config_overrides)
        return data


# key -> (accepted python types, required)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), False),
    "title": ((str,), True),
    "source": ((str,), True),
    "task": ((str,), True),
    "precision": ((str,), False),
    "ep": ((str,), False),
    "builder_options": ((dict,), False),
    "pooling": ((str,), False),
    "chat_template": ((str,), False),
    "status": ((str,), False),
    "reason": ((str,), False),
    "notes": ((str,), False),
    "context_length": ((int,), False),
    "languages": ((str,), False),
    "prebuilt": ((str,), False),
    "trust_remote_code": ((bool,), False),
    "architecture": ((str,), False),
    "parameters": ((int, float), False),
    "vocab_size": ((int,), False),
    "revision": ((str,), False),
    "config_overrides": ((dict,), False),
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table"}


def _fail(origin: str, message: str) -> RecipeError:
    return RecipeError(f"recipe {origin}: {message}", hint="fix that file in the recipes folder; convert/recipes.py lists the keys and their types")


def _choice(origin: str, key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _fail(origin, f"{key} = {value!r} is not one of {', '.join(allowed)}")
    return value


def _option_value(origin: str, key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise _fail(origin, f"builder_options.{key} must be a string, number or boolean, not {type(value).__name__}")


def parse(data: dict[str, Any], *, name: str, origin: str, path: Path | None = None) -> Recipe:
    """A validated Recipe from a parsed TOML table (``origin`` names the file in errors)."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise _fail(origin, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(_FIELDS)})")
    for key, (types, required) in _FIELDS.items():
        if key not in data:
            if required:
                raise _fail(origin, f"missing required key {key!r}")
            continue
        value = data[key]
        # bool is an int in Python: only accept it where a bool is expected.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            raise _fail(origin, f"{key} must be {wanted}, not {type(value).__name__} ({value!r})")
    if "name" in data and data["name"] != name:
        raise _fail(origin, f"name = {data['name']!r} differs from the file name {name!r}")
    if not _NAME.match(name):
        raise _fail(origin, f"file name {name!r} must be lowercase letters, digits, '.', '_' or '-'")
    for key in ("title", "source"):
        if not data[key].strip():
            raise _fail(origin, f"{key} must not be empty")

    task = layout.KIND_WORDS[_choice(origin, "task", data["task"], TASKS)]
    precision = _choice(origin, "precision", data.get("precision", "int4" if task == "chat" else "fp32"), PRECISIONS)
    ep = _choice(origin, "ep", data.get("ep", "cpu"), EPS)
    status = _choice(origin, "status", data.get("status", "ok"), STATUSES)
    reason = data.get("reason")
    if status == "incompatible" and not (reason and reason.strip()):
        raise _fail(origin, 'status = "incompatible" needs a reason')
    if status == "ok" and reason:
        raise _fail(origin, 'reason is only for status = "incompatible"')
    pooling = data.get("pooling")
    if pooling is not None:
        if task == "chat":
            raise _fail(origin, "pooling applies to embedding models only")
        _choice(origin, "pooling", pooling, POOLINGS)
    template = data.get("chat_template")
    if template is not None and task != "chat":
        raise _fail(origin, "chat_template applies to chat models only")
    if template is not None and "{%" not in template and "{{" not in template:
        raise _fail(origin, "chat_template must be a Jinja template (it has no {{ }} or {% %})")
    context = data.get("context_length")
    if context is not None and context <= 0:
        raise _fail(origin, f"context_length must be positive, not {context}")
    vocab = data.get("vocab_size")
    if vocab is not None and vocab <= 0:
        raise _fail(origin, f"vocab_size must be positive, not {vocab}")
    prebuilt = data.get("prebuilt")
    if prebuilt is not None and not _REPO.match(prebuilt):
        raise _fail(origin, f"prebuilt = {prebuilt!r} is not a Hugging Face repo id (owner/name[/subfolder])")
    options = {str(k): _option_value(origin, str(k), v) for k, v in data.get("builder_options", {}).items()}
    parameters = data.get("parameters")
    overrides = dict(data.get("config_overrides", {}))
    if overrides and task != "chat":
        raise _fail(origin, "config_overrides apply to chat models (the genai builder) only")

    return Recipe(
        name=name,
        title=data["title"].strip(),
        source=data["source"].strip(),
        task=task,
        precision=precision,
        ep=ep,
        builder_options=options,
        pooling=pooling,
        chat_template=template,
        status=status,
        reason=reason.strip() if reason else None,
        notes=data.get("notes", "").strip(),
        context_length=context,
        languages=data.get("languages"),
        prebuilt=prebuilt,
        trust_remote_code=data.get("trust_remote_code", False),
        architecture=data.get("architecture"),
        parameters=float(parameters) if parameters is not None else None,
        vocab_size=vocab,
        revision=data.get("revision"),
        config_overrides=overrides,
        path=path,
    )


def load_file(path: Path) -> Recipe:
    """One recipe file, validated; RecipeError (naming the file) when it is not valid."""
    origin = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise _fail(origin, f"not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(origin, f"cannot be read: {exc}") from None
    return parse(data, name=path.stem, origin=origin, path=path)


def recipes_dir() -> Path:
    return Path(str(resources.files("onnxg.recipes")))


def load_dir(folder: Path) -> list[Recipe]:
    """Every ``*.toml`` in ``folder``, sorted by name."""
    return [load_file(path) for path in sorted(folder.glob("*.toml"))]


@functools.cache
def _all() -> tuple[Recipe, ...]:
    return tuple(load_dir(recipes_dir()))


def load_all() -> list[Recipe]:
    """Every recipe shipped with onnxg (chat models first, then embeddings, by name)."""
    order = {kind: i for i, kind in enumerate(layout.KINDS)}
    return sorted(_all(), key=lambda r: (order[r.task], r.name))


def get(name: str) -> Recipe | None:
    """The recipe called ``name`` (case-insensitive), or None."""
    wanted = name.strip().lower()
    return next((recipe for recipe in _all() if recipe.name == wanted), None)


def prebuilt(ref: str) -> str | None:
    """The ready ONNX repo that ``onnxg pull RECIPE`` fetches (the recipe's ``prebuilt``), or None
    when ``ref`` is not a recipe name. A recipe without one: NoOnnxFiles (convert it instead)."""
    from onnxg.hub.download import NoOnnxFiles
    from onnxg.runtime import store

    if "/" in ref or not store.is_store_name(ref):
        return None
    try:
        recipe = get(ref)
    except Exception:
        return None
    if recipe is None:
        return None
    if not recipe.prebuilt:
        raise NoOnnxFiles(f"recipe {ref} has no ready ONNX repo to pull",
                          hint=f"convert it instead: `onnxg convert {ref}`")
    return recipe.prebuilt
