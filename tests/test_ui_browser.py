"""The chat page in a real browser (headless Chromium) against the real app on fake models:
what a user sees and does, and what the server does meanwhile. One test drives a real
``onnxg serve`` process with the real SmolLM2 (model tier). Screenshots of each screen, at a
phone's and a laptop's size, go to the folder printed at the end of the run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browserkit import Screens, launch, wait_until
from fakes import REASONING, SCRIPT, FakeChatModel, FakeEmbeddingModel
from serverkit import AppServer, ServerProcess

pytestmark = pytest.mark.browser

KEY = "sk-ui-3d9a"
OTHER_SCRIPT = "I am the other model."
MARKDOWN = ("Here is **bold** and `inline code`:\n\n```python\nprint('<b>hi</b>')\n```\n\n"
            "- first\n- second <img src=x onerror=window.__pwned=1>\n\n"
            "[safe](https://example.com/) [unsafe](javascript:window.__pwned=2) <script>window.__pwned=3</script>")


@pytest.fixture(scope="module")
def screens(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Screens:
    folder = Path(os.environ.get("ONNXG_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    request.config.onnxg_ui_screenshots = folder  # type: ignore[attr-defined]  # printed by conftest
    return Screens(folder)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {"chat": FakeChatModel(delay=0.01), "slow": FakeChatModel("slow-chat", delay=0.15),
            "other": FakeChatModel("other-chat", script=OTHER_SCRIPT),
            "md": FakeChatModel("markdown-chat", script=MARKDOWN), "embed": FakeEmbeddingModel()}


@pytest.fixture(scope="module")
def server(models: dict[str, Any]) -> Iterator[AppServer]:
    with AppServer(list(models.values())) as srv:
        yield srv


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (empty storage) per test; page errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


def open_chat(page: Any, url: str, model: str | None = None) -> None:
    page.goto(url + "/")
    page.wait_for_selector("#chat-model option", state="attached")
    if model:
        page.select_option("#chat-model", model)
    page.fill("#settings [name=temperature]", "0")  # the fakes answer their script as is at 0


def send(page: Any, text: str) -> Any:
    """Type and send a message; the new assistant reply's element."""
    count = page.locator("article.assistant").count()
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    wait_js(page, f"document.querySelectorAll('article.assistant').length > {count}")
    return page.locator("article.assistant").nth(count)


def wait_js(page: Any, expression: str, timeout: float = 15.0) -> Any:
    """Poll a JavaScript expression until it is truthy (page.wait_for_function would eval inside
    the page, which the page's Content-Security-Policy rightly forbids)."""
    return wait_until(lambda: page.evaluate(expression), timeout, what=expression)


def finished(reply: Any) -> None:
    reply.locator(".stats:not(:empty)").wait_for()


# ---------------------------------------------------------------- chat


def test_a_message_streams_in_and_the_conversation_survives_a_reload(page: Any, server: AppServer,
                                                                      screens: Screens) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#chat-model option", state="attached")
    assert "Chat with fake-chat" in page.inner_text("#messages")
    screens.shoot(page, "chat-empty")
    page.fill("#settings [name=temperature]", "0")
    reply = send(page, "Hello there")
    page.wait_for_selector("article.assistant.streaming", state="detached")
    finished(reply)
    assert reply.locator(".body").inner_text().strip() == SCRIPT
    stats = reply.locator(".stats").inner_text()
    assert f"{len(SCRIPT.split())} tokens" in stats and "tok/s" in stats and "first token" in stats
    assert page.locator("#conv-list .conv-title").all_inner_texts() == ["Hello there"]
    screens.shoot(page, "chat-reply")
    page.reload()
    page.wait_for_selector("article.assistant")
    assert page.locator("#conv-list .conv-title").all_inner_texts() == ["Hello there"]
    assert page.locator("article.user .body").inner_text() == "Hello there"
    assert page.locator("article.assistant .body").inner_text().strip() == SCRIPT
    assert page.locator("#settings [name=temperature]").input_value() == "0"  # settings kept too


def test_stop_cancels_the_generation_on_the_server(page: Any, server: AppServer, models: dict[str, Any],
                                                   screens: Screens) -> None:
    slow = models["slow"]
    started, cancelled = slow.started, slow.cancelled
    open_chat(page, server.url, "slow-chat")
    reply = send(page, "Tell me everything")
    wait_js(page, "document.querySelector('article.assistant .body').innerText.split(' ').length >= 3")
    assert slow.active == 1
    screens.shoot(page, "chat-streaming")
    assert page.is_visible("#stop") and not page.is_visible("#send")
    page.click("#stop")
    finished(reply)
    wait_until(lambda: slow.active == 0 and slow.cancelled == cancelled + 1, what="the generation to be cancelled")
    assert slow.started == started + 1
    assert "stopped" in reply.locator(".stats").inner_text()
    shown = reply.locator(".body").inner_text().strip()
    assert shown and SCRIPT.startswith(shown) and len(shown) < len(SCRIPT)
    assert page.is_visible("#send") and not page.is_visible("#stop")


