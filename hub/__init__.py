"""The Hugging Face hub: references, listings and errors (``download``), and ``onnxg pull`` (``pull``)."""
