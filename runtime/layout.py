"""What a model folder is: the kinds of model onnxg serves.

(The folder inspector, ``inspect(folder) -> Layout``, grows here: one definition of the
kinds and of the graph input/output names every part of onnxg agrees on.)
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["chat", "embedding", "e2e"]
"""``chat``: an onnxruntime-genai folder; ``embedding``: an ONNX graph over token ids;
``e2e``: an ONNX graph that takes strings (tokenizes inside itself)."""
