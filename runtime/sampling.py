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

from typing import TYPE_CHECKING

import numpy as np

from onnxg.runtime.options import GenerationOptions

if TYPE_CHECKING:
    from onnxg.runtime.grammar import Constraint

_CANDIDATES = 256  # top-p looks at the best this many first, and sorts everything only if needed
_SEED_MASK = 0xFFFFFFFFFFFFFFFF


class Sampler:
    """The per-row sampling state: the row's options, its random stream, the counts of tokens seen.

    Every value ``GenerationOptions`` accepts keeps sampling finite: scores are float64, a NaN
    score never wins, +inf scores (a repetition penalty near 0) tie among themselves, a
    temperature near 0 nears greedy, and a row whose scores are all -inf picks uniformly.
    """

    def __init__(self, options: GenerationOptions | None = None, row: int = 0,
                 constraint: Constraint | None = None) -> None:
        self.options = options if options is not None else GenerationOptions()
        self.constraint = constraint  # a grammar the row must follow (grammar.py), or None
        seed = self.options.seed
        self.rng = np.random.default_rng(None if seed is None else [seed & _SEED_MASK, row])
        self._counts: dict[int, int] = {}
        self._seen: set[int] = set()

    @property
    def want_logprobs(self) -> bool:
        return self.options.logprobs

    @property
    def top_logprobs(self) -> int:
        return self.options.top_logprobs

    def remember_prompt(self, ids: list[int]) -> None:
        """Prompt tokens count for the repetition penalty only (as in transformers)."""
        if self.options.repetition_penalty != 1.0:
            self._seen.update(int(i) for i in ids)

    @property
    def finished(self) -> bool:
        """The row's grammar is complete: only end-of-sequence can follow (which ``choose``
        then picks); a row without a grammar is never finished by it."""
        return self.constraint is not None and self.constraint.finished

    def remember(self, token: int) -> None:
        if self.constraint is not None:
            self.constraint.advance(token)
        if self.options.presence_penalty or self.options.frequency_penalty:
            self._counts[token] = self._counts.get(token, 0) + 1
        if self.options.repetition_penalty != 1.0:
            self._seen.add(token)

    @property
    def greedy(self) -> bool:
        return self.options.temperature == 0.0 or self.options.top_k == 1

    def _penalised(self, logits: np.ndarray) -> np.ndarray:
        """float64 scores: the logits with the penalties applied, NaN as -inf."""
        out = np.fmax(logits, -np.inf, dtype=np.float64)
        if self._seen:
            ids = np.fromiter(self._seen, dtype=np.int64, count=len(self._seen))
            ids = ids[ids < out.shape[0]]
            values = out[ids]
            p = self.options.repetition_penalty
            with np.errstate(over="ignore", under="ignore"):
                out[ids] = np.where(values > 0, values / p, values * p)
        if self._counts:
            ids = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
            counts = np.fromiter(self._counts.values(), dtype=np.float64, count=len(self._counts))
            keep = ids < out.shape[0]
            ids, counts = ids[keep], counts[keep]
            out[ids] -= counts * self.options.frequency_penalty + (counts > 0) * self.options.presence_penalty
        return out

    def choose(self, logits: np.ndarray) -> int:
        """The next token for one row of raw logits (float32 [vocab]); one the row's grammar allows."""
        scores = self._penalised(logits)
        if self.constraint is not None:
            self.constraint.mask(scores)
        if self.greedy:
            return int(np.argmax(scores))
        with np.errstate(over="ignore"):
            scores = _shifted(scores) / self.options.temperature  # <= 0: a tiny temperature nears greedy
        vocab = scores.shape[0]
        top_k, top_p = self.options.top_k, self.options.top_p
        ids = np.argpartition(-scores, top_k - 1)[:top_k] if 0 < top_k < vocab else None
        if top_p < 1.0:
            ids = _nucleus(scores, ids, top_p)
        if ids is None:
            return int(self.rng.choice(vocab, p=_softmax(scores)))
        return int(ids[self.rng.choice(ids.shape[0], p=_softmax(scores[ids]))])


def _shifted(x: np.ndarray) -> np.ndarray:
    """``x`` moved so that its best score is 0: +inf scores (the only candidates then) become 0,
    a row of -inf becomes all 0 (uniform)."""
    top = x.max()
    if top == np.inf:
        return np.where(x == np.inf, 0.0, -np.inf)
    if top == -np.inf:
        return np.zeros_like(x)
    return x - top


def _softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities that always sum to 1: +inf scores share all of it, all -inf is uniform."""
    top = x.max()
    if not np.isfinite(top):
        ties = x == top if top > 0 else np.ones(x.shape, dtype=bool)
        return ties / ties.sum()
    e = np.exp(x - top)
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
    x = np.fmax(logits, -np.inf, dtype=np.float64)
    top = x.max()
    if not np.isfinite(top):
        with np.errstate(divide="ignore"):
            return np.log(_softmax(x))
    shifted = x - top
    return shifted - np.log(np.exp(shifted).sum())


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely tokens as (id, logprob), best first."""
    if k <= 0:
        return []
    k = min(k, logprobs.shape[0])
    ids = np.argpartition(-logprobs, k - 1)[:k]
    ids = ids[np.argsort(-logprobs[ids], kind="stable")]
    return [(int(i), float(logprobs[i])) for i in ids]
