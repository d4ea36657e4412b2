"""Helper of ``tf_convert``: run an ONNX model on pickled feeds, in a process without TensorFlow.

Why a separate process: TensorFlow bundles its own RE2, and once it is loaded the
extensions' regex ops resolve to it and behave differently (measured: ``StringRegexReplace``
with ``\\x{80}`` classes stops matching). The runtime never loads TensorFlow, so the check
must not either.
"""

from __future__ import annotations

import importlib.util
import pickle
from typing import Any

from _worker import run


def ort_run(model: str, farmhash: str, feeds: str, outputs: str) -> dict[str, Any]:
    import onnxruntime as ort
    import onnxruntime_extensions

    spec = importlib.util.spec_from_file_location("onnxg_farmhash", farmhash)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    module.register_onnx_ops()
    options = ort.SessionOptions()
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    with open(feeds, "rb") as handle:
        batches = pickle.load(handle)
    results = [dict(zip(names, session.run(names, feed), strict=True)) for feed in batches]
    with open(outputs, "wb") as handle:
        pickle.dump(results, handle)
    return {"runs": len(results), "onnxruntime": ort.__version__,
            "onnxruntime_extensions": onnxruntime_extensions.__version__}


if __name__ == "__main__":
    run(ort_run)
