"""Worker: ONNX Runtime dynamic int8 quantization (per-channel) or fp16 of an exported model.

Runs under the "optimum" toolchain (onnx + onnxruntime); imports nothing of onnxg.
Per-channel matters: the default per-tensor weight scales cost sentence embeddings a lot
of accuracy. Every matrix product is quantized, ONNX Runtime's fused Attention included
(QAttention: its Q/K/V projection was a third of the products and, left fp32, half of the
int8 model's time on an AVX-512 VNNI CPU). Alone that costs accuracy (all-MiniLM-L6-v2,
52 varied sentences vs sentence-transformers: minimum cosine 0.962-0.970), so the inputs
fed by layer norms are smoothed first (``smoothquant.py``): minimum 0.984. Signed weights
(the default) run the fast u8 x s8 kernels (on AVX2: 1.45x fp32's speed, against 1.3x for
unsigned weights).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import run  # noqa: E402

EXTERNAL_DATA_BYTES = 1_800_000_000


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def quantize(
    model: str,
    output: str,
    precision: str = "int8",
    per_channel: bool = True,
    weight_type: str = "int8",
    op_types: list[str] | None = None,
    reduce_range: bool = False,
    smooth_alpha: float = 0.0,
    calibration: list[str] | None = None,
) -> dict[str, Any]:
    import onnx

    source, target = Path(model), Path(output)
    large = _size(source) > EXTERNAL_DATA_BYTES
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        if weight_type not in types:
            raise ValueError(f"weight_type must be one of {sorted(types)}, not {weight_type!r}")
        ops = op_types or ["MatMul", "Attention"]
        smoothing: dict[str, Any] = {"smoothed": 0}
        smoothed = target.with_name("model.smoothed.onnx")
        try:
            if smooth_alpha > 0 and calibration and not large:
                from smoothquant import smooth

                smoothing = smooth(source, smoothed, calibration, smooth_alpha, ops)
                source = smoothed
            quantize_dynamic(
                source,
                target,
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=types[weight_type],
                op_types_to_quantize=ops,
                use_external_data_format=large,
                # fused contrib ops (Attention, SkipLayerNormalization) defeat shape inference
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            smoothed.unlink(missing_ok=True)
        return {"quantization": {"method": "onnxruntime dynamic", "per_channel": per_channel,
                                 "weight_type": weight_type, "op_types": ops, "reduce_range": reduce_range,
                                 "smoothing": smoothing}}
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        if large:
            onnx.save_model(half, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=target.name + ".data")
        else:
            onnx.save_model(half, str(target))
        return {"quantization": {"method": "onnxruntime float16", "keep_io_types": True}}
    raise ValueError(f"unsupported precision {precision!r}")


if __name__ == "__main__":
    run(quantize)
