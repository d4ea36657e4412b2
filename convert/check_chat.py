"""Checks on an onnxruntime-genai chat model folder."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from onnxg.convert.check import (
    SAMPLE_CONVERSATION,
    SAMPLE_TEXT,
    _Checks,
    _load_json,
    _Stop,
    _short,
)
from onnxg.convert.check_onnx import check_operators, check_weights
from onnxg.runtime import layout

RECONVERT = "convert it again with `onnxg convert SOURCE`"
MANGLED = ("Ġ", "Ċ", "▁", "âĢ")


def check_chat(checks: _Checks, found: layout.Layout, run: bool) -> None:
    folder = found.folder
    missing = found.issue(layout.GENAI_CONFIG)
    if missing is not None:  # a decoder graph without its genai_config.json
        checks.require(missing.topic, False, missing.detail, missing.hint)
    config = _check_config(checks, folder)
    _check_model_type(checks, folder, config)
    _check_files(checks, folder, config)
    _check_tokenizer_files(checks, folder)
    _check_round_trip(checks, folder, config.get("model", {}).get("vocab_size"))
    _check_template(checks, folder)
    _check_limits(checks, config)
    _check_special_tokens(checks, folder, config)
    if run:
        _run_generation(checks, folder, config)


def _check_config(checks: _Checks, folder: Path) -> dict[str, Any]:
    path = folder / layout.GENAI_CONFIG
    try:
        config = _load_json(path)
    except (OSError, ValueError) as exc:
        checks.require("genai_config.json", False, f"not valid JSON: {_short(exc)}", f"fix the file, or {RECONVERT}")
        raise _Stop from None
    model = config.get("model") if isinstance(config, dict) else None
    problems = []
    if not isinstance(model, dict):
        problems.append("no 'model' section")
    else:
        if not isinstance(model.get("type"), str):
            problems.append("no model.type")
        decoder = model.get("decoder")
        if not isinstance(decoder, dict) or not isinstance(decoder.get("filename"), str):
            if not (isinstance(decoder, dict) and decoder.get("pipeline")):
                problems.append("no model.decoder.filename")
    checks.require("genai_config.json", not problems,
                   "; ".join(problems) if problems else f"model.type {model['type']!r}",  # type: ignore[index]
                   f"genai_config.json is incomplete: {RECONVERT}" if problems else None)
    return config


def og_version() -> str:
    import onnxruntime_genai as og

    return getattr(og, "__version__", "?")


def _check_model_type(checks: _Checks, folder: Path, config: dict[str, Any]) -> None:
    """Ask the installed onnxruntime-genai itself: load a copy of the config with no weights.

    An unknown type fails with "Unsupported model_type" before any file is opened; a known
    one gets as far as looking for its ONNX file. This needs no list kept in sync by hand.
    """
    import onnxruntime_genai as og

    model_type = config["model"]["type"]
    version = og_version()
    with tempfile.TemporaryDirectory(prefix="onnxg-check-") as tmp:
        (Path(tmp) / "genai_config.json").write_text(json.dumps(config), encoding="utf-8")
        try:
            og.Model(tmp)
        except Exception as exc:  # noqa: BLE001 - og raises RuntimeError with C++ text
            text = str(exc)
            if "Unsupported model_type" in text or "unsupported model_type" in text.lower():
                checks.add("model type", False, f"{model_type!r} is not supported by onnxruntime-genai {version}",
                           "upgrade onnxruntime-genai (pip install -U onnxruntime-genai), or convert again with "
                           "the installed builder so genai_config.json names a type it knows")
                return
            if "JSON Error" in text or "Error encountered while parsing" in text:
                reason = text.split("JSON Error:", 1)[-1].strip() if "JSON Error:" in text else _short(exc)
                checks.add("model type", False,
                           f"onnxruntime-genai {version} rejects genai_config.json: {reason[:200]}",
                           "a key it does not know or a value of the wrong type (a config written for another "
                           f"version?): {RECONVERT} with the installed builder")
                return
    checks.add("model type", True, f"{model_type!r} (onnxruntime-genai {version})")


def _filenames(node: Any) -> list[str]:
    """Every file genai_config.json names (decoder, embedding, vision, pipeline stages, ...)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "filename" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_filenames(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_filenames(value))
    return found


