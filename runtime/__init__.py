"""Synchronous, web-free runtimes: chat (onnxruntime-genai), embeddings (onnxruntime), the model store."""
