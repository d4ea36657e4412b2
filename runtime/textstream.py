"""Turning a stream of token ids into text deltas: detokenizing, stop strings, <think> blocks.

Each piece holds back just enough text to be exact: the detokenizer holds a partial UTF-8
character (decoded as U+FFFD) until the next token completes it; the stop matcher holds the
longest tail that could still become a stop string; the reasoning splitter holds a tail that
could still become ``<think>`` or ``</think>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_REPLACEMENT = "\ufffd"


class Detokenizer:
    """Incremental decoding that never splits a multi-byte character (as vLLM does it).

    ``decode(ids)`` is the tokenizer's own; it is called on a short window of recent ids, with
    an already-decoded prefix, so that tokenizers which add or drop a leading space at the
    start of a decode (SentencePiece) still give the right text.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # ids before this are already emitted

    def add(self, token: int) -> str:
        self._ids.append(token)
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        full_text = self._decode(self._ids[self._prefix:])
        if full_text.endswith(_REPLACEMENT) or len(full_text) < len(prefix_text):
            return ""  # an incomplete character: wait for the next token
        self._prefix, self._read = self._read, len(self._ids)
        return full_text[len(prefix_text):]

    def flush(self) -> str:
        """Whatever is still held at the end (a truly invalid byte sequence)."""
        if self._read == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        full_text = self._decode(self._ids[self._prefix:])
        self._read = len(self._ids)
        return full_text[len(prefix_text):]


def _held_tail(text: str, needles: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of one of ``needles``."""
    best = 0
    for needle in needles:
        for size in range(min(len(needle) - 1, len(text)), best, -1):
            if text.endswith(needle[:size]):
                best = size
                break
    return best


class StopMatcher:
    """Finds stop strings across token boundaries; the stop text itself is never emitted."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._buffer = ""
        self.stopped = False

    def add(self, text: str) -> str:
        """The text that is safe to emit now; sets ``stopped`` when a stop string appears."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self._buffer += text
        hits = [i for i in (self._buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._buffer = self._buffer[:min(hits)], ""
            return out
        keep = _held_tail(self._buffer, self.stops)
        cut = len(self._buffer) - keep
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out

    def flush(self) -> str:
        out, self._buffer = ("" if self.stopped else self._buffer), ""
        return out


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class ReasoningSplitter:
    """Splits ``<think>...</think>`` off the answer: ``add`` gives (reasoning, answer) pieces.

    A ``<think>`` counts only at the start of the output (after whitespace); a prompt that
    already ends inside a think block (the template opened it) starts in reasoning.
    """

    def __init__(self, *, in_reasoning: bool = False) -> None:
        self.in_reasoning = in_reasoning
        self._started = in_reasoning  # past the point where an opening tag may appear
        self._strip_answer = False
        self._buffer = ""

    def add(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning, answer = "", ""
        while self._buffer:
            if not self._started:
                stripped = self._buffer.lstrip()
                if stripped.startswith(THINK_OPEN):
                    self._buffer = stripped[len(THINK_OPEN):]
                    self.in_reasoning = self._started = True
                    continue
                if THINK_OPEN.startswith(stripped):
                    break  # might still become <think>
                self._started = True
                continue
            if self.in_reasoning:
                at = self._buffer.find(THINK_CLOSE)
                if at >= 0:
                    reasoning += self._buffer[:at]
                    self._buffer = self._buffer[at + len(THINK_CLOSE):]
                    self.in_reasoning, self._strip_answer = False, True
                    continue
                keep = _held_tail(self._buffer, [THINK_CLOSE])
                cut = len(self._buffer) - keep
                reasoning += self._buffer[:cut]
                self._buffer = self._buffer[cut:]
                break
            if self._strip_answer:
                self._buffer = self._buffer.lstrip("\n")
                if not self._buffer:
                    break
                self._strip_answer = False
            answer += self._buffer
            self._buffer = ""
        return reasoning, answer

    def flush(self) -> tuple[str, str]:
        rest, self._buffer = self._buffer, ""
        if self.in_reasoning:
            return rest, ""
        return "", rest.lstrip("\n") if self._strip_answer else rest
