"""Tool calls: the call syntax of a model's family, its grammar, and reading calls back.

A family is detected from what the model itself carries, its chat template and its tokenizer's
tokens, never from its name:

=========  =======================================================  ==========================
family     a call, as the model writes it                           detected by
=========  =======================================================  ==========================
hermes     ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``  ``<tool_call>`` in the template
           (one block per call; Qwen2.5/3, Hermes 2/3)
mistral    ``[TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]``    ``[TOOL_CALLS]`` in template + vocab
phi4       ``<|tool_call|>[{"name": "f", "arguments": {...}}]<|/tool_call|>``  ``<|/tool_call|>``
granite    ``<|tool_call|>[{"name": "f", "arguments": {...}}]``       ``<|tool_call|>``
llama3     ``{"name": "f", "parameters": {...}}`` (one call)          ``"parameters"`` + ``<|eot_id|>``
generic    ``{"tool_calls": [{"name": "f", "arguments": {...}}]}``    anything else; the tools are
                                                                     described in a system prompt
=========  =======================================================  ==========================

The grammar (``grammar_for``) writes exactly this text, so reading it back (``CallReader``) is
literal; a call's arguments stream out as they are generated.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from onnxg.runtime.contracts import Chunk, ToolCallDelta, Usage
from onnxg.runtime.errors import InvalidRequest
from onnxg.runtime.grammar import JSON_OBJECT, json_rule, lark_literal
from onnxg.runtime.options import GenerationOptions
from onnxg.runtime.structured import Tool


@dataclass(frozen=True)
class Family:
    name: str
    list_open: str
    call_open: str  # up to the function's name
    args_key: str  # between the name and the arguments
    call_close: str
    sep: str  # between two calls
    list_close: str
    parallel: bool = True
    id_alphabet: str = string.hexdigits[:16]
    id_length: int = 24
    id_prefix: str = "call_"

    @property
    def trigger(self) -> str:
        return self.list_open or self.call_open

    def new_id(self) -> str:
        return self.id_prefix + "".join(secrets.choice(self.id_alphabet) for _ in range(self.id_length))

    def write(self, calls: Sequence[tuple[str, str]]) -> str:
        """Calls (name, arguments JSON) as this family writes them (the generic prompt's history)."""
        body = self.sep.join(f"{self.call_open}{name}{self.args_key}{args}{self.call_close}" for name, args in calls)
        return self.list_open + body + self.list_close


MAX_CALLS = 8  # parallel calls in one reply: a small model would otherwise repeat its call until max_tokens
_OBJ = '{"name": "'
FAMILIES = {
    "hermes": Family("hermes", "", '<tool_call>\n{"name": "', '", "arguments": ', "}\n</tool_call>", "\n", ""),
    "mistral": Family("mistral", "[TOOL_CALLS][", _OBJ, '", "arguments": ', "}", ", ", "]",
                      id_alphabet=string.ascii_letters + string.digits, id_length=9, id_prefix=""),
    "phi4": Family("phi4", "<|tool_call|>[", _OBJ, '", "arguments": ', "}", ", ", "]<|/tool_call|>"),
    "granite": Family("granite", "<|tool_call|>[", _OBJ, '", "arguments": ', "}", ", ", "]"),
    "llama3": Family("llama3", "", _OBJ, '", "parameters": ', "}", "", "", parallel=False),
    "generic": Family("generic", '{"tool_calls": [', _OBJ, '", "arguments": ', "}", ", ", "]}"),
}

GENERIC_PROMPT = (
    "You can call functions. The functions you may call are described by these JSON schemas:\n{tools}\n"
    'To call functions, reply with only a JSON object of this form and nothing else: '
    '{{"tool_calls": [{{"name": "<function name>", "arguments": {{<arguments>}}}}]}}. '
    "Otherwise answer in plain text."
)
"""What a model whose template knows no tools is told (prepended to its system message)."""


def detect(template: str | None, has_token: Callable[[str], bool]) -> Family:
    """The call syntax a model was trained on, from its chat template and its tokenizer."""
    source = template or ""
    if "[TOOL_CALLS]" in source and has_token("[TOOL_CALLS]"):
        return FAMILIES["mistral"]
    if "<|/tool_call|>" in source or ("<|tool_call|>" in source and has_token("<|/tool_call|>")):
        return FAMILIES["phi4"]
    if "<|tool_call|>" in source:
        return FAMILIES["granite"]
    if "<tool_call>" in source:
        return FAMILIES["hermes"]
    if "<|eot_id|>" in source and '"parameters"' in source:
        return FAMILIES["llama3"]
    return FAMILIES["generic"]


# ---------------------------------------------------------------- grammars


def _lark_text(text: str, special: Callable[[str], int | None]) -> str:
    """``text`` as a Lark sequence: special tokens by id (``<[id]>``), the rest as string literals."""
    import re

    parts = []
    for piece in re.split(r"(<\|?/?[A-Za-z_]+\|?>|\[[A-Z_]+\])", text):
        if not piece:
            continue
        token = special(piece) if piece[0] in "<[" else None
        parts.append(f"<[{token}]>" if token is not None else lark_literal(piece))
    return " ".join(parts) if parts else '""'


def grammar_for(options: GenerationOptions, family: Family, special: Callable[[str], int | None]) -> str | None:
    """The Lark grammar a reply must match, or None when it is free text. ``special(text)`` is
    the id of the special token ``text``, or None when the tokenizer has no such special token."""
    fmt = options.response_format
    text_rule = None
    if fmt is not None and fmt.type != "text":
        text_rule = json_rule(fmt.schema_dict if fmt.type == "json_schema" else JSON_OBJECT)
    if not options.calls_tools:
        return None if text_rule is None else f"start: answer\nanswer: {text_rule}\n"
    choice = options.tool_choice
    assert choice is not None
    tools = [t for t in options.tools if choice.mode != "function" or t.name == choice.name]
    lines = []
    for i, tool in enumerate(tools):
        lines.append(f"call_{i}: {_lark_text(family.call_open + tool.name + family.args_key, special)} "
                     f"{json_rule(tool.schema)} {_lark_text(family.call_close, special)}")
    lines.append("call: " + " | ".join(f"call_{i}" for i in range(len(tools))))
    more = (f"({_lark_text(family.sep, special)} call){{0,{MAX_CALLS - 1}}}"
            if family.parallel and options.parallel_tool_calls else "")
    opening = _lark_text(family.list_open, special) if family.list_open else ""
    closing = _lark_text(family.list_close, special) if family.list_close else ""
    lines.append(f"calls: {opening} call {more} {closing}")
    if choice.forced:
        lines.insert(0, "start: calls")
    else:
        first = family.trigger[0]
        opener = _lark_text(family.trigger, special).split(" ")[0]
        before = "TEXT? " if opener.startswith("<[") else ""  # text may precede a special-token call
        text = text_rule or "TEXT"
        if text_rule is None:
            lines.append(f"TEXT: /[^{_regex_escape(first)}](.|\\n)*/")
        lines.insert(0, f"start: {text} | {before}calls")
        if before and text_rule is not None:
            lines.append("TEXT: /(.|\\n)+/")
    return "\n".join(lines) + "\n"


def _regex_escape(char: str) -> str:
    return "\\" + char if char in "\\^]-[/" else char


# ---------------------------------------------------------------- prompts


def prepare(messages: list[dict[str, Any]], tools: Sequence[Tool], family: Family,
            template_knows_tools: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and ``tools=`` to render the template with.

    History tool calls carry their arguments as objects (as transformers' templates expect);
    a ``tool`` message must answer a call made before it. A template that knows no tools gets
    the generic system prompt, and the history's calls written in the generic syntax."""
    out: list[dict[str, Any]] = []
    pending: dict[str, str] = {}
    for i, m in enumerate(messages):
        item = dict(m)
        calls = item.get("tool_calls")
        if item.get("role") == "assistant" and calls:
            item["tool_calls"] = [_history_call(call, f"messages[{i}].tool_calls[{j}]") for j, call in enumerate(calls)]
            item["content"] = item.get("content") or ""  # templates concatenate it
            pending.update((c["id"], c["function"]["name"]) for c in item["tool_calls"] if c.get("id"))
            if not template_knows_tools:
                written = family.write([(c["function"]["name"], json.dumps(c["function"]["arguments"]))
                                        for c in item["tool_calls"]])
                item = {"role": "assistant", "content": ((item.get("content") or "") + written)}
        elif item.get("role") == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                raise InvalidRequest(f"messages[{i}] is a tool result for {call_id!r}, which answers no tool call "
                                     "of an earlier assistant message", param=f"messages[{i}].tool_call_id")
            if not template_knows_tools:  # templates without tools drop (or refuse) the tool role
                item = {"role": "user", "content": f"Result of {pending[call_id]}: {item.get('content') or ''}"}
        out.append(item)
    if not tools:
        return out, None
    if template_knows_tools:
        return out, [t.openai() for t in tools]
    described = GENERIC_PROMPT.format(tools=json.dumps([t.openai()["function"] for t in tools], ensure_ascii=False))
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{described}".lstrip()}
    else:
        out.insert(0, {"role": "system", "content": described})
    return out, None


def _history_call(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"{where} needs a function with a name", param=f"{where}.function")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise InvalidRequest(f"{where}.function.arguments is not valid JSON",
                                 param=f"{where}.function.arguments") from None
    return {**call, "type": "function", "function": {**function, "arguments": arguments}}


# ---------------------------------------------------------------- reading calls back


class CallReader:
    """Splits one choice's streamed text into content and tool-call deltas.

    Text before the family's trigger is content (less a tail that could start the trigger);
    after it, each call yields one delta with its id and name, then argument fragments as
    they come. Text that does not follow the syntax is handed back as content."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.buf = ""
        self.state = "text"
        self.calls = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        self.buf += text
        content, deltas = "", []
        while True:
            step = self._step()
            if step is None:
                return content, deltas
            content += step[0]
            deltas.extend(step[1])

    def close(self) -> tuple[str, list[ToolCallDelta]]:
        """The end of the text: what is still held back."""
        content, deltas = self.feed("")
        if self.state in ("text", "broken"):
            content, self.buf = content + self.buf, ""
        return content, deltas

    def _step(self) -> tuple[str, list[ToolCallDelta]] | None:
        f, buf = self.family, self.buf
        if self.state == "broken":
            self.buf = ""
            return (buf, []) if buf else None
        if self.state == "text":
            at = buf.find(f.trigger)
            if at < 0:
                keep = _partial_suffix(buf, f.trigger)
                self.buf = buf[len(buf) - keep:] if keep else ""
                out = buf[: len(buf) - keep]
                return (out, []) if out else None
            self.buf = buf[at + len(f.trigger):]
            self.state = "open" if f.list_open else "name"
            return buf[:at], []
        if self.state == "open":
            return self._expect(f.call_open, "name")
        if self.state == "name":
            at = buf.find(f.args_key)
            if at < 0:
                return None
            name = buf[:at]
            self.buf = buf[at + len(f.args_key):]
            self.state = "args"
            self._depth, self._in_string, self._escaped = 0, False, False
            self.calls += 1
            return "", [ToolCallDelta(self.calls - 1, id=f.new_id(), name=name, arguments="")]
        if self.state == "args":
            return self._args()
        if self.state == "after":
            return self._expect(f.call_close, "next")
        if self.state == "next":
            again = f.sep + f.call_open if f.parallel else ""
            if again and buf.startswith(again):
                self.buf, self.state = buf[len(again):], "name"
            elif f.list_close and buf.startswith(f.list_close):
                self.buf, self.state = buf[len(f.list_close):], "done"
            elif not buf or any(t and t.startswith(buf) for t in (again, f.list_close)):
                return None
            else:
                self.state = "done"
            return "", []
        self.buf = ""  # done: the grammar allows nothing after the calls but end-of-sequence
        return None

    def _expect(self, token: str, then: str) -> tuple[str, list[ToolCallDelta]] | None:
        if self.buf.startswith(token):
            self.buf, self.state = self.buf[len(token):], then
            return "", []
        if token.startswith(self.buf):
            return None
        self.state = "broken"
        return "", []

    def _args(self) -> tuple[str, list[ToolCallDelta]] | None:
        if not self.buf:
            return None
        end = None
        for i, ch in enumerate(self.buf):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = i + 1
                    break
        piece = self.buf if end is None else self.buf[:end]
        self.buf = "" if end is None else self.buf[end:]
        if end is not None:
            self.state = "after"
        return "", [ToolCallDelta(self.calls - 1, arguments=piece)]


def _partial_suffix(text: str, token: str) -> int:
    """The length of the longest end of ``text`` that begins ``token``."""
    for k in range(min(len(text), len(token) - 1), 0, -1):
        if token.startswith(text[-k:]):
            return k
    return 0


def read_calls(items: Iterator[Chunk | Usage], family: Family, n: int) -> Iterator[Chunk | Usage]:
    """A chat model's stream with each choice's calls taken out of its text into ``tool_calls``;
    a choice that called a tool finishes with ``"tool_calls"``."""
    readers = [CallReader(family) for _ in range(n)]
    for item in items:
        if isinstance(item, Usage):
            yield item
            continue
        reader = readers[item.index]
        text, calls = reader.feed(item.text)
        finish = item.finish_reason
        if finish is not None:
            tail, more = reader.close()
            text, calls = text + tail, calls + more
            if reader.calls and finish == "stop":
                finish = "tool_calls"
        if text or calls or item.reasoning or item.logprobs or finish:
            yield Chunk(index=item.index, text=text, reasoning=item.reasoning, logprobs=item.logprobs,
                        finish_reason=finish, tool_calls=calls or None)
