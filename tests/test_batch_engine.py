"""The continuous-batching engine (runtime/batcher.py) on real models: rows that join a running
batch, prefix reuse, the key-value memory budget, and every builder family on both engines."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from onnxg.runtime.chat import GenaiChatModel
from onnxg.runtime.contracts import Chunk, Usage
from onnxg.runtime.errors import KVBudgetExceeded
from onnxg.runtime.options import GenerationOptions

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

GREEDY = GenerationOptions(max_tokens=24, temperature=0)
PROMPTS = [[{"role": "user", "content": f"Tell me about {w}."}] for w in ("the sea", "a cat", "snow", "bread")]


def _text(model: GenaiChatModel, prompt: object, options: GenerationOptions = GREEDY) -> str:
    return model.complete(prompt, options).choices[0].text  # type: ignore[arg-type]


def test_rows_joining_mid_flight_give_the_unbatched_text(tiny_chat_model: Path) -> None:
    with GenaiChatModel.load(tiny_chat_model, engine="genai") as alone:
        expected = [_text(alone, p) for p in PROMPTS]
    with GenaiChatModel.load(tiny_chat_model, engine="batch") as model:
        assert model.engine == "batch"
        got: dict[int, str] = {}
        first = model.stream(PROMPTS[0], GREEDY)
        pieces = [next(first), next(first)]  # the first row is decoding before the others arrive

        def run(i: int) -> None:
            got[i] = _text(model, PROMPTS[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(1, 4)]
        for t in threads:
            t.start()
            time.sleep(0.01)  # staggered: each joins a batch already running
        pieces += list(first)
        for t in threads:
            t.join()
        got[0] = "".join(c.text for c in pieces if isinstance(c, Chunk))
        assert [got[i] for i in range(4)] == expected
        assert model._engine.peak_batch >= 2  # they shared forward passes


def test_seeded_rows_do_not_depend_on_their_neighbours(tiny_chat_model: Path) -> None:
    options = GenerationOptions(max_tokens=16, temperature=0.9, seed=11, n=3)
    with GenaiChatModel.load(tiny_chat_model, engine="batch") as model:
        alone = [c.text for c in model.complete(PROMPTS[1], options).choices]
        busy = model.stream(PROMPTS[2], GenerationOptions(max_tokens=40, temperature=0.7, seed=1))
        next(busy)
        together = [c.text for c in model.complete(PROMPTS[1], options).choices]
        busy.close()
    assert together == alone


def test_a_cached_prefix_gives_the_recomputed_text(tiny_chat_model: Path) -> None:
    system = {"role": "system", "content": "You are a patient assistant who answers in full sentences. " * 4}
    first = [system, {"role": "user", "content": "What is snow?"}]
    second = [system, {"role": "user", "content": "What is rain?"}]
    with GenaiChatModel.load(tiny_chat_model, engine="batch") as fresh:
        recomputed = fresh.complete(second, GREEDY)
        assert recomputed.usage.cached_tokens == 0
    with GenaiChatModel.load(tiny_chat_model, engine="batch") as model:
        model.complete(first, GREEDY)
        reused = model.complete(second, GREEDY)
        again = model.complete(second, GREEDY)
    assert reused.usage.cached_tokens >= 30  # the system prompt was copied, not recomputed
    assert again.usage.cached_tokens == again.usage.prompt_tokens - 1
    assert reused.choices[0].text == recomputed.choices[0].text == again.choices[0].text


def test_a_request_over_the_budget_waits_then_completes(tiny_chat_model: Path) -> None:
    options = GenerationOptions(max_tokens=200, temperature=0)
    with GenaiChatModel.load(tiny_chat_model, engine="genai") as alone:
        expected = [_text(alone, p, options) for p in PROMPTS[:3]]
    with GenaiChatModel.load(tiny_chat_model, engine="batch") as probe:
        per_token = probe._engine.token_bytes
    budget_mb = 300 * per_token / 2**20  # one row of 300 tokens: the others must wait their turn
    with GenaiChatModel.load(tiny_chat_model, engine="batch", kv_cache_mb=budget_mb) as model:
        engine = model._engine
        got: dict[int, str] = {}
        waited = []

        def watch() -> None:
            while len(got) < 3:
                waited.append(engine.stats()["rows_waiting"])
                assert engine.buffers.nbytes + engine.cache.nbytes <= engine.budget
                time.sleep(0.005)

        def run(i: int) -> None:
            got[i] = _text(model, PROMPTS[i], options)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)] + [threading.Thread(target=watch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [got[i] for i in range(3)] == expected
        assert max(waited) >= 1 and engine.peak_bytes <= engine.budget
        with pytest.raises(KVBudgetExceeded) as refused:
            model.stream(PROMPTS[0], GenerationOptions(max_tokens=1000))
        assert refused.value.param == "max_tokens"
        engine.max_waiting = 4
        with pytest.raises(KVBudgetExceeded) as refused:
            model.stream(PROMPTS[0], GenerationOptions(max_tokens=10, n=5))
        assert refused.value.param == "n"
        # without max_tokens a row stops at the memory's room
        result = model.complete("x " * 10, GenerationOptions(temperature=0, frequency_penalty=2.0))
        assert result.usage.total_tokens <= engine.max_row_tokens


def test_cancelled_rows_are_freed_at_the_next_step(tiny_chat_model: Path) -> None:
    with GenaiChatModel.load(tiny_chat_model, engine="batch") as model:
        cancel = threading.Event()
        stream = model.stream(PROMPTS[0], GenerationOptions(max_tokens=2000, temperature=0, n=4), cancel=cancel)
        next(stream)
        cancel.set()
        assert list(stream) == [] or all(not isinstance(i, Usage) for i in stream)
        deadline = time.monotonic() + 1
        while model._engine.active_rows and time.monotonic() < deadline:
            time.sleep(0.01)
        assert model._engine.active_rows == 0


FAMILY_PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                          "Qwen3ForCausalLM", "Phi3ForCausalLM", "Gemma2ForCausalLM",
                                          "GraniteForCausalLM"])
def test_each_family_gives_the_same_text_on_both_engines(architecture: str) -> None:
    from modelkit.chat_families import pipeline_build

    folder = pipeline_build(architecture)
    options = GenerationOptions(max_tokens=24, temperature=0)
    with GenaiChatModel.load(folder, engine="genai") as fallback:
        expected = fallback.complete(FAMILY_PROMPT, options).choices[0].text
    with GenaiChatModel.load(folder) as model:
        assert model.engine == "batch"  # every family the builder makes here runs on the new engine
        assert model.complete(FAMILY_PROMPT, options).choices[0].text == expected


def test_the_vocabulary_product_runs_on_each_rows_last_position_only(tiny_chat_model: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The batcher's decoder session cuts the graph's vocabulary product to the last position
    (prefill passes' other logits were computed and thrown away): a prefill pass's last
    logits, the following decode pass's logits and the key-value entries equal the full
    graph's."""
    import json

    import numpy as np

    from onnxg.runtime import kvgraph

    config = json.loads((tiny_chat_model / "genai_config.json").read_text())
    cut = kvgraph.DecoderGraph(tiny_chat_model, config, threads=1)
    monkeypatch.setattr(kvgraph, "last_position_graph", lambda *_: None)
    full = kvgraph.DecoderGraph(tiny_chat_model, config, threads=1)
    assert cut.last_only and not full.last_only
    ids = np.random.default_rng(0).integers(3, min(cut.vocab, 200), size=(2, 9))
    outputs = []
    for graph in (cut, full):
        buffers = graph.buffers()
        buffers.resize(2, 32, [])
        prefill = graph.run(ids, np.array([0, 0]), buffers, 0)
        decode = graph.run(np.array([[5], [7]]), np.array([9, 9]), buffers, 0)
        outputs.append((prefill, decode, [a.copy() for a in buffers.arrays]))
    (p1, d1, kv1), (p2, d2, kv2) = outputs
    assert p1.shape == p2.shape == (2, cut.vocab)
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    np.testing.assert_array_equal(d1, d2)
    assert all(np.array_equal(a, b) for a, b in zip(kv1, kv2, strict=True))
