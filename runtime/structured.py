"""The structured-output parts of a request: ``response_format``, ``tools``, ``tool_choice``.

``GenerationOptions`` (options.py) holds them; this module turns OpenAI's JSON shapes into
small frozen types and refuses bad ones with the OpenAI field as ``param``: a schema the
grammar engine cannot compile, duplicate tool names, a ``tool_choice`` naming no declared
tool. What the grammar of a reply is, and how calls are written and read back, is
``tools.py``'s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from onnxg.runtime.errors import InvalidRequest

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MODES = ("none", "auto", "required")


@dataclass(frozen=True)
class ResponseFormat:
    type: str  # "text" | "json_object" | "json_schema"
    schema: str | None = None  # canonical JSON text of the schema (json_schema only)
    name: str | None = None
    strict: bool = False

    @property
    def schema_dict(self) -> dict[str, Any]:
        return json.loads(self.schema) if self.schema else {"type": "object"}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    parameters: str  # canonical JSON text of the arguments' schema
    strict: bool = False

    @property
    def schema(self) -> dict[str, Any]:
        return json.loads(self.parameters)

    def openai(self) -> dict[str, Any]:
        """The tool as OpenAI's clients send it (what chat templates are rendered with)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = self.schema
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    mode: str  # "none" | "auto" | "required" | "function" (then ``name``)
    name: str | None = None

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "function")


def response_format(value: Any) -> ResponseFormat | None:
    """OpenAI's ``response_format`` (a dict) as a ResponseFormat; InvalidRequest if malformed."""
    from onnxg.runtime.grammar import check_schema, schema_text

    if value is None or isinstance(value, ResponseFormat):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise InvalidRequest("response_format must be an object with a 'type'", param="response_format")
    kind = value["type"]
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise InvalidRequest(f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
                             param="response_format.type")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidRequest("response_format 'json_schema' needs a json_schema object with a 'name'",
                             param="response_format.json_schema")
    schema = spec.get("schema", {"type": "object"})
    check_schema(schema, "response_format.json_schema.schema")
    return ResponseFormat("json_schema", schema_text(schema), spec["name"], bool(spec.get("strict")))


def tools(value: Any) -> tuple[Tool, ...]:
    """OpenAI's ``tools`` list as Tools; InvalidRequest naming the bad entry."""
    from onnxg.runtime.grammar import check_schema, schema_text

    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise InvalidRequest("tools must be a list", param="tools")
    found: list[Tool] = []
    for i, item in enumerate(value):
        if isinstance(item, Tool):
            found.append(item)
            continue
        where = f"tools[{i}]"
        if not isinstance(item, dict) or item.get("type", "function") != "function":
            raise InvalidRequest(f"{where} must be a function tool ({{'type': 'function', 'function': ...}})",
                                 param=f"{where}.type")
        function = item.get("function")
        if not isinstance(function, dict):
            raise InvalidRequest(f"{where}.function must be an object", param=f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(f"{where}.function.name must be 1-64 letters, digits, _ . : or -",
                                 param=f"{where}.function.name")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        check_schema(parameters, f"{where}.function.parameters")
        description = function.get("description")
        found.append(Tool(name, description if isinstance(description, str) else None, schema_text(parameters),
                          bool(function.get("strict"))))
    names = [t.name for t in found]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(f"tools declares the function {name!r} twice", param=f"tools[{i}].function.name")
    return tuple(found)


def tool_choice(value: Any, declared: tuple[Tool, ...]) -> ToolChoice | None:
    """OpenAI's ``tool_choice``: "none" | "auto" | "required" | {"type": "function", "function": {"name"}}.

    The default is "auto" with tools and none without, as OpenAI's."""
    if value is None:
        return ToolChoice("auto") if declared else None
    if isinstance(value, ToolChoice):
        choice = value
    elif isinstance(value, str):
        if value not in _MODES:
            raise InvalidRequest(f"tool_choice must be 'none', 'auto', 'required' or a function, got {value!r}",
                                 param="tool_choice")
        choice = ToolChoice(value)
    elif isinstance(value, dict) and isinstance(value.get("function"), dict):
        choice = ToolChoice("function", value["function"].get("name"))
    else:
        raise InvalidRequest("tool_choice must be 'none', 'auto', 'required' or "
                             "{'type': 'function', 'function': {'name': ...}}", param="tool_choice")
    if choice.mode != "none" and not declared:
        raise InvalidRequest("tool_choice needs tools", param="tool_choice")
    if choice.mode == "function" and choice.name not in {t.name for t in declared}:
        raise InvalidRequest(f"tool_choice names the function {choice.name!r}, which tools does not declare",
                             param="tool_choice")
    return choice
