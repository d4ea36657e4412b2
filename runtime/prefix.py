"""A bounded cache of computed key-value entries, keyed by the tokens they were computed for.

When a row ends (or its prompt is computed), its entries are kept here; a later prompt that
starts with the same tokens (a shared system prompt, the earlier turns of a chat) copies them
instead of recomputing. Least recently used entries go first, whenever the cache passes its
byte bound or the engine needs the memory for running rows.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(a.shape[0], b.shape[0])
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.shape[0] else n


@dataclass
class Entry:
    tokens: np.ndarray  # int64 [n]
    kv: np.ndarray  # [layers, 2, kv_heads, n, head_size]

    @property
    def nbytes(self) -> int:
        return self.kv.nbytes


class PrefixCache:
    def __init__(self, max_bytes: int, max_entries: int = 64) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._next = 0
        self.nbytes = 0
        self.hits = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def best(self, tokens: np.ndarray) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with ``tokens``, and that length."""
        best, length = None, 0
        for key, entry in self._entries.items():
            n = common_prefix(entry.tokens, tokens)
            if n > length:
                best, length, best_key = entry, n, key
        if best is not None:
            self._entries.move_to_end(best_key)
        return best, length

    def covers(self, tokens: np.ndarray) -> bool:
        """Some entry already holds all of ``tokens`` (or more)."""
        return any(e.tokens.shape[0] >= tokens.shape[0] and common_prefix(e.tokens, tokens) == tokens.shape[0]
                   for e in self._entries.values())

    def add(self, tokens: np.ndarray, kv: np.ndarray) -> None:
        if kv.nbytes > self.max_bytes:
            return
        # an entry that is a prefix of the new one is redundant
        for key in [k for k, e in self._entries.items()
                    if e.tokens.shape[0] <= tokens.shape[0] and common_prefix(e.tokens, tokens) == e.tokens.shape[0]]:
            self.nbytes -= self._entries.pop(key).nbytes
        self._entries[self._next] = Entry(tokens, kv)
        self._next += 1
        self.nbytes += kv.nbytes
        self.shrink(self.max_bytes)

    def shrink(self, max_bytes: int) -> None:
        """Evict least recently used entries until at most ``max_bytes`` remain."""
        while self._entries and (self.nbytes > max_bytes or len(self._entries) > self.max_entries):
            _, entry = self._entries.popitem(last=False)
            self.nbytes -= entry.nbytes

    def clear(self) -> None:
        self.shrink(0)
