"""Chat templates, rendered the way transformers renders them.

transformers compiles a model's ``chat_template`` with jinja2's ImmutableSandboxedEnvironment
(``trim_blocks``, ``lstrip_blocks``, the ``loopcontrols`` extension and a ``{% generation %}``
tag), a ``tojson`` filter that does not escape HTML, and the globals ``raise_exception`` and
``strftime_now``; it renders with ``messages``, ``add_generation_prompt`` and the tokenizer's
special tokens (``bos_token``, ``eos_token``, ...). We do the same here, so templates that
onnxruntime-genai's own ``apply_chat_template`` cannot handle still work, without importing
transformers at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from onnxg.runtime.errors import InvalidRequest, ModelLoadError

_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class TemplateError(InvalidRequest):
    """A chat template that cannot render the given messages (raise_exception or a bug)."""


def _raise_exception(message: str) -> None:
    import jinja2.exceptions

    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # jinja's own tojson escapes HTML characters (<, >, &, '), which changes prompts.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _generation_extension() -> type:
    """``{% generation %}...{% endgeneration %}`` (assistant masks in training): rendered as-is."""
    from jinja2 import nodes
    from jinja2.ext import Extension

    class GenerationTag(Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return GenerationTag


@lru_cache(maxsize=64)
def compile_template(template: str) -> Any:
    """A compiled jinja2 template; TemplateError for a template that does not parse."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_generation_extension(), loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"the chat template does not parse: {exc.message} (line {exc.lineno})",
            hint="fix the template or pass another with --chat-template",
        ) from None


@lru_cache(maxsize=64)
def template_variables(template: str) -> frozenset[str]:
    """The variables a template reads from its context (``messages``, ``tools``, ...)."""
    import jinja2.meta
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(extensions=[_generation_extension(), "jinja2.ext.loopcontrols"])
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(env.parse(template)))
    except Exception:  # noqa: BLE001 - compile_template reports a template that does not parse
        return frozenset()


def render(template: str, messages: list[dict[str, Any]], *, bos_token: str | None = None,
           eos_token: str | None = None, add_generation_prompt: bool = True, **extra: Any) -> str:
    """The prompt text for ``messages`` (dicts with ``role`` and ``content``)."""
    import jinja2

    compiled = compile_template(template)
    try:
        return compiled.render(messages=messages, bos_token=bos_token or "", eos_token=eos_token or "",
                               add_generation_prompt=add_generation_prompt, **extra)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the chat template rejected the messages: {exc}", param="messages") from None
    except Exception as exc:  # a template bug, e.g. indexing an empty list
        raise TemplateError(f"the chat template failed: {type(exc).__name__}: {exc}", param="messages") from None


@dataclass
class Template:
    """A model's chat template and the special tokens it is rendered with."""

    source: str
    origin: str  # where it came from: a file path, "tokenizer_config.json", or "override"
    special_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def knows_tools(self) -> bool:
        """The template renders ``tools`` (it reads the variable), as tool-trained models' do."""
        return "tools" in template_variables(self.source)

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True, **extra: Any) -> str:
        tokens = {k: v for k, v in self.special_tokens.items() if k not in extra}
        bos = tokens.pop("bos_token", None)
        eos = tokens.pop("eos_token", None)
        return render(self.source, messages, bos_token=bos, eos_token=eos,
                      add_generation_prompt=add_generation_prompt, **tokens, **extra)


def _token_text(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def read_tokenizer_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def special_tokens(model_dir: Path) -> dict[str, str]:
    """bos_token, eos_token, ... as the tokenizer config names them."""
    config = read_tokenizer_config(model_dir)
    found = {}
    for name in _SPECIAL_TOKENS:
        text = _token_text(config.get(name))
        if text is not None:
            found[name] = text
    return found


def _pick(value: Any) -> str | None:
    """tokenizer_config's chat_template: a string, or a list of {name, template} (use "default")."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        chosen = named.get("default")
        if chosen is None and named:
            chosen = next(iter(named.values()))
        return chosen if isinstance(chosen, str) else None
    return None


def find_template(model_dir: Path) -> tuple[str, str] | None:
    """(template text, origin) from chat_template.jinja or tokenizer_config.json, if any."""
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8"), str(jinja_file)
    json_file = model_dir / "chat_template.json"  # processors save it there
    if json_file.is_file():
        try:
            chosen = _pick(json.loads(json_file.read_text(encoding="utf-8")).get("chat_template"))
        except (OSError, ValueError, AttributeError):
            chosen = None
        if chosen:
            return chosen, str(json_file)
    chosen = _pick(read_tokenizer_config(model_dir).get("chat_template"))
    if chosen:
        return chosen, str(model_dir / "tokenizer_config.json")
    return None


def load_template(model_dir: Path, override: str | None = None) -> Template:
    """The template to use: ``override`` (a file path or the template text) or the model's own.

    A model without any template is an error unless an override is given.
    """
    tokens = special_tokens(model_dir)
    if override:
        path = Path(override).expanduser()
        looks_like_text = "{{" in override or "{%" in override or "\n" in override
        if not looks_like_text:
            if not path.is_file():
                raise InvalidRequest(f"chat template file not found: {override}", param="chat_template")
            text, origin = path.read_text(encoding="utf-8"), str(path)
        else:
            text, origin = override, "override"
        compile_template(text)
        return Template(text, origin, tokens)
    found = find_template(model_dir)
    if found is None:
        raise ModelLoadError(
            f"{model_dir.name} has no chat template (no chat_template.jinja, and no chat_template "
            "in tokenizer_config.json)",
            hint="pass one with --chat-template FILE",
        )
    compile_template(found[0])
    return Template(found[0], found[1], tokens)
