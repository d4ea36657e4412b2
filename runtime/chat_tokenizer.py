"""The chat model's tokenizer: Hugging Face ``tokenizers`` when the folder has tokenizer.json
(exactly what transformers uses), onnxruntime-genai's own tokenizer otherwise."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte is written as -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _uses_byte_level(folder: Path) -> bool:
    try:
        decoder = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("decoder") or {}
    except (OSError, ValueError):
        return False
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", []) if isinstance(d, dict)]
    return "ByteLevel" in kinds


class ChatTokenizer:
    def __init__(self, folder: Path, og_model: Any) -> None:
        self._hf: Any = None
        self._og: Any = None
        self._byte_level = False
        self._folder = folder
        self._controls: list[str] = []
        self._plain: Any = None  # the same tokenizer, reading control-token text as plain text
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._byte_level = _uses_byte_level(folder)
            self._controls = [t.content for t in self._hf.get_added_tokens_decoder().values() if t.special]
        else:
            import onnxruntime_genai as og

            self._og = og.Tokenizer(og_model)

    def encode(self, text: str, *, special: bool) -> list[int]:
        """``special``: add BOS/EOS as the tokenizer's post-processor says (raw prompts only;
        a rendered chat template already holds its special tokens)."""
        if self._hf is not None:
            return self._hf.encode(text, add_special_tokens=special).ids
        return [int(i) for i in self._og.encode(text)]

    def encode_chat(self, text: str, literals: Sequence[str]) -> list[int]:
        """A rendered chat prompt's ids, where control tokens come from the template alone.

        ``literals`` are what users, tools and system prompts wrote: a control token's text in
        them ("Hi<|im_end|>\n<|im_start|>system ...") is tokenized as plain text, so nobody can
        forge a turn. Prompts without such text tokenize exactly as transformers does."""
        if self._hf is None:
            return self.encode(text, special=False)
        forged = [t for t in literals if any(c in t for c in self._controls)]
        if not forged:
            return self.encode(text, special=False)
        if self._plain is None:
            from tokenizers import Tokenizer

            plain = Tokenizer.from_file(str(self._folder / "tokenizer.json"))
            plain.encode_special_tokens = True
            self._plain = plain
        ids: list[int] = []
        at = 0
        for literal in forged:
            found = text.find(literal, at)
            if found < 0:
                continue
            if found > at:
                ids += self._hf.encode(text[at:found], add_special_tokens=False).ids
            ids += self._plain.encode(literal, add_special_tokens=False).ids
            at = found + len(literal)
        if at < len(text):
            ids += self._hf.encode(text[at:], add_special_tokens=False).ids
        return ids

    def json_text(self) -> str | None:
        """tokenizer.json as text (what the grammar engine reads), or None without one."""
        path = self._folder / "tokenizer.json"
        return path.read_text(encoding="utf-8") if self._hf is not None and path.is_file() else None

    def token_id(self, text: str) -> int | None:
        return self._hf.token_to_id(text) if self._hf is not None else None

    def decode(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        if self._hf is not None:
            return self._hf.decode(list(ids), skip_special_tokens=False)
        import numpy as np

        return self._og.decode(np.asarray(ids, dtype=np.int32))

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token (part of a character for byte-level tokens), as OpenAI's
        logprobs ``bytes`` report them."""
        if self._hf is not None:
            piece = self._hf.id_to_token(token)
            if piece is not None:
                if self._byte_level:
                    table = _byte_decoder()
                    if all(c in table for c in piece):
                        return bytes(table[c] for c in piece)
                match = _BYTE_TOKEN.match(piece)
                if match:
                    return bytes([int(match.group(1), 16)])
                if not self._byte_level:
                    return piece.replace("\u2581", " ").encode("utf-8")
        return self.decode([token]).encode("utf-8")

    def has_token(self, text: str) -> bool:
        if self._hf is not None:
            return self._hf.token_to_id(text) is not None
        return False

    def vocab_size(self) -> int | None:
        return self._hf.get_vocab_size(with_added_tokens=True) if self._hf is not None else None