def test_model_output_is_rendered_as_markdown_without_html_injection(page: Any, server: AppServer,
                                                                     screens: Screens) -> None:
    open_chat(page, server.url, "markdown-chat")
    reply = send(page, "Show me some markdown")
    finished(reply)
    body = reply.locator(".body")
    assert body.locator("strong").inner_text() == "bold"
    assert body.locator("pre code").inner_text() == "print('<b>hi</b>')"
    assert body.locator("li").count() == 2
    assert body.locator("a").count() == 1 and body.locator("a").get_attribute("href") == "https://example.com/"
    assert body.locator("img, script, b").count() == 0
    assert "<img src=x" in body.inner_text() and "<script>" in body.inner_text()
    assert page.evaluate("window.__pwned") is None
    screens.shoot(page, "chat-markdown")


def test_a_setting_the_server_refuses_is_shown_with_its_name(page: Any, server: AppServer) -> None:
    open_chat(page, server.url)
    page.fill("#settings [name=temperature]", "7")
    reply = send(page, "Hello")
    reply.locator(".error").wait_for()
    assert "temperature" in reply.locator(".error").inner_text()
    page.fill("#settings [name=temperature]", "0")
    page.locator("article.assistant").get_by_role("button", name="Regenerate").click()
    page.wait_for_selector("article.assistant .stats:not(:empty)")
    assert page.locator("article.assistant .body").inner_text().strip() == SCRIPT
    assert page.locator("article.assistant .error").is_hidden()


def test_json_schema_mode_and_tools(page: Any, server: AppServer, screens: Screens) -> None:
    """The page's output format and tools reach the server as response_format and tools: a
    schema-shaped JSON reply, then a streamed tool call shown apart from the text, then a tools
    setting that is not JSON said plainly."""
    import json

    open_chat(page, server.url)
    page.select_option("#settings [name=format]", "json_schema")
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    page.fill("#settings [name=schema]", json.dumps(schema))
    reply = send(page, "Where?")
    finished(reply)
    assert set(json.loads(reply.locator(".body").inner_text())) == {"city"}
    page.select_option("#settings [name=format]", "text")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    page.fill("#settings [name=tools]", json.dumps(tools))
    page.select_option("#settings [name=tool_choice]", "required")
    reply = send(page, "CALL:get_weather")
    finished(reply)
    calls = reply.locator(".tool-calls")
    assert calls.is_visible() and calls.inner_text().startswith("→ get_weather(")
    json.loads(calls.inner_text()[len("→ get_weather("):-1])  # the arguments are JSON
    screens.shoot(page, "chat-tools")
    page.fill("#settings [name=tools]", "[not json")
    reply = send(page, "Again")
    reply.locator(".error").wait_for()
    assert "Tools is not JSON" in reply.locator(".error").inner_text()


def test_switching_models(page: Any, server: AppServer) -> None:
    open_chat(page, server.url)
    first = send(page, "Who are you?")
    finished(first)
    page.select_option("#chat-model", "other-chat")
    second = send(page, "And now?")
    finished(second)
    assert first.locator(".who").inner_text() == "fake-chat"
    assert second.locator(".who").inner_text() == "other-chat"
    assert second.locator(".body").inner_text().strip() == OTHER_SCRIPT
    page.reload()
    page.wait_for_selector("#chat-model option", state="attached")
    assert page.locator("#chat-model").input_value() == "other-chat"


def test_reasoning_is_shown_folded(page: Any, server: AppServer) -> None:
    open_chat(page, server.url)
    reply = send(page, "THINK first, then answer")
    finished(reply)
    reasoning = reply.locator("details.reasoning")
    assert reasoning.is_visible() and reasoning.get_attribute("open") is None
    assert not reply.locator(".reasoning-body").is_visible()
    reasoning.locator("summary").click()
    assert reply.locator(".reasoning-body").inner_text().strip() == REASONING
    assert reply.locator(".body").inner_text().strip() == SCRIPT


