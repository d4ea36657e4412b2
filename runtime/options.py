"""Generation options: what a request may ask of a chat model, declared and validated once.

The names and ranges are OpenAI's. The server's wire types and the CLI build a
``GenerationOptions``; ``validate()`` raises ``InvalidRequest(param=<field>)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from onnxg.runtime.errors import InvalidRequest


@dataclass
class GenerationOptions:
    """OpenAI's names; ``validate()`` raises InvalidRequest(param=<field>)."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    max_completion_tokens: int | None = None  # OpenAI's newer name; wins over max_tokens

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def validate(self) -> None:
        def number(name: str, low: float, high: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise InvalidRequest(f"{name} must be a number", param=name)
            if not low <= value <= high:
                raise InvalidRequest(f"{name} must be between {low:g} and {high:g}, got {value:g}", param=name)

        def integer(name: str, low: int, high: int | None = None, *, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequest(f"{name} must be an integer", param=name)
            if value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise InvalidRequest(f"{name} must be {bound}, got {value}", param=name)

        integer("max_tokens", 1, optional=True)
        integer("max_completion_tokens", 1, optional=True)
        number("temperature", 0.0, 2.0)
        number("top_p", 0.0, 1.0)
        integer("top_k", 0)
        number("repetition_penalty", 0.0, 10.0)
        if self.repetition_penalty == 0:
            raise InvalidRequest("repetition_penalty must be greater than 0", param="repetition_penalty")
        number("presence_penalty", -2.0, 2.0)
        number("frequency_penalty", -2.0, 2.0)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InvalidRequest("seed must be an integer", param="seed")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.stop, list) or not all(isinstance(s, str) for s in self.stop):
            raise InvalidRequest("stop must be a string or a list of strings", param="stop")
        if len(self.stop) > 4:
            raise InvalidRequest(f"stop takes at most 4 sequences, got {len(self.stop)}", param="stop")
        if any(s == "" for s in self.stop):
            raise InvalidRequest("stop sequences must not be empty", param="stop")
        integer("n", 1, 128)
        if not isinstance(self.logprobs, bool):
            raise InvalidRequest("logprobs must be a boolean", param="logprobs")
        integer("top_logprobs", 0, 20)
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs set to true", param="top_logprobs")
