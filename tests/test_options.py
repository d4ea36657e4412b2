"""Generation options, declared and validated once (runtime/options.py): every rule, the wire
types' ``to_options()``, the server's one error table, and a sampler that stays finite for
every value the options accept. Torch-free and model-free: numpy, msgspec and hypothesis only."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxg.runtime.errors import (
    ContextLengthExceeded,
    ConversionError,
    GenerationError,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    OnnxgError,
    ToolchainError,
)
from onnxg.runtime.options import Bound, GenerationOptions, json_schema
from onnxg.runtime.sampling import Sampler, log_softmax
from onnxg.runtime.template import TemplateError
from onnxg.server.errors import STATUS, from_onnxg
from onnxg.server.protocol import ChatCompletionRequest, CompletionRequest

USER = [{"role": "user", "content": "Hi"}]

# ---------------------------------------------------------------- GenerationOptions


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0), ("max_tokens", -3), ("max_tokens", 2.5), ("max_tokens", True), ("max_tokens", "5"),
        ("max_completion_tokens", 0), ("max_completion_tokens", -3),
        ("temperature", 2.5), ("temperature", -0.1), ("temperature", "1"), ("temperature", True),
        ("temperature", float("nan")), ("temperature", float("inf")),
        ("top_p", 1.5), ("top_p", -0.01),
        ("top_k", -1), ("top_k", 1.5),
        ("repetition_penalty", 0.0), ("repetition_penalty", -1.0), ("repetition_penalty", 10.5),
        ("presence_penalty", 3.0), ("presence_penalty", -2.01),
        ("frequency_penalty", -2.5), ("frequency_penalty", 2.5),
        ("seed", "x"), ("seed", 1.5), ("seed", False),
        ("stop", ["a", "b", "c", "d", "e"]), ("stop", [""]), ("stop", ""), ("stop", 5), ("stop", ["a", 1]),
        ("n", 0), ("n", 129), ("n", None),
        ("logprobs", "yes"), ("logprobs", 1),
        ("top_logprobs", 21), ("top_logprobs", -1),
        ("top_logprobs", 2),  # without logprobs
    ],
)  # fmt: skip
def test_each_bad_value_names_its_param(field: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        GenerationOptions(**{field: value})
    assert info.value.param == field
    assert info.value.message.startswith(field)


def test_messages_say_the_range_and_the_value() -> None:
    def message(**kw: Any) -> str:
        with pytest.raises(InvalidRequest) as info:
            GenerationOptions(**kw)
        return info.value.message

    assert message(temperature=7) == "temperature must be between 0 and 2, got 7"
    assert message(max_tokens=0) == "max_tokens must be at least 1, got 0"
    assert message(repetition_penalty=0) == "repetition_penalty must be greater than 0 and at most 10, got 0"
    assert message(n=200) == "n must be between 1 and 128, got 200"
    assert message(top_k="3") == "top_k must be an integer"
    assert message(top_p="x") == "top_p must be a number"
    assert message(stop=["a"] * 5) == "stop takes at most 4 sequences, got 5"
    assert message(top_logprobs=3) == "top_logprobs needs logprobs set to true"


def test_defaults_are_openais() -> None:
    o = GenerationOptions()
    assert (o.temperature, o.top_p, o.top_k, o.n, o.stop, o.logprobs, o.top_logprobs) == (1.0, 1.0, 0, 1, (), False, 0)
    assert (o.repetition_penalty, o.presence_penalty, o.frequency_penalty) == (1.0, 0.0, 0.0)
    assert o.max_tokens is None and o.seed is None and o.token_limit is None


def test_accepted_edges_and_normalisation() -> None:
    o = GenerationOptions(temperature=2, top_p=0, repetition_penalty=5e-324, presence_penalty=-2, n=128, stop="x")
    assert o.temperature == 2.0 and isinstance(o.temperature, float) and isinstance(o.top_p, float)
    assert o.stop == ("x",)
    assert GenerationOptions(stop=["a", "b", "c", "d"]).stop == ("a", "b", "c", "d")
    assert GenerationOptions(logprobs=True, top_logprobs=20).top_logprobs == 20
    assert GenerationOptions(seed=-(2**70)).seed == -(2**70)  # any integer is a seed


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert GenerationOptions(max_tokens=9, max_completion_tokens=4).token_limit == 4
    assert GenerationOptions(max_tokens=9).token_limit == 9
    assert GenerationOptions(max_completion_tokens=4).token_limit == 4


def test_options_are_valid_once_built() -> None:
    o = GenerationOptions(temperature=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.temperature = 7  # type: ignore[misc]
    with pytest.raises(InvalidRequest):
        dataclasses.replace(o, temperature=7)


def test_from_openai_reads_none_as_the_default_and_refuses_unknown_names() -> None:
    o = GenerationOptions.from_openai(temperature=None, top_k=None, stop=None, n=None, max_tokens=5)
    assert o == GenerationOptions(max_tokens=5)
    with pytest.raises(InvalidRequest) as info:
        GenerationOptions.from_openai(temprature=0.5)
    assert info.value.param == "temprature" and "temperature" in (info.value.hint or "")


def test_bound_words_and_schema() -> None:
    assert Bound(int, 1).describe() == "at least 1"
    assert Bound(float, 0.0, 2.0).describe() == "between 0 and 2"
    assert Bound(float, high=3.0).describe() == "at most 3"
    assert json_schema("temperature") == {"minimum": 0.0, "maximum": 2.0}
    assert json_schema("repetition_penalty") == {"exclusiveMinimum": 0.0, "maximum": 10.0}
    assert json_schema("stop") == {} and json_schema("seed") == {}


# ---------------------------------------------------------------- the wire types' to_options()


def _chat(**body: Any) -> GenerationOptions:
    return msgspec.json.decode(json.dumps({"messages": USER, **body}), type=ChatCompletionRequest).to_options()


def _legacy(**body: Any) -> GenerationOptions:
    return msgspec.json.decode(json.dumps({"prompt": "hello", **body}), type=CompletionRequest).to_options()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 7}, "temperature"),
        ({"top_p": -1}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"top_logprobs": 2, "logprobs": False}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": ""}, "stop"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}] * 2}, "tools[1].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strin"}}}]},
         "tools[0].function.parameters"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}],
          "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
        ({"functions": [{"name": "f"}], "tools": [{"type": "function", "function": {"name": "f"}}]}, "functions"),
        ({"functions": [{"name": "f"}], "function_call": {"name": "g"}}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
         "response_format.json_schema.schema"),
    ],
)
def test_chat_to_options_names_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _chat(**body)
    assert info.value.param == param


def test_chat_to_options_maps_the_fields() -> None:
    assert _chat() == GenerationOptions()
    o = _chat(max_tokens=9, max_completion_tokens=4, logprobs=True, top_logprobs=3, stop="END", seed=7, top_k=5,
              temperature=0, response_format={"type": "text"}, tools=[], logit_bias={})  # fmt: skip
    assert (o.token_limit, o.logprobs, o.top_logprobs, o.stop, o.seed, o.top_k, o.temperature) == (
        4, True, 3, ("END",), 7, 5, 0.0
    )


def test_tools_and_formats_become_options() -> None:
    from onnxg.runtime.structured import ToolChoice

    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    o = _chat(tools=[tool])
    assert o.tool_choice == ToolChoice("auto") and o.calls_tools and o.constrained and o.parallel_tool_calls
    assert o.tools[0].openai() == tool
    assert not _chat(tools=[tool], tool_choice="none").calls_tools
    named = _chat(tools=[tool], tool_choice={"type": "function", "function": {"name": "f"}}, parallel_tool_calls=False)
    assert named.tool_choice == ToolChoice("function", "f") and named.tool_choice.forced
    assert not named.parallel_tool_calls
    legacy = _chat(functions=[tool["function"]], function_call={"name": "f"})
    assert legacy.tools == o.tools and legacy.tool_choice == ToolChoice("function", "f")
    fmt = _chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True,
                                                                         "schema": {"type": "object"}}})
    assert fmt.response_format.strict and fmt.response_format.schema_dict == {"type": "object"} and fmt.constrained
    assert not _chat(response_format={"type": "text"}).constrained


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"logprobs": 6}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": 1, "echo": True}, "logprobs"),
        ({"best_of": 3}, "best_of"),
        ({"best_of": 21, "n": 21}, "best_of"),
        ({"suffix": "end"}, "suffix"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"stop": ["a", ""]}, "stop"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
    ],
)
def test_legacy_to_options_names_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _legacy(**body)
    assert info.value.param == param


def test_legacy_to_options_maps_the_fields() -> None:
    assert _legacy().max_tokens == 16  # OpenAI's default for /v1/completions
    o = _legacy(logprobs=3, max_tokens=5)
    assert (o.logprobs, o.top_logprobs, o.max_tokens) == (True, 3, 5)
    zero = _legacy(logprobs=0)
    assert (zero.logprobs, zero.top_logprobs) == (True, 0)
    assert _legacy(best_of=2, n=2).n == 2 and _legacy(best_of=1, echo=True).logprobs is False


def test_the_schemathesis_5xx_body_is_accepted_and_samples() -> None:
    """POST /v1/completions {"prompt": "hello", "repetition_penalty": 5e-324, "top_p": 0.0} was a 500."""
    for vocab in (50, 300, 1000):
        for top_p in (0.0, 0.5, 1.0):
            sampler = Sampler(_legacy(repetition_penalty=5e-324, top_p=top_p, seed=1))
            logits = np.random.default_rng(0).normal(size=vocab).astype(np.float32) * 4
            sampler.remember_prompt(list(range(0, vocab, 3)))
            for _ in range(5):
                token = sampler.choose(logits)
                assert 0 <= token < vocab
                sampler.remember(token)


def test_wire_schema_shows_the_ranges_of_runtime_options() -> None:
    props = msgspec.json.schema(ChatCompletionRequest)["$defs"]["ChatCompletionRequest"]["properties"]
    assert props["temperature"]["anyOf"][0] == {"type": "number", **json_schema("temperature")}
    assert props["n"]["anyOf"][0] == {"type": "integer", **json_schema("n")}


# ---------------------------------------------------------------- the server's one error table


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (InvalidRequest("bad", param="n"), 400, "invalid_request_error", None),
        (ContextLengthExceeded("long", param="messages"), 400, "invalid_request_error", "context_length_exceeded"),
        (TemplateError("no template"), 400, "invalid_request_error", None),
        (ModelNotFound("who", param="model"), 404, "invalid_request_error", "model_not_found"),
        (ModelLoadError("broken"), 500, "server_error", "model_load_error"),
        (GenerationError("generation failed: x"), 500, "server_error", "generation_failed"),
        (ConversionError("no"), 500, "server_error", "conversion_failed"),
        (ToolchainError("no"), 500, "server_error", "toolchain_failed"),
        (OnnxgError("plain"), 400, "invalid_request_error", None),
    ],
)
def test_server_maps_each_error_class_once(error: OnnxgError, status: int, type_: str, code: str | None) -> None:
    api = from_onnxg(error)
    assert (api.status, api.type, api.code, api.param) == (status, type_, code, error.param)
    body = json.loads(api.encode())
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_runtime_errors_carry_no_http() -> None:
    for cls in STATUS:
        assert not hasattr(cls, "status") and not hasattr(cls, "type"), cls
    hinted = from_onnxg(InvalidRequest("bad", hint="try this"))
    assert hinted.message == "bad (try this)"


# ---------------------------------------------------------------- sampling stays finite

_FLOATS = [5e-324, 1e-300, 1e-12, 1e-6, 0.3, 1.0]
_SPECIAL = [np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 0.0]


@st.composite
def _options(draw: st.DrawFn) -> GenerationOptions:
    return GenerationOptions(
        temperature=draw(st.sampled_from([0.0, *_FLOATS, 2.0]) | st.floats(0.0, 2.0)),
        top_p=draw(st.sampled_from([0.0, *_FLOATS]) | st.floats(0.0, 1.0)),
        top_k=draw(st.sampled_from([0, 1, 2, 5, 299, 300, 301, 10**9])),
        repetition_penalty=draw(st.sampled_from([*_FLOATS, 1.5, 10.0]) | st.floats(5e-324, 10.0)),
        presence_penalty=draw(st.sampled_from([-2.0, 0.0, 2.0]) | st.floats(-2.0, 2.0)),
        frequency_penalty=draw(st.sampled_from([-2.0, 0.0, 2.0]) | st.floats(-2.0, 2.0)),
        seed=draw(st.integers(-(2**70), 2**70)),
    )


@st.composite
def _logits(draw: st.DrawFn) -> np.ndarray:
    vocab = draw(st.sampled_from([1, 2, 7, 300, 600]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = (rng.normal(size=vocab) * draw(st.sampled_from([1.0, 30.0, 1e30]))).astype(np.float32)
    shape = draw(st.sampled_from(["plain", "special", "all -inf", "all nan", "all +inf", "one finite"]))
    if shape == "special":
        where = rng.integers(0, vocab, size=max(1, vocab // 10))
        logits[where] = rng.choice(_SPECIAL, size=where.shape[0])
    elif shape == "all -inf":
        logits[:] = -np.inf
    elif shape == "all nan":
        logits[:] = np.nan
    elif shape == "all +inf":
        logits[:] = np.inf
    elif shape == "one finite":
        logits[:] = -np.inf
        logits[rng.integers(0, vocab)] = 1.0
    return logits


@settings(max_examples=300, deadline=None, database=None)
@given(options=_options(), logits=_logits(), seen=st.lists(st.integers(0, 700), max_size=12))
def test_every_accepted_option_samples_a_valid_token(
    options: GenerationOptions, logits: np.ndarray, seen: list[int]
) -> None:
    sampler = Sampler(options, row=1)
    sampler.remember_prompt(seen)
    with np.errstate(invalid="raise"):  # no NaN is made on the way either
        for _ in range(3):
            token = sampler.choose(logits)
            assert 0 <= token < logits.shape[0]
            sampler.remember(token)
        assert not np.isnan(log_softmax(logits)).any()


def test_infinite_scores_win_and_dead_rows_still_answer() -> None:
    logits = np.array([0.0, np.inf, -1.0, np.inf, np.nan], dtype=np.float32)
    sampler = Sampler(GenerationOptions(seed=1))
    assert {sampler.choose(logits) for _ in range(50)} == {1, 3}
    assert Sampler(GenerationOptions(temperature=0)).choose(np.array([np.nan, 1.0], dtype=np.float32)) == 1
    logits = np.random.default_rng(3).normal(size=500).astype(np.float32) * 3
    cold = Sampler(GenerationOptions(temperature=5e-324, seed=3))
    assert {cold.choose(logits) for _ in range(20)} == {int(np.argmax(logits))}  # near 0: near greedy
    dead = np.full(4, -np.inf, dtype=np.float32)
    assert 0 <= Sampler(GenerationOptions(seed=2)).choose(dead) < 4
