"""How an embedding call is cut into model calls and run (``runtime/embed.py``): at most
``batch_size`` inputs and a token budget per call, batches side by side on a one-thread
session, bit-identical vectors whichever session runs a batch. Real ONNX Runtime sessions on
the int8 all-MiniLM-L6-v2 export."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnxg.runtime import embed as embed_module
from onnxg.runtime.embed import OnnxEmbeddingModel


def test_batches_side_by_side_are_bit_identical_to_one_at_a_time(minilm_int8_model: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The batches of one call run side by side (one per thread, on a one-thread session);
    each is the same computation as alone, so the vectors equal a one-thread run bit for bit
    (int8 included, whose dynamic quantization depends on what shares a batch). The one
    batch of a call alone runs on the session with every thread, on a worker when other
    calls are running; a model too big for a second session runs its batches one at a time.
    A call of two or more inputs is always at least two batches."""
    model = OnnxEmbeddingModel.load(minilm_int8_model, threads=2)
    texts = [f"sentence {i} about " + "words " * (i % 11) for i in range(70)]
    seen: list[tuple[str, Any]] = []
    batch = model._batch

    def spy(rows: list[list[int]], session: Any) -> list[np.ndarray]:
        seen.append((threading.current_thread().name, session))
        return batch(rows, session)

    model._batch = spy  # type: ignore[method-assign]
    side_by_side = model.embed(texts, batch_size=8).vectors
    assert len({name for name, _ in seen if name.startswith("onnxg-embed")}) == 2, seen
    assert {session for _, session in seen} == {model._bulk[0]} != {model._session}  # type: ignore[index]
    serial = OnnxEmbeddingModel.load(minilm_int8_model, threads=1)
    assert serial._bulk is None
    assert np.array_equal(serial.embed(texts, batch_size=8).vectors, side_by_side)
    seen.clear()
    eight = texts[:8]  # fewer inputs than batch_size: two halves, side by side
    assert np.array_equal(model.embed(eight, batch_size=8).vectors, serial.embed(eight, batch_size=8).vectors)
    assert [len(rows) for rows in model._batches([[1]] * 8, 8)] == [4, 4]
    assert len(seen) == 2 and {session for _, session in seen} == {model._bulk[0]}  # type: ignore[index]
    seen.clear()
    one = texts[:1]
    assert np.array_equal(model.embed(one, batch_size=8).vectors, serial.embed(one, batch_size=8).vectors)
    assert seen == [(threading.current_thread().name, model._session)]
    seen.clear()
    model._calls = 1  # another call in flight (a busy server): even one batch goes to a worker
    assert np.array_equal(model.embed(one, batch_size=8).vectors, serial.embed(one, batch_size=8).vectors)
    assert len(seen) == 1 and seen[0][0].startswith("onnxg-embed") and seen[0][1] is model._bulk[0]  # type: ignore[index]
    assert model._calls == 1
    model._calls = 0
    model.close()
    monkeypatch.setattr(embed_module, "BULK_SESSION_MAX_BYTES", 1000)
    big = OnnxEmbeddingModel.load(minilm_int8_model, threads=2)
    assert big._bulk is None and np.array_equal(big.embed(texts, batch_size=8).vectors, side_by_side)


def test_model_calls_hold_at_most_batch_size_inputs_and_a_token_budget(minilm_int8_model: Path,
                                                                      tmp_path: Path) -> None:
    """Calls are cut from the inputs sorted by length: at most ``batch_size`` inputs and,
    past the first, at most the model's token budget (its feed-forward activation in the
    cache); two or more inputs that would fill one or two calls make two, split where the
    padded tokens of both plus the bigger one's are least; the vectors are the same as calls
    of whole batches would give (int8 within its quantization noise)."""
    model = OnnxEmbeddingModel.load(minilm_int8_model, threads=1)
    assert model._tokens_per_call == embed_module.ACTIVATION_BUDGET_BYTES // (4 * 1536) == 256
    ids = [[1] * n for n in [3, 70, 5, 9, 200, 40, 12, 600, 8, 33] * 5]
    batches = model._batches(ids, 32)
    assert sorted(i for b in batches for i in b) == list(range(len(ids)))
    widths = [max(len(ids[i]) for i in b) for b in batches]
    assert widths == sorted(widths)  # sorted by length
    for b, width in zip(batches, widths, strict=True):
        assert len(b) <= 32 and (len(b) == 1 or len(b) * width <= 256), (len(b), width)
    assert len(batches) > -(-len(ids) // 32)  # the budget cut more calls than the count alone
    # short inputs: the count rules; two calls are split evenly rather than full and a rest,
    # three or more are filled (every thread has work)
    assert model._batches([[1] * 5] * 40, 32) == [list(range(20)), list(range(20, 40))]
    assert [len(b) for b in model._batches([[1] * 5] * 65, 32)] == [32, 32, 1]
    # two or more inputs make two calls at least; one input, one call
    assert model._batches([[1] * 5] * 7, 32) == [[0, 1, 2], [3, 4, 5, 6]]
    assert model._batches([[1] * 5], 32) == [[0]]
    # 24 inputs of 10 tokens fill the budget (240), so filling calls leaves 8 of 11 for a
    # second (240 + 88 padded tokens, the bigger 240); 17 + 15 pad 170 + 165, the bigger 170
    uneven = [[1] * 10] * 24 + [[1] * 11] * 8
    assert [len(b) for b in model._batches(uneven, 32)] == [17, 15]
    # 16 of 9 tokens, 8 of 10, 4 of 11, 4 of 12: 16 + 16 pad as little as 24 + 8 (336), with a
    # smaller bigger call (192); the most even, 18 + 14, would pad 348
    mixed = [[1] * 9] * 16 + [[1] * 10] * 8 + [[1] * 11] * 4 + [[1] * 12] * 4
    assert [len(b) for b in model._batches(mixed, 32)] == [16, 16]
    texts = [("word " * (i % 40)) + f"end {i}" for i in range(60)]
    whole = OnnxEmbeddingModel.load(minilm_int8_model, threads=1)
    whole._tokens_per_call = None
    cosine = np.sum(model.embed(texts).vectors * whole.embed(texts).vectors, axis=1)
    assert cosine.min() > 0.99
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    assert embed_module.tokens_per_call(tmp_path) == 96
    assert embed_module.tokens_per_call(tmp_path / "nothing") == 256