def _check_files(checks: _Checks, folder: Path, config: dict[str, Any]) -> None:
    names = list(dict.fromkeys(_filenames(config.get("model", {}))))
    missing = [n for n in names if not (folder / n).is_file()]
    checks.require("model files", not missing,
                   f"missing {', '.join(missing)}" if missing else ", ".join(names),
                   f"genai_config.json names files that are not here: copy them, or {RECONVERT}" if missing else None)
    for name in names:
        if name.endswith(".onnx"):
            info = check_weights(checks, folder, folder / name)
            if info is None:
                raise _Stop
            check_operators(checks, info, label=name)
            _check_attention(checks, config, info, name)


def _providers(config: dict[str, Any]) -> list[str]:
    options = config.get("model", {}).get("decoder", {}).get("session_options", {}).get("provider_options", [])
    return [key for entry in options if isinstance(entry, dict) for key in entry] or ["cpu"]


def _check_attention(checks: _Checks, config: dict[str, Any], info: Any, name: str) -> None:
    """ONNX Runtime's CPU GroupQueryAttention kernel refuses a head size that is not a multiple of 16.

    The builder emits GroupQueryAttention for every CPU model, so such a model converts and loads
    but fails on its first token (h2o-danube3-4b: hidden 3840 / 32 heads = 120).
    """
    if ("com.microsoft", "GroupQueryAttention") not in info.ops or "cpu" not in _providers(config):
        return
    head_size = config.get("model", {}).get("decoder", {}).get("head_size")
    if isinstance(head_size, int) and head_size % 16:
        checks.add("attention", False,
                   f"{name}: GroupQueryAttention with head_size {head_size}, not a multiple of 16 "
                   "(ONNX Runtime's CPU kernel refuses it on the first token)",
                   "no builder option avoids GroupQueryAttention on CPU: this model cannot run on the CPU "
                   "execution provider with this onnxruntime")
    elif isinstance(head_size, int):
        checks.add("attention", True, f"GroupQueryAttention, head_size {head_size}")


