"""onnxg.convert."""
