"""onnxg.convert.workers."""
