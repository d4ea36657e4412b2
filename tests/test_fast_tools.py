"""Tools, tool_choice and response_format over HTTP, on the fake model (fast tier).

The fake writes its calls in the generic family's syntax and the runtime's own reader
(``runtime/tools.py`` ``read_calls``) takes them back out, so what is tested here is the
server's OpenAI shapes (non-streamed and streamed) and the 400s; real grammars on real
tokenizers are tested in test_tools_real.py / test_tool_families.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fakes import FakeChatModel
from serverkit import AppServer, error_of, stream_events

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city", "days"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                       "required": ["zone"]}}}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server() -> Any:
    with AppServer([FakeChatModel()]) as srv:
        yield srv


def _chat(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": ASK, **body})


def test_required_returns_a_call_with_null_content(http: httpx.Client) -> None:
    answer = _chat(http, tools=TOOLS, tool_choice="required")
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["role"] == "assistant"
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 3}


def test_named_choice_calls_that_tool(client: Any) -> None:
    done = client.chat.completions.create(model="fake-chat", messages=ASK, tools=TOOLS,
                                          tool_choice={"type": "function", "function": {"name": "get_time"}})
    [call] = done.choices[0].message.tool_calls
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {"zone": "Paris"}


def test_auto_answers_in_text_unless_the_model_calls(client: Any) -> None:
    text = client.chat.completions.create(model="fake-chat", messages=ASK, tools=TOOLS)
    assert text.choices[0].message.tool_calls is None and text.choices[0].finish_reason == "stop"
    assert text.choices[0].message.content.startswith("Hello!")
    called = client.chat.completions.create(
        model="fake-chat", tools=TOOLS, messages=[{"role": "user", "content": "CALL:get_time please"}])
    assert [c.function.name for c in called.choices[0].message.tool_calls] == ["get_time"]


def test_none_never_calls(client: Any) -> None:
    done = client.chat.completions.create(
        model="fake-chat", tools=TOOLS, tool_choice="none", messages=[{"role": "user", "content": "CALL:get_time"}])
    assert done.choices[0].message.tool_calls is None and done.choices[0].finish_reason == "stop"


def test_parallel_calls_and_parallel_false(client: Any) -> None:
    ask = [{"role": "user", "content": "CALL:get_weather,get_time"}]
    both = client.chat.completions.create(model="fake-chat", tools=TOOLS, messages=ask)
    calls = both.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    one = client.chat.completions.create(model="fake-chat", tools=TOOLS, messages=ask, parallel_tool_calls=False)
    assert len(one.choices[0].message.tool_calls) == 1


def test_streamed_calls_follow_openai_deltas(http: httpx.Client) -> None:
    events, done = stream_events(http, "/v1/chat/completions", {
        "model": "fake-chat", "stream": True, "tools": TOOLS, "n": 2,
        "messages": [{"role": "user", "content": "CALL:get_weather,get_time"}]})
    assert done
    finishes: dict[int, list[str]] = {}
    calls: dict[tuple[int, int], dict[str, Any]] = {}
    for event in events:
        for choice in event["choices"]:
            if choice["finish_reason"]:
                finishes.setdefault(choice["index"], []).append(choice["finish_reason"])
            delta = choice["delta"]
            assert "<tool_call>" not in delta.get("content", "") and "tool_calls" not in delta.get("content", "")
            for d in delta.get("tool_calls", []):
                key = (choice["index"], d["index"])
                if key not in calls:
                    assert set(d) == {"index", "id", "type", "function"} and d["type"] == "function"
                    calls[key] = {"id": d["id"], "name": d["function"]["name"], "arguments": ""}
                else:
                    assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
                calls[key]["arguments"] += d["function"].get("arguments", "")
    assert finishes == {0: ["tool_calls"], 1: ["tool_calls"]}
    assert sorted(calls) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert json.loads(calls[(0, 1)]["arguments"]) == {"zone": "Paris"} and calls[(0, 1)]["name"] == "get_time"


def test_the_sdk_stream_helper_accumulates_a_call(client: Any) -> None:
    with client.chat.completions.stream(model="fake-chat", messages=ASK, tools=TOOLS,
                                        tool_choice="required") as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["days"] == 3


def test_a_tool_result_round_trip(client: Any) -> None:
    first = client.chat.completions.create(model="fake-chat", messages=ASK, tools=TOOLS, tool_choice="required")
    message = first.choices[0].message
    history = [*ASK, message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "sunny, 21 C"}]
    answer = client.chat.completions.create(model="fake-chat", messages=history, tools=TOOLS)
    assert answer.choices[0].message.content and answer.choices[0].finish_reason == "stop"


def test_json_schema_is_parsed_by_the_sdk(client: Any) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    done = client.chat.completions.parse(model="fake-chat", messages=ASK, response_format=City, n=2, seed=3)
    assert [c.message.parsed for c in done.choices] == [City(name="Paris", population=3)] * 2


def test_json_object_streams_one_object(http: httpx.Client) -> None:
    events, _ = stream_events(http, "/v1/chat/completions", {
        "model": "fake-chat", "stream": True, "messages": ASK, "response_format": {"type": "json_object"}})
    text = "".join(c["delta"].get("content", "") for e in events for c in e["choices"])
    assert isinstance(json.loads(text), dict)


def test_legacy_functions_get_a_function_call(http: httpx.Client) -> None:
    answer = _chat(http, functions=[WEATHER["function"]], function_call={"name": "get_weather"})
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strin"}}}]},
         "tools[0].function.parameters"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"minimum": "a"}}}},
         "response_format.json_schema.schema"),
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "21 C"}]}, "messages[1].tool_call_id"),
        ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}]}]},
         "messages[1].tool_calls[0].function.arguments"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_tool_requests_are_400_with_param(http: httpx.Client, body: dict[str, Any], param: str,
                                              stream: bool) -> None:
    answer = _chat(http, **body, stream=stream)
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param


def test_models_list_their_tool_family(http: httpx.Client) -> None:
    [model] = http.get("/v1/models").json()["data"]
    assert model["tool_calls"] == "generic" and model["structured_output"] is True


def test_integers_without_bounds_get_json_safe_ones() -> None:
    """A small model at temperature 0 would write digits until max_tokens; no reader could hold
    more than 2**53 - 1 exactly anyway. Bounds that are given are kept."""
    import llguidance

    from onnxg.runtime.grammar import SAFE_INTEGERS, bounded, json_rule

    schema = {"type": "object", "properties": {
        "population": {"type": "integer"}, "age": {"type": ["integer", "null"], "minimum": 0},
        "type": {"type": "string"}, "choice": {"enum": [{"type": "integer"}]}}}
    out = bounded(schema)["properties"]
    assert (out["population"]["minimum"], out["population"]["maximum"]) == SAFE_INTEGERS
    assert (out["age"]["minimum"], out["age"]["maximum"]) == (0, SAFE_INTEGERS[1])
    assert out["type"] == {"type": "string"} and out["choice"] == {"enum": [{"type": "integer"}]}
    grammar = llguidance.LLMatcher.grammar_from_lark("start: " + json_rule(schema))
    assert llguidance.LLMatcher.validate_grammar(grammar) == ""
