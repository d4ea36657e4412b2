"""Worker (toolchain "tf"): a TensorFlow SavedModel -> ``model.onnx`` + ``model_io.json``.

Runs tf2onnx's own command-line entry in-process (so the recorded command is one a user
can rerun), repairs the string ops it exports wrongly (``tf_fixes``), then runs the same
sample inputs through TensorFlow and through onnxruntime (with onnxruntime-extensions) and
compares every output. A conversion whose outputs differ is reported, never passed off as
a model: the result says which outputs differ and by how much.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _worker import run  # the script's own folder is on sys.path
import tf_fixes

META = "model_io.json"

# Varied on purpose: case, punctuation, accents, other scripts, emoji, whitespace runs,
# numbers, an empty string, a long line. Every string op the fixes touch sees these.
SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "UPPER lower MiXeD",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nhere",
    "École, naïve café, Ärger, straße",
    "ÉCOLE DU MONDE",
    "日本語のテキストです",
    "Привет, как дела?",
    "emoji 😀🚀 and symbols #@%&*!",
    "numbers 12345 and 3.14159",
    "a",
    "",
    "punctuation... should, be; stripped: (maybe)!?",
    "repeated repeated repeated words words",
    "one-two_three/four\\five",
    "x" * 300,
    " ".join(f"word{i}" for i in range(120)),
]


def _tf2onnx(argv: list[str]) -> None:
    import tf2onnx.convert

    saved = sys.argv
    sys.argv = argv
    try:
        tf2onnx.convert.main()
    finally:
        sys.argv = saved


def _case_encodings(frozen: Path) -> dict[str, str]:
    """TF node name -> ``encoding`` attr of each StringLower/StringUpper (lost by tf2onnx)."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(frozen.read_bytes())
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    found = {}
    for node in nodes:
        if node.op in ("StringLower", "StringUpper"):
            found[node.name] = node.attr["encoding"].s.decode() if "encoding" in node.attr else ""
    return found


def _signature(source: str, tag: str, name: str) -> Any:
    import tensorflow as tf

    loaded = tf.saved_model.load(source, tags=[tag])
    if name not in loaded.signatures:
        known = ", ".join(loaded.signatures) or "none"
        raise ValueError(f"the SavedModel has no signature {name!r} (it has: {known})")
    return loaded, loaded.signatures[name]


def _spec_list(fn: Any) -> list[tuple[str, Any]]:
    _, kwargs = fn.structured_input_signature
    return sorted(kwargs.items())


def _sample_feed(specs: list[tuple[str, Any]], texts: list[str], seed: int) -> dict[str, Any]:
    """One input batch: the texts for string inputs, seeded random values for the rest."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {}
    for name, spec in specs:
        dims = list(spec.shape.as_list()) if spec.shape.rank is not None else [None]
        if dims:
            batch = dims[0] if dims[0] is not None else len(texts)
            shape = [batch] + [d if d is not None else 4 for d in dims[1:]]
        else:
            shape = []  # a scalar input: one sample per run
        dtype = spec.dtype
        if dtype.name == "string":
            count = int(np.prod(shape)) if shape else 1
            values = [texts[i % len(texts)] for i in range(count)]
            feed[name] = np.array(values, dtype=object).reshape(shape)
        elif dtype.is_floating:
            feed[name] = rng.standard_normal(shape).astype(dtype.as_numpy_dtype)
        elif dtype.is_bool:
            feed[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feed[name] = rng.integers(0, 2, shape).astype(dtype.as_numpy_dtype)
    return feed


def _tf_run(fn: Any, feed: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    out = fn(**{k: tf.constant(v) for k, v in feed.items()})
    return {k: v.numpy() for k, v in out.items()}


def _ort_runs(model_path: Path, farmhash: str, feeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """onnxruntime's outputs for each feed, computed by ``tf_ort_run`` in a TF-free process."""
    import pickle
    import subprocess

    with tempfile.TemporaryDirectory(prefix="onnxg-ort-") as tmp:
        feeds_path, out_path, result = (Path(tmp) / n for n in ("feeds.pkl", "outputs.pkl", "result.json"))
        feeds_path.write_bytes(pickle.dumps(feeds))
        args = {"model": str(model_path), "farmhash": farmhash, "feeds": str(feeds_path),
                "outputs": str(out_path), "_result": str(result)}
        script = Path(__file__).with_name("tf_ort_run.py")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run([sys.executable, str(script), json.dumps(args)], env=env)
        report = json.loads(result.read_text()) if result.is_file() else {}
        if done.returncode != 0 or report.get("error"):
            raise RuntimeError(f"onnxruntime could not run the converted model: {report.get('error', 'see above')}")
        return pickle.loads(out_path.read_bytes())


def _compare(name: str, want: Any, got: Any, atol: float, rtol: float) -> dict[str, Any]:
    """One output: ok, max_abs_diff (numbers), how many elements differ."""
    import numpy as np

    want = np.asarray(want)
    got = np.asarray(got)
    item: dict[str, Any] = {"output": name, "shape": list(want.shape)}
    if want.shape != got.shape:
        return {**item, "ok": False, "detail": f"shape {list(got.shape)} instead of {list(want.shape)}"}
    if want.dtype.kind in "OSU":
        a = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in want.reshape(-1)]
        b = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in got.reshape(-1)]
        bad = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        detail = f"{len(bad)} of {len(a)} strings differ"
        if bad:
            detail += f", e.g. {b[bad[0]]!r} instead of {a[bad[0]]!r}"
        return {**item, "ok": not bad, "differing": len(bad), "detail": detail}
    a = want.astype(np.float64)
    b = got.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.nan_to_num(np.where(both_nan, 0.0, np.abs(a - b)), nan=np.inf)
    max_diff = float(diff.max()) if diff.size else 0.0
    if want.dtype.kind == "f":
        bad = ~np.isclose(b, a, atol=atol, rtol=rtol, equal_nan=True)
    else:
        bad = a != b
    count = int(bad.sum())
    detail = f"max abs diff {max_diff:.3g}, {count} of {a.size} values differ"
    return {**item, "ok": count == 0, "max_abs_diff": max_diff, "differing": count, "detail": detail}


