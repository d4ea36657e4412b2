"""Generation options: what a request may ask of a chat model, declared and validated once.

Every option is declared here with OpenAI's name, its OpenAI default and its range (``Bound``),
and the cross-field rules live here too. A ``GenerationOptions`` is checked when it is built,
so one that exists is valid: the runtime takes it as is. Everything builds it one way,
``GenerationOptions.from_openai(**values)`` (None = OpenAI's default, unknown names refused):
the server's wire types (``server/protocol.py`` ``to_options()``), ``onnxg chat`` and
``onnxg.chat``. A bad value raises ``InvalidRequest(param=<OpenAI field name>)`` with a message
such as "temperature must be between 0 and 2, got 7". The wire types' JSON schema takes the
ranges from ``json_schema(name)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from onnxg.runtime.errors import InvalidRequest
from onnxg.runtime.structured import ResponseFormat, Tool, ToolChoice

MAX_STOPS = 4  # OpenAI's limit on stop sequences


@dataclass(frozen=True)
class Bound:
    """An option's type and range: ``low <= value <= high`` (``low < value`` when ``open_low``)."""

    type: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def check(self, name: str, value: Any) -> Any:
        """``value`` as this type (an int is a fine float), or InvalidRequest naming ``name``."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise InvalidRequest(f"{name} must be a boolean", param=name)
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.type is float else int):
            raise InvalidRequest(f"{name} must be {'a number' if self.type is float else 'an integer'}", param=name)
        if self.type is float:
            value = float(value)
            if math.isnan(value):
                raise InvalidRequest(f"{name} must be a number", param=name)
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            got = f"{value:g}" if isinstance(value, float) else str(value)
            raise InvalidRequest(f"{name} must be {self.describe()}, got {got}", param=name)
        return value

    def describe(self) -> str:
        """The range in words: "between 0 and 2", "at least 1", "greater than 0 and at most 10"."""
        if self.low is None:
            return f"at most {self.high:g}"
        low = f"greater than {self.low:g}" if self.open_low else f"at least {self.low:g}"
        if self.high is None:
            return low
        return f"{low} and at most {self.high:g}" if self.open_low else f"between {self.low:g} and {self.high:g}"

    def json_schema(self) -> dict[str, float]:
        schema: dict[str, float] = {}
        if self.low is not None:
            schema["exclusiveMinimum" if self.open_low else "minimum"] = self.low
        if self.high is not None:
            schema["maximum"] = self.high
        return schema


def _option(default: Any, bound: Bound | None = None) -> Any:
    return field(default=default, metadata={"bound": bound})


@dataclass(frozen=True)
class GenerationOptions:
    """OpenAI's names and defaults; building one with a bad value raises InvalidRequest(param=<field>)."""

    max_tokens: int | None = _option(None, Bound(int, 1))
    max_completion_tokens: int | None = _option(None, Bound(int, 1))  # OpenAI's newer name; wins over max_tokens
    temperature: float = _option(1.0, Bound(float, 0.0, 2.0))
    top_p: float = _option(1.0, Bound(float, 0.0, 1.0))
    top_k: int = _option(0, Bound(int, 0))  # 0: off
    repetition_penalty: float = _option(1.0, Bound(float, 0.0, 10.0, open_low=True))
    presence_penalty: float = _option(0.0, Bound(float, -2.0, 2.0))
    frequency_penalty: float = _option(0.0, Bound(float, -2.0, 2.0))
    seed: int | None = _option(None, Bound(int))
    stop: tuple[str, ...] = _option(())  # a string or up to MAX_STOPS non-empty strings
    n: int = _option(1, Bound(int, 1, 128))
    logprobs: bool = _option(False, Bound(bool))
    top_logprobs: int = _option(0, Bound(int, 0, 20))  # needs logprobs
    response_format: ResponseFormat | None = _option(None)  # OpenAI's dict, or one of ours
    tools: tuple[Tool, ...] = _option(())  # OpenAI's list of {"type": "function", "function": {...}}
    tool_choice: ToolChoice | None = _option(None)  # "none" | "auto" | "required" | {"type": "function", ...}
    parallel_tool_calls: bool = _option(True, Bound(bool))

    def __post_init__(self) -> None:
        for f in fields(self):
            value, bound = getattr(self, f.name), f.metadata["bound"]
            if bound is not None and not (value is None and f.default is None):
                object.__setattr__(self, f.name, bound.check(f.name, value))
        object.__setattr__(self, "stop", _stops(self.stop))
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs set to true", param="top_logprobs")
        from onnxg.runtime import structured

        object.__setattr__(self, "response_format", structured.response_format(self.response_format))
        object.__setattr__(self, "tools", structured.tools(self.tools))
        object.__setattr__(self, "tool_choice", structured.tool_choice(self.tool_choice, self.tools))

    @classmethod
    def from_openai(cls, **values: Any) -> GenerationOptions:
        """Options from OpenAI's names; a value of None means OpenAI's default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidRequest(
                f"unknown generation option {unknown[0]!r}", hint="known: " + ", ".join(sorted(known)), param=unknown[0]
            )
        return cls(**{name: value for name, value in values.items() if value is not None})

    @property
    def calls_tools(self) -> bool:
        """The reply may (or must) call a tool."""
        return bool(self.tools) and self.tool_choice is not None and self.tool_choice.mode != "none"

    @property
    def constrained(self) -> bool:
        """A grammar shapes the reply (a JSON response format, or tools that may be called)."""
        return self.calls_tools or (self.response_format is not None and self.response_format.type != "text")

    @property
    def token_limit(self) -> int | None:
        """The most tokens to generate: max_completion_tokens, else max_tokens, else no limit."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def _stops(stop: Any) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("stop must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOPS:
        raise InvalidRequest(f"stop takes at most {MAX_STOPS} sequences, got {len(stops)}", param="stop")
    if any(s == "" for s in stops):
        raise InvalidRequest("stop sequences must not be empty", param="stop")
    return tuple(stops)


def json_schema(name: str) -> dict[str, Any]:
    """The JSON-schema range of option ``name`` (for the wire types' published schema)."""
    bound = next(f.metadata["bound"] for f in fields(GenerationOptions) if f.name == name)
    return bound.json_schema() if bound is not None else {}
