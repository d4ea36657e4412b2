"""Worker: an encoder's token states to ONNX with torch alone, then ONNX Runtime's fusions.

Runs under the "genai" toolchain (transformers 5, torch; no optimum), so the default
embedding model builds in the environment ``onnxg[convert]`` already installed, with no
second torch in a toolchain of its own. It does what ``optimum_export`` does for a plain
BERT-family encoder: ``AutoModel`` (no head), inputs ``input_ids`` / ``attention_mask`` /
``token_type_ids`` with dynamic batch and sequence axes, output ``last_hidden_state`` (3-D,
so pooling stays a runtime choice), then the same fusions, kept only when they keep the
outputs. The TorchScript exporter (``dynamo=False``) needs no onnxscript.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import run  # noqa: E402
from optimum_export import FUSABLE, _fuse  # noqa: E402  (imports no optimum at module level)

OPSET = 17
# encoders whose forward takes (input_ids, attention_mask[, token_type_ids]) and nothing else required
EXPORTABLE = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet")


def export(source: str, output: str, fuse: bool = True, ep: str = "cpu", opset: int = OPSET) -> dict[str, Any]:
    import torch
    from transformers import AutoModel

    config = json.loads((Path(source) / "config.json").read_text())
    model_type = config.get("model_type", "")
    if model_type not in EXPORTABLE:
        raise ValueError(f"the torch exporter handles {', '.join(EXPORTABLE)} encoders, not {model_type!r}: "
                         "use the optimum exporter")
    out = Path(output)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = AutoModel.from_pretrained(source, local_files_only=True, attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask"]
    if model_type not in ("distilbert", "roberta", "xlm-roberta", "camembert", "mpnet") \
            and config.get("type_vocab_size", 0) > 0:
        names.append("token_type_ids")
    sample = torch.ones((2, 8), dtype=torch.long)
    inputs = tuple(sample if n != "token_type_ids" else torch.zeros_like(sample) for n in names)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args))).last_hidden_state

    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad():
        torch.onnx.export(Encoder(), inputs, str(out / "model.onnx"), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    result: dict[str, Any] = {"model_type": model_type, "fused": False, "exporter": f"torch {torch.__version__}",
                              "opset": opset, "inputs": names}
    target = FUSABLE.get(model_type)
    if fuse and target:
        result.update(_fuse(out / "model.onnx", target, use_gpu=ep == "cuda",
                            vocab_size=int(config.get("vocab_size", 1000))))
    return result


if __name__ == "__main__":
    run(export)