def _rank(item: dict[str, Any]) -> tuple[bool, float]:
    """Orders comparisons worst-last: a failure beats a pass, then the larger difference."""
    return (not item["ok"], item.get("max_abs_diff", 0.0))


def _verify(fn: Any, specs: list[tuple[str, Any]], model_path: Path, farmhash: str, texts: list[str],
            atol: float, rtol: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All samples as one batch, then the first few one at a time (batching bugs show there)."""
    runs = [texts] + [[t] for t in texts[:3]]
    feeds = [_sample_feed(specs, batch, seed=index) for index, batch in enumerate(runs)]
    wanted = [_tf_run(fn, feed) for feed in feeds]
    gotten = _ort_runs(model_path, farmhash, feeds)
    results: dict[str, dict[str, Any]] = {}
    for batch, want, got in zip(runs, wanted, gotten, strict=True):
        for name, value in want.items():
            if name not in got:
                results[name] = {"output": name, "ok": False, "detail": "missing from the ONNX graph"}
                continue
            item = _compare(name, value, got[name], atol, rtol)
            item["batch"] = len(batch)
            prev = results.get(name)
            if prev is None or _rank(item) > _rank(prev):
                results[name] = item
    return list(results.values()), wanted[0]


_ELEM = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 8: "string", 9: "bool",
         10: "float16", 11: "float64"}


def _io(values: Any) -> list[dict[str, Any]]:
    out = []
    for v in values:
        tensor = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        out.append({"name": v.name, "dtype": _ELEM.get(tensor.elem_type, str(tensor.elem_type)), "shape": dims})
    return out


def _metadata(model: Any, specs: list[tuple[str, Any]], outputs: dict[str, Any], signature: str,
              fixes: list[str], python_ops: list[str], checks: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    import numpy as np

    text_inputs = [name for name, spec in specs if spec.dtype.name == "string"]
    embedding = None
    for out in model.graph.output:
        value = outputs.get(out.name)
        if value is not None and np.asarray(value).dtype.kind == "f" and np.asarray(value).ndim == 2:
            embedding = out.name
            break
    return {
        "format": 1,
        "source": "tensorflow-savedmodel",
        "signature": signature,
        "inputs": _io(model.graph.input),
        "outputs": _io(model.graph.output),
        "text_input": text_inputs[0] if text_inputs else None,
        "embedding_output": embedding,
        "dimensions": int(np.asarray(outputs[embedding]).shape[1]) if embedding else None,
        "custom_op_domains": ["ai.onnx.contrib"],
        "python_ops": python_ops,
        "fixes": fixes,
        "verified": {"samples": samples, "outputs": checks},
    }


def convert(source: str, output: str, opset: int = 17, tag: str = "serve", signature: str = "serving_default",
            samples: list[str] | None = None, atol: float = 1e-4, rtol: float = 1e-3,
            farmhash: str = "") -> dict[str, Any]:
    import onnx

    out_dir = Path(output)
    texts = samples or SAMPLES
    # Fails early, naming the signatures there are; ``loaded`` must stay alive while ``fn`` is used.
    loaded, fn = _signature(source, tag, signature)
    with tempfile.TemporaryDirectory(prefix="onnxg-tf-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        frozen = Path(tmp) / "frozen.pb"
        argv = ["tf2onnx.convert", "--saved-model", source, "--output", str(raw), "--opset", str(opset),
                "--extra_opset", "ai.onnx.contrib:1", "--tag", tag, "--signature_def", signature]
        print("step: export", flush=True)
        _tf2onnx([*argv, "--output_frozen_graph", str(frozen)])
        argv[argv.index(str(raw))] = "raw.onnx"  # the recorded command: tf2onnx's output, before the fixes
        if not raw.is_file():
            raise RuntimeError("tf2onnx wrote no model (see the messages above)")
        model = onnx.load(str(raw))
        encodings = _case_encodings(frozen) if frozen.is_file() else {}
    print("step: fix", flush=True)
    fixes = tf_fixes.apply_all(model, encodings)
    for line in fixes:
        print(f"fixed {line}", flush=True)
    python_ops = [tf_fixes.HASH_OP] if tf_fixes.uses_hash_op(model) else []
    model_path = out_dir / "model.onnx"
    onnx.save(model, str(model_path))

    print("step: verify", flush=True)
    specs = _spec_list(fn)
    checks, outputs = _verify(fn, specs, model_path, farmhash, texts, atol, rtol)
    for item in checks:
        print(f"verify {item['output']}: {'ok' if item['ok'] else 'DIFFERS'} ({item.get('detail', '')})", flush=True)
    meta = _metadata(model, specs, outputs, signature, fixes, python_ops, checks, len(texts))
    del loaded
    (out_dir / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    return {
        "ok": all(item["ok"] for item in checks),
        "checks": checks,
        "fixes": fixes,
        "python_ops": python_ops,
        "command": ["python", "-m", *argv],
        "opset": opset,
        "inputs": meta["inputs"],
        "outputs": meta["outputs"],
    }


if __name__ == "__main__":
    run(convert)