def _check_tokenizer_files(checks: _Checks, folder: Path) -> None:
    has_model = (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()
    has_config = (folder / "tokenizer_config.json").is_file()
    missing = [n for n, ok in (("tokenizer.json or tokenizer.model", has_model), ("tokenizer_config.json", has_config)) if not ok]
    present = [n for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json") if (folder / n).is_file()]
    checks.require("tokenizer files", not missing,
                   f"missing {' and '.join(missing)}" if missing else ", ".join(present),
                   "copy the tokenizer files of the source model next to genai_config.json" if missing else None)


class _OgTokenizer:
    """The tokenizer onnxruntime-genai itself uses, without loading the model's weights."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime_genai as og

        self._tok = og.Tokenizer(og.Config(str(folder)))  # tokenizer only, no ONNX session

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self._tok.encode(text)]

    def decode(self, ids: list[int]) -> str:
        import numpy as np

        return self._tok.decode(np.asarray(ids, dtype=np.int32))


def _decoder_kinds(folder: Path) -> set[str]:
    try:
        decoder = _load_json(folder / "tokenizer.json").get("decoder") or {}
    except (OSError, ValueError, AttributeError):
        return set()
    parts = decoder.get("decoders", [decoder]) if isinstance(decoder, dict) else []
    return {str(p.get("type")) for p in parts if isinstance(p, dict)}


def _check_round_trip(checks: _Checks, folder: Path, vocab_size: Any) -> _OgTokenizer | None:
    try:
        tok = _OgTokenizer(folder)
        ids = tok.encode(SAMPLE_TEXT)
        back = tok.decode([i for i in ids if i >= 0])
    except Exception as exc:  # noqa: BLE001 - og raises RuntimeError with C++ text
        checks.add("tokenizer", False, f"onnxruntime-genai cannot load the tokenizer: {_short(exc)}",
                   "tokenizer.json/tokenizer_config.json are damaged or of a kind onnxruntime-genai cannot read: "
                   "copy them from the source model (saved with transformers 5)")
        return None
    if back.strip() == SAMPLE_TEXT.strip() and all(i >= 0 for i in ids):
        checks.add("tokenizer", True, f"round trip of a sample text is faithful ({len(ids)} tokens)")
        return tok
    invalid = [i for i in ids if i < 0 or (isinstance(vocab_size, int) and i >= vocab_size)]
    mangled = [m for m in MANGLED if m in back and m not in SAMPLE_TEXT]
    kinds = _decoder_kinds(folder)
    if invalid or mangled or {"ByteFallback", "ByteLevel"} <= kinds:
        what = (f"{len(invalid)} of {len(ids)} token ids are invalid ({sorted(set(invalid))[:3]})" if invalid
                else f"byte-level markers {' '.join(mangled)} leak into the text" if mangled else "the text changes")
        checks.add("tokenizer", False, f"onnxruntime-genai mangles spaces and newlines: {what}; decodes as {back[:50]!r}",
                   "tokenizer.json's decoder mixes ByteFallback with ByteLevel (what transformers 4.57 writes for a "
                   "byte-level BPE, e.g. from a GGUF): save the tokenizer with transformers 5, or " + RECONVERT)
    else:
        checks.add("tokenizer", False, f"decode(encode(text)) differs: {back[:60]!r}",
                   "the tokenizer loses text (normalizer or missing byte fallback): answers will be garbled; "
                   "check tokenizer.json against the source model")
    return tok


def _check_template(checks: _Checks, folder: Path) -> None:
    try:
        render = _renderer(folder)
    except LookupError as exc:
        checks.add("chat template", False, str(exc),
                   "add chat_template.jinja (or chat_template in tokenizer_config.json), or pass --chat-template FILE")
        return
    except Exception as exc:  # noqa: BLE001 - template syntax errors come from jinja2
        checks.add("chat template", False, f"does not parse: {_short(exc)}",
                   "fix chat_template.jinja / tokenizer_config.json's chat_template, or pass --chat-template FILE")
        return
    try:
        text = render(SAMPLE_CONVERSATION)
        no_system = False
    except Exception as first:  # noqa: BLE001
        try:
            text = render(SAMPLE_CONVERSATION[1:])
            no_system = True
        except Exception:  # noqa: BLE001
            checks.add("chat template", False, f"fails on a sample conversation: {_short(first)}",
                       "fix chat_template.jinja / tokenizer_config.json's chat_template, or pass --chat-template FILE")
            return
    if not all(m["content"] in text for m in SAMPLE_CONVERSATION[1:]):
        checks.add("chat template", False, "renders, but drops message text",
                   "the template does not print message['content']: fix it or pass --chat-template FILE")
        return
    if no_system:
        checks.add("chat template", True, f"renders a sample conversation ({len(text)} chars) but rejects system messages",
                   "requests with a system message will fail: use a template that folds it into the first user turn "
                   "(the recipes for Gemma models carry one)")
    else:
        checks.add("chat template", True, f"renders a sample conversation ({len(text)} chars)")


def _renderer(folder: Path) -> Any:
    """A function rendering messages with this folder's template: the chat runtime's own loader and
    renderer, so what passes here renders the same when served."""
    from onnxg.runtime import template as runtime_template

    if runtime_template.find_template(folder) is None:
        raise LookupError("no chat template (no chat_template.jinja, none in tokenizer_config.json)")
    loaded = runtime_template.load_template(folder, None)  # a template that does not parse raises here
    return lambda messages: loaded.render(messages, add_generation_prompt=True)


def _check_limits(checks: _Checks, config: dict[str, Any]) -> None:
    model = config.get("model", {})
    context = model.get("context_length")
    max_length = config.get("search", {}).get("max_length")
    if not isinstance(context, int) or context <= 0:
        checks.add("context length", False, f"model.context_length is {context!r}", f"set it in genai_config.json, or {RECONVERT}")
        return
    if max_length is None:
        checks.add("context length", True, f"context_length {context} (no search.max_length)")
    elif not isinstance(max_length, int) or max_length <= 0 or max_length > context:
        checks.add("context length", False, f"search.max_length {max_length!r} does not fit context_length {context}",
                   f"set search.max_length in genai_config.json to at most {context}")
    else:
        window = _sliding_window(config)
        if window and max_length < window:
            checks.add("context length", False,
                       f"search.max_length {max_length} is below the sliding window ({window} tokens)",
                       f"onnxruntime-genai needs a KV cache of at least the window: set search.max_length to at "
                       f"least {window} in genai_config.json")
        else:
            checks.add("context length", True, f"max_length {max_length} <= context_length {context}")


def _sliding_window(config: dict[str, Any]) -> int:
    """The decoder's sliding window: onnxruntime-genai needs a KV cache at least this long."""
    window = config.get("model", {}).get("decoder", {}).get("sliding_window")
    size = window.get("window_size") if isinstance(window, dict) else None
    return size if isinstance(size, int) and size > 0 else 0


def _tokenizer_ids(folder: Path) -> tuple[set[int], int] | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    data = _load_json(path)
    ids: set[int] = set()
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        ids.update(int(v) for v in vocab.values())
    elif isinstance(vocab, list):
        ids.update(range(len(vocab)))
    ids.update(int(t["id"]) for t in data.get("added_tokens") or [] if isinstance(t, dict) and "id" in t)
    return ids, (max(ids) + 1 if ids else 0)


def _check_special_tokens(checks: _Checks, folder: Path, config: dict[str, Any]) -> None:
    model = config.get("model", {})
    vocab_size = model.get("vocab_size")
    eos = model.get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos]
    wanted = {"eos_token_id": eos_ids, "pad_token_id": [model.get("pad_token_id")]}
    if model.get("bos_token_id") is not None:
        wanted["bos_token_id"] = [model.get("bos_token_id")]
    try:
        known = _tokenizer_ids(folder)
    except (OSError, ValueError, TypeError, KeyError):
        known = None
    problems, shown = [], []
    for key, values in wanted.items():
        for value in values:
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{key} is {value!r}")
            elif isinstance(vocab_size, int) and not 0 <= value < vocab_size:
                problems.append(f"{key} {value} is outside the vocabulary (vocab_size {vocab_size})")
            elif known is not None and value not in known[0]:
                problems.append(f"{key} {value} is not a token of tokenizer.json")
        shown.append(f"{key.split('_')[0]} {values if len(values) > 1 else values[0]}")
    checks.add("special tokens", not problems, "; ".join(problems) if problems else ", ".join(shown),
               "set the right ids in genai_config.json (see the source model's generation_config.json), or "
               f"{RECONVERT}" if problems else None)


def _run_generation(checks: _Checks, folder: Path, config: dict[str, Any]) -> None:
    import numpy as np
    import onnxruntime_genai as og

    try:
        og_config = og.Config(str(folder))
        try:  # keep onnxruntime's own error lines off the terminal: the failure is reported below
            og_config.overlay(json.dumps({"model": {"decoder": {"session_options": {"log_severity_level": 4}}}}))
        except Exception:  # noqa: BLE001 - an older onnxruntime-genai without overlay: noisier, still correct
            pass
        model = og.Model(og_config)
        tokenizer = og.Tokenizer(model)
        ids = tokenizer.encode(SAMPLE_TEXT)
        params = og.GeneratorParams(model)
        # A sliding-window model needs a KV cache of at least the window (see _sliding_window).
        context = config.get("model", {}).get("context_length") or len(ids) + 1
        params.set_search_options(max_length=min(max(len(ids) + 1, _sliding_window(config)), context), do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        del generator
    except Exception as exc:  # noqa: BLE001 - og raises RuntimeError with C++ text
        checks.add("generate", False, f"generating one token failed: {_short(exc)}",
                   "the model does not run with the installed onnxruntime-genai: convert it again with the "
                   "installed builder")
        return
    checks.add("generate", True, f"one token generated (id {token}, {tokenizer.decode(np.asarray([token], dtype=np.int32))!r})")