def test_regenerate_edit_rename_and_delete(page: Any, server: AppServer, models: dict[str, Any]) -> None:
    chat = models["chat"]
    open_chat(page, server.url)
    finished(send(page, "First question"))
    before = chat.started
    page.locator("article.assistant").get_by_role("button", name="Regenerate").click()
    page.wait_for_selector("article.assistant .stats:not(:empty)")
    assert chat.started == before + 1 and page.locator("article").count() == 2
    page.locator("article.user").get_by_role("button", name="Edit").click()
    page.fill("article.user textarea.edit", "A better question")
    page.press("article.user textarea.edit", "Enter")
    page.wait_for_selector("article.assistant .stats:not(:empty)")
    assert chat.started == before + 2
    assert page.locator("article.user .body").inner_text() == "A better question"
    page.get_by_role("button", name="Rename First question").click()
    page.fill("#conv-list input.rename", "My renamed chat")
    page.press("#conv-list input.rename", "Enter")
    assert page.locator("#conv-list .conv-title").all_inner_texts() == ["My renamed chat"]
    page.click("#new-chat")
    finished(send(page, "Second conversation"))
    page.reload()
    page.wait_for_selector("#conv-list .conv-title")
    assert page.locator("#conv-list .conv-title").all_inner_texts() == ["Second conversation", "My renamed chat"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete Second conversation").click()
    assert page.locator("#conv-list .conv-title").all_inner_texts() == ["My renamed chat"]
    assert page.locator("article.user .body").inner_text() == "A better question"  # the one left opens
    page.reload()
    page.wait_for_selector("#conv-list .conv-title")
    assert page.locator("#conv-list .conv-title").all_inner_texts() == ["My renamed chat"]


def test_keyboard_only(page: Any, server: AppServer, models: dict[str, Any]) -> None:
    slow = models["slow"]
    page.goto(server.url + "/")
    page.wait_for_selector("#chat-model option", state="attached")
    focused = "document.activeElement.id"
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "tab-chat"
    page.keyboard.press("ArrowRight")
    assert page.is_visible("#view-embed") and page.evaluate(focused) == "tab-embed"
    page.keyboard.press("ArrowLeft")
    assert page.is_visible("#view-chat")
    visited = []
    for _ in range(40):
        visited.append(page.evaluate(focused))
        if visited[-1] == "chat-model":
            page.keyboard.press("ArrowDown")  # the next model: slow-chat
        if visited[-1] == "prompt":
            break
        page.keyboard.press("Tab")
    assert visited[-1] == "prompt" and "new-chat" in visited and "chat-model" in visited, visited
    assert page.locator("#chat-model").input_value() == "slow-chat"
    cancelled = slow.cancelled
    page.keyboard.type("Typed without a mouse")
    page.keyboard.press("Enter")
    wait_js(page, "(document.querySelector('article.assistant .body') || {innerText: ''}).innerText.length > 5")
    page.keyboard.press("Escape")
    page.wait_for_selector("article.assistant .stats:not(:empty)")
    assert "stopped" in page.inner_text("article.assistant .stats")
    wait_until(lambda: slow.cancelled == cancelled + 1 and slow.active == 0, what="the generation to be cancelled")


def test_light_and_dark(browser: Any, server: AppServer, screens: Screens) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_selector("#chat-model option", state="attached")
        background = "getComputedStyle(document.body).backgroundColor"
        dark = page.evaluate(background)
        screens.shoot(page, "chat-dark")
        page.click("#theme-button")
        light = page.evaluate(background)
        assert dark != light and _brightness(dark) < 80 < 200 < _brightness(light)
        page.reload()
        page.wait_for_selector("#chat-model option", state="attached")
        assert page.evaluate(background) == light  # the choice is kept
    finally:
        context.close()


def _brightness(css: str) -> float:
    r, g, b = (int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return (r + g + b) / 3


# ---------------------------------------------------------------- embeddings and status


def test_embeddings_tab(page: Any, server: AppServer, models: dict[str, Any], screens: Screens,
                        tmp_path: Path) -> None:
    embed = models["embed"]
    texts = ["a cat sat on the mat", "a dog slept on the rug", "stocks fell today", "the cat sat"]
    upload = tmp_path / "lines.txt"
    upload.write_text("\n".join(texts) + "\n\n")
    page.goto(server.url + "/#embed")
    page.wait_for_selector("#embed-model option", state="attached")
    page.set_input_files("#embed-file", str(upload))
    wait_js(page, "document.querySelector('#embed-input').value.length > 0")
    assert page.input_value("#embed-input").split("\n") == texts
    page.click("#embed-run")
    page.wait_for_selector("#neighbours li")
    assert page.is_visible("#heatmap")
    assert page.locator("#neighbours li").count() == len(texts)
    vectors = np.stack([embed.vector(t.split()) for t in texts])
    sims = vectors @ vectors.T
    best = int(np.argsort(-sims[0])[1])
    assert page.locator("#neighbours li").first.locator("q").nth(1).inner_text() == texts[best]
    with page.expect_download() as download:
        page.click("#embed-npy")
    saved = tmp_path / "e.npy"
    download.value.save_as(saved)
    np.testing.assert_allclose(np.load(saved), vectors, rtol=1e-6)
    with page.expect_download() as download:
        page.click("#embed-jsonl")
    download.value.save_as(tmp_path / "e.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == texts and rows[0]["model"] == "fake-embed"
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), vectors, rtol=1e-6)
    screens.shoot(page, "embeddings")


def test_status_tab(page: Any, server: AppServer, screens: Screens) -> None:
    page.goto(server.url + "/#status")
    page.wait_for_selector("#status-models tr", state="attached")
    rows = [r.split("\t") for r in page.locator("#status-models tr").all_inner_texts()]
    assert ["fake-chat", "chat", "256", "–"] in rows and ["fake-embed", "embedding", "32", "8"] in rows
    metrics = page.inner_text("#status-metrics")
    assert "Requests answered" in metrics and server.url in metrics
    screens.shoot(page, "status")


# ---------------------------------------------------------------- failures, key, CORS


def test_a_clear_message_when_the_server_is_down(page: Any, screens: Screens) -> None:
    down = AppServer([FakeChatModel()]).start()
    try:
        open_chat(page, down.url)
    finally:
        down.stop()
    reply = send(page, "Anyone there?")
    reply.locator(".error").wait_for()
    assert f"Cannot reach the onnxg server at {down.url}" in reply.locator(".error").inner_text()
    assert page.inner_text("#conn") == "offline"
    screens.shoot(page, "server-down")
    page.click("#tab-status")
    page.wait_for_selector("#status-when.error")
    assert "Cannot reach the onnxg server" in page.inner_text("#status-when")


def test_the_page_asks_for_the_key_and_says_when_it_is_wrong(page: Any, screens: Screens) -> None:
    with AppServer([FakeChatModel()], api_key=KEY) as srv:
        page.goto(srv.url + "/")
        page.wait_for_selector("#key-dialog[open]")
        screens.shoot(page, "api-key")
        page.fill("#key-input", "sk-wrong")
        page.click("#key-save")
        wait_js(page, "document.querySelector('#key-reason').textContent.includes('refused')")
        page.keyboard.press("Escape")  # cancel: the page says what is wrong
        page.wait_for_selector("#banner:not([hidden])")
        assert "API key" in page.inner_text("#banner")
        assert page.inner_text("#conn") == "key needed"
        page.click("#key-button")
        page.fill("#key-input", KEY)
        page.press("#key-input", "Enter")
        page.wait_for_selector("#chat-model option", state="attached")
        assert page.is_hidden("#banner")
        assert page.evaluate(f"sessionStorage.getItem('onnxg.apiKey {srv.url}')") == KEY
        assert KEY not in page.evaluate("JSON.stringify(localStorage)")
        page.fill("#settings [name=temperature]", "0")
        reply = send(page, "Hello with a key")
        finished(reply)
        assert reply.locator(".body").inner_text().strip() == SCRIPT


def test_the_page_can_talk_to_another_server_that_allows_its_origin(page: Any, server: AppServer) -> None:
    with AppServer([FakeChatModel("remote-chat", script=OTHER_SCRIPT)], cors_origins=[server.url]) as remote:
        page.goto(f"{server.url}/?api={remote.url}")
        page.wait_for_selector("#chat-model option", state="attached")
        assert page.locator("#chat-model option").all_inner_texts() == ["remote-chat (256 tokens)"]
        page.fill("#settings [name=temperature]", "0")
        reply = send(page, "Hello over CORS")
        finished(reply)
        assert reply.locator(".body").inner_text().strip() == OTHER_SCRIPT


# ---------------------------------------------------------------- the real model


@pytest.mark.model
def test_real_smollm2_through_onnxg_serve(page: Any, smollm2_model: Path, tmp_path: Path, screens: Screens) -> None:
    with ServerProcess(["--model", str(smollm2_model)], tmp_path / "home") as served:
        assert f"chat page at {served.url}/" in served.log()
        open_chat(page, served.url)
        page.fill("#settings [name=max_tokens]", "24")
        reply = send(page, "What is the capital of France? Answer in one word.")
        finished(reply)
        assert "Paris" in reply.locator(".body").inner_text()
        assert reply.locator(".who").inner_text() == smollm2_model.name
        assert "tok/s" in reply.locator(".stats").inner_text()
        screens.shoot(page, "chat-smollm2")
