"""Choosing the next token from a row of logits, in numpy.

onnxruntime-genai samples with one seed per generator and knows no OpenAI presence/frequency
penalties or logprobs, so the chat engine reads the logits of every row of a batch and picks
each row's token here: penalties, then temperature, top-k and top-p, with a random stream of
the row's own (so a seed gives the same text whatever else shares the batch).

Order and semantics follow transformers' logits processors (repetition penalty over prompt and
output, then temperature, top-k, top-p) and OpenAI's penalty formula
(``logit -= count * frequency_penalty + (count > 0) * presence_penalty`` over output tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_CANDIDATES = 256  # top-p looks at the best this many first, and sorts everything only if needed


@dataclass
class Sampler:
    """The per-row sampling state: settings, the random stream, and the counts of tokens seen."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    top_logprobs: int = 0
    want_logprobs: bool = False
    rng: np.random.Generator = field(init=False)
    _counts: dict[int, int] = field(init=False, default_factory=dict)
    _seen: set[int] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def remember_prompt(self, ids: list[int]) -> None:
        """Prompt tokens count for the repetition penalty only (as in transformers)."""
        if self.repetition_penalty != 1.0:
            self._seen.update(int(i) for i in ids)

    def remember(self, token: int) -> None:
        if self.presence_penalty or self.frequency_penalty:
            self._counts[token] = self._counts.get(token, 0) + 1
        if self.repetition_penalty != 1.0:
            self._seen.add(token)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def _penalised(self, logits: np.ndarray) -> np.ndarray:
        if not (self._seen or self._counts):
            return logits
        out = logits.copy()
        if self._seen:
            ids = np.fromiter(self._seen, dtype=np.int64, count=len(self._seen))
            ids = ids[ids < out.shape[0]]
            values = out[ids]
            p = self.repetition_penalty
            out[ids] = np.where(values > 0, values / p, values * p)
        if self._counts:
            ids = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
            counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
            keep = ids < out.shape[0]
            ids, counts = ids[keep], counts[keep]
            out[ids] -= counts * self.frequency_penalty + (counts > 0) * self.presence_penalty
        return out

    def choose(self, logits: np.ndarray) -> int:
        """The next token for one row of raw logits (float32 [vocab])."""
        scores = self._penalised(logits)
        if self.greedy:
            return int(np.argmax(scores))
        scores = scores.astype(np.float64) / self.temperature
        vocab = scores.shape[0]
        if 0 < self.top_k < vocab:
            ids = np.argpartition(-scores, self.top_k - 1)[: self.top_k]
        else:
            ids = None
        if self.top_p < 1.0:
            ids = _nucleus(scores, ids, self.top_p)
        if ids is None:
            probs = _softmax(scores)
            return int(self.rng.choice(vocab, p=probs))
        probs = _softmax(scores[ids])
        return int(ids[self.rng.choice(ids.shape[0], p=probs)])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _nucleus(scores: np.ndarray, ids: np.ndarray | None, top_p: float) -> np.ndarray:
    """The smallest set of best tokens whose probability reaches ``top_p`` (at least one)."""
    pool = np.arange(scores.shape[0]) if ids is None else ids
    probs = _softmax(scores[pool])
    if pool.shape[0] > _CANDIDATES:
        best = np.argpartition(-probs, _CANDIDATES - 1)[:_CANDIDATES]
        if probs[best].sum() < top_p:
            best = np.arange(pool.shape[0])
    else:
        best = np.arange(pool.shape[0])
    order = best[np.argsort(-probs[best], kind="stable")]
    cumulative = np.cumsum(probs[order])
    cut = int(np.searchsorted(cumulative, top_p)) + 1
    return pool[order[: max(1, cut)]]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely tokens as (id, logprob), best first."""
    if k <= 0:
        return []
    k = min(k, logprobs.shape[0])
    ids = np.argpartition(-logprobs, k - 1)[:k]
    ids = ids[np.argsort(-logprobs[ids], kind="stable")]
    return [(int(i), float(logprobs[i])) for i in ids]
