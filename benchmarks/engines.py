"""Aggregate decode tok/s of the two chat engines in one process, alternating per client count:
the continuous-batching engine (runtime/batcher.py) vs onnxruntime-genai's Generator (genai_engine.py).

    python benchmarks/engines.py MODEL_FOLDER SECONDS_PER_POINT
"""
import sys, time, threading
from onnxg.runtime.chat import GenaiChatModel
from onnxg.runtime.options import GenerationOptions
d=sys.argv[1]; secs=float(sys.argv[2])
models={"batch":GenaiChatModel.load(d, engine="batch", kv_cache_mb=1024), "genai":GenaiChatModel.load(d, engine="genai")}
o=GenerationOptions(max_tokens=64, temperature=0)
msgs=[{"role":"user","content":"Write a short story about a lighthouse keeper who finds a message in a bottle."}]
for m in models.values(): m.complete(msgs, GenerationOptions(max_tokens=4))
for clients in (1,4,8,16):
    for name,m in models.items():
        total=[0]*clients; stop=time.monotonic()+secs
        def c(i):
            time.sleep(i*0.1)
            while time.monotonic()<stop: total[i]+=m.complete(msgs,o).usage.completion_tokens
        ts=[threading.Thread(target=c,args=(i,)) for i in range(clients)]; t=time.monotonic()
        [x.start() for x in ts]; [x.join() for x in ts]
        print(clients, name, f"{sum(total)/(time.monotonic()-t):.1f} tok/s", flush=True)
