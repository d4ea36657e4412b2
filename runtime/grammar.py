"""Constrained decoding: grammars that make a reply follow a JSON schema or a tool-call syntax.

The grammar engine is llguidance (the same engine onnxruntime-genai 0.18 embeds behind
``GeneratorParams.set_guidance``). We use the ``llguidance`` package directly rather than
og's ``set_guidance`` because og applies one guidance per generator, while onnxg batches rows
of different requests in one generator and samples each row in numpy (``sampling.Sampler``):
a ``Constraint`` per row masks that row's scores and advances on that row's tokens.

A grammar is Lark text (``%json {...}`` embeds a JSON schema). Compiling one against a
tokenizer is the costly part, so a pristine matcher per (tokenizer, grammar) is cached and
each row gets a cheap ``deep_copy`` of it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from onnxg.runtime.errors import InvalidRequest

log = logging.getLogger(__name__)

_CACHE_SIZE = 64
JSON_OBJECT: dict[str, Any] = {"type": "object"}
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as canonical JSON text: the grammar cache key, and what Lark's ``%json`` embeds."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_schema(schema: Any, param: str) -> None:
    """InvalidRequest naming ``param`` when the grammar engine cannot compile ``schema``."""
    import llguidance

    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON object (a JSON schema)", param=param)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
        error = llguidance.LLMatcher.validate_grammar(grammar)
    except (ValueError, TypeError) as exc:
        error = str(exc)
    if error:
        raise InvalidRequest(f"{param} is not a JSON schema the grammar engine can enforce: {error}", param=param)


SAFE_INTEGERS = (-(2**53 - 1), 2**53 - 1)  # what JSON's readers all hold exactly (I-JSON, RFC 7493)


def bounded(node: Any) -> Any:
    """``node`` with every integer that has no bound given JSON's safe integer range: a small
    model at temperature 0 otherwise writes digits until max_tokens ("population": 1111111...),
    and a JavaScript client could not read such a number exactly anyway. Everything else is kept
    as given."""
    if isinstance(node, list):
        return [bounded(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: bounded(value) if key not in ("enum", "const", "default", "examples") else value
           for key, value in node.items()}
    kinds = node.get("type")
    if kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds):
        if "minimum" not in node and "exclusiveMinimum" not in node:
            out["minimum"] = SAFE_INTEGERS[0]
        if "maximum" not in node and "exclusiveMaximum" not in node:
            out["maximum"] = SAFE_INTEGERS[1]
    return out


def json_rule(schema: dict[str, Any]) -> str:
    """A Lark rule body that matches one JSON value of ``schema``, written the way Python's
    ``json.dumps`` (and so chat templates' ``tojson``) writes it: ", " and ": ", no newlines;
    integers without bounds kept to JSON's safe range (``bounded``)."""
    return "%json " + schema_text({**bounded(schema), "x-guidance": _JSON_STYLE})


def lark_literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class GrammarTokenizer:
    """A model's tokenizer as llguidance sees it (built once per model: it takes ~0.4 s)."""

    def __init__(self, tokenizer_json: str, eos_ids: list[int], vocab_size: int) -> None:
        import llguidance

        self.tokenizer = llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=list(eos_ids))
        self.vocab_size = self.tokenizer.vocab_size
        self._matchers: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def is_special(self, token: int) -> bool:
        return self.tokenizer.is_special_token(token)

    def constraint(self, lark: str, param: str) -> Constraint:
        """A fresh constraint for one row; InvalidRequest naming ``param`` if it cannot compile."""
        import llguidance

        with self._lock:
            pristine = self._matchers.get(lark)
            if pristine is not None:
                self._matchers.move_to_end(lark)
        if pristine is None:
            grammar = llguidance.LLMatcher.grammar_from_lark(lark)
            pristine = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
            if pristine.is_error():
                raise InvalidRequest(f"the grammar engine refused the request: {pristine.get_error()}", param=param)
            with self._lock:
                self._matchers[lark] = pristine
                while len(self._matchers) > _CACHE_SIZE:
                    self._matchers.popitem(last=False)
        return Constraint(pristine.deep_copy(), self.vocab_size)

    @property
    def cached(self) -> int:
        return len(self._matchers)


class Constraint:
    """One row's grammar state: which tokens may come next, advanced token by token."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self.matcher = matcher
        self._words = (vocab_size + 31) // 32
        self._bits = np.zeros(self._words, dtype=np.int32)
        self.broken = False

    def mask(self, scores: np.ndarray) -> None:
        """Set the scores of the tokens the grammar forbids to -inf (in place)."""
        if self.broken:
            return
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little").view(bool)
        width = min(scores.shape[0], allowed.shape[0])
        if not allowed[:width].any():  # an error state: leave the row unconstrained
            self._fail()
            return
        scores[:width][~allowed[:width]] = -np.inf
        scores[width:] = -np.inf

    def advance(self, token: int) -> None:
        if not self.broken and not self.matcher.consume_token(token):
            self._fail()

    def _fail(self) -> None:
        self.broken = True
        log.warning("grammar constraint failed: %s", self.matcher.get_error())

    @property
    def finished(self) -> bool:
        """The grammar is complete: only end-of-sequence may follow."""
        return self.matcher.is_stopped()

    @property
    def accepts_end(self) -> bool:
        """End-of-sequence is allowed now (the text so far is a whole match)."""
        return self.matcher.is_accepting()
