"""Part of benchmarks/firstrun/measure.sh. Start `onnxg serve`, timestamp its lines, wait for ready, send the two seed requests, stop it (by pid)."""
import json, subprocess, sys, time, urllib.request
log = open(sys.argv[1], "w")
t0 = time.monotonic()
proc = subprocess.Popen(["onnxg", "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
ready = None
for line in proc.stdout:
    log.write(f"{time.monotonic() - t0:8.2f} {line}"); log.flush()
    if "ready at" in line:
        ready = time.monotonic() - t0
        break
print(f"to ready: {ready if ready is None else round(ready, 2)} s")
if ready is not None and len(sys.argv) > 2:
    def post(path, body):
        req = urllib.request.Request("http://127.0.0.1:8080" + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        a = time.monotonic(); out = json.loads(urllib.request.urlopen(req, timeout=300).read()); return out, time.monotonic() - a
    chat, tc = post("/v1/chat/completions", {"messages": [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Explain quantum computing in one sentence."}], "temperature": 0.3, "top_p": 0.9,
        "top_k": 40, "repetition_penalty": 1.1})
    emb, te = post("/v1/embeddings", {"input": "Rain won’t stop me. Wind won’t stop me. Neither will driving snow."})
    print(f"chat {tc:.2f} s: {chat['choices'][0]['message']['content'][:200]!r}")
    print(f"embeddings {te:.2f} s: {len(emb['data'][0]['embedding'])} dims")
    print(f"ready + both curls: {time.monotonic() - t0:.1f} s")
proc.terminate(); proc.wait(60)
