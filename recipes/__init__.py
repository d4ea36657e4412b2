"""onnxg.recipes."""
