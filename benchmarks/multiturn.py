"""TTFT of turn 1 and turn 10 of a chat, with prefix reuse and recomputed (a second model instance
that has not seen the chat): python benchmarks/multiturn.py MODEL_FOLDER"""
import sys, time
from onnxg.runtime.chat import GenaiChatModel
from onnxg.runtime.contracts import Chunk
from onnxg.runtime.options import GenerationOptions
d=sys.argv[1]
m=GenaiChatModel.load(d, engine="batch", kv_cache_mb=1024); m2=GenaiChatModel.load(d, engine="batch", kv_cache_mb=1024); m.complete("hi", GenerationOptions(max_tokens=2)); m2.complete("hello there", GenerationOptions(max_tokens=2))
o=GenerationOptions(max_tokens=48, temperature=0)
msgs=[{"role":"system","content":"You are a helpful assistant."}]
def ttft(model, msgs):
    t=time.perf_counter(); text=""; first=None; usage=None
    for it in model.stream(msgs,o):
        if isinstance(it, Chunk):
            first = first or time.perf_counter()-t; text+=it.text
        else: usage=it
    return first, text, usage
for turn in range(10):
    msgs.append({"role":"user","content":f"Tell me one fact about the number {turn+3}."})
    first, text, usage = ttft(m, msgs)
    if turn in (0, 9):
        cold,_,u2 = ttft(m2, msgs)  # same prompt, nothing cached
        print(f"turn {turn+1}: prompt {usage.prompt_tokens} cached {usage.cached_tokens} ttft {first*1000:.0f} ms; recomputed {cold*1000:.0f} ms (cached {u2.cached_tokens})")
    msgs.append({"role":"assistant","content":text})
