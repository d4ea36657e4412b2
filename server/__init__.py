"""onnxg.server."""
