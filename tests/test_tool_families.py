"""Tool-call families on their real tokenizers and chat templates (tests/modelkit/tool_families.py).

For each family: the family is detected from the template and tokenizer; the prompt onnxg
renders (tools, history calls, tool results) equals transformers' ``apply_chat_template``;
and 20 seeded sampled generations with ``tool_choice: required`` all parse into calls of
declared functions whose arguments validate. The generations sample random logits (what a
random-weight model gives) through onnxg's own Sampler with the family's grammar, so they
test the grammar and the reader, not a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelkit.tool_families import FAMILIES, family_tokenizer

pytestmark = pytest.mark.model

EXPECTED = {"qwen2.5": "hermes", "llama3.2": "llama3", "mistral-nemo": "mistral", "phi3.5": "generic",
            "granite3.3": "granite"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather of a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 12},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["a", "b"],
                   "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 999},
                                  "b": {"type": "integer", "minimum": 0, "maximum": 999}}}}}
HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
    {"role": "tool", "tool_call_id": "abcDEF123", "content": "22 degrees"},
]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, family_tokenizer(request.param)


def test_the_family_is_detected_from_template_and_tokenizer(family: tuple[str, Path]) -> None:
    from onnxg.runtime.template import load_template
    from onnxg.runtime.chat_tokenizer import ChatTokenizer
    from onnxg.runtime.tools import detect

    name, folder = family
    template = load_template(folder)
    assert detect(template.source, ChatTokenizer(folder, None).has_token).name == EXPECTED[name]


def test_the_prompt_equals_transformers(family: tuple[str, Path]) -> None:
    from transformers import AutoTokenizer

    from onnxg.runtime.options import GenerationOptions
    from onnxg.runtime.template import load_template
    from onnxg.runtime.chat_tokenizer import ChatTokenizer
    from onnxg.runtime.tools import detect, prepare

    name, folder = family
    template = load_template(folder)
    tool_family = detect(template.source, ChatTokenizer(folder, None).has_token)
    history = HISTORY
    options = GenerationOptions.from_openai(tools=[WEATHER, ADD])
    messages, tools = prepare(history, options.tools, tool_family, template.knows_tools)
    ours = template.render(messages, add_generation_prompt=True, **({"tools": tools} if tools else {}))
    theirs = AutoTokenizer.from_pretrained(str(folder)).apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=False)
    assert ours == theirs
    assert ("get_weather" in ours) and ("22 degrees" in ours)


def test_twenty_seeded_required_generations_parse_and_validate(family: tuple[str, Path]) -> None:
    import jsonschema_rs
    from transformers import AutoTokenizer

    from onnxg.runtime.grammar import GrammarTokenizer
    from onnxg.runtime.options import GenerationOptions
    from onnxg.runtime.sampling import Sampler
    from onnxg.runtime.template import load_template
    from onnxg.runtime.chat_tokenizer import ChatTokenizer
    from onnxg.runtime.tools import CallReader, detect, grammar_for

    name, folder = family
    hf = AutoTokenizer.from_pretrained(str(folder))
    chat_tokenizer = ChatTokenizer(folder, None)
    tool_family = detect(load_template(folder).source, chat_tokenizer.has_token)
    vocab = len(hf)
    grammar_tokenizer = GrammarTokenizer(chat_tokenizer.json_text() or "", [hf.eos_token_id], vocab)

    def special(text: str) -> int | None:
        token = chat_tokenizer.token_id(text)
        return token if token is not None and grammar_tokenizer.is_special(token) else None

    schemas = {t["function"]["name"]: jsonschema_rs.validator_for(t["function"]["parameters"]) for t in (WEATHER, ADD)}
    for seed in range(20):
        options = GenerationOptions.from_openai(tools=[WEATHER, ADD], tool_choice="required", seed=seed)
        sampler = Sampler(options, 0, grammar_tokenizer.constraint(grammar_for(options, tool_family, special), "tools"))
        rng = np.random.default_rng(seed)
        tokens: list[int] = []
        for _ in range(600):
            token = sampler.choose((rng.standard_normal(vocab) * 3).astype(np.float32))
            if token == hf.eos_token_id:
                break
            sampler.remember(token)
            tokens.append(token)
        else:
            pytest.fail(f"{name} seed {seed}: no end after 600 tokens: {chat_tokenizer.decode(tokens)!r}")
        text = chat_tokenizer.decode(tokens)
        reader = CallReader(tool_family)
        content, deltas = reader.feed(text)
        tail, more = reader.close()
        calls: dict[int, list[Any]] = {}
        for delta in deltas + more:
            calls.setdefault(delta.index, [delta.name, ""])[1] += delta.arguments
        assert not (content + tail).strip() and calls, (name, seed, text)
        for function, arguments in calls.values():
            assert function in schemas, (name, seed, text)
            schemas[function].validate(json.loads(arguments))


# ---------------------------------------------------------------- the same through a real tiny model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_server(request: pytest.FixtureRequest) -> Any:
    """A tiny random-weight model of the family (real tokenizer and template, int4 on onnxg's
    runtime) behind the real app and uvicorn."""
    from modelkit.tool_models import family_model
    from serverkit import AppServer

    from onnxg.runtime.loading import load_chat

    model = load_chat(family_model(request.param))
    with AppServer([model]) as server:
        yield request.param, model, server


def test_a_tiny_model_of_each_family_calls_declared_tools(family_server: Any) -> None:
    """20 seeded sampled generations with tool_choice required, through /v1/chat/completions:
    every one is a call of a declared function whose arguments validate; the choice ends with
    tool_calls and its content is empty (the call syntax never leaks into content)."""
    import httpx
    import jsonschema_rs

    name, model, server = family_server
    assert model.tool_family.name == EXPECTED[name]
    schemas = {t["function"]["name"]: jsonschema_rs.validator_for(t["function"]["parameters"]) for t in (WEATHER, ADD)}
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        for seed in range(20):
            answer = http.post("/chat/completions", json={
                "model": model.name, "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": [WEATHER, ADD], "tool_choice": "required", "temperature": 1.0, "seed": seed,
                "max_tokens": 400})
            assert answer.status_code == 200, answer.text
            choice = answer.json()["choices"][0]
            assert choice["finish_reason"] == "tool_calls", (name, seed, choice)
            assert not (choice["message"]["content"] or "").strip(), (name, seed, choice)
            for call in choice["message"]["tool_calls"]:
                assert call["type"] == "function" and call["id"]
                schemas[call["function"]["name"]].validate(json.loads(call["function"]["arguments"]))
