"""`onnxg chat`: one prompt streamed to the terminal, or an interactive session with history."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from onnxg.cli._common import JsonOpt, ModelOpt, err, print_error, print_json, step
from onnxg.runtime.errors import InvalidRequest, OnnxgError

if TYPE_CHECKING:
    from onnxg.runtime.contracts import ChatModel, Message
    from onnxg.runtime.options import GenerationOptions

HELP = (
    "Chat with a local model. With a PROMPT, streams one reply; with no PROMPT, reads it from "
    "stdin when piped, else opens an interactive session (/reset clears the history, /exit or "
    "Ctrl-D leaves)."
)


def register(app: typer.Typer) -> None:
    app.command("chat", help=HELP)(chat)


def chat(
    prompt: Annotated[str | None, typer.Argument(help="The message; omit for an interactive session.")] = None,
    model: ModelOpt = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system message.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Most tokens to generate.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t", help="0 = greedy; default 1.")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling bound (0-1).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Sample from the k best tokens (0 = off).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Same seed, same prompt: same reply.")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop at this text (repeatable, up to 4).")] = None,
    chat_template: Annotated[
        Path | None, typer.Option("--chat-template", help="A Jinja chat template file to use instead of the model's.")
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for the model.")] = None,
    as_json: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Time to first token and tokens/s on stderr.")] = False,
    json_schema: Annotated[
        Path | None, typer.Option("--json-schema", help="Reply with JSON valid for this JSON-schema file (enforced).")
    ] = None,
    json_object: Annotated[bool, typer.Option("--json-object", help="Reply with one JSON object (enforced).")] = False,
) -> None:
    from onnxg.runtime import loading
    from onnxg.runtime.contracts import Message
    from onnxg.runtime.options import GenerationOptions

    options = GenerationOptions.from_openai(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=stop,
        response_format=_response_format(json_schema, json_object),
    )
    if chat_template is not None and not chat_template.is_file():
        raise InvalidRequest(f"chat template file not found: {chat_template}", param="chat_template")
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise InvalidRequest("the prompt from stdin is empty", param="prompt")

    started = time.perf_counter()
    llm = loading.load_chat(_model_ref(model), chat_template=str(chat_template) if chat_template else None,
                            threads=threads)
    if verbose:
        err.print(f"[dim]loaded {escape(llm.name)} in {time.perf_counter() - started:.2f}s[/dim]")
    history: list[Message] = [Message("system", system)] if system else []
    try:
        if prompt is not None:
            messages = [*history, Message("user", prompt)]
            if as_json:
                _print_json(llm, messages, options)
            else:
                _stream_reply(llm, messages, options, verbose)
            return
        if as_json:
            raise InvalidRequest("--json needs a prompt (an argument or stdin)", param="json")
        _interactive(llm, history, options, verbose)
    finally:
        llm.close()


def _model_ref(model: str | None) -> str | Path:
    """The model folder: a store name, a folder, a recipe (converted on first use) or the default."""
    from onnxg.convert import defaults

    return defaults.resolve(model, step) if model else defaults.default_model("chat", step)


def _response_format(schema_file: Path | None, json_object: bool) -> dict[str, Any] | None:
    """``--json-schema FILE`` / ``--json-object`` as OpenAI's response_format."""
    if schema_file is None:
        return {"type": "json_object"} if json_object else None
    if json_object:
        raise InvalidRequest("use --json-schema or --json-object, not both", param="json_schema")
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidRequest(f"cannot read the JSON schema {schema_file}: {exc.strerror}", param="json_schema") from None
    except ValueError as exc:
        raise InvalidRequest(f"{schema_file} is not JSON: {exc}", param="json_schema") from None
    return {"type": "json_schema", "json_schema": {"name": schema_file.stem, "schema": schema, "strict": True}}


def _stream_reply(llm: ChatModel, messages: list[Message], options: GenerationOptions, verbose: bool,
                  cancel: threading.Event | None = None) -> str:
    """Streams the reply to stdout (reasoning dimmed on stderr); returns the answer text."""
    from onnxg.runtime.contracts import Usage

    started = time.perf_counter()
    first: float | None = None
    answer: list[str] = []
    usage = None
    in_reasoning = False
    for item in llm.stream(messages, options, cancel=cancel):
        if isinstance(item, Usage):
            usage = item
            continue
        if first is None and (item.text or item.reasoning):
            first = time.perf_counter()
        if item.reasoning:
            if not in_reasoning:
                err.print("[dim]thinking…[/dim]")
                in_reasoning = True
            err.print(item.reasoning, style="dim", end="", markup=False, highlight=False)
        if item.text:
            if in_reasoning:
                err.print()
                in_reasoning = False
            sys.stdout.write(item.text)
            sys.stdout.flush()
            answer.append(item.text)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if verbose and usage is not None:
        total = time.perf_counter() - started
        ttft = (first or time.perf_counter()) - started
        decode = total - ttft
        rate = (usage.completion_tokens - 1) / decode if decode > 0 and usage.completion_tokens > 1 else 0.0
        err.print(f"[dim]time to first token {ttft * 1000:.0f} ms · {usage.completion_tokens} tokens · "
                  f"{rate:.1f} tokens/s · prompt {usage.prompt_tokens} tokens[/dim]")
    return "".join(answer)


def _print_json(llm: ChatModel, messages: list[Message], options: GenerationOptions) -> None:
    result = llm.complete(messages, options)
    choices: list[dict[str, Any]] = []
    for c in result.choices:
        message: dict[str, Any] = {"role": "assistant", "content": c.text}
        if c.reasoning:
            message["reasoning_content"] = c.reasoning
        choices.append({"index": c.index, "message": message, "finish_reason": c.finish_reason, "logprobs": None})
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": llm.name,
        "choices": choices,
        "usage": {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens,
                  "total_tokens": result.usage.total_tokens},
    }
    print_json(body)


def _interactive(llm: ChatModel, history: list[Message], options: GenerationOptions, verbose: bool) -> None:
    from onnxg.runtime.contracts import Message

    system = list(history)
    err.print(f"[bold]{escape(llm.name)}[/bold] [dim]· /reset clears the history · /exit or Ctrl-D leaves[/dim]")
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            err.print()
            return
        except KeyboardInterrupt:
            err.print()
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return
        if text == "/reset":
            history[:] = system
            err.print("[dim]history cleared[/dim]")
            continue
        history.append(Message("user", line))
        cancel = threading.Event()
        try:
            reply = _stream_reply(llm, history, options, verbose, cancel)
        except KeyboardInterrupt:
            cancel.set()
            sys.stdout.write("\n")
            err.print("[dim]stopped[/dim]")
            history.pop()
            continue
        except OnnxgError as exc:  # e.g. the history outgrew the context: say so, keep going
            history.pop()
            print_error(exc)
            continue
        history.append(Message("assistant", reply))
