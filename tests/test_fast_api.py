"""``onnxg.chat`` and ``onnxg.embed`` on fake models (the fast tier): what the Python API adds
around a model, without onnxruntime. test_host_api.py runs them on real models."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import SCRIPT, FakeChatModel, FakeEmbeddingModel, words

import onnxg
from onnxg.runtime.contracts import Message
from onnxg.runtime.errors import ContextLengthExceeded, InvalidRequest


@pytest.fixture
def chat_model() -> FakeChatModel:
    return FakeChatModel()


def test_chat_answers_with_the_model_given(chat_model: FakeChatModel) -> None:
    assert onnxg.chat("Hi", model=chat_model, temperature=0) == SCRIPT
    assert onnxg.chat("Hi", model=chat_model, temperature=0, max_tokens=2) == "".join(words(SCRIPT)[:2])


def test_chat_streams_pieces_and_frees_the_generation_when_left(chat_model: FakeChatModel) -> None:
    pieces = list(onnxg.chat("Hi", model=chat_model, temperature=0, stream=True))
    assert pieces == words(SCRIPT)
    stream = onnxg.chat("Hi", model=chat_model, temperature=0, stream=True)
    assert next(stream) == words(SCRIPT)[0]
    stream.close()
    assert chat_model.active == 0 and chat_model.cancelled == 1


def test_chat_messages_system_and_seed(chat_model: FakeChatModel) -> None:
    history = [{"role": "user", "content": "Hi"}, Message("assistant", "Hello"), {"role": "user", "content": "Again"}]
    assert onnxg.chat(history, model=chat_model, system="Be brief.", temperature=0) == SCRIPT
    one = onnxg.chat("Hi", model=chat_model, temperature=1.0, seed=3)
    assert one == onnxg.chat("Hi", model=chat_model, temperature=1.0, seed=3)
    assert sorted(words(one)) == sorted(words(SCRIPT))


def test_chat_stop_strings(chat_model: FakeChatModel) -> None:
    assert onnxg.chat("Hi", model=chat_model, temperature=0, stop=["fake"]) == SCRIPT[:SCRIPT.index("fake")]


@pytest.mark.parametrize(("prompt", "options", "param"), [
    ("Hi", {"temperature": 3}, "temperature"),
    ("Hi", {"n": 2}, "n"),
    ("Hi", {"top_p": -0.5}, "top_p"),
    ("Hi", {"stop": ["a"] * 5}, "stop"),
    ("Hi", {"no_such_option": 1}, None),
    ([], {}, "messages"),
    ([{"role": "user"}], {}, "messages[0]"),
    ([42], {}, "messages[0]"),
])
def test_chat_refuses_bad_input_naming_it(chat_model: FakeChatModel, prompt: object, options: dict,
                                          param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        onnxg.chat(prompt, model=chat_model, **options)  # type: ignore[arg-type]
    if param is not None:
        assert caught.value.param == param
    assert chat_model.started == 0  # refused before the model ran


def test_chat_context_length_and_wrong_kind() -> None:
    with pytest.raises(ContextLengthExceeded):
        onnxg.chat("word " * 100, model=FakeChatModel(context_length=8))
    with pytest.raises(InvalidRequest, match="chat model object") as caught:
        onnxg.chat("Hi", model=FakeEmbeddingModel())  # type: ignore[arg-type]
    assert caught.value.param == "model"


def test_embed_one_text_or_many() -> None:
    model = FakeEmbeddingModel()
    one = onnxg.embed("a b", model=model)
    assert one.shape == (8,) and one.dtype == np.float32
    many = onnxg.embed(["a b", "c"], model=model)
    assert many.shape == (2, 8)
    assert np.array_equal(many[0], one) and np.array_equal(one, model.vector(["a", "b"]))


def test_embed_dimensions_renormalise_and_are_checked_first() -> None:
    model = FakeEmbeddingModel()
    full = onnxg.embed("a b", model=model)
    cut = onnxg.embed("a b", model=model, dimensions=3)
    assert np.allclose(cut, full[:3] / np.linalg.norm(full[:3]), atol=1e-6)
    calls = model.calls
    for bad in (0, 9):
        with pytest.raises(InvalidRequest) as caught:
            onnxg.embed("a", model=model, dimensions=bad)
        assert caught.value.param == "dimensions"
    assert model.calls == calls  # refused before the model ran


@pytest.mark.parametrize("texts", [[], [1, "a"], None, ["a", None]])
def test_embed_refuses_what_is_not_text(texts: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        onnxg.embed(texts, model=FakeEmbeddingModel())  # type: ignore[arg-type]
    assert caught.value.param == "input"


def test_embed_refuses_a_chat_model_object() -> None:
    with pytest.raises(InvalidRequest, match="embedding model object"):
        onnxg.embed("a", model=FakeChatModel())  # type: ignore[arg-type]
