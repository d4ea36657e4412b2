"""The chat runtime on the tiny random-weight model: every option, streaming, limits, threads."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnxg.runtime.chat import GenaiChatModel

from onnxg.runtime.contracts import Chunk, Message, Usage

from onnxg.runtime.options import GenerationOptions
from onnxg.runtime.errors import ContextLengthExceeded, InvalidRequest, ModelLoadError, ModelNotFound

HELLO = [Message("user", "Hello! Tell me a story.")]


@pytest.fixture(scope="module")
def llm(tiny_chat_model: Path) -> Iterator[GenaiChatModel]:
    model = GenaiChatModel.load(tiny_chat_model)
    yield model
    model.close()


def _collect(items: list[Chunk | Usage], n: int = 1) -> tuple[list[str], list[str | None], Usage]:
    texts, finish = [""] * n, [None] * n
    assert isinstance(items[-1], Usage) and all(isinstance(i, Chunk) for i in items[:-1])
    for item in items[:-1]:
        texts[item.index] += item.text
        if item.finish_reason:
            assert finish[item.index] is None, "one finish_reason per choice"
            finish[item.index] = item.finish_reason
    return texts, finish, items[-1]


def _sampled(seed: int = 1, **kw: object) -> GenerationOptions:
    kw.setdefault("temperature", 1.0)
    return GenerationOptions(seed=seed, **kw)  # type: ignore[arg-type]


# -- loading --------------------------------------------------------------------------


def test_load_errors_name_what_is_missing(tmp_path: Path, tiny_chat_model: Path) -> None:
    with pytest.raises(ModelNotFound):
        GenaiChatModel.load(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="genai_config.json is missing"):
        GenaiChatModel.load(empty)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_chat_model, broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="model.onnx"):
        GenaiChatModel.load(broken)
    (broken / "genai_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a valid genai_config.json"):
        GenaiChatModel.load(broken)


def test_load_by_store_name(tiny_chat_model: Path, onnxg_home: Path) -> None:
    (onnxg_home / "models").mkdir(parents=True)
    shutil.copytree(tiny_chat_model, onnxg_home / "models" / "tiny-chat")
    with GenaiChatModel.load("tiny-chat") as model:
        assert model.name == "tiny-chat" and model.context_length == 2048
        assert model.complete(HELLO, GenerationOptions(max_tokens=2, temperature=0)).usage.completion_tokens == 2


def test_no_template_needs_an_override(tmp_path: Path, tiny_chat_model: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_chat_model, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with GenaiChatModel.load(bare) as model:
        with pytest.raises(ModelLoadError, match="no chat template"):
            model.render(HELLO)
        assert model.complete("raw text prompt", GenerationOptions(max_tokens=3, temperature=0)).usage.completion_tokens == 3
    with GenaiChatModel.load(bare, chat_template="{% for m in messages %}[{{ m.content }}]{% endfor %}>") as model:
        assert model.render(HELLO) == "[Hello! Tell me a story.]>"


# -- prompts, usage, streaming ---------------------------------------------------------


def test_usage_and_stream_equal_complete(llm: GenaiChatModel) -> None:
    options = GenerationOptions(max_tokens=12, temperature=0)
    result = llm.complete(HELLO, options)
    assert result.usage.prompt_tokens == llm.count_tokens(llm.render(HELLO))
    assert result.usage.completion_tokens == 12 and result.choices[0].finish_reason == "length"
    texts, finish, usage = _collect(list(llm.stream(HELLO, options)))
    assert texts[0] == result.choices[0].text and finish == ["length"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (result.usage.prompt_tokens, result.usage.completion_tokens)
    sampled = _sampled(5, max_tokens=40)
    texts, _, _ = _collect(list(llm.stream(HELLO, sampled)))
    assert texts[0] == llm.complete(HELLO, sampled).choices[0].text


def test_dict_messages_and_raw_prompt(llm: GenaiChatModel) -> None:
    a = llm.complete([{"role": "user", "content": "Hello! Tell me a story."}], _sampled(2, max_tokens=8))
    b = llm.complete(HELLO, _sampled(2, max_tokens=8))
    assert a.choices[0].text == b.choices[0].text
    raw = llm.complete("Once upon a time", _sampled(2, max_tokens=8))
    assert raw.usage.prompt_tokens == llm.count_tokens("Once upon a time")
    with pytest.raises(InvalidRequest) as info:
        llm.complete([Message("wizard", "hi")], GenerationOptions())
    assert info.value.param == "messages"


def test_max_completion_tokens_wins(llm: GenaiChatModel) -> None:
    result = llm.complete(HELLO, GenerationOptions(max_tokens=9, max_completion_tokens=4, temperature=0))
    assert result.usage.completion_tokens == 4


def test_seed_reproducible_and_n_choices(llm: GenaiChatModel) -> None:
    a = llm.complete(HELLO, _sampled(7, max_tokens=20, n=3))
    b = llm.complete(HELLO, _sampled(7, max_tokens=20, n=3))
    c = llm.complete(HELLO, _sampled(8, max_tokens=20, n=3))
    assert [x.text for x in a.choices] == [x.text for x in b.choices]
    assert [x.text for x in a.choices] != [x.text for x in c.choices]
    assert len({x.text for x in a.choices}) == 3  # independent choices
    assert a.usage.completion_tokens == 60 and [x.index for x in a.choices] == [0, 1, 2]


def test_greedy_and_sampling_options(llm: GenaiChatModel) -> None:
    greedy = llm.complete(HELLO, GenerationOptions(max_tokens=10, temperature=0)).choices[0].text
    assert llm.complete(HELLO, GenerationOptions(max_tokens=10, temperature=0)).choices[0].text == greedy
    assert llm.complete(HELLO, _sampled(3, max_tokens=10, top_k=1)).choices[0].text == greedy
    assert llm.complete(HELLO, _sampled(3, max_tokens=10, top_p=0.0)).choices[0].text == greedy
    free = llm.complete(HELLO, _sampled(3, max_tokens=10)).choices[0].text
    assert free != greedy
    assert llm.complete(HELLO, _sampled(3, max_tokens=10, temperature=0.1, top_k=3)).choices[0].text != free


def test_penalties_steer_greedy_output(llm: GenaiChatModel) -> None:
    def tokens(**kw: object) -> list[str]:
        options = GenerationOptions(max_tokens=12, temperature=0, logprobs=True, **kw)  # type: ignore[arg-type]
        prompt = [Message("user", "Hello, who are you?")]
        return [t.token for t in llm.complete(prompt, options).choices[0].logprobs or []]

    plain = tokens()
    # a negative penalty rewards the first token so much that greedy repeats it forever
    assert tokens(presence_penalty=-2.0) == [plain[0]] * 12
    assert tokens(frequency_penalty=-2.0) == [plain[0]] * 12
    # a positive one (far above the random model's logit spread) forbids any repeat
    for kw in ({"presence_penalty": 2.0}, {"frequency_penalty": 2.0}, {"repetition_penalty": 5.0}):
        penalised = tokens(**kw)
        assert len(set(penalised)) == len(penalised), kw
    rewarded = tokens(repetition_penalty=0.05)  # below 1 it rewards what was seen: repeats
    assert len(set(rewarded)) < len(rewarded) and rewarded != plain


def test_logprobs(llm: GenaiChatModel) -> None:
    result = llm.complete(HELLO, _sampled(4, max_tokens=6, logprobs=True, top_logprobs=3))
    entries = result.choices[0].logprobs or []
    assert len(entries) == 6
    assert b"".join(bytes(e.bytes) for e in entries).decode("utf-8") == result.choices[0].text
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0
        values = [t.logprob for t in e.top_logprobs]
        assert values == sorted(values, reverse=True) and e.logprob <= values[0] + 1e-9
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token
        assert all(0 <= b < 256 for b in e.bytes)
    assert llm.complete(HELLO, _sampled(4, max_tokens=3)).choices[0].logprobs is None


def test_streaming_keeps_multibyte_characters_whole(llm: GenaiChatModel) -> None:
    """Rewarding the prompt's tokens (repetition_penalty < 1) makes the random model echo the
    pieces of Japanese and emoji characters; the stream must still match the bytes exactly."""
    prompt = "日本語のテキスト、絵文字 🎉👍🏽 とひらがな。"
    options = _sampled(9, max_tokens=80, top_k=8, repetition_penalty=0.02, logprobs=True)
    chunks = [i for i in llm.stream(prompt, options) if isinstance(i, Chunk)]
    streamed = "".join(c.text for c in chunks)
    raw = b"".join(bytes(e.bytes) for c in chunks for e in (c.logprobs or []))
    assert streamed == raw.decode("utf-8", "replace")  # no character split between chunks
    assert streamed == llm.complete(prompt, options).choices[0].text
    assert sum(1 for ch in streamed if ord(ch) > 0x7FF and ch != "\ufffd") >= 3
    assert any(len(e.bytes) and e.token.endswith("\ufffd") for c in chunks for e in (c.logprobs or []))


# -- stop strings -----------------------------------------------------------------------


def test_stop_strings_across_token_boundaries(llm: GenaiChatModel) -> None:
    base = _sampled(11, max_tokens=30, logprobs=True)
    result = llm.complete(HELLO, base)
    tokens = [t.token for t in result.choices[0].logprobs or []]
    text = result.choices[0].text
    # a stop string made of the end of one token and the start of the next (both non-trivial)
    k = next(i for i in range(3, len(tokens) - 1) if len(tokens[i].strip()) >= 2 and len(tokens[i + 1].strip()) >= 2)
    at = len("".join(tokens[:k])) + len(tokens[k]) - 2
    stop = text[at:at + 4]
    expected = text[: text.find(stop)]
    options = _sampled(11, max_tokens=30, stop=["never-there", stop])
    stopped = llm.complete(HELLO, options)
    assert stopped.choices[0].text == expected and stopped.choices[0].finish_reason == "stop"
    items = list(llm.stream(HELLO, options))
    texts, finish, usage = _collect(items)
    assert texts == [expected] and finish == ["stop"]
    assert not any(stop in i.text for i in items if isinstance(i, Chunk))
    assert usage.completion_tokens == k + 2  # the tokens that made up the text and the stop string


# -- context window --------------------------------------------------------------------


def test_context_overflow(llm: GenaiChatModel) -> None:
    words = " ".join(["word"] * 2100)
    with pytest.raises(ContextLengthExceeded) as info:
        llm.stream([Message("user", words)], GenerationOptions())
    assert info.value.code == "context_length_exceeded" and "2048" in info.value.message
    near = " ".join(["word"] * 2000)
    prompt_tokens = llm.count_tokens(llm.render([Message("user", near)]))
    room = llm.context_length - prompt_tokens
    assert 0 < room < 100
    result = llm.complete([Message("user", near)], GenerationOptions(max_tokens=500, temperature=0))
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == room


# -- reasoning ---------------------------------------------------------------------------


def test_think_block_reported_apart(tiny_chat_model: Path) -> None:
    opened = "{% for m in messages %}{{ m.content }}{% endfor %}\n<think>\n"
    with GenaiChatModel.load(tiny_chat_model, chat_template=opened) as model:
        items = list(model.stream(HELLO, _sampled(6, max_tokens=15)))
        chunks = [i for i in items if isinstance(i, Chunk)]
        assert "".join(c.reasoning for c in chunks) and not "".join(c.text for c in chunks)
        result = model.complete(HELLO, _sampled(6, max_tokens=15))
        assert result.choices[0].reasoning == "".join(c.reasoning for c in chunks)
        assert result.choices[0].text == ""


# -- cancellation and concurrency --------------------------------------------------------


def _wait_idle(llm: GenaiChatModel, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if llm._engine.active_rows == 0:
            return True
        time.sleep(0.01)
    return False


def test_cancel_and_close_free_the_generator(llm: GenaiChatModel) -> None:
    cancel = threading.Event()
    stream = llm.stream(HELLO, _sampled(1, max_tokens=1500), cancel=cancel)
    got = [next(stream) for _ in range(3)]
    assert all(isinstance(g, Chunk) for g in got) and llm._engine.active_rows == 1
    cancel.set()
    assert list(stream) == []
    assert _wait_idle(llm)
    stream = llm.stream(HELLO, _sampled(2, max_tokens=1500, n=2))
    next(stream)
    assert llm._engine.active_rows == 2
    stream.close()
    assert _wait_idle(llm)


def test_eight_threads(llm: GenaiChatModel) -> None:
    prompts = [[Message("user", f"Question number {i}?")] for i in range(8)]
    options = [_sampled(i, max_tokens=25) if i % 2 else GenerationOptions(max_tokens=25, temperature=0) for i in range(8)]
    alone = [llm.complete(p, o).choices[0].text for p, o in zip(prompts, options, strict=True)]
    results: dict[int, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            texts, finish, usage = _collect(list(llm.stream(prompts[i], options[i])))
            assert finish == ["length"] and usage.completion_tokens == 25
            results[i] = texts[0]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert [results[i] for i in range(8)] == alone


def test_concurrent_requests_share_a_batch(llm: GenaiChatModel) -> None:
    options = GenerationOptions(max_tokens=30, temperature=0)
    prompts = [[Message("user", f"Tell me about {w}")] for w in ("cats", "dogs", "owls", "bees")]
    alone = [llm.complete(p, options).choices[0].text for p in prompts]
    llm._engine.peak_batch = 0
    barrier = threading.Barrier(len(prompts))
    texts: dict[int, str] = {}

    def run(i: int) -> None:
        barrier.wait()
        texts[i] = llm.complete(prompts[i], options).choices[0].text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert llm._engine.peak_batch >= 2  # requests sent together ran in one forward pass
    assert [texts[i] for i in range(4)] == alone
