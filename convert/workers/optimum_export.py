"""Worker: optimum ONNX export (``feature-extraction``), then ONNX Runtime's transformer fusions.

Runs under the "optimum" toolchain (optimum-onnx, transformers<4.58, torch); imports nothing
of onnxg. The export takes the plain transformers model (token states out, 3-D
``last_hidden_state``), so that pooling stays a runtime choice read from the
sentence-transformers metadata. For BERT-family encoders, ONNX Runtime's offline fusions
(Attention, BiasGelu, LayerNormalization, ...) are applied and kept only when they give
the same outputs as the plain export on sample inputs.

For CPU the residual adds stay ``Add`` + ``LayerNormalization`` rather than the fused
``SkipLayerNormalization``: ONNX Runtime 1.32's CPU kernel for the fused op is the slower of
the two (measured on all-MiniLM-L6-v2, 1,000 sentences, batch 32, 2 threads, AVX2: 0.34 s
in SkipLayerNormalization against 0.14 s in Add + LayerNormalization; a 800x384 microbench:
1.0 ms against 0.26 ms). onnxg's runtime keeps ONNX Runtime from re-fusing them at load.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import run  # noqa: E402

# model_type (config.json) -> ONNX Runtime optimizer's model type
FUSABLE = {
    "bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert",
    "distilbert": "bert", "electra": "bert", "mpnet": "bert", "nomic_bert": None,
}
EXTERNAL_DATA_BYTES = 1_800_000_000


def _onnx_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def _sample_feeds(model_path: Path, vocab_size: int) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(5, max(6, min(vocab_size, 1000)), size=(2, 12))
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    feeds: dict[str, Any] = {}
    for item in session.get_inputs():
        dtype = np.int32 if "int32" in item.type else np.int64
        if item.name == "input_ids":
            feeds[item.name] = ids.astype(dtype)
        elif item.name == "attention_mask":
            feeds[item.name] = mask.astype(dtype)
        elif item.name == "position_ids":
            feeds[item.name] = np.broadcast_to(np.arange(12), (2, 12)).astype(dtype)
        else:
            feeds[item.name] = np.zeros_like(ids, dtype=dtype)
    return feeds


def _outputs(model_path: Path, feeds: dict[str, Any]) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _fuse(model_path: Path, model_type: str, use_gpu: bool, vocab_size: int) -> dict[str, Any]:
    """Apply ONNX Runtime's transformer fusions in place if they keep the outputs."""
    import numpy as np
    from onnxruntime.transformers import optimizer

    from onnxruntime.transformers.fusion_options import FusionOptions

    fused_path = model_path.with_name("model.fused.onnx")
    options = FusionOptions(model_type)
    options.enable_skip_layer_norm = use_gpu  # see the module's docstring
    optimized = optimizer.optimize_model(
        str(model_path), model_type=model_type, num_heads=0, hidden_size=0, opt_level=1, use_gpu=use_gpu,
        optimization_options=options,
    )
    stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(fused_path))
    feeds = _sample_feeds(model_path, vocab_size)
    before, after = _outputs(model_path, feeds), _outputs(fused_path, feeds)
    mask = feeds["attention_mask"].astype(bool) if "attention_mask" in feeds else np.ones(before.shape[:2], bool)
    diff = float(np.abs(before[mask] - after[mask]).max()) if before.shape == after.shape else float("inf")
    print(f"fusions: {stats}; max abs difference on sample inputs: {diff:.2e}")
    if diff > 1e-3 or not stats:
        fused_path.unlink()
        return {"fused": False, "fusion_max_diff": diff}
    fused_path.replace(model_path)
    return {"fused": True, "fusions": stats, "fusion_max_diff": diff}


def export(
    source: str,
    output: str,
    trust_remote_code: bool = False,
    opset: int | None = None,
    fuse: bool = True,
    ep: str = "cpu",
) -> dict[str, Any]:
    import json

    from optimum.exporters.onnx import main_export

    out = Path(output)
    if out.exists():
        shutil.rmtree(out)
    config = json.loads((Path(source) / "config.json").read_text()) if (Path(source) / "config.json").is_file() else {}
    model_type = config.get("model_type", "")
    main_export(
        source,
        out,
        task="feature-extraction",
        library_name="transformers",
        opset=opset,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        do_validation=True,
    )
    model = out / "model.onnx"
    if not model.is_file():
        raise RuntimeError(f"optimum wrote no model.onnx (files: {sorted(p.name for p in out.iterdir())})")
    result: dict[str, Any] = {"model_type": model_type, "fused": False}
    target = FUSABLE.get(model_type)
    # Fusion is for encoders well under protobuf's 2 GB (no external data to re-link).
    if fuse and target and _onnx_size(model) < EXTERNAL_DATA_BYTES:
        result.update(_fuse(model, target, use_gpu=ep == "cuda", vocab_size=int(config.get("vocab_size", 1000))))
    return result


if __name__ == "__main__":
    run(export)
