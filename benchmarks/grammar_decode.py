"""Decode speed with the grammar on vs off (constrained decoding's cost).

    python benchmarks/grammar_decode.py --model FOLDER [--tokens 128] [--rounds 5]

On one model (the real SmolLM2 int4 is the reference), in alternating rounds so that load on
the machine hits both alike, decode tokens/s of ``GenaiChatModel.stream`` with:
- off: free text, sampled (temperature 1, a seed);
- on: the same sampling under a grammar that lets the reply run as long (a JSON schema of one
  string of at least 2000 characters), so both make the same number of tokens.
Decode time runs from the first token to the last (prefill left out). Target: on/off >= 0.90.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

PROMPT = [{"role": "user", "content": "Write a long, detailed story about a lighthouse keeper, as JSON."}]
SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 2000}}, "required": ["story"],
          "additionalProperties": False}


def decode_rate(model: object, options: object) -> tuple[float, int]:
    first = None
    tokens = 0
    for item in model.stream(PROMPT, options):  # type: ignore[attr-defined]
        if hasattr(item, "completion_tokens"):
            tokens = item.completion_tokens
        elif first is None:
            first = time.perf_counter()
    assert first is not None
    return (tokens - 1) / (time.perf_counter() - first), tokens


def main() -> None:
    from onnxg.runtime.chat import GenaiChatModel
    from onnxg.runtime.options import GenerationOptions

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = GenaiChatModel.load(args.model)
    off = GenerationOptions.from_openai(max_tokens=args.tokens, temperature=1.0, seed=1)
    on = GenerationOptions.from_openai(max_tokens=args.tokens, temperature=1.0, seed=1, response_format={
        "type": "json_schema", "json_schema": {"name": "story", "schema": SCHEMA}})
    decode_rate(model, on)  # warm: the grammar tokenizer and the compiled grammar are built once
    rates: dict[str, list[float]] = {"off": [], "on": []}
    made: dict[str, list[int]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for name, options in (("off", off), ("on", on)):
            rate, tokens = decode_rate(model, options)
            rates[name].append(rate)
            made[name].append(tokens)
    result = {name: {"tok_s_median": round(statistics.median(r), 1), "tokens": made[name]} for name, r in rates.items()}
    result["on_over_off"] = round(result["on"]["tok_s_median"] / result["off"]["tok_s_median"], 3)
    print(json.dumps(result, indent=2))
    model.close()


if __name__ == "__main__":
    main()
