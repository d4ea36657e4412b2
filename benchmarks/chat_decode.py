"""Chat decode speed: the onnxg engine vs a bare onnxruntime-genai loop, and batching gains.

    python benchmarks/chat_decode.py --model FOLDER [--tokens 128] [--rounds 3]

Measures, on one model (the real SmolLM2 int4 is the reference):
- decode tokens/s of a bare ``og.Generator`` greedy loop (append_tokens, generate_next_token)
  and of ``GenaiChatModel.stream`` at temperature 0, in alternating rounds so that load on the
  machine hits both alike; the ratio engine/bare (target >= 0.95);
- total decode tokens/s with 1 and with 4 concurrent requests through the engine.
Decode time runs from the first token to the last, so prefill is left out of both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


def bare_loop(model_dir: Path, prompt_ids: list[int], tokens: int, og_model: object) -> float:
    import numpy as np
    import onnxruntime_genai as og

    params = og.GeneratorParams(og_model)
    params.set_search_options(max_length=len(prompt_ids) + tokens, do_sample=False)
    generator = og.Generator(og_model, params)
    generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
    generator.generate_next_token()  # first token (includes prefill)
    first = time.perf_counter()
    made = 1
    while made < tokens and not generator.is_done():
        generator.generate_next_token()
        generator.get_next_tokens()
        made += 1
    return (made - 1) / (time.perf_counter() - first)


def engine_stream(llm: object, prompt: object, tokens: int) -> tuple[float, int]:
    from onnxg.runtime.contracts import Usage
    from onnxg.runtime.options import GenerationOptions

    first = None
    usage = None
    for item in llm.stream(prompt, GenerationOptions(max_tokens=tokens, temperature=0.0)):  # type: ignore[attr-defined]
        if isinstance(item, Usage):
            usage = item
        elif first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert usage is not None and first is not None
    return (usage.completion_tokens - 1) / (end - first), usage.completion_tokens


def concurrent(llm: object, prompt: str, tokens: int, clients: int) -> float:
    """Total generated tokens per second of wall time with ``clients`` requests at once."""
    from onnxg.runtime.contracts import Message, Usage
    from onnxg.runtime.options import GenerationOptions

    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        barrier.wait()
        messages = [Message("user", f"{prompt} Version {i}.")]
        for item in llm.stream(messages, GenerationOptions(max_tokens=tokens, temperature=0.0)):  # type: ignore[attr-defined]
            if isinstance(item, Usage):
                counts[i] = item.completion_tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import onnxruntime_genai as og
    from onnxg.runtime.chat import GenaiChatModel
    from onnxg.runtime.contracts import Message

    llm = GenaiChatModel.load(args.model)
    llm.warmup()
    messages = [Message("user", PROMPT)]
    prompt_ids = llm._tokenizer.encode(llm.render(messages), special=False)
    og_model = og.Model(str(args.model))
    bare_loop(args.model, prompt_ids, 8, og_model)

    bare, ours, ratios = [], [], []
    for _ in range(args.rounds):
        b = bare_loop(args.model, prompt_ids, args.tokens, og_model)
        e, made = engine_stream(llm, messages, args.tokens)
        bare.append(b)
        ours.append(e)
        ratios.append(e / b)
    one = statistics.median(concurrent(llm, PROMPT, args.tokens, 1) for _ in range(2))
    four = statistics.median(concurrent(llm, PROMPT, args.tokens, 4) for _ in range(2))
    report = {
        "model": str(args.model),
        "tokens": args.tokens,
        "bare_og_decode_tok_s": round(statistics.median(bare), 1),
        "engine_decode_tok_s": round(statistics.median(ours), 1),
        "engine_vs_bare_ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "total_tok_s_1_request": round(one, 1),
        "total_tok_s_4_concurrent": round(four, 1),
        "concurrency_gain": round(four / one, 2),
    }
    llm.close()
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
